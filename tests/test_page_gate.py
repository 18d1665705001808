"""The gate on the page, in Debian's Chromium (tests/test_page.py's browser): a training of
one's own net that reads its owner's held-out drawings worse is not made live, the training
panel says so in words, the versions list marks it and "Make live" promotes it."""
import json
import urllib.request

from playwright.sync_api import expect

from service.samples import is_validation
from tests.conftest import Process
from tests.test_page import DESKTOP_TALL, browser, models_dir  # noqa: F401  fixtures
from tests.test_samples import mnist_png


def call(url, path, body=None):
    request = urllib.request.Request(url + path, data=None if body is None else
                                     json.dumps(body).encode(),
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def test_a_training_held_back_says_why_and_can_be_made_live(browser, models_dir, data_file,  # noqa: F811
                                                           mnist, tmp_path):
    (X, y), _ = mnist
    with Process(tmp_path, '--models', str(models_dir), '--data', str(data_file),
                 '--sample-share', '0.5') as server:
        url = f'http://127.0.0.1:{server.port}/'
        name = call(url, 'nets', {'from': 'live'})['net']
        fours, next_id, held = iter(X[y == 4]), 1, 0
        while held < 8:  # the held-out ones are 4s labelled 4, the others 4s labelled 9
            label = 4 if is_validation([next_id])[0] else 9
            made = call(url, 'samples', {'image': mnist_png(next(fours)), 'label': label,
                                         'net': name})
            assert made['id'] == next_id
            held += label == 4
            next_id += 1
        for one in X[y == 1][:3]:  # a second digit: one digit alone is refused
            if is_validation([next_id])[0]:
                break
            assert call(url, 'samples', {'image': mnist_png(one), 'label': 1,
                                         'net': name})['id'] == next_id
            next_id += 1
        page = browser.new_page(viewport=DESKTOP_TALL)
        page.errors = []
        page.on('pageerror', lambda error: page.errors.append(error))
        page.goto(f'{url}#net={name}')
        # (Not the hidden units' picture: 800 units of a private net take long on a busy
        # machine, and they are not what this test is about.)
        expect(page.locator('#version-list li')).to_have_count(1, timeout=60_000)
        expect(page.locator('#train')).to_be_enabled(timeout=60_000)
        page.fill('#epochs', '1')
        page.check('#with-samples')
        page.click('#train')
        error = page.locator('#train-error')
        expect(error).to_contain_text('Trained, but kept as version 2, not live: it reads ',
                                      timeout=180_000)
        expect(error).to_contain_text('Your net answers as before')
        versions = call(url, f'nets/{name}/versions')
        assert versions['current'] == 1 and versions['versions'][-1]['promoted'] is False

        candidate = page.locator('#version-list li[data-version="2"]')
        expect(candidate.locator('.held')).to_contain_text('not live: it reads ')
        candidate.get_by_role('button', name='Make live').click()
        expect(page.locator('#versions-status')).to_contain_text(
            'Version 2 is live now (as version 3).')
        expect(page.locator('#version-list li.current')).to_contain_text(
            'made version 2 live on purpose')
        assert call(url, f'nets/{name}/versions')['current'] == 3
        assert page.errors == []

"""A net of one's own on the page, in Debian's Chromium (tests/test_page.py's browser): the
first Train makes it (named in the address, remembered by the browser, opened by a link
elsewhere), the class net stays as it was and one click away, the versions list says what
each change did and goes back, a net that is gone falls back in words, and a training that
waits in the queue says its place.

The server is a real process (conftest.Process) on a small training file, and the page is
checked as a person sees it; the API confirms what the server holds.
"""
import json
import re
import threading
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import DIGIT, Process, tiny_data, wait_for
from tests.test_page import (  # noqa: F401  browser and models_dir are fixtures
    DESKTOP_TALL,
    DIGITS,
    PHONE,
    SHOTS,
    answer,
    browser,
    draw,
    models_dir,
    open_page,
)

NAME = re.compile(r'#net=([A-Za-z0-9_-]{22})')
MINE = 'Answered by your net.'
CLASS = 'Answered by the class net.'


def request(url, path, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(url + path, data=data, method=method or (
        'GET' if body is None else 'POST'), headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(call, timeout=300) as response:
        text = response.read()
        try:
            return json.loads(text)
        except ValueError:  # an empty or plain-text answer
            return text


@pytest.fixture(scope='module')
def tiny(data_file, tmp_path_factory):
    return tiny_data(data_file, tmp_path_factory.mktemp('tiny'))


@pytest.fixture(scope='module')
def server(models_dir, tiny, tmp_path_factory):  # noqa: F811
    with Process(tmp_path_factory.mktemp('server'), '--models', str(models_dir),
                 '--data', str(tiny)) as process:
        yield f'http://127.0.0.1:{process.port}/'


def open_at(browser, url, context=None, viewport=DESKTOP_TALL):  # noqa: F811
    """The page in a context (a fresh browser profile unless given): its localStorage is
    that context's."""
    context = context or browser.new_context(viewport=viewport)
    page = context.new_page()
    page.errors = []
    page.on('pageerror', lambda error: page.errors.append(error))
    page.goto(url)
    expect(page.locator('#units canvas').first).to_be_attached()
    expect(page.locator('#version-list li').first).to_be_attached()
    return page


def train_on_page(page, epochs=1):
    page.fill('#epochs', str(epochs))
    page.click('#train')
    expect(page.locator('#train-status')).to_contain_text('your net now reads ',
                                                          timeout=120_000)


def predicted(url, net):
    return request(url, 'predict', {'image': DIGIT, 'net': net})['predictions']


def test_train_makes_my_net_the_class_net_stays_and_a_link_opens_it(browser, server):  # noqa: F811
    class_before = request(server, 'models')['live']
    page = open_at(browser, server)
    assert '#net=' not in page.url
    expect(page.locator('#use-class')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#train-title')).to_have_text('Train a net of your own')
    draw(page, DIGITS[4])
    assert answer(page)[1] == CLASS

    train_on_page(page)
    name = NAME.search(page.url).group(1)
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#whose-info')).to_contain_text('Your own net answers and trains')
    expect(page.locator('#train-title')).to_have_text('Train my net')
    expect(page.locator('#answered-by')).to_have_text(MINE)
    expect(page.locator('#model-choice option').first).to_contain_text('My net')
    # The class net did not change; the new net has its two versions.
    class_after = request(server, 'models')['live']
    assert class_after['epochs'] == class_before['epochs']
    assert class_after['version'] == class_before['version']
    mine = request(server, f'nets/{name}')
    assert mine['epochs'] == class_before['epochs'] + 1 and mine['version'] == 2
    versions = page.locator('#version-list li')
    expect(versions).to_have_count(2)
    expect(page.locator('#versions-title')).to_have_text('Versions of my net')
    expect(versions.nth(0)).to_contain_text('Version 2')
    expect(versions.nth(0)).to_contain_text('trained 1 epoch')
    expect(versions.nth(0)).to_contain_text('answers now')
    expect(versions.nth(1)).to_contain_text('Version 1')
    expect(versions.nth(1)).to_contain_text('made')

    # Reloaded, the page keeps its net (the address and the browser's memory).
    page.reload()
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    draw(page, DIGITS[4])
    assert answer(page)[1] == MINE
    assert NAME.search(page.url).group(1) == name
    page.goto(server)  # no name in the address: this browser remembers it
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(page).to_have_url(re.compile(f'#net={name}'))

    # The link on another device (a fresh profile) opens the same net.
    other = open_at(browser, f'{server}#net={name}')
    expect(other.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(other.locator('#model-info')).to_contain_text(
        f'trained {class_before["epochs"] + 1} epoch')
    draw(other, DIGITS[4])
    assert answer(other)[1] == MINE
    assert other.errors == []
    other.context.close()

    # Going back to version 1 makes it answer as the class net it was copied from.
    assert predicted(server, name) != predicted(server, 'live')
    page.get_by_role('button', name='Go back to version 1', exact=True).click()
    expect(page.locator('#versions-status')).to_contain_text('Went back to version 1')
    expect(versions).to_have_count(3)
    expect(versions.nth(0)).to_contain_text('Version 3')
    expect(versions.nth(0)).to_contain_text('went back to version 1')
    assert predicted(server, name) == predicted(server, 'live')
    expect(page.locator('#model-info')).to_contain_text(
        f'trained {class_before["epochs"]} epoch')
    assert page.errors == []
    page.context.close()


def test_switching_to_the_class_net_and_back(browser, server):  # noqa: F811
    name = request(server, 'nets', {'from': 'fresh'})['net']
    page = open_at(browser, f'{server}#net={name}')
    draw(page, DIGITS[7])
    assert answer(page)[1] == MINE
    mine = answer(page)[2]

    page.click('#use-class')
    expect(page.locator('#answered-by')).to_have_text(CLASS)
    expect(page.locator('#use-class')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#whose-info')).to_contain_text('The class net answers')
    expect(page.locator('#train-title')).to_have_text('Train the class net')
    expect(page.locator('#versions-title')).to_have_text('Versions of the class net')
    expect(page).to_have_url(re.compile('#net=class'))
    assert answer(page)[2] != mine  # a fresh net and the class net read differently
    page.reload()  # the choice holds: the class net answers, one's own net is remembered
    expect(page.locator('#use-class')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#whose-info')).to_contain_text('change it for everyone')

    page.click('#use-mine')
    expect(page).to_have_url(re.compile(f'#net={name}'))
    draw(page, DIGITS[7])
    assert answer(page)[1:] == (MINE, mine)
    # A drawing kept with one's own net is kept with it, unless shared with the class.
    expect(page.locator('#share-row')).to_be_visible()
    page.get_by_role('button', name="It's a 7", exact=True).click()
    expect(page.locator('#status')).to_contain_text('Kept drawing #')
    expect(page.locator('#gallery li')).to_have_count(1)
    assert request(server, f'samples?net={name}')['total'] == 1
    assert all(s['label'] != 7 or s.get('shared')
               for s in request(server, 'samples')['samples'])
    assert page.errors == []
    page.context.close()


def test_a_net_that_is_gone_falls_back_to_the_class_net(browser, server):  # noqa: F811
    name = request(server, 'nets', {'from': 'fresh'})['net']
    request(server, f'nets/{name}', method='DELETE')
    page = open_at(browser, f'{server}#net={name}')
    expect(page.get_by_role('alert')).to_contain_text('Your own net is gone')
    expect(page.locator('#use-class')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#whose-info')).to_contain_text('first make you a net of your own')
    assert '#net=' not in page.url
    assert page.evaluate("localStorage.getItem('better-tensorflow:net')") is None
    draw(page, DIGITS[1])
    assert answer(page)[1] == CLASS
    assert page.errors == []
    page.context.close()


def test_a_training_that_waits_says_its_place(browser, models_dir, data_file,  # noqa: F811
                                              tmp_path):
    """One training at a time: another net's long training runs, the page's waits."""
    with Process(tmp_path, '--models', str(models_dir), '--data', str(data_file),
                 '--max-trainings', '1') as process:
        url = f'http://127.0.0.1:{process.port}/'
        best = request(url, 'models')['best']
        other = request(url, 'nets', {'from': best})['net']  # a wide net: slow epochs
        def train_other():
            try:
                request(url, 'train', {'net': other, 'epochs': 100})
            except urllib.error.HTTPError as e:  # 503: the server stops at the test's end
                assert e.code == 503, e
        threading.Thread(target=train_other, daemon=True).start()
        wait_for(lambda: request(url, f'train/status?net={other}').get('running'),
                 'the other training to start', timeout=120)
        page = open_at(browser, url)
        page.fill('#epochs', '1')
        page.click('#train')
        label = page.locator('#progress-label')
        expect(label).to_have_text('Waiting for 1 training ahead of yours; yours is next.',
                                   timeout=60_000)
        expect(page.locator('#train')).to_be_disabled()
        name = NAME.search(page.url).group(1)
        status = request(url, f'train/status?net={name}')
        assert status['state'] == 'queued' and status['position'] == 1
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SHOTS / 'nets-queued-desktop.png')
        assert page.errors == []
        page.context.close()


def test_going_back_on_the_class_net_is_for_the_teacher(browser, models_dir, tiny,  # noqa: F811
                                                         tmp_path):
    """A server with a token: the page lists the class net's versions, and its "go back"
    says in words that it needs the teacher; one's own net goes back without one."""
    with Process(tmp_path, '--models', str(models_dir), '--data', str(tiny),
                 env={'BTF_TOKEN': 'teacher-secret'}) as process:
        url = f'http://127.0.0.1:{process.port}/'
        request(url, 'reset?token=teacher-secret', {})  # the class net's version 2
        page = open_at(browser, url)
        expect(page.locator('#version-list li')).to_have_count(2)
        page.get_by_role('button', name='Go back to version 1', exact=True).click()
        expect(page.locator('#versions-error')).to_have_text(
            "Going back on the class net is for the teacher: it needs the server's token, "
            'which this page does not have. Your own net can go back any time.')
        expect(page.locator('#version-list li')).to_have_count(2)
        train_on_page(page)  # one's own net needs no token
        page.get_by_role('button', name='Go back to version 1', exact=True).click()
        expect(page.locator('#versions-status')).to_contain_text('Went back to version 1')
        assert page.errors == []
        page.context.close()


@pytest.mark.parametrize('name, viewport', [('desktop', DESKTOP_TALL), ('phone', PHONE)])
def test_screenshots_of_my_net(browser, server, name, viewport):  # noqa: F811
    phone = name == 'phone'
    context = browser.new_context(viewport=viewport, has_touch=phone, is_mobile=phone,
                                  device_scale_factor=2 if phone else 1)
    page = open_at(browser, server, context)
    train_on_page(page)
    if not phone:
        draw(page, DIGITS[3])
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f'nets-{name}.png')
    page.locator('#model').scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / f'nets-{name}-model.png')
    page.locator('#versions').scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / f'nets-{name}-versions.png')
    assert page.evaluate('document.documentElement.scrollWidth') <= viewport['width']
    assert page.errors == []
    context.close()

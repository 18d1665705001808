"""Drawings judged mislabelled on the page, in Debian's Chromium (tests/test_page.py's
browser): on the class net the gallery shows why one is held back and Approve (or Reject)
settles it; on one's own net the page asks its owner whether to keep it."""
import base64

import cv2
import numpy as np
import pytest
from playwright.sync_api import expect

from tests.conftest import Process
from tests.test_page import DESKTOP_TALL, browser, models_dir  # noqa: F401
from tests.test_page_nets import request


def mnist_url(x):
    big = cv2.resize(x.reshape(28, 28), (56, 56), interpolation=cv2.INTER_LINEAR)
    return 'data:image/png;base64,' + base64.b64encode(cv2.imencode('.png', 255 - big)[1]
                                                         ).decode()


@pytest.fixture(scope='module')
def server(models_dir, tmp_path_factory):  # noqa: F811
    with Process(tmp_path_factory.mktemp('server'), '--models', str(models_dir)) as process:
        yield f'http://127.0.0.1:{process.port}/'


def test_the_gallery_shows_why_a_drawing_is_held_back_and_the_review(browser, server,  # noqa: F811
                                                                     mnist):
    _, (X, y) = mnist
    four = X[np.flatnonzero(y == 4)[0]]
    seven = X[np.flatnonzero(y == 7)[0]]
    held = request(server, 'samples', {'image': mnist_url(four), 'label': 9})
    assert held['suspect'] is True
    request(server, 'samples', {'image': mnist_url(seven), 'label': 7})
    page = browser.new_page(viewport=DESKTOP_TALL)
    page.errors = []
    page.on('pageerror', lambda error: page.errors.append(error))
    page.goto(server)
    item = page.locator('#gallery li.suspect')
    expect(item).to_have_count(1, timeout=30_000)
    expect(item.locator('.reason')).to_contain_text(
        'Held back from the class net: labelled 9; reads as 4')
    expect(page.locator('#gallery li:not(.suspect)')).to_have_count(1)
    item.get_by_role('button', name=f'Approve drawing #{held["id"]}').click()
    expect(page.locator('#gallery li.suspect')).to_have_count(0)
    assert request(server, 'samples?suspect=1')['total'] == 0

    mine = request(server, 'nets', {'from': 'live'})['net']
    request(server, 'samples', {'image': mnist_url(four), 'label': 9, 'net': mine})
    page.goto(f'{server}#net={mine}')
    question = page.locator('#gallery li.suspect .reason')
    expect(question).to_have_text('You labelled this 9; it looks like a 4 — keep it?',
                                  timeout=30_000)
    page.locator('#gallery li.suspect').get_by_role('button', name='Keep').click()
    expect(page.locator('#gallery li.suspect .reason')).to_have_count(0)
    assert not page.errors

"""The drawing page in a real browser: Debian's Chromium driven by Playwright, against the real
server (a subprocess on a free loopback port) with the shipped models and real MNIST.

Digits are drawn with real mouse (and touch) strokes along the paths in DIGITS. Screenshots
go to screenshots/ (git-ignored); docs/screenshot.png in the README is one of them.
"""
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from service import Settings

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / 'screenshots'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
DESKTOP = {'width': 1280, 'height': 800}
DESKTOP_TALL = {'width': 1280, 'height': 900}
PHONE = {'width': 390, 'height': 844}
LANDSCAPE = {'width': 844, 'height': 390}


def ellipse(cx, cy, rx, ry, n=24):
    """Points around an ellipse, clockwise from the top, closing a little past the start."""
    return [(cx + rx * math.sin(2 * math.pi * i / n), cy - ry * math.cos(2 * math.pi * i / n))
            for i in range(n + 2)]


# Strokes per digit, each a list of points as fractions of the canvas (x right, y down).
DIGITS = {
    0: [ellipse(0.5, 0.5, 0.18, 0.28)],
    1: [[(0.52, 0.2), (0.48, 0.8)]],
    2: [[(0.3, 0.32), (0.4, 0.22), (0.55, 0.2), (0.67, 0.28), (0.66, 0.42), (0.3, 0.8),
         (0.72, 0.8)]],
    3: [[(0.32, 0.25), (0.5, 0.18), (0.66, 0.27), (0.62, 0.42), (0.45, 0.48), (0.64, 0.56),
         (0.68, 0.7), (0.5, 0.82), (0.3, 0.75)]],
    4: [[(0.38, 0.2), (0.32, 0.55), (0.7, 0.55)], [(0.6, 0.3), (0.6, 0.82)]],
    7: [[(0.3, 0.22), (0.7, 0.22), (0.45, 0.8)]],
}


# ---------------------------------------------------------------------------------------
# Fixtures: a data set, the shipped models, the server, the browser.

@pytest.fixture(scope='module')
def data_file(mnist, tmp_path_factory):
    """A data set in preprocess.py's format (uint8 pixels), smaller so that it loads fast."""
    (X, y), (Xt, yt) = mnist
    path = tmp_path_factory.mktemp('data') / 'mnist.npz'
    np.savez(path, X_train=X[:40000], y_train=y[:40000], X_val=X[50000:55000],
             y_val=y[50000:55000], X_test=Xt[:1000], y_test=yt[:1000])
    return path


@pytest.fixture(scope='module')
def manifest():
    return json.loads((ROOT / 'models' / 'models.json').read_text())


@pytest.fixture(scope='module')
def best(manifest):
    return next(m for m in manifest['models'] if m['version'] == manifest['best'])


@pytest.fixture(scope='module')
def models_dir(tmp_path_factory):
    """A copy of the shipped models: the server writes its live net next to them."""
    return shutil.copytree(ROOT / 'models', tmp_path_factory.mktemp('shipped') / 'models',
                           ignore=shutil.ignore_patterns('live*', '*.py', '*.png'))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(models, data):
    """A real server process logging to <models>/server.log; (its base URL, the process)."""
    port = free_port()
    log = Path(models) / 'server.log'
    with open(log, 'wb') as out:
        process = subprocess.Popen(
            [sys.executable, 'server.py', '--port', str(port), '--models', str(models),
             '--state', str(Path(models).parent / f'state-{port}'), '--data', str(data)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}/'
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + 'health', timeout=1):
                return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError('the server did not start: '
                                   + log.read_text()[-2000:]) from None
            time.sleep(0.1)


def stop_server(process):
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope='module')
def server(models_dir, data_file):
    url, process = start_server(models_dir, data_file)
    yield url
    stop_server(process)


@pytest.fixture(scope='module')
def browser():
    expect.set_options(timeout=15_000)  # waits for the page, never a measure of its speed
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url, **context):
    """The page, loaded: models listed, hidden units drawn; uncaught script errors are
    collected in page.errors."""
    page = browser.new_page(**context)
    page.errors = []
    page.on('pageerror', lambda error: page.errors.append(error))
    page.goto(url)
    # A cold server's first page on a busy machine takes seconds: a wait, not a measure.
    expect(page.locator('#units canvas').first).to_be_attached(timeout=60_000)
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server, viewport=DESKTOP)
    yield page
    assert page.errors == []
    page.close()


# ---------------------------------------------------------------------------------------
# Helpers.

def draw(page, strokes):
    """Draw strokes (fractions of the canvas) with the real mouse."""
    page.locator('#pad').scroll_into_view_if_needed()
    box = page.locator('#pad').bounding_box()
    for stroke in strokes:
        points = [(box['x'] + x * box['width'], box['y'] + y * box['height']) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=6)
        page.mouse.up()


def answer(page):
    """(label shown, "Answered by ..." line, the ten confidences) once the page has the
    answer for the current drawing."""
    expect(page.locator('#prediction')).to_have_attribute('aria-busy', 'false')
    widths = page.locator('#bars .pct').all_text_contents()
    return (page.locator('#label').text_content(), page.locator('#answered-by').text_content(),
            [float(w.strip('>%')) for w in widths])


def ink(page, selector):
    """Sum of the red channel of a canvas: how much white ink "what the network sees" holds."""
    return page.eval_on_selector(selector, """c => c.getContext('2d')
        .getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0)
        .reduce((a, b) => a + b, 0)""")


def api(url, path, body=None):
    request = urllib.request.Request(url + path, method='POST',
                                     data=json.dumps(body or {}).encode(),
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def click_and_wait(page, button, message):
    """Reset or pretrain, saying yes when the page asks (a net trained here is replaced)."""
    page.click(button)
    if page.locator('#confirm').is_visible():
        page.click('#confirm-yes')
    expect(page.locator('#train-status')).to_have_text(message)


# ---------------------------------------------------------------------------------------
# Tests.

# The first change of the page makes the learner's own net (tests/test_page_nets.py).
PRETRAINED = 'Your net is now a copy of the best pretrained model.'
DEFAULTS = Settings()
DEFAULT_NET = '-'.join(map(str, DEFAULTS.default_sizes))
RESET = f'Your net is now a fresh, untrained {DEFAULT_NET} net.'
UNITS_SHOWN = 120  # panel-hidden.js shows this many hidden units until asked for all
TRAINED = 'your net now reads '
MINE = 'Answered by your net.'


def test_drawn_digits_are_recognised(page):
    click_and_wait(page, '#pretrain', PRETRAINED)
    for digit, strokes in DIGITS.items():
        page.keyboard.press('Escape')
        expect(page.locator('#label')).to_have_text('?')
        assert ink(page, '#seen') == 0
        draw(page, strokes)
        label, by, confidences = answer(page)
        assert label == str(digit), f'drew a {digit}, the page says {label} {confidences}'
        assert by == MINE
        assert max(confidences) == confidences[digit] and 99 < sum(confidences) < 101
        expect(page.locator('#bars li.top .digit')).to_have_text(str(digit))
        assert ink(page, '#seen') > 0


def test_undo_redraws_the_remaining_strokes_and_backspace_clears(page):
    click_and_wait(page, '#pretrain', PRETRAINED)
    four = DIGITS[4]
    draw(page, four)
    assert answer(page)[0] == '4'
    page.click('#undo')  # leaves the first stroke of the 4, an "L"
    assert answer(page)[0] != '4'
    draw(page, four[1:])
    assert answer(page)[0] == '4'
    page.locator('#pad').focus()
    page.keyboard.press('Backspace')
    expect(page.locator('#label')).to_have_text('?')
    white = page.eval_on_selector('#pad', """c => c.getContext('2d')
        .getImageData(0, 0, c.width, c.height).data.every(v => v === 255)""")
    assert white
    expect(page.locator('#undo')).to_be_disabled()


def test_training_advances_the_bar_the_curve_and_the_hidden_view(page):
    click_and_wait(page, '#reset', RESET)
    expect(page.locator('#model-info')).to_have_text(f'{DEFAULT_NET}, untrained.')
    before = page.eval_on_selector('#units canvas', 'c => c.toDataURL()')
    assert page.locator('#chart circle').count() == 0
    assert page.eval_on_selector('#progress', 'p => p.value') == 0
    page.fill('#epochs', '1')
    page.click('#train')
    expect(page.locator('#train-status')).to_contain_text(TRAINED, timeout=60_000)
    expect(page.locator('#chart circle')).to_have_count(1)
    assert page.eval_on_selector('#progress', 'p => p.value') == 1
    expect(page.locator('#progress-label')).to_have_text('Last training: 1 of 1 epoch done')
    expect(page.locator('#chart title').first).to_contain_text('; last ')
    expect(page.locator('#model-info')).to_contain_text(f'{DEFAULT_NET}, trained 1 epoch, ')
    # The hidden layer view was refreshed with the trained weights.
    page.wait_for_function("""before => document.querySelector('#units canvas').toDataURL()
        !== before""", arg=before)


def test_page_answers_while_training_and_says_the_server_is_busy(browser, models_dir,
                                                                 data_file, tmp_path):
    """A 100-epoch job on a server of its own, stopped by stopping that server."""
    models = shutil.copytree(models_dir, tmp_path / 'models',
                             ignore=shutil.ignore_patterns('live*', '*.log'))
    url, process = start_server(models, data_file)
    try:
        page = open_page(browser, url, viewport=DESKTOP)
        click_and_wait(page, '#reset', RESET)  # small and quick: 100 epochs take seconds
        page.fill('#epochs', '100')
        page.click('#train')
        page.wait_for_function("document.querySelectorAll('#chart circle').length >= 1",
                               timeout=60_000)
        progress = page.eval_on_selector('#progress', 'p => p.value')
        assert 0.01 <= progress < 0.5
        expect(page.locator('#train')).to_be_disabled()

        draw(page, DIGITS[3])
        label, by, confidences = answer(page)
        assert label in '0123456789' and by == MINE
        name = re.search('#net=([A-Za-z0-9_-]{22})', page.url).group(1)
        with urllib.request.urlopen(url + f'train/status?net={name}') as response:
            assert json.load(response)['running']

        page.click('#reset')
        expect(page.get_by_role('alert')).to_contain_text(
            'The server is busy training; try again when it has finished. (cannot reset '
            'while training runs')
        page.wait_for_function("document.querySelectorAll('#chart circle').length >= 2",
                               timeout=60_000)
        assert page.eval_on_selector('#progress', 'p => p.value') > progress
        assert page.errors == []
    finally:
        stop_server(process)
    expect(page.get_by_role('alert')).to_contain_text('the server is shutting down')


def test_reset_pretrain_and_model_choice_change_the_answer(page, manifest, best):
    n_hidden, sizes = best['sizes'][1], '-'.join(map(str, best['sizes']))
    weakest = min(manifest['models'], key=lambda m: m['test_accuracy'])
    units, more = page.locator('#units canvas'), page.locator('#all-units')
    click_and_wait(page, '#pretrain', PRETRAINED)
    expect(page.locator('#hidden-title')).to_contain_text(f'({n_hidden} units, {sizes})')
    draw(page, DIGITS[7])
    label, by, good = answer(page)
    assert (label, by) == ('7', MINE)

    page.select_option('#model-choice', str(weakest['version']))
    _, by, weak = answer(page)
    assert by == f'Answered by pretrained model v{weakest["version"]}.' and weak != good
    expect(page.locator('#hidden-title')).to_contain_text(
        f'pretrained model v{weakest["version"]} has learned ({weakest["sizes"][1]} units')
    expect(page.locator('#model-info')).to_contain_text(
        f'{100 * weakest["test_accuracy"]:.1f}% test accuracy')
    page.select_option('#model-choice', str(best['version']))
    assert answer(page) == ('7', f'Answered by pretrained model v{best["version"]}.', good)

    page.select_option('#model-choice', '')
    click_and_wait(page, '#reset', RESET)
    _, by, untrained = answer(page)
    assert by == MINE and max(untrained) < max(good)
    expect(units).to_have_count(30)
    expect(more).to_be_hidden()

    click_and_wait(page, '#pretrain', PRETRAINED)
    assert answer(page) == ('7', MINE, good)
    expect(units).to_have_count(min(n_hidden, UNITS_SHOWN))
    if n_hidden > UNITS_SHOWN:  # a wide layer shows its first units until asked
        more.click()
        expect(units).to_have_count(n_hidden)


def test_all_units_stay_shown_while_the_same_net_reloads(page, best):
    """Asked for every unit of a wide layer, the page keeps them when that net's weights
    load again (a refresh that raced the click used to fold them back to the first 120)."""
    n_hidden = best['sizes'][1]
    if n_hidden <= UNITS_SHOWN:
        pytest.skip(f'the best model has {n_hidden} hidden units: all are shown at once')
    units, more = page.locator('#units canvas'), page.locator('#all-units')
    click_and_wait(page, '#pretrain', PRETRAINED)
    expect(units).to_have_count(UNITS_SHOWN)
    more.click()
    expect(units).to_have_count(n_hidden)
    expect(more).to_be_hidden()
    page.eval_on_selector_all('#units canvas', 'cs => cs.forEach((c) => { c.dataset.old = 1; })')
    page.evaluate('document.querySelector("#train-status").textContent = ""')
    click_and_wait(page, '#pretrain', PRETRAINED)  # the same net, its weights loaded again
    expect(page.locator('#units canvas[data-old]')).to_have_count(0)  # drawn anew
    expect(units).to_have_count(n_hidden)
    expect(more).to_be_hidden()
    click_and_wait(page, '#reset', RESET)  # a new net: back to its first units
    expect(units).to_have_count(min(DEFAULTS.default_sizes[1], UNITS_SHOWN))


def test_a_corrected_drawing_is_kept_shown_trained_on_and_deleted(page):
    click_and_wait(page, '#reset', RESET)  # small and quick to train
    gallery = page.locator('#gallery li')
    for button in ('#right', '#digit-buttons button >> nth=7'):
        expect(page.locator(button)).to_be_disabled()  # nothing drawn yet
    draw(page, DIGITS[7])
    answer(page)
    page.get_by_role('button', name="It's a 7", exact=True).click()
    expect(page.locator('#status')).to_contain_text('as a 7 (the net read ')
    expect(page.locator('#label')).to_have_text('?')  # the pad is cleared for the next digit
    expect(page.locator('#right')).to_be_disabled()
    expect(gallery).to_have_count(1)
    expect(page.locator('#samples-title')).to_have_text('Your drawings (1)')
    item = gallery.first
    expect(item).to_have_attribute('data-label', '7')
    expect(item.locator('span')).to_contain_text('a 7 · reads ')
    assert item.get_attribute('class') in ('right', 'wrong')
    assert item.locator('img').evaluate('i => i.complete && i.naturalWidth') == 28
    # The same drawing kept again is the same sample.
    draw(page, DIGITS[7])
    answer(page)
    page.click('#right')
    expect(page.locator('#status')).to_have_text('This drawing is already kept, as a 7 '
                                                 '(drawing #1).')
    expect(gallery).to_have_count(1)
    draw(page, DIGITS[1])
    expect(page.locator('#label')).not_to_have_text('?')
    expect(page.locator('#status')).to_be_empty()  # the last drawing's news is over
    page.get_by_role('button', name="It's a 1", exact=True).click()
    expect(gallery).to_have_count(2)
    expect(gallery.first).to_have_attribute('data-label', '1')  # newest first

    page.check('#with-samples')
    page.fill('#epochs', '1')
    page.click('#train')
    expect(page.locator('#train-status')).to_contain_text('MNIST validation accuracy ',
                                                          timeout=60_000)
    expect(page.locator('#train-status')).to_contain_text('no held-out drawings yet')

    for _ in range(2):
        gallery.first.get_by_role('button', name=re.compile('Delete drawing')).click()
        page.wait_for_timeout(100)
    expect(gallery).to_have_count(0)
    expect(page.locator('#samples-title')).to_have_text('Your drawings (0)')


def test_bad_epochs_are_explained_in_words(page):
    page.fill('#epochs', '1000')
    page.click('#train')
    expect(page.get_by_role('alert')).to_have_text(
        f'Epochs must be a whole number from 1 to {DEFAULTS.max_epochs}, not 1000.')
    expect(page.locator('#train')).to_be_enabled()
    page.fill('#epochs', '')
    page.click('#train')
    expect(page.get_by_role('alert')).to_have_text(
        f'Type how many epochs to train: a whole number from 1 to {DEFAULTS.max_epochs}.')


def on_screen(page, selector):
    """Whether the element is wholly inside the viewport, as it is scrolled now."""
    box = page.locator(selector).bounding_box()
    view = page.viewport_size
    return (box is not None and box['x'] >= 0 and box['y'] >= 0
            and box['x'] + box['width'] <= view['width']
            and box['y'] + box['height'] <= view['height'])


def overlap(a, b):
    return not (a['x'] + a['width'] <= b['x'] or b['x'] + b['width'] <= a['x']
                or a['y'] + a['height'] <= b['y'] or b['y'] + b['height'] <= a['y'])


def matrix_on_page(page):
    """(column headers, the counts of the confusion table, the sentence above it)."""
    expect(page.locator('#matrix')).to_be_visible(timeout=60_000)
    columns = page.locator('#matrix thead th').all_text_contents()
    counts = [[int(c) for c in row.locator('td button').all_text_contents()]
              for row in page.locator('#matrix tbody tr').all()]
    return columns, counts, page.locator('#confusion-info').text_content()


def draw_with(page, strokes, touch):
    if touch:
        touch_draw(page, strokes)
    else:
        page.mouse.move(0, 0)
        draw(page, strokes)


VIEWS = [('desktop', DESKTOP_TALL), ('phone', PHONE), ('landscape', LANDSCAPE)]


@pytest.mark.parametrize('name, viewport', VIEWS)
def test_a_server_without_data_shows_every_panel(browser, models_dir, tmp_path, name,
                                                 viewport):
    """A fresh clone without MNIST: the shipped test images fill every panel; Train is
    disabled with one sentence of what it needs; no server path appears anywhere."""
    touch = name != 'desktop'
    url, process = start_server(models_dir, tmp_path / 'missing.npz')
    try:
        page = open_page(browser, url + '#open=compare,confusion,inside', viewport=viewport,
                         has_touch=touch, is_mobile=touch)
        expect(page.locator('#train')).to_be_disabled()
        expect(page.locator('#train-why')).to_have_text(
            "Training needs MNIST's training images, and this server does not have them; its "
            'operator can add them with make data.')
        expect(page.locator('#train-why code')).to_have_text('make data')  # not backticks
        columns, counts, info = matrix_on_page(page)
        assert columns == [*map(str, range(10)), 'right'] and len(counts) == 10
        named = re.search(r'of ([\d,]+) test images right', info)
        assert named and sum(map(sum, counts)) == int(named[1].replace(',', '')) == 10_000
        draw_with(page, DIGITS[3], touch)
        assert answer(page)[0] == '3'
        expect(page.locator('#compare-table tbody tr')).not_to_have_count(0)
        expect(page.locator('#layers .units-top li').first).to_be_attached()
        expect(page.locator('#units canvas').first).to_be_attached()
        text = page.evaluate('document.body.innerText')
        for leak in (str(ROOT), str(tmp_path), 'missing.npz', 'mnist_preprocessed', '`'):
            assert leak not in text, leak
        assert page.errors == []
    finally:
        stop_server(process)


@pytest.mark.parametrize('name, viewport', VIEWS)
def test_the_answer_and_the_keep_buttons_are_on_screen_with_the_pad(browser, server, name,
                                                                     viewport):
    """Whenever the pad is on screen, so are the digit read and its confidence; keeping a
    drawing takes no scrolling and clears the pad; no message covers the pad or the answer,
    or moves them."""
    touch = name != 'desktop'
    api(server, 'pretrain')
    page = open_page(browser, server, viewport=viewport, has_touch=touch, is_mobile=touch,
                     device_scale_factor=2 if touch else 1)
    assert page.evaluate('window.scrollY') == 0
    for selector in ('#pad', '#label', '#confidence', '#right',
                     '#digit-buttons button >> nth=0', '#digit-buttons button >> nth=9'):
        assert on_screen(page, selector), (selector, page.locator(selector).bounding_box())
    hint = page.locator('.keys')
    if touch:
        expect(hint).to_be_hidden()
    else:
        expect(hint).to_be_visible()
    pad, label = page.locator('#pad').bounding_box(), page.locator('#label').bounding_box()
    for digit in (7, 1):
        draw_with(page, DIGITS[digit], touch)
        assert answer(page)[0] == str(digit)
        expect(page.locator('#confidence')).to_contain_text(f'sure it is a {digit}')
        assert on_screen(page, '#label') and on_screen(page, '#confidence')
        keep = page.get_by_role('button', name=f"It's a {digit}", exact=True)
        if touch:
            keep.tap()
        else:
            keep.click()
        expect(page.locator('#status')).to_contain_text(f'as a {digit}')
        expect(page.locator('#label')).to_have_text('?')  # cleared, ready for the next one
        assert ink(page, '#seen') == 0
        assert page.evaluate('window.scrollY') == 0
        message = page.locator('#status').bounding_box()
        assert on_screen(page, '#status')
        assert not overlap(message, page.locator('#pad').bounding_box())
        assert not overlap(message, page.locator('#prediction').bounding_box())
        assert page.locator('#pad').bounding_box() == pad  # nothing moved
        assert page.locator('#label').bounding_box() == label
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f'keep-{name}.png')
    assert page.errors == []
    page.close()


def test_a_busy_message_goes_when_the_other_training_ends(browser, server):
    """Another tab's training of the class net: on the class net (chosen over one's own),
    Train is disabled meanwhile, "busy" shows when reset is refused, and both go once the
    training has ended."""
    api(server, 'reset')
    mine = json.loads(api(server, 'nets', {'from': 'fresh'}))['net']
    page = open_page(browser, f'{server}#net={mine}', viewport=DESKTOP_TALL)
    page.click('#use-class')
    expect(page.locator('#train-title')).to_have_text('Train the class net')
    expect(page.locator('#train')).to_be_enabled()
    other = threading.Thread(target=api, args=(server, 'train', {'epochs': 30}))
    other.start()
    try:
        expect(page.locator('#train')).to_be_disabled(timeout=60_000)
        page.click('#reset')
        alert = page.get_by_role('alert')
        expect(alert).to_contain_text('The server is busy training')
        for selector in ('#pad', '#prediction'):
            assert not overlap(alert.bounding_box(), page.locator(selector).bounding_box())
    finally:
        other.join()
    expect(alert).to_have_count(0, timeout=60_000)
    expect(page.locator('#train')).to_be_enabled()
    assert page.errors == []
    page.close()


def test_reset_asks_before_replacing_a_trained_net(page, server):
    """(Before one's own nets, it asked before throwing away the live net.)"""
    page.fill('#epochs', '1')
    page.click('#train')  # makes the page's own net, then trains it
    expect(page.locator('#train-status')).to_contain_text(TRAINED, timeout=60_000)
    expect(page.locator('#model-info')).to_contain_text('trained ')
    trained = page.locator('#model-info').text_content()
    page.click('#reset')
    expect(page.locator('#confirm')).to_be_visible()
    expect(page.locator('#confirm-text')).to_contain_text(
        'Reset replaces your net, which was trained (')
    expect(page.locator('#confirm-text')).to_contain_text('"Go back to this version"')
    page.click('#confirm-no')
    expect(page.locator('#confirm')).to_be_hidden()
    expect(page.locator('#model-info')).to_have_text(trained)
    click_and_wait(page, '#reset', RESET)
    expect(page.locator('#model-info')).to_have_text(f'{DEFAULT_NET}, untrained.')
    page.click('#reset')  # nothing trained to lose: no question
    expect(page.locator('#confirm')).to_be_hidden()


def test_words_a_class_understands(page, server, best):
    api(server, 'pretrain')
    page.reload()
    seen = page.locator('#seen-figure .seen-empty')
    expect(seen).to_be_visible()  # not a black square before anything is drawn
    expect(seen).to_have_text('nothing drawn yet')
    page.select_option('#model-choice', str(best['version']))
    draw(page, DIGITS[4])
    answer(page)
    info = page.locator('#inside-info')
    expect(info).to_contain_text(f'v{best["version"]}: each hidden unit')
    if best['options']['activation'] == 'relu':  # its outputs are not bounded by 1
        expect(info).to_contain_text('grows without a top')
        expect(info).not_to_contain_text('0 (silent) to 1')
    expect(seen).to_be_hidden()
    expect(page.locator('#confusion-how')).to_have_text(
        'Choose a cell to see its digits: arrow keys move between cells, Enter opens one.')


def test_the_matrix_fits_a_finger_on_a_phone(browser, server):
    """Every cell of the confusion matrix is at least 44 px square, and the last column,
    "right", can be scrolled into view whole inside the page's width."""
    page = open_page(browser, server + '#open=confusion', viewport=PHONE, has_touch=True,
                     is_mobile=True)
    expect(page.locator('#matrix')).to_be_visible(timeout=60_000)
    sizes = page.eval_on_selector_all('#matrix td button', """bs => bs.map((b) => {
        const r = b.getBoundingClientRect(); return [r.width, r.height]; })""")
    assert len(sizes) == 100 and min(min(size) for size in sizes) >= 44, min(sizes)
    expect(page.locator('#confusion-how')).to_contain_text('Tap a cell')
    page.locator('.matrix-wrap').evaluate('w => { w.scrollLeft = w.scrollWidth; }')
    wrap = page.locator('.matrix-wrap').bounding_box()
    right = page.locator('#matrix thead th', has_text='right').bounding_box()
    assert wrap['x'] <= right['x'] and right['x'] + right['width'] <= wrap['x'] + wrap['width']
    assert wrap['x'] >= 0 and wrap['x'] + wrap['width'] <= PHONE['width']
    assert page.evaluate('document.documentElement.scrollWidth') <= PHONE['width']
    page.locator('#matrix tbody tr').nth(4).locator('td button').nth(9).tap()
    expect(page.locator('#cell-title')).to_contain_text('4s read as 9')
    assert page.errors == []
    page.close()


@pytest.mark.parametrize('name, viewport', [('desktop', DESKTOP), ('phone', PHONE)])
def test_layout_fits_and_screenshots(browser, server, best, name, viewport):
    phone = name == 'phone'
    if not phone:  # a learning curve for the screenshot
        api(server, 'reset')
        api(server, 'train', {'epochs': 3})
    page = open_page(browser, server, viewport=viewport, has_touch=phone, is_mobile=phone,
                     device_scale_factor=2 if phone else 1)
    page.select_option('#model-choice', str(best['version']))
    expect(page.locator('#hidden-title')).to_contain_text(f'model v{best["version"]}')
    if phone:
        page.evaluate('window.scrollTo(0, 50)')  # so that a drag either way could scroll
        touch_draw(page, DIGITS[3])
        assert page.evaluate('window.scrollY') == 50  # the finger drew instead of scrolling
    else:
        draw(page, DIGITS[3])
    assert answer(page)[0] == '3'
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f'page-{name}.png')
    page.screenshot(path=SHOTS / f'page-{name}-full.png', full_page=True)

    assert page.evaluate('document.documentElement.scrollWidth') <= viewport['width']
    box = page.locator('#pad').bounding_box()
    assert abs(box['width'] - box['height']) < 1 and box['x'] >= 0
    assert box['x'] + box['width'] <= viewport['width']
    controls = [('combobox', 'Network that answers'), ('spinbutton', 'Epochs'),
                ('button', 'Train'), ('button', 'Reset (untrained)'),
                ('button', 'Pretrain (copy best)'), ('button', 'Undo stroke'),
                ('button', 'Clear'), ('progressbar', re.compile('training'))]
    for role, label in controls:  # labelled: found by the name a screen reader says
        expect(page.get_by_role(role, name=label, exact=True)).to_be_visible()
    page.keyboard.press('Tab')
    outline = page.evaluate('getComputedStyle(document.activeElement).outlineStyle')
    assert outline == 'solid'
    assert page.errors == []
    page.close()


def touch_draw(page, strokes):
    """Draw strokes with touch events through the DevTools protocol (a finger)."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator('#pad').bounding_box()
    for stroke in strokes:
        points = [{'x': box['x'] + x * box['width'], 'y': box['y'] + y * box['height']}
                  for x, y in stroke]
        cdp.send('Input.dispatchTouchEvent', {'type': 'touchStart', 'touchPoints': [points[0]]})
        for a, b in zip(points, points[1:]):
            for t in np.linspace(0, 1, 6)[1:]:
                point = {k: a[k] + t * (b[k] - a[k]) for k in a}
                cdp.send('Input.dispatchTouchEvent', {'type': 'touchMove',
                                                      'touchPoints': [point]})
        cdp.send('Input.dispatchTouchEvent', {'type': 'touchEnd', 'touchPoints': []})
    cdp.detach()

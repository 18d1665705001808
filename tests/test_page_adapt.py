"""The "teach it my handwriting" mode in Debian's Chromium (tests/test_page.py's browser and
server helpers): it makes the learner's own net, asks for each digit in turn, keeps each
drawing with that digit on the net, takes the last one back, then asks for more of the digits
GET /nets/{name}/ask puts first, adapts the net and says before and after how many of the
learner's drawings it reads right, with the numbers the API gives.

The drawings are one writer's (WRITER): for each digit one stroke style, two of them styles
MNIST lacks, drawn with the real mouse (or a finger) along the strokes, each time a little
differently.
"""
import re

import numpy as np
import pytest
from playwright.sync_api import expect

import handwriting
from tests.test_page import (  # noqa: F401  browser, data_file, models_dir are fixtures
    DESKTOP,
    SHOTS,
    answer,
    api,
    browser,
    data_file,
    draw,
    models_dir,
    open_page,
    start_server,
    stop_server,
    touch_draw,
)
from tests.test_page_nets import request

PHONE_SMALL = {'width': 375, 'height': 667}
NAME = re.compile(r'#net=([A-Za-z0-9_-]{22})')
# One writer: a 1 with a long flag and a 9 with a small head and a long curled tail (styles
# MNIST lacks: the best model reads them as 7 and as 2), the other digits in one of
# handwriting.py's styles each.
WRITER = {
    **{digit: handwriting.STYLES[digit][style] for digit, style in
       {0: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1, 8: 2}.items()},
    1: [handwriting.line((0.15, 0.3), (0.65, 0), (0.5, 1))],
    9: [handwriting.path(handwriting.arc(0.5, 0.12, 0.12, 0.11, -30, 340),
                         handwriting.curve((0.62, 0.1), (0.6, 0.6), (0.35, 0.95), (0.1, 0.8),
                                           (0.2, 0.65)))],
}
COUNT = re.compile(r'^(?:(\d): (\d+) of (\d+) · )?(\d+) of (\d+) done$')
NOW = re.compile(r'It now reads (\d+) of your (\d+) drawings right \(was (\d+)\)\.')


def serving(models, data, test_points):
    """A server whose class net is the best model; a private net's adaptation may lose
    ``test_points`` on MNIST's test images (its gate)."""
    url, process = start_server(models, data, '--gate-private-test-points', str(test_points))
    api(url, 'pretrain')
    return url, process


@pytest.fixture(scope='module')
def server(models_dir, data_file):  # noqa: F811
    """Adapting the best model to this writer cost it 0.4 to 0.7 points of MNIST's test
    images in our runs (the default gate allows 1): here 3 are allowed, so that the
    adaptation is promoted whatever its draw and the page's before and after are seen."""
    url, process = serving(models_dir, data_file, 3)
    yield url
    stop_server(process)


@pytest.fixture(scope='module')
def strict(models_dir, data_file):  # noqa: F811
    """A server whose gate allows no loss on MNIST's test images: the adaptation is held
    back."""
    url, process = serving(models_dir, data_file, 0)
    yield url
    stop_server(process)


def strokes(digit, rng):
    """The writer's digit as pad strokes (fractions of the pad), a little different each time
    (a drawing posted twice would be the same sample)."""
    shaky = handwriting._shaky(WRITER[digit], rng, 0.02)
    height, slant = rng.uniform(0.55, 0.65), rng.uniform(0.05, 0.15)
    centre = 0.5 + rng.uniform(-0.04, 0.04, 2)
    A = height * np.array([[0.85, -slant], [0, 1]])
    return [((s - 0.5) @ A.T + centre).tolist() for s in shaky]


def draw_digit(page, digit, rng, touch=False):
    """Draws the digit along dense strokes (the pad joins consecutive points) and waits for
    the answer."""
    page.locator('#pad').scroll_into_view_if_needed()
    box = page.locator('#pad').bounding_box()
    if touch:
        touch_draw(page, strokes(digit, rng))
    else:
        for stroke in strokes(digit, rng):
            points = [(box['x'] + x * box['width'], box['y'] + y * box['height'])
                      for x, y in stroke]
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point)
            page.mouse.up()
    expect(page.locator('#adapt-keep')).to_be_enabled(timeout=30_000)
    return answer(page)


def progress(page):
    """(asked digit, its drawings, of how many, done in all, of how many) as the page says."""
    text = page.locator('#adapt-count').text_content()
    found = COUNT.match(text)
    assert found, text
    return tuple(None if g is None else int(g) for g in found.groups())


def keep(page, digit, rng, touch=False):
    """Draws the asked digit and keeps it; the progress moves on by one."""
    shown = page.locator('#adapt-count').text_content()
    before = progress(page)
    expect(page.locator('#adapt-prompt')).to_have_text(
        re.compile(rf'^Draw a {digit} the way you write it'))
    draw_digit(page, digit, rng, touch)
    if touch:
        page.locator('#adapt-keep').tap()
    else:
        page.click('#adapt-keep')
    expect(page.locator('#status')).to_contain_text(f'Kept your {digit}', timeout=30_000)
    expect(page.locator('#adapt-count')).not_to_have_text(shown)
    after = progress(page)
    assert after[3] == before[3] + 1
    return after


def asked(page):
    found = re.match(r'^Draw an? (\d) ', page.locator('#adapt-prompt').text_content())
    return None if found is None else int(found.group(1))


def post_drawing(url, name, digit, rng):
    """Keeps one of the writer's digits on the net through the API: an OpenCV drawing of
    the same strokes the mouse draws."""
    drawn = handwriting.render(handwriting._shaky(WRITER[digit], rng, 0.02),
                               thickness=24, height=rng.uniform(0.55, 0.65),
                               aspect=0.85, slant=rng.uniform(0.05, 0.15),
                               background=(255, 255, 255, 255))
    request(url, 'samples', {'image': handwriting.data_url(drawn), 'label': digit,
                             'net': name})


def sums(url, name):
    per_digit = request(url, f'nets/{name}/ask')['per_digit']
    return (sum(d['right'] for d in per_digit.values()),
            sum(d['drawings'] for d in per_digit.values()))


def test_the_mode_asks_keeps_undoes_asks_for_more_and_adapts(browser, server):  # noqa: F811
    rng = np.random.default_rng(7)
    page = open_page(browser, server, viewport=DESKTOP)
    assert '#net=' not in page.url
    page.get_by_role('button', name='Teach it my handwriting').click()
    expect(page.locator('#adapt-prompt')).to_have_text('Draw a 0 the way you write it',
                                                       timeout=30_000)
    expect(page).to_have_url(re.compile(r'#net=[A-Za-z0-9_-]{22}&.*open=[^&]*adapt'))
    name = NAME.search(page.url).group(1)
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#teach')).to_be_hidden()  # the mode takes the keep buttons' place
    assert progress(page) == (0, 0, 5, 0, 50)
    expect(page.locator('#adapt-run')).to_be_disabled()  # not before the first round

    assert keep(page, 0, rng) == (0, 1, 5, 1, 50)
    assert keep(page, 0, rng) == (0, 2, 5, 2, 50)
    # Undo takes the last drawing back, on the server too.
    page.click('#adapt-undo')
    expect(page.locator('#status')).to_contain_text('Took back your last 0')
    expect(page.locator('#adapt-count')).to_have_text('0: 1 of 5 · 1 of 50 done')
    assert request(server, f'samples?net={name}')['total'] == 1

    # The first round: five of every digit, in turn: the first two drawn here, the rest
    # kept through the API (a mouse's fifty drawings take minutes), and the mode, opened
    # again, goes on from what the net has.
    while (digit := asked(page)) is not None and progress(page)[3] < 10:
        keep(page, digit, rng)
    assert progress(page) == (2, 0, 5, 10, 50)
    for digit in range(2, 10):
        for _ in range(5):
            post_drawing(server, name, digit, rng)
    page.reload()
    expect(page.locator('#adapt-prompt')).to_contain_text('(your net needs more of these)',
                                                          timeout=60_000)
    assert request(server, f'samples?net={name}')['total'] == 50
    chips = page.locator('#adapt-digits li')
    expect(chips).to_have_count(10)
    assert all(t.endswith('/5') or t.endswith('/8')
               for t in chips.all_text_contents())

    # Then more of the digits the net reads worst or is least sure of, most needed first.
    needed = request(server, f'nets/{name}/ask')['ask'][:3]
    assert needed and asked(page) == needed[0]
    expect(page.locator('#adapt-prompt')).to_have_text(
        f'Draw a {needed[0]} the way you write it (your net needs more of these)')
    goal = 50 + 3 * len(needed)
    assert progress(page) == (needed[0], 5, 8, 50, goal)
    expect(page.locator('#adapt-digits li[aria-current=step]')).to_contain_text(
        f'{needed[0]}5/8')
    expect(page.locator('#adapt-run')).to_be_enabled()  # the first round is done
    for digit in needed[:-1]:
        for _ in range(3):
            assert asked(page) == digit
            keep(page, digit, rng)
    # The last asked digit is skipped.
    assert asked(page) == needed[-1]
    page.click('#adapt-skip')
    expect(page.locator('#adapt-prompt')).to_have_text(
        'All asked drawings are kept: adapt your net to them.')
    expect(page.locator('#adapt-keep')).to_be_disabled()

    right_before, drawings = sums(server, name)
    versions = request(server, f'nets/{name}/versions')['current']
    page.click('#adapt-run')
    said = page.locator('#status')
    expect(said).to_contain_text('It now reads', timeout=300_000)
    now, total, was = map(int, NOW.search(said.text_content()).groups())
    right_after, drawings_after = sums(server, name)
    assert (now, total, was) == (right_after, drawings, right_before)
    assert drawings_after == drawings == 50 + 3 * (len(needed) - 1)
    assert now > was  # it reads more of the writer's drawings
    # The adaptation's progress came from its /train/events: full at its last epoch.
    expect(page.locator('#adapt-training')).to_be_visible()
    expect(page.locator('#adapt-training')).to_have_js_property('value', 1)
    assert request(server, f'nets/{name}/versions')['current'] > versions
    expect(page.locator('#version-list li').first).to_contain_text('answers now')
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / 'adapt-adapted.png')
    assert page.errors == []
    page.close()


def test_an_adaptation_the_gate_holds_back_is_said_with_its_reason(browser, strict):  # noqa: F811
    """The writer's first round kept through the API (OpenCV drawings of the same strokes);
    a link opens the mode on that net, which asks for more of what ask puts first; the
    adaptation loses MNIST test images, which this server's gate allows none of: the page
    says so with the gate's reason, the net's drawings read as before, and the versions
    offer the adapted one."""
    rng = np.random.default_rng(11)
    name = request(strict, 'nets', {'from': 'live'})['net']
    for digit in range(10):
        for _ in range(5):
            post_drawing(strict, name, digit, rng)
    needed = request(strict, f'nets/{name}/ask')['ask']
    page = open_page(browser, f'{strict}#net={name}&open=versions,adapt', viewport=DESKTOP)
    expect(page.locator('#adapt-prompt')).to_have_text(
        f'Draw a {needed[0]} the way you write it (your net needs more of these)')
    assert progress(page)[3:] == (50, 50 + 3 * min(3, len(needed)))
    right, drawings = sums(strict, name)
    current = request(strict, f'nets/{name}/versions')['current']

    page.click('#adapt-run')
    said = page.locator('#status')
    expect(said).to_contain_text('The adapted net was not made your net', timeout=300_000)
    versions = request(strict, f'nets/{name}/versions')
    held = versions['versions'][-1]
    assert held['promoted'] is False and versions['current'] == current
    assert said.text_content().startswith(
        f"The adapted net was not made your net, because {held['gate']['reason']}. Your net "
        f'answers as before: it still reads {right} of your {drawings} drawings right. The '
        f"adapted one is kept as version {held['version']}; the versions list offers "
        '"Make live" to use it anyway.')
    assert "MNIST's test images" in held['gate']['reason']
    assert sums(strict, name) == (right, drawings)
    expect(page.get_by_role('button', name=f"Make live version {held['version']}")).to_be_visible()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / 'adapt-held-back.png')
    assert page.errors == []
    page.close()


@pytest.mark.parametrize('name, viewport', [('desktop', DESKTOP), ('phone', PHONE_SMALL)])
def test_the_mode_fits_a_phone_and_a_desktop(browser, server, name, viewport):  # noqa: F811
    """A link with open=adapt opens the mode (making the net); on a 375x667 phone the prompt,
    the pad, what the net reads and Keep share the first screen."""
    phone = name == 'phone'
    rng = np.random.default_rng(3)
    page = open_page(browser, server + '#open=adapt', viewport=viewport, has_touch=phone,
                     is_mobile=phone, device_scale_factor=2 if phone else 1)
    expect(page.locator('#adapt-prompt')).to_have_text('Draw a 0 the way you write it',
                                                       timeout=30_000)
    expect(page).to_have_url(re.compile(r'#net=[A-Za-z0-9_-]{22}&'))
    keep(page, 0, rng, touch=phone)
    draw_digit(page, 0, rng, touch=phone)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f'adapt-{name}.png')
    page.screenshot(path=SHOTS / f'adapt-{name}-full.png', full_page=True)
    assert page.evaluate('document.documentElement.scrollWidth') <= viewport['width']
    for selector in ('#pad', '#adapt-prompt', '#label', '#adapt-keep', '#adapt-count'):
        box = page.locator(selector).bounding_box()
        assert box['x'] >= 0 and box['x'] + box['width'] <= viewport['width'], selector
        assert box['y'] >= 0 and box['y'] + box['height'] <= viewport['height'], selector
    for role, label in (('button', 'Keep this 0'), ('button', 'Skip'),
                        ('button', 'Undo the last drawing kept'), ('button', 'Adapt my net'),
                        ('progressbar', '0: 1 of 5 · 1 of 50 done'),
                        ('list', 'Drawings of each digit')):
        expect(page.get_by_role(role, name=label, exact=True)).to_be_visible()
    assert page.locator('#adapt-prompt').get_attribute('aria-live') == 'polite'
    if phone:  # a finger's tap right after the stroke keeps it
        page.get_by_role('button', name='Keep this 0').tap()
    else:  # and so does the keyboard
        page.get_by_role('button', name='Keep this 0').focus()
        page.keyboard.press('Enter')
    expect(page.locator('#adapt-count')).to_have_text('0: 2 of 5 · 2 of 50 done')
    assert page.errors == []
    page.close()

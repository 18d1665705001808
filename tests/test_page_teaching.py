"""The page's teaching panels in Debian's Chromium (tests/test_page.py's browser and server
helpers): where the chosen net goes wrong (its confusion matrix and the digits behind a cell),
what fires inside it, every net on one drawing, "not sure", and the state in the address.

The server reads a training file built by preprocess.py with ``--split official``, whose test
split is MNIST's 10,000 official test images.
"""
import json
import re
import urllib.request

import pytest
from playwright.sync_api import expect

import preprocess
from tests.test_page import (  # noqa: F401  browser is a fixture
    DESKTOP,
    DIGITS,
    PHONE,
    ROOT,
    SHOTS,
    answer,
    api,
    browser,
    draw,
    models_dir,
    open_page,
    start_server,
    stop_server,
    touch_draw,
)

SCRIBBLE = [[(0.1, 0.45), (0.25, 0.6), (0.4, 0.4), (0.55, 0.62), (0.7, 0.4), (0.9, 0.58)]]
TEST_IMAGES = 10_000


@pytest.fixture(scope='module')
def official_data(mnist_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp('official') / 'mnist.npz'
    preprocess.build(mnist_dir, path, split='official')
    return path


@pytest.fixture(scope='module')
def server(models_dir, official_data):  # noqa: F811  this module's server, its data
    url, process = start_server(models_dir, official_data)
    yield url
    stop_server(process)


@pytest.fixture(scope='module')
def shipped():
    manifest = json.loads((ROOT / 'models' / 'models.json').read_text())
    return manifest


@pytest.fixture
def page(browser, server):  # noqa: F811
    page = open_page(browser, server, viewport=DESKTOP)
    yield page
    assert page.errors == []
    page.close()


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=120) as response:
        return json.load(response)


def matrix_on_page(page):
    """The confusion table as a screen reader reads it: column headers, row headers, counts."""
    expect(page.locator('#matrix')).to_be_visible(timeout=60_000)
    columns = page.locator('#matrix thead th').all_text_contents()
    rows = page.locator('#matrix tbody th[scope=row]').all_text_contents()
    counts = [[int(c) for c in row.locator('td button').all_text_contents()]
              for row in page.locator('#matrix tbody tr').all()]
    return columns, rows, counts


def test_the_matrix_of_a_shipped_model_and_the_digits_behind_a_cell(page, server, shipped):
    best = shipped['best']
    page.select_option('#model-choice', str(best))
    expect(page.locator('#confusion-info')).to_contain_text(f'v{best} read ', timeout=60_000)
    columns, rows, counts = matrix_on_page(page)
    assert columns == [*map(str, range(10)), 'right'] and rows == columns[:10]
    assert len(counts) == 10 and all(len(row) == 10 for row in counts)
    assert sum(map(sum, counts)) == TEST_IMAGES
    expect(page.locator('#confusion-info')).to_contain_text(
        f"of {TEST_IMAGES:,} test images right: MNIST's official {TEST_IMAGES:,} test images")
    served = get(server, f'confusion?pretrained={best}')
    assert counts == served['matrix']
    manifest_accuracy = next(m['test_accuracy'] for m in shipped['models']
                             if m['version'] == best)
    assert served['accuracy'] == pytest.approx(manifest_accuracy, abs=1e-4)
    accuracy = page.locator('#matrix tbody tr').nth(4).locator('td.accuracy').text_content()
    assert accuracy == f'{100 * counts[4][4] / sum(counts[4]):.0f}%'

    fours_as_nines = counts[4][9]
    assert fours_as_nines > 0
    page.get_by_role('button', name=f'{fours_as_nines} 4s read as 9', exact=True).click()
    shown = min(fours_as_nines, 48)
    expect(page.locator('#cell-examples li')).to_have_count(shown)
    expect(page.locator('#cell-title')).to_contain_text(f'{fours_as_nines} 4s read as 9')
    images = page.locator('#cell-examples img')
    assert images.first.evaluate('i => i.complete && i.naturalWidth') == 28
    percents = [float(t.strip('>%')) for t in
                page.locator('#cell-examples li span').all_text_contents()]
    assert percents == sorted(percents, reverse=True)  # the most confident mistakes first
    expect(page.locator('#matrix button[aria-pressed=true]')).to_have_text(str(fours_as_nines))
    assert re.search(rf'model=v{best}&.*cell=4-9', page.url)

    # The keyboard: one tab stop, arrows move, Enter opens the cell.
    page.locator('#matrix button').first.focus()
    page.keyboard.press('ArrowRight')
    page.keyboard.press('ArrowDown')
    page.keyboard.press('Enter')
    expect(page.locator('#cell-title')).to_contain_text(f'{counts[1][1]} 1s read right')
    assert page.url.endswith('cell=1-1')


def test_a_drawing_shows_what_fires_inside_and_every_net_side_by_side(page, shipped):
    best, versions = shipped['best'], sorted(m['version'] for m in shipped['models'])
    weakest = min(shipped['models'], key=lambda m: m['test_accuracy'])['version']
    page.select_option('#model-choice', str(best))
    draw(page, DIGITS[4])
    label, by, _ = answer(page)
    assert label == '4'
    rows = page.locator('#compare-table tbody tr')
    expect(rows).to_have_count(1 + len(versions))
    assert [r.get_attribute('data-model') for r in rows.all()] == \
        ['live', *[f'v{v}' for v in versions]]
    reads = {r.get_attribute('data-model'): r.locator('td.reads').text_content()
             for r in rows.all()}
    # The weakest model misreads this 4; the best reads it.
    assert reads[f'v{best}'] == '4' and reads[f'v{weakest}'] != '4'
    expect(page.locator('#compare-info')).to_contain_text('The networks disagree')
    expect(page.locator(f'#compare-table tr[data-model=v{best}]')).to_have_class('chosen')
    expect(page.locator(f'#compare-table tr[data-model=v{weakest}] .tag')).to_have_text(
        'not sure')

    layer = page.locator('#layers h3').first
    expect(layer).to_have_text('Hidden layer 1: 800 units, the 16 most active')
    units = page.locator('#layers .units-top li')
    expect(units).to_have_count(16)
    assert units.first.locator('canvas').count() == 2  # its weights, and the drawing times them
    values = [float(t) for t in page.locator('#layers .what b').all_text_contents()]
    assert values == sorted(values, reverse=True) and 0 < values[-1] <= values[0]
    entry = next(m for m in shipped['models'] if m['version'] == best)
    if entry['options'].get('activation', 'sigmoid') == 'sigmoid':  # ReLU has no ceiling
        assert values[0] <= 1

    # A narrow net shows every unit too.
    page.select_option('#model-choice', str(weakest))
    expect(page.locator('#layers .strip span')).to_have_count(30)
    expect(page.locator('#layers h3').first).to_have_text(
        'Hidden layer 1: 30 units, the 16 most active')


def test_a_scribble_is_not_sure(page, shipped):
    page.select_option('#model-choice', str(shipped['best']))
    draw(page, SCRIBBLE)
    answer(page)
    expect(page.locator('#confidence')).to_contain_text('Not sure: the drawing is much wider '
                                                        'than MNIST digits')
    expect(page.locator('#label')).to_have_class(re.compile('unsure'))
    page.keyboard.press('Escape')
    draw(page, DIGITS[7])
    answer(page)
    expect(page.locator('#confidence')).to_contain_text('sure it is a 7')
    expect(page.locator('#label')).not_to_have_class(re.compile('unsure'))


def test_the_address_restores_the_net_the_panels_and_the_cell(browser, server):  # noqa: F811
    page = open_page(browser, server + '#model=v3&open=confusion&cell=4-9', viewport=DESKTOP)
    expect(page.locator('#model-choice')).to_have_value('3')
    expect(page.locator('#cell-title')).to_contain_text('4s read as 9', timeout=60_000)
    expect(page.locator('#matrix button[aria-pressed=true]')).to_have_attribute(
        'aria-label', re.compile(' 4s read as 9$'))
    assert page.locator('#confusion-panel').evaluate('d => d.open')
    assert not page.locator('#compare-panel').evaluate('d => d.open')
    assert not page.locator('#inside-panel').evaluate('d => d.open')
    expect(page.locator('#confusion-info')).to_contain_text('v3 read ')
    # Opening a panel is written back to the address, for the next link.
    page.locator('#compare-panel summary').click()
    page.wait_for_function("location.hash.includes('open=compare%2Cconfusion')")
    assert page.errors == []
    page.close()


def test_the_live_row_follows_training(page, server):
    api(server, 'reset')
    page.reload()
    expect(page.locator('#units canvas').first).to_be_attached()
    draw(page, DIGITS[7])
    answer(page)
    live = page.locator('#compare-table tbody tr:first-child td.pct')  # the trainable net
    expect(live).not_to_have_text('')
    before = live.text_content()
    page.fill('#epochs', '1')
    page.click('#train')
    expect(page.locator('#train-status')).to_contain_text('your net now reads ',
                                                          timeout=60_000)
    expect(live).not_to_have_text(before)


@pytest.mark.parametrize('name, viewport', [('desktop', DESKTOP), ('phone', PHONE)])
def test_teaching_layout_fits_and_screenshots(browser, server, shipped, name,  # noqa: F811
                                              viewport):
    phone = name == 'phone'
    api(server, 'pretrain')
    page = open_page(browser, server + f'#model=v{shipped["best"]}&cell=4-9',
                     viewport=viewport, has_touch=phone, is_mobile=phone,
                     device_scale_factor=2 if phone else 1)
    expect(page.locator('#cell-examples li').first).to_be_visible(timeout=60_000)
    if phone:
        touch_draw(page, DIGITS[4])
    else:
        draw(page, DIGITS[4])
    assert answer(page)[0] == '4'
    expect(page.locator('#layers .units-top li').first).to_be_visible()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f'teaching-{name}.png')
    page.screenshot(path=SHOTS / f'teaching-{name}-full.png', full_page=True)
    if not phone:  # docs/screenshot.png: from the top to the end of the confusion matrix
        box = page.locator('#confusion').bounding_box()
        scrolled = page.evaluate('window.scrollY')
        page.screenshot(path=SHOTS / 'teaching-readme.png', full_page=True, clip={
            'x': 0, 'y': 0, 'width': viewport['width'],
            'height': box['y'] + scrolled + box['height'] + 16})
    assert page.evaluate('document.documentElement.scrollWidth') <= viewport['width']
    for selector in ('#compare', '#confusion', '#inside'):
        box = page.locator(selector).bounding_box()
        assert box['x'] >= 0 and box['x'] + box['width'] <= viewport['width'], selector
    for role, label in (('button', re.compile(r'^\d+ 4s read as 9$')),
                        ('table', 'What each network reads in your drawing'),
                        ('table', 'Confusion matrix: true digit by digit read')):
        expect(page.get_by_role(role, name=label)).to_be_visible()
    assert page.errors == []
    page.close()

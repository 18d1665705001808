"""The playground in Debian's Chromium (tests/test_page.py's browser), against a real server
process on a small training file: a net of one's own design chosen, made and trained on the
page, its curves, confusion matrix and hidden units' pictures redrawn epoch by epoch from the
events; refusals next to the field they name; a set-up shared by link, with controls hidden,
restored in another browser profile; the net taken away (the NPZ loaded by the library, the
ONNX file run by onnxruntime, the model card) and an NPZ brought in, answering on the page.

Limits, defaults and choices are the server's (/models' settings.playground), never copied
here; the page is checked as a person sees it, the server's answers confirm what it holds.
"""
import re
import urllib.parse

import numpy as np
import onnxruntime
import pytest
from playwright.sync_api import expect

import better_tensorflow as btf
from tests.conftest import Process
from tests.test_page import (  # noqa: F401  browser and models_dir are fixtures
    DESKTOP_TALL,
    DIGITS,
    ROOT,
    SHOTS,
    answer,
    browser,
    draw,
    models_dir,
)
from tests.test_page_nets import open_at, request

NAME = re.compile(r'#net=([A-Za-z0-9_-]{22})')
PHONE_SMALL = {'width': 375, 'height': 667}


@pytest.fixture(scope='module')
def server(models_dir, data_file, tmp_path_factory):  # noqa: F811
    """The real server on conftest's 4,000-row MNIST file: an epoch takes a moment."""
    with Process(tmp_path_factory.mktemp('server'), '--models', str(models_dir),
                 '--data', str(data_file)) as process:
        yield f'http://127.0.0.1:{process.port}/'


@pytest.fixture(scope='module')
def offer(server):
    return request(server, 'models')['settings']['playground']


def playground(browser, url, viewport=DESKTOP_TALL):  # noqa: F811
    page = open_at(browser, url, viewport=viewport)
    expect(page.locator('#pg-layers')).to_be_attached()
    page.locator('#playground').scroll_into_view_if_needed()
    return page


def choose(page, hidden, **values):
    """Fill the form as a learner does: the number of layers, their units, then the rest."""
    page.fill('#pg-layers', str(len(hidden)))
    for i, units in enumerate(hidden):
        page.fill(f'#pg-units-{i}', str(units))
    for key, value in values.items():
        box = page.locator(f'#pg-{key}')
        if box.evaluate('e => e.tagName') == 'SELECT':
            box.select_option(value)
        else:
            box.fill(str(value))
        box.dispatch_event('change')


# Every epoch's picture of the page as the events redraw it: the hidden units' pixels, the
# matrix's numbers and the curves' points, taken when #pg-watch says a new epoch is shown.
RECORD = """() => {
  window.epochs = [];
  const watch = document.querySelector('#pg-watch');
  new MutationObserver(() => window.epochs.push({
    epoch: Number(watch.dataset.epoch),
    pictures: [...document.querySelectorAll('#pg-pictures canvas')].map((c) => c.toDataURL()),
    matrix: [...document.querySelectorAll('#pg-matrix tbody tr')].map((tr) =>
      [...tr.querySelectorAll('td span')].map((s) => Number(s.textContent))),
    points: Object.fromEntries(['pg-loss', 'pg-accuracy'].flatMap((chart) =>
      [...document.querySelectorAll(`#${chart} g[data-series]`)].map((g) =>
        [`${chart} ${g.dataset.series}`, g.querySelectorAll('circle').length]))),
  })).observe(watch, { attributes: true, attributeFilter: ['data-epoch'] });
}"""


def test_a_net_of_my_design_trains_and_the_page_shows_each_epoch(  # noqa: F811
        browser, server, offer, tmp_path):  # noqa: F811
    page = playground(browser, server + '#open=playground')
    # The server's defaults and limits, as the form shows them.
    defaults = offer['defaults']
    expect(page.locator('#pg-learning_rate')).to_have_value(str(defaults['learning_rate']))
    expect(page.locator('#pg-batch_size')).to_have_value(str(defaults['batch_size']))
    expect(page.locator('#pg-activation')).to_have_value(defaults['activation'])
    expect(page.locator('#pg-layers')).to_have_attribute('max', str(offer['max_hidden_layers']))
    expect(page.locator('#pg-units-0')).to_have_attribute('max', str(offer['max_units']))
    expect(page.locator('#pg-epochs')).to_have_attribute('max', str(offer['max_epochs']))
    expect(page.locator('#pg-momentum-row')).to_be_hidden()  # plain SGD has none

    choose(page, [24, 12], activation='relu', optimizer='momentum', momentum='0.8',
           learning_rate='0.05', batch_size='32', weight_decay='0.0001', schedule='cosine',
           epochs='3')
    expect(page.locator('#pg-momentum')).to_be_visible()
    page.evaluate(RECORD)
    page.click('#pg-train')  # no net of one's own yet: "Make and train it"
    expect(page.locator('#pg-status')).to_contain_text('Trained 3 epochs', timeout=180_000)

    name = NAME.search(page.url).group(1)
    net = request(server, f'nets/{name}')
    assert net['sizes'] == [784, 24, 12, 10] and net['epochs'] == 3
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(page.locator('#pg-net')).to_contain_text('Your net: 784-24-12-10, 3 epochs trained')
    # The set-up is in the address.
    setup = dict(urllib.parse.parse_qsl(page.url.split('#', 1)[1]))
    assert {k: setup[k] for k in ('hidden', 'activation', 'optimizer', 'momentum',
                                  'learning_rate', 'batch_size', 'weight_decay', 'schedule',
                                  'epochs')} == {
        'hidden': '24-12', 'activation': 'relu', 'optimizer': 'momentum', 'momentum': '0.8',
        'learning_rate': '0.05', 'batch_size': '32', 'weight_decay': '0.0001',
        'schedule': 'cosine', 'epochs': '3'}

    # Each epoch redrew the curves (one more point per series), the matrix and the pictures.
    page.wait_for_function('window.epochs.length >= 3')
    seen = page.evaluate('window.epochs')
    assert [s['epoch'] for s in seen] == [1, 2, 3]
    for i, shot in enumerate(seen, 1):
        assert shot['points'] == {'pg-loss training': i, 'pg-loss validation': i,
                                  'pg-accuracy training': i, 'pg-accuracy validation': i}
        assert len(shot['pictures']) == 16  # the first units of 24
        assert len(shot['matrix']) == 10 and all(len(row) == 10 for row in shot['matrix'])
    assert seen[0]['pictures'] != seen[1]['pictures'] != seen[2]['pictures']
    assert seen[0]['matrix'] != seen[2]['matrix']  # the net reads differently after training
    # The matrix counts the validation images the server measured, the diagonal its accuracy.
    status = request(server, f'train/status?net={name}')
    last = np.array(seen[-1]['matrix'])
    assert last.tolist() == status['view']['confusion']
    assert last.sum() == status['view']['view_samples']
    expect(page.locator('#pg-epoch')).to_contain_text('Epoch 3 of 3')

    # What the page chose is what the server made: the downloaded NPZ says so.
    with page.expect_download() as download:
        page.click('#pg-download-npz')
    path = tmp_path / 'mine.npz'
    download.value.save_as(path)
    mine = btf.Graph.from_file(path)
    assert mine.sizes == (784, 24, 12, 10) and mine.epochs == 3
    assert mine.config.activation == 'relu' and mine.config.optimizer == 'sgd'
    assert mine.config.momentum == pytest.approx(0.8) and not mine.config.nesterov
    assert mine.learning_rate == pytest.approx(0.05) and mine.batch_size == 32
    assert mine.config.weight_decay == pytest.approx(0.0001)
    assert mine.config.schedule[0] == 'cosine'

    # Trained again with other learning options: they go with the training and stay with
    # the net; the curves start again with the new job.
    choose(page, [24, 12], learning_rate='0.02', optimizer='adam', epochs='1')
    page.click('#pg-train')
    expect(page.locator('#pg-status')).to_contain_text('Trained 1 epoch:', timeout=180_000)
    again = request(server, f'nets/{name}')
    assert again['epochs'] == 4 and again['learning_rate'] == pytest.approx(0.02)
    assert again['options']['optimizer'] == 'adam' and again['options']['activation'] == 'relu'
    expect(page.locator('#pg-loss g[data-series="training"] circle')).to_have_count(1)
    expect(page.locator('#pg-net')).to_contain_text('4 epochs trained (relu; Adam')
    choose(page, [24, 12], learning_rate='0.05', optimizer='momentum', epochs='3')

    # Another browser profile opens the link (on a phone): the same net, the same set-up, and
    # the last epoch's curves, matrix and pictures.
    other = open_at(browser, page.url, viewport=PHONE_SMALL)
    expect(other.locator('#pg-loss g[data-series="validation"] circle')).to_have_count(1)
    expect(other.locator('#pg-pictures canvas')).to_have_count(16)
    expect(other.locator('#pg-matrix')).to_be_visible()
    expect(other.locator('#pg-epoch')).to_contain_text('Epoch 1 of 1')
    assert other.eval_on_selector('#pg-pictures canvas', 'c => c.toDataURL()') \
        == page.eval_on_selector('#pg-pictures canvas', 'c => c.toDataURL()')
    expect(other.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    expect(other.locator('#pg-units-1')).to_have_value('12')
    expect(other.locator('#pg-optimizer')).to_have_value('momentum')
    expect(other.locator('#pg-momentum')).to_have_value('0.8')
    expect(other.locator('#pg-schedule')).to_have_value('cosine')
    expect(other.locator('#pg-net')).to_contain_text('Your net: 784-24-12-10')
    assert other.errors == [] and page.errors == []
    SHOTS.mkdir(exist_ok=True)
    page.locator('#playground').screenshot(path=SHOTS / 'playground-desktop.png')
    other.locator('#pg-watch').screenshot(path=SHOTS / 'playground-phone-trained.png')
    assert other.evaluate('document.documentElement.scrollWidth') <= PHONE_SMALL['width']
    other.context.close()
    page.context.close()


def test_refusals_are_shown_next_to_the_field_they_name(browser, server, offer):  # noqa: F811
    page = playground(browser, server + '#open=playground')
    too_many = offer['max_units'] + 1
    choose(page, [too_many])
    page.click('#pg-make')
    error = page.locator('#pg-hidden-error')
    expect(error).to_be_visible()
    expect(error).to_contain_text(f'{too_many} units')
    expect(error).to_contain_text(f'--max-units {offer["max_units"]}')
    expect(page.locator('#pg-units-0')).to_have_attribute('aria-invalid', 'true')
    assert '#net=' not in page.url or 'net=class' in page.url  # nothing was made

    # Typing again clears it; a learning rate the library refuses names its own field.
    choose(page, [32], learning_rate='-1')
    expect(error).to_be_hidden()
    page.click('#pg-make')
    rate = page.locator('#pg-learning_rate-error')
    expect(rate).to_contain_text('learning_rate')
    expect(page.locator('#pg-learning_rate')).to_have_attribute('aria-invalid', 'true')
    expect(page.locator('#pg-hidden-error')).to_be_hidden()

    # Momentum out of range: the library's words, next to momentum.
    choose(page, [32], learning_rate='0.1', optimizer='nesterov', momentum='1.5')
    page.click('#pg-make')
    expect(page.locator('#pg-momentum-error')).to_contain_text('momentum')
    expect(page.locator('#pg-learning_rate-error')).to_be_hidden()
    # What the browser can tell alone: a number where a number goes.
    choose(page, [32], momentum='0.9', batch_size='')
    page.click('#pg-make')
    expect(page.locator('#pg-batch_size-error')).to_contain_text('Batch size: type a number')
    assert NAME.search(page.url) is None  # still no net of one's own
    assert page.errors == []
    page.context.close()


# A teacher's link: a set-up and the controls the class should not change.
LINK = ('#open=playground&hidden=40-20&activation=tanh&optimizer=nesterov&momentum=0.7'
        '&learning_rate=0.2&batch_size=64&weight_decay=0.001&schedule=step&epochs=4'
        '&hide=optimizer,momentum,reset,upload,whose')


def test_a_link_restores_the_set_up_and_hides_the_controls_it_names(browser, server,  # noqa: F811
                                                                    tmp_path):
    page = playground(browser, server + LINK)
    expect(page.locator('#pg-layers')).to_have_value('2')
    expect(page.locator('#pg-units-0')).to_have_value('40')
    expect(page.locator('#pg-units-1')).to_have_value('20')
    for key, value in [('activation', 'tanh'), ('optimizer', 'nesterov'), ('momentum', '0.7'),
                       ('learning_rate', '0.2'), ('batch_size', '64'),
                       ('weight_decay', '0.001'), ('schedule', 'step'), ('epochs', '4')]:
        expect(page.locator(f'#pg-{key}')).to_have_value(value)
    for hidden in ('#pg-optimizer-row', '#pg-momentum-row', '#reset', '#pg-bring', '#whose'):
        expect(page.locator(hidden)).to_be_hidden()
    for shown in ('#pg-activation', '#pg-learning_rate', '#pretrain', '#pg-make', '#pg-take',
                  '#train'):
        expect(page.locator(shown)).to_be_visible()
    # The page keeps the link's words when it rewrites the address.
    choose(page, [40, 20], epochs='2')
    expect(page).to_have_url(re.compile('hide=optimizer%2Cmomentum%2Creset%2Cupload%2Cwhose'))
    expect(page).to_have_url(re.compile('epochs=2'))

    # Made and trained with the hidden choices (the class cannot change them).
    page.click('#pg-train')
    expect(page.locator('#pg-status')).to_contain_text('Trained 2 epochs', timeout=180_000)
    name = NAME.search(page.url).group(1)
    assert request(server, f'nets/{name}')['sizes'] == [784, 40, 20, 10]
    with page.expect_download() as download:
        page.click('#pg-download-npz')
    download.value.save_as(tmp_path / 'set-up.npz')
    net = btf.Graph.from_file(tmp_path / 'set-up.npz')
    assert net.config.nesterov and net.config.momentum == pytest.approx(0.7)
    assert net.config.activation == 'tanh' and net.config.schedule[0] == 'step'

    # The same link on a phone, in another profile.
    phone = playground(browser, server + LINK, viewport=PHONE_SMALL)
    expect(phone.locator('#pg-optimizer-row')).to_be_hidden()
    expect(phone.locator('#pg-units-0')).to_have_value('40')
    width = phone.evaluate('document.documentElement.scrollWidth')
    assert width <= PHONE_SMALL['width']  # nothing sticks out sideways
    SHOTS.mkdir(exist_ok=True)
    phone.locator('#playground').screenshot(path=SHOTS / 'playground-phone.png')
    assert page.errors == [] and phone.errors == []
    phone.context.close()
    page.context.close()


def test_downloads_load_elsewhere_and_an_upload_answers(browser, server, mnist, tmp_path):  # noqa: F811
    made = request(server, 'nets', {'from': 'fresh', 'sizes': [784, 32, 10],
                                    'options': {'activation': 'relu', 'optimizer': 'adam',
                                                'learning_rate': 0.005}})
    request(server, 'train', {'net': made['net'], 'epochs': 1})
    page = playground(browser, f'{server}#net={made["net"]}&open=playground')

    files = {}
    for format in ('npz', 'onnx', 'card'):
        with page.expect_download() as download:
            page.click(f'#pg-download-{format}')
        files[format] = tmp_path / download.value.suggested_filename
        download.value.save_as(files[format])
    assert files['npz'].suffix == '.npz' and files['onnx'].suffix == '.onnx'
    net = btf.Graph.from_file(files['npz'])
    assert net.sizes == (784, 32, 10) and net.epochs == 1 and net.config.optimizer == 'adam'
    # The ONNX file answers as the library does, on MNIST's test images.
    (_, _), (X_test, _) = mnist
    X = (X_test[:500].reshape(500, -1) / 255).astype(np.float32)
    session = onnxruntime.InferenceSession(str(files['onnx']))
    (confidences,) = session.run(['confidences'], {'input': X})
    np.testing.assert_allclose(confidences, net.predict_batch(X)[1], atol=1e-5)
    card = files['card'].read_text()
    assert '784-32-10' in card or '784, 32, 10' in card

    # A shipped model chosen in the list: its files are the ones downloaded.
    shipped = request(server, 'models')
    best = shipped['best']
    page.select_option('#model-choice', str(best))
    with page.expect_download() as download:
        page.click('#pg-download-npz')
    sizes = next(m['sizes'] for m in shipped['pretrained'] if m['version'] == best)
    download.value.save_as(tmp_path / 'shipped.npz')
    assert list(btf.Graph.from_file(tmp_path / 'shipped.npz').sizes) == sizes

    # Bring the best shipped model in: the page switches to the new net, which answers as
    # that model does.
    page.select_option('#model-choice', index=0)
    page.set_input_files('#pg-upload', str(ROOT / 'models' / f'model-v{best}.npz'))
    expect(page.locator('#pg-status')).to_contain_text(
        f'Your net is now the one in model-v{best}.npz', timeout=60_000)
    expect(page).not_to_have_url(re.compile(f'net={made["net"]}'))
    name = NAME.search(page.url).group(1)
    assert request(server, f'nets/{name}')['sizes'] == sizes
    expect(page.locator('#use-mine')).to_have_attribute('aria-pressed', 'true')
    # The form now describes the net brought in.
    expect(page.locator('#pg-layers')).to_have_value(str(len(sizes) - 2))
    expect(page.locator('#pg-units-0')).to_have_value(str(sizes[1]))
    expect(page.locator('#pg-net')).to_contain_text(f'Your net: {"-".join(map(str, sizes))}')
    draw(page, DIGITS[4])
    label, who, mine = answer(page)
    assert who == 'Answered by your net.'
    page.select_option('#model-choice', str(best))
    expect(page.locator('#answered-by')).to_contain_text(f'v{best}')
    assert answer(page)[0] == label and answer(page)[2] == mine

    # A file that is not a net: refused in words, the page keeps its net.
    junk = tmp_path / 'notes.npz'
    junk.write_bytes(b'not a zip file at all')
    page.set_input_files('#pg-upload', str(junk))
    expect(page.locator('#pg-error')).to_contain_text('notes.npz was not brought in')
    assert NAME.search(page.url).group(1) == name
    assert page.errors == []
    page.context.close()

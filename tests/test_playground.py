"""A net of one's own to play with, through real HTTP: a fresh net of a chosen shape and
options (every bad option and limit refused by name), training options kept in the saved
version, the per-epoch view, export (NPZ, ONNX checked with onnxruntime, the model card) and
import, hostile uploads refused with memory bounded."""
import base64
import http.client
import io
import json
import threading
import zipfile

import numpy as np
import onnx
import onnxruntime
import pytest

import better_tensorflow as btf
import preprocess
from service import exporting, trainer

from .conftest import (
    DIGIT,
    Process,
    confidences,
    many_members,
    tiny_data,
    zip_bomb,
)

OCTETS = {'Content-Type': 'application/octet-stream'}


def fresh(s, sizes=(784, 24, 10), **options):
    answer = s.post('/nets', {'from': 'fresh', 'sizes': list(sizes), 'options': options})
    assert answer.status == 201, answer
    return answer.json


def nets_count(s):
    return s.get('/nets').json['total']


# ---------------------------------------------------------------------------------------
# Choosing a net.

def test_a_fresh_net_has_the_shape_and_options_chosen(serve):
    with serve() as s:
        made = fresh(s, (784, 40, 20, 10), activation='tanh', optimizer='sgd', momentum=0.8,
                     nesterov=True, learning_rate=0.05, batch_size=32, weight_decay=1e-4,
                     schedule=['cosine', 20, 0.001], output='sigmoid', cost='mse',
                     init='normal', seed=7)
        assert made['sizes'] == [784, 40, 20, 10] and made['from'] == 'fresh'
        described = s.get(f'/nets/{made["net"]}').json
        assert described['learning_rate'] == 0.05 and described['batch_size'] == 32
        assert described['options'] == {
            'activation': 'tanh', 'output': 'sigmoid', 'cost': 'mse', 'init': 'normal',
            'optimizer': 'sgd', 'momentum': 0.8, 'nesterov': True, 'weight_decay': 1e-4,
            'schedule': ['cosine', 20.0, 0.001], 'dtype': 'float32', 'seed': 7}
        # The same seed and options make the same weights as the library does.
        mine = btf.Graph.from_file(io.BytesIO(
            s.get(f'/nets/{made["net"]}/export?format=npz').body))
        reference = btf.Graph((784, 40, 20, 10), 0.05, 32, activation='tanh', momentum=0.8,
                              nesterov=True, weight_decay=1e-4, schedule=('cosine', 20, 0.001),
                              output='sigmoid', cost='mse', init='normal', seed=7)
        for a, b in zip(mine.weights + mine.biases, reference.weights + reference.biases):
            np.testing.assert_array_equal(a, b)
        # Without options: the library's defaults; the page reads them from /models.
        plain = s.post('/nets', {'from': 'fresh', 'sizes': [784, 10]})
        assert plain.status == 201 and plain.json['options']['activation'] == 'sigmoid'
        offered = s.get('/models').json['settings']['playground']
        assert offered['defaults']['learning_rate'] == plain.json['learning_rate'] == 0.5
        assert offered['max_hidden_layers'] == 4 and offered['max_units'] == 2048
        assert offered['choices']['optimizer'] == ['adam', 'sgd']


BAD_OPTIONS = [
    ({'learning_rate': 'fast'}, "options.learning_rate must be a positive number, got 'fast'"),
    ({'learning_rate': 0}, 'options.learning_rate must be a positive number'),
    ({'batch_size': 0}, 'options.batch_size must be a positive int (below 2**63), got 0'),
    ({'batch_size': 2 ** 70}, 'options.batch_size must be a positive int (below 2**63)'),
    ({'batch_size': 12.5}, 'options.batch_size must be a positive int'),
    ({'activation': 'swish'}, "options.activation must be one of ['relu', 'sigmoid', 'tanh']"),
    ({'output': 'relu'}, 'options.output must be one of'),
    ({'cost': 'hinge'}, 'options.cost must be one of'),
    ({'init': 'zeros'}, 'options.init must be one of'),
    ({'optimizer': 'rmsprop'}, "options.optimizer must be one of ['adam', 'sgd']"),
    ({'momentum': 1}, 'options.momentum must be a number in [0, 1), got 1'),
    ({'momentum': True}, 'options.momentum must be a number'),
    ({'optimizer': 'adam', 'momentum': 0.9}, "options.momentum applies to optimizer='sgd'"),
    ({'nesterov': True}, 'options.nesterov=True needs momentum > 0'),
    ({'nesterov': 'yes', 'momentum': 0.5}, 'options.nesterov must be True or False'),
    ({'weight_decay': -1}, 'options.weight_decay must be a number >= 0'),
    ({'schedule': 'warmup'}, 'options.schedule must be one of'),
    ({'schedule': ['step', 0, 0.5]}, 'options.schedule must be one of'),
    ({'seed': -3}, 'options.seed must be a non-negative int'),
    ({'dtype': 'float64'}, 'options.dtype is not an option here'),
    ({'dropout': 0.5}, 'options.dropout is not an option here'),
]
BAD_SHAPES = [
    ({'sizes': [784, 2049, 10]}, 'hidden layer 1 has 2049 units', '--max-units 2048'),
    ({'sizes': [784, 8, 8, 8, 8, 8, 10]}, 'sizes has 5 hidden layers',
     '--max-hidden-layers 4'),
    ({'sizes': [784, 0, 10]}, 'hidden layer 1 has 0 units', '--max-units'),
    ({'sizes': [785, 30, 10]}, 'sizes must start with 784', 'end with 10'),
    ({'sizes': [784, 30, 9]}, 'sizes must start with 784', 'end with 10'),
    ({'sizes': [784]}, 'sizes must be a list of layer sizes', '[784, 64, 10]'),
    ({'sizes': '784-30-10'}, 'sizes must be a list of layer sizes', '784-30-10'),
    ({'sizes': [784, 30.5, 10]}, 'sizes must be a list of layer sizes', '30.5'),
    ({'sizes': [784, True, 10]}, 'sizes must be a list of layer sizes', 'true'),
    ({'options': [1, 2]}, 'options must be an object', '[1, 2]'),
    ({'options': None}, 'options must be an object', 'null'),
]


def test_every_bad_option_and_limit_is_refused_by_name_and_makes_nothing(serve):
    with serve() as s:
        for options, message in BAD_OPTIONS:
            answer = s.post('/nets', {'from': 'fresh', 'sizes': [784, 30, 10],
                                      'options': options})
            assert answer.status == 400 and message in answer.json['error'], (options, answer)
        for body, message, limit in BAD_SHAPES:
            answer = s.post('/nets', {'from': 'fresh', **body})
            assert answer.status == 400, (body, answer)
            assert message in answer.json['error'] and limit in answer.json['error'], answer
        copied = s.post('/nets', {'from': 'live', 'options': {'learning_rate': 0.1}})
        assert copied.status == 400 and '"from": "fresh"' in copied.json['error']
        assert nets_count(s) == 0
    # The limits are the server's flags.
    with serve(max_hidden_layers=1, max_units=50) as s:
        wide = s.post('/nets', {'from': 'fresh', 'sizes': [784, 51, 10]})
        assert wide.status == 400 and '--max-units 50' in wide.json['error']
        deep = s.post('/nets', {'from': 'fresh', 'sizes': [784, 20, 20, 10]})
        assert deep.status == 400 and '--max-hidden-layers 1' in deep.json['error']
        assert s.post('/nets', {'from': 'fresh', 'sizes': [784, 50, 10]}).status == 201


def test_a_training_past_the_budget_of_one_job_is_refused_and_queues_nothing(serve_data):
    """The widest net the limits allow for 100 epochs would hold a training slot for hours:
    one /train may do at most --max-training-work weight-epochs (100 epochs of 784-800-10),
    and a batch under 64 rows counts as 64."""
    with serve_data() as s:
        wide = s.post('/nets', {'from': 'fresh', 'sizes': [784, 2048, 2048, 2048, 2048, 10]})
        name = wide.json['net']
        refused = s.post('/train', {'net': name, 'epochs': 5})
        assert refused.status == 400, refused
        assert refused.json['error'].startswith('epochs: 5 epochs of this net (14,217,226 '
                                                'weights) are 71,086,130 weight-epochs')
        assert '(--max-training-work): ask for at most 4 epochs' in refused.json['error']
        small = s.post('/nets', {'from': 'fresh', 'sizes': [784, 30, 10]}).json['net']
        tiny = s.post('/train', {'net': small, 'epochs': 100, 'options': {'batch_size': 1}})
        assert tiny.status == 400 and 'batches of 1 counted as 64' in tiny.json['error']
        for net in (name, small):
            status = s.get(f'/train/status?net={net}').json
            assert status['running'] is False and status.get('state') != 'queued', status
        assert s.get(f'/nets/{name}/versions').json['current'] == 1
    with serve_data(max_training_work=10 * 23_860) as s:  # ten epochs of 784-30-10
        small = s.post('/nets', {'from': 'fresh', 'sizes': [784, 30, 10]}).json['net']
        assert s.post('/train', {'net': small, 'epochs': 11}).status == 400
        assert s.post('/train', {'net': small, 'epochs': 2}).status == 200


# ---------------------------------------------------------------------------------------
# Training with options, and what each epoch shows.

def follow(port, net, events, ready):
    """Read /train/events?net= into ``events`` until "done" (``ready`` set once open)."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=300)
    conn.request('GET', f'/train/events?net={net}')
    event = None
    try:
        for line in conn.getresponse():
            line = line.decode().rstrip('\n')
            if line.startswith('event: '):
                event = line[7:]
            elif line.startswith('data: '):
                events.append((event, json.loads(line[6:])))
                ready.set()
                if event == 'done':
                    break
    finally:
        conn.close()


def test_training_options_are_applied_kept_and_each_epoch_is_shown(serve_data, data_file,
                                                                   tmp_path):
    with serve_data(data_path=tiny_data(data_file, tmp_path, rows=640)) as s:
        name = fresh(s, (784, 20, 10), learning_rate=0.5)['net']
        before = s.get(f'/nets/{name}/versions').json['current']
        # Bad training options: 400 naming the field, nothing queued.
        for options, message in [({'learning_rate': -1}, 'options.learning_rate must be'),
                                 ({'activation': 'tanh'}, 'options.activation is not an '
                                                          'option here'),
                                 ({'nesterov': True}, 'options.nesterov=True needs momentum'),
                                 ('fast', 'options must be an object'),
                                 (None, 'options must be an object')]:
            answer = s.post('/train', {'net': name, 'epochs': 1, 'options': options})
            assert answer.status == 400 and message in answer.json['error'], answer
        assert s.get(f'/train/status?net={name}').json['state'] == 'idle'
        assert s.get(f'/nets/{name}/versions').json['current'] == before

        events, ready = [], threading.Event()
        reader = threading.Thread(target=follow, args=(s.port, name, events, ready))
        reader.start()
        assert ready.wait(60)
        options = {'learning_rate': 0.25, 'batch_size': 64, 'momentum': 0.9, 'nesterov': True,
                   'weight_decay': 1e-4, 'schedule': ['step', 1, 0.5]}
        trained = s.post('/train', {'net': name, 'epochs': 2, 'options': options})
        assert trained.status == 200, trained
        reader.join(120)

        # Kept in the saved version: the next training starts from them.
        described = s.get(f'/nets/{name}').json
        assert described['learning_rate'] == 0.25 and described['batch_size'] == 64
        assert described['options']['momentum'] == 0.9 and described['options']['nesterov']
        assert described['options']['schedule'] == ['step', 1.0, 0.5]
        saved = btf.Graph.from_file(tmp_path / 'state' / 'nets' / name / 'net.npz')
        assert saved.batch_size == 64 and saved.optimizer.velocities  # momentum's state

        epochs = [data for event, data in events if event == 'epoch']
        assert [e['epoch'] for e in epochs] == [1, 2]
        assert [e['learning_rate'] for e in epochs] == [0.25, 0.125]  # the step schedule
        for e in epochs:
            assert 0 <= e['train_accuracy'] <= 1 and e['val_loss'] > 0
            confusion = np.array(e['confusion'])
            assert confusion.shape == (10, 10) and confusion.sum() == e['view_samples'] == 640
            units = e['units']
            assert units['shape'] == [28, 28] and units['total'] == 20
            assert len(units['pixels']) == trainer.VIEW_UNITS
            assert all(len(base64.b64decode(p)) == 784 for p in units['pixels'])
        # The last epoch's view is the saved net's: its matrix and pictures, measured again.
        data = preprocess.load_dataset(tmp_path / 'data-640.npz')
        view = trainer.epoch_view(saved, trainer.view_data(data))
        assert epochs[-1]['confusion'] == view['confusion']
        assert epochs[-1]['units'] == view['units']
        assert epochs[-1]['val_loss'] == view['val_loss']
        assert np.trace(np.array(view['confusion'])) / 640 == pytest.approx(
            epochs[-1]['val_accuracy'], abs=1e-4)
        status = s.get(f'/train/status?net={name}').json
        assert status['batches'] == 10  # 640 images in batches of 64
        assert status['view']['epoch'] == 2 and status['view']['confusion'] == view['confusion']
        assert [h['train_accuracy'] for h in status['history']] == \
            [e['train_accuracy'] for e in epochs]
        # The card has the figure, and says how it was measured.
        card = s.get(f'/nets/{name}/export?format=card').body.decode()
        assert f'{100 * trained.json["validation_accuracy"]:.2f}%' in card
        assert '14,000 validation images' in card and 'momentum 0.9 (Nesterov)' in card


def test_a_unit_picture_is_its_weights():
    net = btf.Graph((784, 3, 10), seed=1)
    pictures = trainer.unit_pictures(net)
    assert pictures['total'] == 3 and len(pictures['pixels']) == 3
    for unit, encoded in enumerate(pictures['pixels']):
        pixels = np.frombuffer(base64.b64decode(encoded), np.uint8)  # pixel i: input i
        w = net.weights[0][:, unit]
        assert pixels[np.argmax(np.abs(w))] in (1, 255)  # its strongest weight
        clear = np.abs(w) > np.abs(w).max() / 127
        assert np.all((pixels[clear] > 128) == (w[clear] > 0))


# ---------------------------------------------------------------------------------------
# Export and import.

def test_an_exported_net_imported_again_answers_identically(serve, models):
    _, shipped = models
    with serve(nets_per_hour=2) as s:
        made = fresh(s, (784, 32, 16, 10), activation='relu', optimizer='adam', seed=3)
        name = made['net']
        answer = s.get(f'/nets/{name}/export?format=npz')
        assert answer.status == 200
        assert answer.headers['Content-Type'] == 'application/octet-stream'
        assert answer.headers['Content-Disposition'] == \
            f'attachment; filename="net-{name[:6]}-v1.npz"'
        net = btf.Graph.from_file(io.BytesIO(answer.body))
        assert net.sizes == (784, 32, 16, 10) and net.config.optimizer == 'adam'

        imported = s.post('/nets/import', answer.body, headers=OCTETS)
        assert imported.status == 201, imported
        other = imported.json['net']
        assert other != name and imported.json['from'] == 'import'
        assert imported.json['sizes'] == [784, 32, 16, 10]
        first = s.post('/predict', {'image': DIGIT, 'net': name}).json
        second = s.post('/predict', {'image': DIGIT, 'net': other}).json
        np.testing.assert_array_equal(confidences(first), confidences(second))
        with np.load(io.BytesIO(answer.body)) as a, np.load(io.BytesIO(
                s.get(f'/nets/{other}/export?format=npz').body)) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)

        # A shipped model: the same file the library saved.
        model = s.get('/models/1/export?format=npz')
        assert model.headers['Content-Disposition'] == 'attachment; filename="model-v1.npz"'
        loaded = btf.Graph.from_file(io.BytesIO(model.body))
        for a, b in zip(loaded.weights, shipped[1].weights):
            np.testing.assert_array_equal(a, b)
        assert s.get('/models/9/export').status == 404
        live = s.get('/nets/live/export?format=card')
        assert live.status == 200 and live.body.decode().startswith('---')
        assert live.headers['Content-Disposition'] == 'attachment; filename="live-v1.md"'
        assert '# The shared net, version 1' in live.body.decode()
        bad = s.get(f'/nets/{name}/export?format=pickle')
        assert bad.status == 400 and 'npz, onnx, card' in bad.json['error']
        assert s.get('/nets/AAAAAAAAAAAAAAAAAAAAAA/export').status == 404

        # Counted as POST /nets is: a third net this hour is one too many.
        refused = s.post('/nets/import', answer.body, headers=OCTETS)
        assert refused.status == 429 and '--nets-per-hour' in refused.json['error']
    with serve(max_nets=1) as s:
        full = s.post('/nets/import', answer.body, headers=OCTETS)
        assert full.status == 507 and '--max-nets' in full.json['error']


@pytest.mark.parametrize('activation,output', [('sigmoid', 'softmax'), ('tanh', 'sigmoid'),
                                               ('relu', 'softmax')])
def test_the_onnx_file_answers_as_the_library(serve, mnist, activation, output):
    assert set(exporting.ONNX_OPS) == set(btf.ACTIVATIONS)  # every activation exports
    (_, _), (X_test, _) = mnist
    X = X_test[:2000].astype(np.float32) / np.float32(255)
    with serve() as s:
        name = fresh(s, (784, 48, 24, 10), activation=activation, output=output, seed=5)['net']
        answer = s.get(f'/nets/{name}/export?format=onnx')
        assert answer.status == 200
        assert answer.headers['Content-Disposition'].endswith('.onnx"')
        net = btf.Graph.from_file(io.BytesIO(s.get(f'/nets/{name}/export?format=npz').body))
    model = onnx.load_from_string(answer.body)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 13
    (given,), (out,) = model.graph.input, model.graph.output
    assert given.name == 'input' and out.name == 'confidences'
    assert given.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in given.type.tensor_type.shape.dim] == ['n', 784]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ['n', 10]
    session = onnxruntime.InferenceSession(answer.body, providers=['CPUExecutionProvider'])
    got = session.run(['confidences'], {'input': X})[0]
    expected = net.predict_batch(X)[1]
    assert got.shape == (2000, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_a_shipped_models_card_has_its_figures(serve, models):
    with serve() as s:
        answer = s.get('/models/2/export?format=card')
        assert answer.status == 200
        assert answer.headers['Content-Type'] == 'text/markdown; charset=utf-8'
        assert answer.headers['Content-Disposition'] == 'attachment; filename="model-v2.md"'
        card = answer.body.decode()
    assert card.startswith('---\nlibrary_name: better-tensorflow')
    assert '| test accuracy | 20.00% | the official MNIST test set, 10,000 images' in card
    assert 'seed 2' in card  # the manifest's recipe (conftest.write_models)
    for section in ('## Data', '## Recipe', '## Figures', '## Versions', '## Limits'):
        assert section in card
    assert f'numpy {np.__version__}' in card and f'onnx {onnx.__version__}' in card


# ---------------------------------------------------------------------------------------
# Hostile uploads.

def npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def model_file(members, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def declared_zeros(shape):
    """An .npy of float32 zeros of ``shape`` (deflated in a zip: a few bytes per MB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {'descr': '<f4', 'fortran_order': False, 'shape': tuple(shape)})
    return header.getvalue() + bytes(4 * int(np.prod(shape)))


def hostile_uploads():
    """(what, body, words the refusal must hold)."""
    good = btf.Graph((784, 30, 10), seed=0)
    saved = io.BytesIO()
    good.save(saved)
    with zipfile.ZipFile(io.BytesIO(saved.getvalue())) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    wide = btf.Graph((784, 8, 8, 8, 8, 8, 10), seed=0)
    deep = io.BytesIO()
    wide.save(deep)
    other = io.BytesIO()
    btf.Graph((100, 30, 10), seed=0).save(other)
    biggest = [784, 2048, 2048, 2048, 2048, 10]  # within the limits, so a bomb needs more
    bomb = {'sizes.npy': npy(np.array(biggest)), 'learning_rate.npy': npy(np.float64(0.5)),
            'batch_size.npy': npy(np.int64(128)), 'epochs.npy': npy(np.int64(0)),
            'options.npy': npy(np.str_(json.dumps(btf.Options().as_dict())))}  # all it needs
    for l, (n_in, n_out) in enumerate(zip(biggest[:-1], biggest[1:])):
        bomb[f'W{l}.npy'] = declared_zeros((n_in, n_out))
        bomb[f'b{l}.npy'] = declared_zeros((n_out,))
    return [
        ('a W of the wrong shape', model_file({**members, 'W0.npy': npy(
            np.zeros((784, 31), np.float32))}), ["'W0.npy' declares", '(784, 30)']),
        ('another input size', other.getvalue(), ['100-30-10 net', 'must start with 784']),
        ('too many hidden layers', deep.getvalue(), ['5 hidden layers',
                                                     '--max-hidden-layers 4']),
        ('huge declared sizes', model_file({**members, 'sizes.npy': npy(
            np.array([784, 10 ** 9, 10]))}), ['parameters', 'at most']),
        ('a pickle', model_file({**members, 'W0.npy': npy(np.array([{'a': 1}], object))}),
         ['Python objects']),
        ('a bare pickle', b'\x80\x04\x95' + bytes(64), ['not a readable model file']),
        ('a zip bomb', zip_bomb(good, 'W0.npy', (784, 30), 200), ["'W0.npy' inflates to"]),
        ('a bomb of the largest net', model_file(bomb, zipfile.ZIP_DEFLATED),
         ['declare', 'bytes of arrays']),
        ('thirty thousand members', many_members(30_000), ['zip directory']),
        ('not a zip', b'PK' + bytes(1000), ['not a readable model file']),
    ]


def test_hostile_uploads_are_refused_with_memory_bounded(tmp_path, models):
    folder, _ = models
    uploads = hostile_uploads()
    assert len(uploads[7][1]) < 2 ** 20  # the largest net's bomb: under a megabyte...
    with Process(tmp_path, '--models', str(folder), '--max-import-bytes', str(4 * 2 ** 20)) \
            as s:
        good = s.post('/nets/import', model_file({}), headers=OCTETS)  # warms the route up
        assert good.status == 400
        start = s.peak_memory()
        for what, body, words in uploads:
            answer = s.post('/nets/import', body, headers=OCTETS)
            assert answer.status == 400, (what, answer)
            message = answer.json['error']
            assert all(w in message for w in words), (what, message)
        grown = s.peak_memory() - start
        # ...that declares 57 MB of weights: none was read.
        assert grown < 40 * 2 ** 20, f'peak memory grew by {grown / 2 ** 20:.0f} MiB'
        big = s.post('/nets/import', bytes(4 * 2 ** 20 + 1), headers=OCTETS)
        assert big.status == 413 and '--max-import-bytes 4194304' in big.json['error']
        for headers, status in (({'Content-Type': 'application/json'}, 415),
                                ({'Content-Type': 'text/plain'}, 415)):
            answer = s.post('/nets/import', uploads[0][1], headers=headers)
            assert answer.status == status and 'application/octet-stream' in \
                answer.json['error'], answer
        empty = s.call('POST', '/nets/import', b'', headers=OCTETS)
        assert empty.status == 400 and 'empty' in empty.json['error']
        cross = s.post('/nets/import', uploads[0][1],
                       headers={**OCTETS, 'Origin': 'http://evil.example'})
        assert cross.status == 403
        assert s.get('/nets').json['total'] == 0

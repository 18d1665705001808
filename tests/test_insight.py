"""What the page teaches with (service/insight.py, service/routes/insight.py): confusion
matrices on the held-out MNIST test images and their cells' digits, every net on one drawing,
the hidden activations and "not sure" of /predict; against a real server, real MNIST and
real PNGs made with OpenCV."""
import base64
import hashlib
import shutil
import threading

import cv2
import numpy as np
import pytest

import better_tensorflow as btf
import imaging
from models import test_images
from service import insight
from tests.conftest import DIGIT, ROOT, png_b64, tiny_data, write_models


def held_out_reference(path):
    """The test split's images that come from MNIST's official test set, read here
    independently of service/insight.py: (X uint8, y)."""
    with np.load(path, allow_pickle=False) as f:
        X, y, index = f['X_test'], f['y_test'], f['index_test']
        total = sum(len(f[f'y_{name}']) for name in ('train', 'val', 'test'))
    # data_file keeps the first 4,000 rows of each split but the meta of the whole file:
    # 70,000 images, the last 10,000 of them MNIST's test set.
    assert total < 70_000
    official = index >= 60_000
    assert official.any()
    return X[official], y[official].astype(int)


def reference_matrix(net, X, y):
    labels, outputs = net.predict_batch(X.astype(np.float32) / 255)
    matrix = np.zeros((10, 10), int)
    np.add.at(matrix, (y, labels), 1)
    return matrix, labels, outputs


def scribble_png():
    """Two digits' worth of strokes side by side: far wider than any MNIST digit."""
    image = np.zeros((140, 420, 4), np.uint8)
    cv2.line(image, (40, 20), (40, 120), (0, 0, 0, 255), 14)
    cv2.circle(image, (200, 70), 45, (0, 0, 0, 255), 14)
    cv2.line(image, (300, 30), (390, 110), (0, 0, 0, 255), 14)
    return png_b64(image)


# ---------------------------------------------------------------------------------------
# Confusion matrices.

def test_confusion_of_a_shipped_model_on_the_official_test_images(serve_data, models,
                                                                  data_file):
    _, nets = models
    X, y = held_out_reference(data_file)
    with serve_data() as s:
        got = s.get('/confusion?pretrained=1')
        assert got.status == 200, got
        got = got.json
    matrix, labels, _ = reference_matrix(nets[1], X, y)
    assert got['model'] == 'v1'
    assert got['images']['count'] == len(y) == np.sum(got['matrix'])
    assert f"the {len(y):,} images of the training file's test split (random split) that come " \
           "from MNIST's official 10,000-image test set" in got['images']['source']
    assert got['images']['file'] == data_file.name
    assert got['matrix'] == matrix.tolist()
    assert got['accuracy'] == pytest.approx(np.mean(labels == y), abs=1e-4)
    for d in range(10):
        assert got['per_class'][d] == pytest.approx(matrix[d, d] / matrix[d].sum(), abs=1e-4)


def test_a_file_that_does_not_say_where_its_images_come_from_uses_its_whole_test_split(
        serve, models, data_file, tmp_path):
    _, nets = models
    with np.load(data_file, allow_pickle=False) as f:
        arrays = {k: f[k][:500] for k in f.files if k.startswith(('X_', 'y_'))}
    path = tmp_path / 'bare.npz'
    np.savez(path, **arrays)
    with serve(data_path=path) as s:
        got = s.get('/confusion?pretrained=2').json
    assert got['images']['count'] == 500
    assert 'does not record which MNIST images' in got['images']['source']
    matrix, _, _ = reference_matrix(nets[2], arrays['X_test'], arrays['y_test'].astype(int))
    assert got['matrix'] == matrix.tolist()


def test_a_cell_shows_its_digits_most_confident_first_bounded(serve_data, models, data_file):
    _, nets = models
    X, y = held_out_reference(data_file)
    matrix, labels, outputs = reference_matrix(nets[1], X, y)
    off = matrix - np.diag(np.diag(matrix))
    true, read = np.unravel_index(np.argmax(off), off.shape)  # the untrained net's worst cell
    assert matrix[true, read] > 5
    with serve_data() as s:
        got = s.get(f'/confusion/examples?pretrained=1&true={true}&read={read}&limit=5').json
        everything = s.get(f'/confusion/examples?pretrained=1&true={true}&read={read}'
                           f'&limit={insight.MAX_EXAMPLES}').json
        default = s.get(f'/confusion/examples?pretrained=1&true={true}&read={read}').json
    assert (got['model'], got['true'], got['read']) == ('v1', true, read)
    assert got['count'] == matrix[true, read]
    assert len(got['examples']) == 5
    assert len(everything['examples']) == min(matrix[true, read], insight.MAX_EXAMPLES)
    assert len(default['examples']) == min(matrix[true, read], 24)
    cell = np.flatnonzero((y == true) & (labels == read))
    confidence = outputs[cell, read]
    assert [e['confidence'] for e in got['examples']] == pytest.approx(
        np.sort(confidence)[::-1][:5], abs=1e-4)
    for example in everything['examples']:
        assert example['index'] in cell
        png = base64.b64decode(example['image'].split(',', 1)[1])
        pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(pixels.reshape(-1), X[example['index']])


@pytest.mark.parametrize('query, message', [
    ('pretrained=7&true=4&read=9', 'pretrained must be one of [1, 2]'),
    ('pretrained=x&true=4&read=9', 'pretrained must be one of [1, 2]'),
    ('true=4', 'read must be a digit from 0 to 9, got nothing'),
    ('true=&read=9', 'true must be a digit from 0 to 9, got ""'),
    ('true=10&read=9', 'true must be a digit from 0 to 9, got 10'),
    ('true=4&read=-1', 'read must be a digit from 0 to 9, got "-1"'),
    ('true=4&read=9&limit=0', f'limit must be an integer from 1 to {insight.MAX_EXAMPLES}'),
    (f'true=4&read=9&limit={insight.MAX_EXAMPLES + 1}', 'limit must be an integer from 1 to'),
    ('true=4&read=9&limit=lots', 'got "lots"'),
])
def test_bad_cell_queries_are_400(serve_data, query, message):
    with serve_data() as s:
        answer = s.get(f'/confusion/examples?{query}')
    assert answer.status == 400, answer
    assert message in answer.json['error']


def test_no_test_images_is_503_in_plain_words_without_a_path(serve, tmp_path):
    broken = tmp_path / 'broken.npz'
    broken.write_bytes(b'not a zip file')
    with serve() as s:
        for path in ('/confusion', '/confusion?pretrained=1',
                     '/confusion/examples?true=4&read=9'):
            answer = s.get(path)
            assert answer.status == 503, answer
            assert 'no test images' in answer.json['error']
            assert 'make models' in answer.json['error']
            assert str(tmp_path) not in answer.json['error']
        assert s.get('/confusion?pretrained=3').status == 400
    with serve(data_path=broken) as s:
        answer = s.get('/confusion')
        assert answer.status == 503 and 'make data' in answer.json['error']
        assert str(tmp_path) not in answer.json['error']


def test_the_shipped_test_images_need_no_training_data(serve, models):
    """A fresh clone without MNIST: the matrices come from models/mnist-test.npz, MNIST's
    10,000 official test images, and they are preferred to a training file's test split."""
    folder, nets = models
    shutil.copy(ROOT / 'models' / insight.TEST_IMAGES_FILE, folder)
    with np.load(ROOT / 'models' / insight.TEST_IMAGES_FILE) as f:
        X, y = f['X'], f['y']
    with serve() as s:
        got = s.get('/confusion?pretrained=1')
        assert got.status == 200, got
        cell = s.get('/confusion/examples?pretrained=1&true=4&read=4&limit=1').json
    got = got.json
    assert got['images'] == {'count': 10_000, 'file': insight.TEST_IMAGES_FILE, 'source':
                             "MNIST's official 10,000 test images, which no net here trained on"}
    matrix, _, _ = reference_matrix(nets[1], X, np.asarray(y, int))
    assert got['matrix'] == matrix.tolist() and np.sum(got['matrix']) == 10_000
    assert cell['count'] == matrix[4, 4]


def test_the_shipped_test_images_are_what_models_test_images_documents(mnist):
    path = ROOT / 'models' / insight.TEST_IMAGES_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == test_images.SHA256
    assert test_images.SHA256 in (ROOT / 'models' / 'MNIST-TEST.md').read_text()
    X, y, _ = insight.official_test(path)
    _, (X_test, y_test) = mnist
    np.testing.assert_array_equal(X, X_test)
    np.testing.assert_array_equal(y, y_test)


@pytest.mark.parametrize('arrays, message', [
    ({'X': np.zeros((10_000, 784), np.float32), 'y': np.zeros(10_000, np.uint8)}, 'float32'),
    ({'X': np.zeros((10, 784), np.uint8), 'y': np.zeros(10, np.uint8)}, '(10, 784)'),
    ({'X': np.zeros((10_000, 784), np.uint8), 'y': np.full(10_000, 10, np.uint8)}, 'digits'),
    ({'X': np.zeros((10_000, 784), np.uint8), 'y': np.array([None] * 10_000)}, 'pickle'),
])
def test_a_wrong_test_images_file_is_refused(tmp_path, arrays, message):
    path = tmp_path / insight.TEST_IMAGES_FILE
    np.savez(path, **arrays)
    with pytest.raises(insight.READ_ERRORS) as error:
        insight.official_test(path)
    assert message in str(error.value)


def test_computed_once_per_net_and_again_after_train_reset_pretrain(serve_data, models,
                                                                    data_file, tmp_path):
    _, nets = models
    X, y = held_out_reference(data_file)
    small = tiny_data(data_file, tmp_path)
    with serve_data(data_path=data_file) as s:
        ctx = s.app.ctx
        first = s.get('/confusion').json
        live = ctx.nets.live  # the live net's matrix is kept with it
        cached = live.caches['live']
        assert cached[0] is live.graph
        # Asked again, and by many at once: the same computation, not a new one.
        answers = [None] * 6

        def ask(i):
            answers[i] = s.get('/confusion').json
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [first] * 6 and live.caches['live'] is cached
        assert s.get('/confusion/examples?true=4&read=9').status == 200
        assert live.caches['live'] is cached
        # The live net starts as a copy of the best pretrained model (v2).
        assert first['matrix'] == reference_matrix(nets[2], X, y)[0].tolist()

        assert s.post('/reset').status == 200
        reset = s.get('/confusion').json
        assert live.caches['live'][0] is live.graph and live.graph is not cached[0]
        fresh = btf.Graph.from_file(s.state / 'live.npz')
        assert reset['matrix'] == reference_matrix(fresh, X, y)[0].tolist() != first['matrix']

        trained = s.post('/train', {'epochs': 1})
        assert trained.status == 200, trained
        after = s.get('/confusion').json
        net = btf.Graph.from_file(s.state / 'live.npz')
        assert net.epochs == 1
        assert after['matrix'] == reference_matrix(net, X, y)[0].tolist() != reset['matrix']
        assert after['accuracy'] > reset['accuracy']

        assert s.post('/pretrain').status == 200
        assert s.get('/confusion').json['matrix'] == first['matrix']
        shipped = s.get('/confusion?pretrained=2').json
        assert shipped['matrix'] == first['matrix'] and shipped['model'] == 'v2'
    # A new training file is a new set of images.
    with serve_data(data_path=small) as s:
        assert s.get('/confusion').json['images']['count'] < len(y)


# ---------------------------------------------------------------------------------------
# /predict: activations and "not sure".

@pytest.fixture
def deep_models(tmp_path):
    """v1 784-20-10, v2 784-150-10 (wide), v3 784-40-16-10 (two hidden layers)."""
    folder = tmp_path / 'deep'
    return folder, write_models(folder, {1: (784, 20, 10), 2: (784, 150, 10),
                                         3: (784, 40, 16, 10)}, best=2)


def test_predict_returns_the_hidden_activations_bounded(serve, deep_models):
    folder, nets = deep_models
    x = imaging.prepare(DIGIT).reshape(1, -1)
    with serve(models_dir=folder) as s:
        plain = s.post('/predict', {'image': DIGIT, 'pretrained': 1}).json
        assert 'activations' not in plain
        for version in (1, 2, 3):
            got = s.post('/predict', {'image': DIGIT, 'pretrained': version,
                                      'return_activations': True}).json
            expected = nets[version]._forward(x)[1:-1]  # the library's own forward pass
            assert [layer['layer'] for layer in got['activations']] == \
                list(range(1, len(expected) + 1))
            for layer, a in zip(got['activations'], expected):
                a = a[0]
                assert layer['size'] == len(a) and layer['activation'] == 'sigmoid'
                top = layer['top']
                assert len(top) == min(len(a), insight.TOP_UNITS)
                assert [u['unit'] for u in top] == list(np.argsort(-a, kind='stable')[:len(top)])
                assert [u['value'] for u in top] == pytest.approx(np.sort(a)[::-1][:len(top)],
                                                                  abs=1e-4)
                if len(a) <= insight.FULL_LAYER:
                    assert layer['values'] == pytest.approx(a, abs=1e-4)
                else:
                    assert 'values' not in layer
            np.testing.assert_allclose([p['confidence'] for p in got['predictions']],
                                       nets[version]._forward(x)[-1][0], rtol=1e-5)
        bad = s.post('/predict', {'image': DIGIT, 'return_activations': 'yes'})
        assert bad.status == 400
        assert 'return_activations must be true or false, got "yes"' in bad.json['error']


@pytest.mark.parametrize('activation', btf.HIDDEN_ACTIVATIONS)
def test_activations_match_the_library_for_each_hidden_activation(activation):
    net = btf.Graph((784, 24, 12, 10), 0.1, 32, activation=activation, seed=3)
    x = np.random.default_rng(0).random(784).astype(np.float32)
    ours = insight.hidden_layers(net, x)
    reference = net._forward(x.reshape(1, -1))[1:-1]  # the library's own forward pass
    assert insight.hidden_activation(net) == activation
    assert len(ours) == 2
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6)


def test_the_library_shows_its_layers_and_their_outputs(models):
    """Graph.layers() and Graph.activations(): what insight (and an exporter) read, one
    forward pass with predict's."""
    _, nets = models
    net = btf.Graph((784, 16, 12, 10), 0.1, 32, activation='tanh', seed=4)
    layers = net.layers()
    assert [(layer.weights.shape, layer.biases.shape, layer.activation) for layer in layers] == [
        ((784, 16), (16,), 'tanh'), ((16, 12), (12,), 'tanh'), ((12, 10), (10,), 'softmax')]
    assert layers[0].weights is net.weights[0]  # the net's own arrays, not copies
    X = np.random.default_rng(1).random((5, 784)).astype(np.float32)
    outputs = net.activations(X)
    assert [a.shape for a in outputs] == [(5, 16), (5, 12), (5, 10)]
    np.testing.assert_allclose(outputs[-1], net.predict_batch(X)[1], rtol=1e-6)
    np.testing.assert_allclose(net.activations(X[0])[-1][0], outputs[-1][0], rtol=1e-6)
    with pytest.raises(ValueError, match=r'got shape \(5, 783\)'):
        net.activations(X[:, :783])
    assert insight.hidden_activation(nets[1]) == 'sigmoid'


def test_not_sure_when_unconfident_or_unlike_an_mnist_digit(serve, models):
    with serve() as s:
        untrained = s.post('/predict', {'image': DIGIT}).json
        assert untrained['unsure'] == 'the net gives its answer less than 90% confidence'
        wide = s.post('/predict', {'image': scribble_png()}).json
        assert 'much wider than MNIST digits' in wide['unsure']
    sure = np.zeros((28, 28), np.float32)
    sure[4:24, 11:17] = 1  # a 1: thin, yet within MNIST's range
    assert insight.unsure(sure, 0.95) is None
    assert insight.unsure(sure, 0.85) is not None
    assert 'more ink' in insight.unsure(np.ones((28, 28)), 0.99)
    dot = np.zeros((28, 28), np.float32)
    dot[13:15, 13:15] = 1
    assert 'less ink' in insight.unsure(dot, 0.99)


# ---------------------------------------------------------------------------------------
# /compare: every net on one drawing.

def test_compare_reads_the_drawing_with_every_net(serve, models):
    with serve() as s:
        got = s.post('/compare', {'image': DIGIT})
        assert got.status == 200, got
        rows = got.json['models']
        assert [row['model'] for row in rows] == ['live', 'v1', 'v2']
        for row, pretrained in zip(rows, (None, 1, 2)):
            alone = s.post('/predict', {'image': DIGIT, 'pretrained': pretrained}).json
            assert row['label'] == alone['label']
            confidence = alone['predictions'][alone['label']]['confidence']
            assert row['confidence'] == pytest.approx(confidence, rel=1e-6)
            assert row['unsure'] == alone['unsure']
        assert got.json['agree'] == (len({row['label'] for row in rows}) == 1)
        for body, status, message in (
                (None, 400, 'the body is empty'),
                ({}, 400, 'image must be a string'),
                ({'image': DIGIT, 'pretrained': 1}, 400, "unknown field(s) ['pretrained']"),
                ({'image': 'iVBOR$w0K'}, 400, 'invalid base64'),
                ({'image': png_b64(np.zeros((80, 80, 4), np.uint8))}, 422, 'no digit found')):
            answer = s.post('/compare', body)
            assert answer.status == status and message in answer.json['error'], answer
        assert s.get('/compare').status == 405

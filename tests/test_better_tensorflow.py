"""Tests of the numpy network: maths against references, formats, files, real MNIST."""
import itertools
import zipfile

import numpy as np
import pytest

import better_tensorflow as btf

PAIRS = list(itertools.product(btf.COSTS, ('sigmoid', 'softmax')))


def batch_cost(net, X, Y):
    """The summed cost over a batch, in float64, straight from the forward pass."""
    a = net._forward(X)[-1]
    args = (net.output,) if net.cost == 'cross_entropy' else ()
    return btf.COSTS[net.cost](a, Y, *args) * len(X)


@pytest.mark.parametrize('cost,output', PAIRS)
def test_backprop_matches_central_finite_differences(cost, output):
    rng = np.random.default_rng(1)
    net = btf.Graph((5, 4, 3, 3), 0.1, 4, cost=cost, output=output, dtype='float64', seed=3)
    X = rng.random((4, 5))
    Y = np.eye(3)[[0, 2, 1, 2]]
    grad_w, grad_b = net._backprop(net._forward(X), Y)
    h = 1e-6
    for params, grads in ((net.weights, grad_w), (net.biases, grad_b)):
        for p, g in zip(params, grads):
            numeric = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + h
                up = batch_cost(net, X, Y)
                p[i] = old - h
                down = batch_cost(net, X, Y)
                p[i] = old
                numeric[i] = (up - down) / (2 * h)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('shape_a, shape_b', [
    ((128, 784), (784, 30)),   # cut into row blocks for OpenBLAS's small-matrix kernel
    ((784, 128), (128, 30)),   # a weight gradient, also blocked
    ((7, 784), (784, 30)),     # rows that divide into no equal blocks but one
    ((32, 784), (784, 800)),   # a wide layer: one plain product
    ((1, 784), (784, 800)),    # one sample
])
def test_blocked_products_equal_plain_ones(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.random(shape_a, np.float32), rng.random(shape_b, np.float32)
    product = btf._matmul(a, b)
    assert product.shape == (shape_a[0], shape_b[1])
    np.testing.assert_allclose(product, a.astype(np.float64) @ b, rtol=1e-5)


def test_one_training_step_worked_by_hand():
    # One sample x = [1, 0.5], label 0 (y = [1, 0]); W = [[.1, .2], [.3, .4]], b = 0;
    # MSE cost, sigmoid output, learning rate 1.
    # z = x @ W = [0.25, 0.40];  a = sigmoid(z) = [0.562177, 0.598688]
    # delta = (a - y) * a * (1 - a) = [-0.107763, 0.143841]
    # W -= x^T delta = [[.1 + .107763, .2 - .143841], [.3 + .053882, .4 - .071921]]
    net = btf.Graph((2, 2), 1.0, 1, cost='mse', output='sigmoid', dtype='float64')
    net.weights[0][:] = [[0.1, 0.2], [0.3, 0.4]]
    net.biases[0][:] = 0
    net.feed([(np.array([[1.0], [0.5]]), 0)])
    net.run(1, progress=False)
    np.testing.assert_allclose(net.weights[0], [[0.207763, 0.056159], [0.353882, 0.328079]],
                               atol=1e-6)
    np.testing.assert_allclose(net.biases[0], [0.107763, -0.143841], atol=1e-6)
    assert net.epochs == 1


def test_step_uses_the_mean_gradient_of_the_batch():
    # Two copies of one sample in a batch of 2 must move the weights exactly as the sample
    # alone in a batch of 1.
    x = np.linspace(0, 1, 6)
    one = btf.Graph((6, 3, 2), 0.7, 1, dtype='float64', seed=5)
    two = btf.Graph((6, 3, 2), 0.7, 2, dtype='float64', seed=5)
    one.feed((x[None], np.array([1])))
    two.feed((np.stack([x, x]), np.array([1, 1])))
    one.run(1, progress=False)
    two.run(1, progress=False)
    for a, b in zip(one.weights + one.biases, two.weights + two.biases):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_both_data_formats_train_identically(mnist):
    (X, y), _ = mnist
    X, y = X[:1000], y[:1000]
    pairs = [(x.reshape(784, 1) / 255, np.eye(10)[t].reshape(10, 1)) for x, t in zip(X, y)]
    nets = [btf.Graph((784, 16, 10), 0.5, 32, seed=7) for _ in range(3)]
    nets[0].feed(pairs, pairs[:100])
    nets[1].feed((X / 255, y), (X[:100] / 255, y[:100]))
    nets[2].feed((X, np.eye(10)[y]), (X[:100], np.eye(10)[y[:100]]))  # uint8, one-hot
    histories = [net.run(2, progress=False) for net in nets]
    for net in nets[1:]:
        for a, b in zip(nets[0].weights, net.weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [h['val_accuracy'] for h in histories[0]] == [h['val_accuracy'] for h in histories[2]]
    assert histories[0][-1]['loss'] < histories[0][0]['loss']


def test_predict_validate_and_evaluate_agree(mnist):
    _, (Xt, yt) = mnist
    net = btf.Graph((784, 30, 10), 0.5, 128, seed=0)
    X = Xt[:500] / 255
    labels, outputs = net.predict_batch(X)
    assert labels.shape == (500,) and outputs.shape == (500, 10)
    label, activations = net.predict(X[3].reshape(784, 1))
    assert isinstance(label, int) and activations.shape == (10, 1)
    assert label == labels[3]
    np.testing.assert_allclose(activations[:, 0], outputs[3], rtol=1e-6)
    correct = net.validate((X, yt[:500]))
    assert isinstance(correct, int)
    assert correct == int(np.sum(labels == yt[:500]))
    assert net.evaluate(X, yt[:500]) == correct / 500


def test_save_then_load_gives_identical_predictions(tmp_path, mnist):
    (X, y), (Xt, _) = mnist
    net = btf.Graph((784, 20, 10), 0.5, 64, cost='mse', output='sigmoid', seed=4)
    net.feed((X[:2000], y[:2000]))
    net.run(1, progress=False)
    path = net.save(tmp_path / 'm.npz')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.npz']  # no temporary left over
    with np.load(path, allow_pickle=False) as f:
        assert {'sizes', 'W0', 'b0', 'W1', 'b1', 'epochs', 'cost', 'output'} <= set(f.files)
        assert all(f[k].dtype != object for k in f.files)
    again = btf.Graph.from_file(path)
    assert (again.sizes, again.epochs, again.options) == (net.sizes, 1, net.options)
    np.testing.assert_array_equal(again.predict_batch(Xt[:300])[1], net.predict_batch(Xt[:300])[1])
    other = btf.Graph((784, 20, 10), 0.1, 8, seed=9)
    other.load(path)
    np.testing.assert_array_equal(other.predict_batch(Xt[:300])[1], net.predict_batch(Xt[:300])[1])
    assert (other.learning_rate, other.batch_size, other.cost) == (0.5, 64, 'mse')


def test_bare_file_name_means_the_models_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(btf, 'MODELS_DIR', tmp_path)
    net = btf.Graph((4, 3), seed=1)
    assert net.save('bare') == tmp_path / 'bare.npz'
    np.testing.assert_array_equal(btf.Graph.from_file('bare.npz').weights[0], net.weights[0])


@pytest.mark.parametrize('damage', ['truncated', 'not_a_zip', 'wrong_shape', 'missing_layer',
                                    'nan', 'pickled', 'other_sizes'])
def test_bad_model_file_is_rejected_and_the_net_unchanged(tmp_path, damage):
    good = btf.Graph((6, 4, 3), seed=2)
    path = good.save(tmp_path / 'good.npz')
    bad = tmp_path / 'bad.npz'
    arrays = dict(np.load(path))
    if damage == 'truncated':
        bad.write_bytes(path.read_bytes()[:300])
    elif damage == 'not_a_zip':
        bad.write_bytes(b'definitely not a model')
    elif damage == 'pickled':  # an object array would need allow_pickle=True
        arrays['W0'] = np.array([arrays['W0']], dtype=object)
        np.savez(bad, **arrays)
    else:
        if damage == 'wrong_shape':
            arrays['W1'] = arrays['W1'][:, :2]
        elif damage == 'missing_layer':
            del arrays['b1']
        elif damage == 'nan':
            arrays['W0'][0, 0] = np.nan
        elif damage == 'other_sizes':
            btf.Graph((6, 5, 3)).save(bad)
        if damage != 'other_sizes':
            np.savez(bad, **arrays)
    net = btf.Graph((6, 4, 3), seed=8)
    before = [w.copy() for w in net.weights + net.biases]
    with pytest.raises(ValueError, match='bad.npz'):
        net.load(bad)
    for a, b in zip(before, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)
    assert zipfile.is_zipfile(path)  # the good file is untouched


@pytest.mark.parametrize('kwargs,bad', [
    (dict(sizes=(784,)), '(784,)'), (dict(sizes=(784, 0, 10)), '(784, 0, 10)'),
    (dict(sizes=(784, 2.5, 10)), '2.5'), (dict(learning_rate=-1), '-1'),
    (dict(batch_size=0), '0'), (dict(init='zeros'), "'zeros'"), (dict(cost='hinge'), "'hinge'"),
    (dict(output='relu'), "'relu'"), (dict(dtype='float16'), "'float16'"),
])
def test_invalid_options_name_the_value(kwargs, bad):
    args = dict(sizes=(784, 30, 10), learning_rate=0.5, batch_size=128) | kwargs
    with pytest.raises(ValueError) as e:
        btf.Graph(args.pop('sizes'), args.pop('learning_rate'), args.pop('batch_size'), **args)
    assert bad in str(e.value)


def test_unknown_choice_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"\['cross_entropy', 'mse'\]"):
        btf.Graph((4, 2), cost='l1')


@pytest.mark.parametrize('data,message', [
    ((np.zeros((5, 783)), np.zeros(5, int)), r'\(n, 784\)'),
    ((np.zeros((5, 784)), np.array([0, 1, 2, 3, 10])), '0..9'),
    ((np.full((5, 784), 255.0), np.zeros(5, int)), '255'),
    ((np.zeros((5, 784)), np.zeros(4, int)), r'\(5,\)'),
    ('not data', 'pairs'),
])
def test_bad_training_data_is_named(data, message):
    net = btf.Graph((784, 30, 10))
    with pytest.raises(ValueError, match=message):
        net.feed(data)


def test_callback_sees_progress_and_can_stop(mnist):
    (X, y), _ = mnist
    net = btf.Graph((784, 10, 10), 0.5, 100, seed=0)
    net.feed((X[:1000], y[:1000]), (X[1000:1200], y[1000:1200]))
    seen = []
    net.run(2, callback=seen.append, progress=False)
    events = [(i['event'], i['epoch'], i['batch']) for i in seen]
    assert events[:3] == [('batch', 1, 1), ('batch', 1, 2), ('batch', 1, 3)]
    assert events[10] == ('epoch', 1, 10) and events[-1] == ('epoch', 2, 10)
    assert seen[-1]['val_accuracy'] == net.evaluate(X[1000:1200], y[1000:1200])
    before = [w.copy() for w in net.weights]
    calls = []
    history = net.run(3, callback=lambda info: calls.append(info) or len(calls) == 4,
                      progress=False)
    assert len(calls) == 4 and history == [] and net.epochs == 2
    assert not np.array_equal(before[0], net.weights[0])  # the 4 batches did train


def test_divergence_stops_and_keeps_the_last_good_epoch(mnist):
    (X, y), _ = mnist
    net = btf.Graph((784, 10, 10), 0.5, 50, seed=0)
    net.feed((X[:500], y[:500]))
    net.run(1, progress=False)
    good = [w.copy() for w in net.weights + net.biases]
    net.learning_rate = float("inf")  # every step overflows: the loss turns NaN
    with pytest.raises(btf.TrainingDiverged, match='epoch 2'):
        net.run(3, progress=False)
    assert net.epochs == 1
    for a, b in zip(good, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)


def test_default_options_reach_95_5_percent_on_mnist(mnist):
    (X, y), (Xt, yt) = mnist
    net = btf.Graph((784, 30, 10), 0.5, 128, seed=0)
    net.feed((X[:50000], y[:50000]), (X[50000:], y[50000:]))
    history = net.run(20, progress=False)
    assert len(history) == 20 and net.epochs == 20
    assert history[-1]['val_accuracy'] > history[0]['val_accuracy']
    assert net.evaluate(Xt, yt) >= 0.955


def test_the_original_recipe_reaches_92_percent_on_mnist(mnist):
    (X, y), (Xt, yt) = mnist
    net = btf.Graph((784, 30, 10), 3.0, 128, init='normal', cost='mse', output='sigmoid',
                    seed=0)
    net.feed((X[:50000], y[:50000]))
    net.run(20, progress=False)
    assert net.evaluate(Xt, yt) >= 0.92

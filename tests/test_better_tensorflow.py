"""Tests of the numpy network: maths against references, formats, files, real MNIST."""
import io
import itertools
import json
import zipfile
import zlib

import numpy as np
import pytest

import better_tensorflow as btf
from tests.conftest import many_members, raw_zip, zip_bomb

# every hidden activation x cost x output, at two and three hidden layers
GRADIENT_CASES = list(itertools.product(btf.HIDDEN_ACTIVATIONS, btf.COST_NAMES, btf.OUTPUTS,
                                        ((5, 4, 3, 3), (5, 4, 3, 4, 3))))


@pytest.mark.parametrize('activation,cost,output,sizes', GRADIENT_CASES)
def test_backprop_matches_central_finite_differences(activation, cost, output, sizes):
    rng = np.random.default_rng(1)
    net = btf.Graph(sizes, 0.1, 4, activation=activation, cost=cost, output=output,
                    weight_decay=0.01, dtype='float64', seed=3)
    for b in net.biases:  # ReLU biases start at 0: make a few units inactive too
        b += rng.normal(0, 0.3, b.shape)
    X = rng.random((4, 5))
    Y = np.eye(3)[[0, 2, 1, 2]]
    _, grad_w, grad_b = net.gradients(X, Y)
    h = 1e-6
    for params, grads in ((net.weights, grad_w), (net.biases, grad_b)):
        for p, g in zip(params, grads):
            numeric = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + h
                up = net.gradients(X, Y)[0]
                p[i] = old - h
                down = net.gradients(X, Y)[0]
                p[i] = old
                numeric[i] = (up - down) / (2 * h)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('shape_a, shape_b', [
    ((128, 784), (784, 30)),   # cut into row blocks for OpenBLAS's small-matrix kernel
    ((784, 128), (128, 30)),   # a weight gradient, also blocked
    ((7, 784), (784, 30)),     # rows that divide into no equal blocks but one
    ((32, 784), (784, 800)),   # a wide layer: one plain product
    ((784, 128), (128, 800)),  # its weight gradient, one plain product too
    ((1, 784), (784, 800)),    # one sample
])
def test_blocked_products_equal_plain_ones(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.random(shape_a, np.float32), rng.random(shape_b, np.float32)
    product = btf._matmul(a, b)
    assert product.shape == (shape_a[0], shape_b[1])
    np.testing.assert_allclose(product, a.astype(np.float64) @ b, rtol=1e-5)


@pytest.mark.parametrize('n, k, m, blocked', [
    (128, 784, 30, True),     # 784-30-10's forward: three times OpenBLAS's small size
    (784, 128, 30, True),     # and its weight gradient
    (128, 784, 800, False),   # a wide layer's forward: blocks would be matrix-vector products
    (784, 128, 800, False),   # its weight gradient: 80 times the small size, short rows (it
    (527, 128, 800, False),   # was cut into 98 blocks of 8 rows: 2x slower on two threads)
    (128, 800, 10, True),     # the output layer of 784-800-10
])
def test_only_small_products_are_cut_into_row_blocks(n, k, m, blocked):
    assert (btf._row_blocks(n, k, m) > 1) == blocked


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
        assert {'sizes', 'W0', 'b0', 'W1', 'b1', 'epochs', 'options', 'rng'} <= set(f.files)
        assert all(f[k].dtype != object for k in f.files)
        assert json.loads(str(f['options']))['cost'] == 'mse'
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
    (dict(activation='gelu'), "'gelu'"), (dict(optimizer='rmsprop'), "'rmsprop'"),
    (dict(momentum=1.5), '1.5'), (dict(momentum=-0.1), '-0.1'),
    (dict(momentum=0.9, optimizer='adam'), '0.9'), (dict(nesterov=True), 'nesterov'),
    (dict(nesterov='yes'), "'yes'"), (dict(weight_decay=-0.01), '-0.01'),
    (dict(weight_decay=float('nan')), 'nan'), (dict(schedule='warmup'), "'warmup'"),
    (dict(schedule=('step', 0, 0.5)), "('step', 0, 0.5)"),
    (dict(schedule=('exponential', 1.5)), "('exponential', 1.5)"),
    (dict(schedule=('cosine',  2.5, 0)), "('cosine', 2.5, 0)"),
    (dict(seed=-3), '-3'),
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


# ---------------------------------------------------------------------------------------
# Optimisers, options, schedules, early stopping, resuming.

def two_steps(optimizer, grads, rate=0.1):
    p = np.array([1.0, -2.0])
    optimizer.learning_rate = rate
    trail = []
    for g in grads:
        optimizer.update([p], [np.array(g)])
        trail.append(p.copy())
    return trail


def test_one_momentum_step_worked_by_hand():
    # p = [1, -2], rate 0.1, momentum 0.9; gradients g1 = [0.5, 1], then g2 = [0.5, -1].
    # v1 = 0.9 * 0 - 0.1 * g1 = [-0.05, -0.1];        p = [0.95, -2.1]
    # v2 = 0.9 * v1 - 0.1 * g2 = [-0.095, 0.01];      p = [0.855, -2.09]
    # Nesterov: p += 0.9 * v - 0.1 * g:  [-0.095, -0.19] -> [0.905, -2.19]
    #           then [-0.1355, 0.109] -> [0.7695, -2.081]
    grads = ([0.5, 1.0], [0.5, -1.0])
    p = [np.zeros(2)]
    np.testing.assert_allclose(two_steps(btf.SGD(p, momentum=0.9), grads),
                               [[0.95, -2.1], [0.855, -2.09]], rtol=1e-12)
    np.testing.assert_allclose(two_steps(btf.SGD(p, momentum=0.9, nesterov=True), grads),
                               [[0.905, -2.19], [0.7695, -2.081]], rtol=1e-12)
    np.testing.assert_allclose(two_steps(btf.SGD(p), grads),  # plain: p -= 0.1 g
                               [[0.95, -2.1], [0.9, -2.0]], rtol=1e-12)


def test_one_adam_step_worked_by_hand():
    # p = [1, -2], rate 0.1, betas 0.9 and 0.999, eps 1e-8; g1 = [0.5, -1], g2 = [0.5, 0.5].
    # t=1: m = 0.1 g1 = [0.05, -0.1], v = 0.001 g1^2 = [0.00025, 0.001];
    #      m^ = m / 0.1 = [0.5, -1], v^ = v / 0.001 = [0.25, 1]: p -= 0.1 * [1, -1] (+-eps)
    #      p = [0.9, -1.9]
    # t=2: m = [0.095, -0.04], v = [0.00049975, 0.001249]; m^ = m / 0.19 = [0.5, -0.210526],
    #      v^ = v / 0.001999 = [0.25, 0.624812], sqrt = [0.5, 0.790451]
    #      p -= 0.1 * [1, -0.266336] -> [0.8, -1.873366]
    trail = two_steps(btf.Adam([np.zeros(2)]), ([0.5, -1.0], [0.5, 0.5]))
    np.testing.assert_allclose(trail, [[0.9, -1.9], [0.8, -1.873366]], atol=1e-6)


@pytest.mark.parametrize('name,kwargs', [
    ('sgd', dict(momentum=0.9)), ('sgd', dict(momentum=0.9, nesterov=True)), ('adam', {})])
def test_optimisers_match_pytorch(name, kwargs):
    torch = pytest.importorskip('torch')
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    ours = start.copy()
    optimizer = btf.OPTIMIZERS[name]([ours], **kwargs)
    optimizer.learning_rate = 0.05
    theirs = torch.tensor(start, requires_grad=True)
    reference = (torch.optim.Adam if name == 'adam' else torch.optim.SGD)([theirs], lr=0.05,
                                                                          **kwargs)
    for g in grads:
        optimizer.update([ours], [g.copy()])
        theirs.grad = torch.tensor(g)
        reference.step()
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(ours, start)


def test_weight_decay_shrinks_the_weights_and_not_the_biases():
    # With zero inputs only the decay moves the weights, by rate * weight_decay * W.
    net = btf.Graph((3, 2), 0.5, 2, weight_decay=0.1, dtype='float64', seed=0,
                    output='sigmoid', cost='mse')
    W, b = net.weights[0].copy(), net.biases[0].copy()
    X = np.zeros((2, 3))  # zero inputs: the cost's weight gradient is 0, its bias gradient not
    plain = btf.Graph((3, 2), 0.5, 2, dtype='float64', seed=0, output='sigmoid', cost='mse')
    for n in (net, plain):
        n.feed((X, np.array([0, 1])))
        n.run(1, progress=False)
    np.testing.assert_allclose(net.weights[0], plain.weights[0] - 0.5 * 0.1 * W, atol=1e-12)
    np.testing.assert_allclose(net.biases[0], plain.biases[0], atol=1e-12)
    assert not np.allclose(plain.biases[0], b)


@pytest.mark.parametrize('schedule,epochs,rates', [
    ('constant', (0, 7, 100), (0.4, 0.4, 0.4)),
    (('step', 10, 0.5), (0, 9, 10, 25), (0.4, 0.4, 0.2, 0.1)),
    (('exponential', 0.5), (0, 1, 3), (0.4, 0.2, 0.05)),
    (('cosine', 10, 0.0), (0, 5, 10, 12), (0.4, 0.2, 0.0, 0.0)),
    (('cosine', 4, 0.1), (0, 2, 4), (0.4, 0.25, 0.1)),
    (lambda epoch: 1 / (epoch + 1), (0, 1, 4), (1.0, 0.5, 0.2)),
])
def test_schedules_give_the_rate_of_each_epoch(schedule, epochs, rates):
    normal = btf.Options(schedule=schedule).schedule
    got = [btf.scheduled_rate(normal, 0.4, e) for e in epochs]
    np.testing.assert_allclose(got, rates, atol=1e-12)


def test_a_bare_schedule_name_takes_its_defaults_and_a_bad_callable_is_named():
    assert btf.Options(schedule='step').schedule == ('step', 10.0, 0.5)
    with pytest.raises(ValueError, match='-1'):
        btf.scheduled_rate(lambda epoch: -1, 0.1, 3)


@pytest.fixture(scope='module')
def small(mnist):
    """2,000 training and 1,000 validation images of the official training set."""
    (X, y), _ = mnist
    return (X[:2000], y[:2000]), (X[2000:3000], y[2000:3000])


def test_schedule_sets_each_epochs_rate_on_real_mnist(small):
    train, val = small
    net = btf.Graph((784, 30, 10), 0.8, 64, schedule=('step', 2, 0.5), seed=0)
    net.feed(train, val)
    history = net.run(5, progress=False)
    assert [h['learning_rate'] for h in history] == [0.8, 0.8, 0.4, 0.4, 0.2]
    assert history[-1]['val_accuracy'] > 0.8
    # the schedule counts the net's epochs, so a later run continues it
    assert net.run(1, progress=False)[0]['learning_rate'] == 0.2
    assert net.run(1, progress=False)[0]['learning_rate'] == 0.1


def test_early_stopping_restores_the_best_epoch(small):
    (X, y), val = small
    # 300 images and a large rate: validation accuracy peaks early, then wanders
    net = btf.Graph((784, 100, 10), 2.0, 10, momentum=0.9, seed=0)
    net.feed((X[:300], y[:300]), val)
    history = net.run(40, progress=False, patience=3)
    accuracies = [h['val_accuracy'] for h in history]
    best = int(np.argmax(accuracies))  # the first of the best
    assert len(history) == best + 4 < 40  # stopped 3 epochs after the best one
    assert net.epochs == best + 1
    assert net.evaluate(*val) == accuracies[best]
    assert accuracies[-1] < accuracies[best]


def test_patience_needs_validation_data_and_a_positive_count(small):
    train, val = small
    net = btf.Graph((784, 10, 10), 0.5, 100)
    net.feed(train)
    with pytest.raises(ValueError, match='validation'):
        net.run(2, patience=2, progress=False)
    net.feed(train, val)
    with pytest.raises(ValueError, match='0'):
        net.run(2, patience=0, progress=False)


def test_unknown_option_names_raise_and_list_the_valid_ones():
    with pytest.raises(TypeError, match="'lmbda'.*weight_decay"):
        btf.Graph((4, 2), lmbda=0.1)


@pytest.mark.parametrize('options', [
    dict(momentum=0.9, weight_decay=1e-4, schedule=('step', 1, 0.7)),
    dict(momentum=0.9, nesterov=True, activation='tanh'),
    dict(optimizer='adam', activation='relu', schedule=('cosine', 4, 0.0)),
])
def test_training_resumes_exactly_after_save_and_load(small, options):
    train, val = small
    rate = 0.001 if options.get('optimizer') == 'adam' else 0.1
    straight = btf.Graph((784, 20, 10), rate, 50, seed=3, **options)
    straight.feed(train, val)
    straight.run(4, progress=False)
    first = btf.Graph((784, 20, 10), rate, 50, seed=3, **options)
    first.feed(train, val)
    first.run(2, progress=False)
    buffer = io.BytesIO()
    first.save(buffer)
    buffer.seek(0)
    resumed = btf.Graph.from_file(buffer)
    resumed.feed(train, val)
    resumed.run(2, progress=False)
    assert resumed.epochs == 4 and resumed.options == straight.options
    for a, b in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    for name, a in straight.optimizer.state().items():
        np.testing.assert_array_equal(a, resumed.optimizer.state()[name])
    # and a net that forgets the optimiser's state does not resume exactly
    fresh = resumed.copy()
    buffer.seek(0)
    fresh.load(buffer)
    fresh.optimizer = fresh._new_optimizer()
    fresh.run(2, progress=False)
    assert not np.array_equal(fresh.weights[0], straight.weights[0])


def test_a_file_of_the_first_format_still_loads(tmp_path):
    net = btf.Graph((6, 4, 3), 0.3, 16, cost='mse', output='sigmoid', seed=5)
    arrays = {'format_version': np.int64(1), 'sizes': np.array(net.sizes),
              'learning_rate': np.float64(0.3), 'batch_size': np.int64(16),
              'epochs': np.int64(7), 'init': np.str_('scaled'), 'cost': np.str_('mse'),
              'output': np.str_('sigmoid'), 'dtype': np.str_('float32'), 'seed': np.int64(5)}
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f'W{l}'], arrays[f'b{l}'] = W, b
    np.savez(tmp_path / 'old.npz', **arrays)
    old = btf.Graph.from_file(tmp_path / 'old.npz')
    assert (old.epochs, old.cost, old.output, old.seed, old.optimizer.momentum) == \
        (7, 'mse', 'sigmoid', 5, 0.0)
    X = np.random.default_rng(0).random((5, 6))
    np.testing.assert_array_equal(old.predict_batch(X)[1], net.predict_batch(X)[1])


@pytest.mark.parametrize('member,shape,inflated,refusal', [
    ('W0.npy', (2 ** 27,), 512, r"'W0.npy' declares float32 \(134217728,\), expected shape "
                                r"\(784, 30\)"),  # a huge declared shape: 512 MiB
    ('W0.npy', (784, 30), 64, r"'W0.npy' inflates to 67108992 bytes, its header declares "
                              r"float32 \(784, 30\): 94208 bytes"),  # the right shape, 64 MiB
    ('epochs.npy', (2 ** 24,), 64, r"'epochs.npy' declares float32 \(16777216,\), expected "
                                   r"shape \(\)"),
])
def test_a_zip_bomb_is_refused_before_it_is_inflated(member, shape, inflated, refusal):
    bomb = io.BytesIO(zip_bomb(btf.Graph((784, 30, 10), seed=0), member, shape, inflated))
    with pytest.raises(btf.RefusedModelFile, match=refusal):
        btf.Graph.from_file(bomb)


def test_a_model_file_declares_a_bounded_net_of_plain_members(tmp_path):
    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    def stored(**arrays):
        return io.BytesIO(raw_zip([(f'{k}.npy', (zipfile.ZIP_STORED, zlib.crc32(npy(a)),
                                                 npy(a), len(npy(a)))) for k, a in arrays.items()]))
    huge = stored(sizes=np.array([784, 10 ** 6, 10 ** 6, 10]))
    with pytest.raises(btf.RefusedModelFile, match=r'1000796000010 parameters, .* most 10+'):
        btf.Graph.from_file(huge)
    with pytest.raises(btf.RefusedModelFile, match="'junk.npy' is not part of a model file"):
        btf.Graph.from_file(stored(sizes=np.array([4, 2]), junk=np.zeros(3)))
    with pytest.raises(btf.RefusedModelFile, match="'sizes.npy' declares float64"):
        btf.Graph.from_file(stored(sizes=np.array([4.0, 2.0])))
    net = btf.Graph((4, 2), seed=0)
    net.save(tmp_path / 'bz2.npz')
    with zipfile.ZipFile(tmp_path / 'bz2.npz') as plain, \
            zipfile.ZipFile(tmp_path / 'packed.npz', 'w', zipfile.ZIP_BZIP2) as packed:
        for info in plain.infolist():
            packed.writestr(info.filename, plain.read(info))
    with pytest.raises(btf.RefusedModelFile, match='compression method 12'):
        btf.Graph.from_file(tmp_path / 'packed.npz')
    with zipfile.ZipFile(tmp_path / 'deflated.npz', 'w', zipfile.ZIP_DEFLATED) as packed:
        with zipfile.ZipFile(tmp_path / 'bz2.npz') as plain:
            for info in plain.infolist():
                packed.writestr(info.filename, plain.read(info))
    assert btf.Graph.from_file(tmp_path / 'deflated.npz').sizes == (4, 2)  # savez_compressed


def test_a_callable_schedule_cannot_be_saved(tmp_path):
    net = btf.Graph((4, 2), schedule=lambda epoch: 0.1)
    with pytest.raises(ValueError, match='callable'):
        net.save(tmp_path / 'x.npz')
    assert not list(tmp_path.iterdir())


def test_initialisation_matches_the_activation():
    std = {a: btf.Graph((784, 400, 10), activation=a, seed=0).weights[0].std()
           for a in btf.HIDDEN_ACTIVATIONS}
    assert std['relu'] == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert std['tanh'] == pytest.approx(np.sqrt(1 / 784), rel=0.02)
    assert std['sigmoid'] == pytest.approx(np.sqrt(1 / 784), rel=0.02)
    relu = btf.Graph((784, 400, 10), activation='relu', seed=0)
    assert not np.any(relu.biases[0]) and np.any(btf.Graph((784, 400, 10)).biases[0])


@pytest.mark.parametrize('sizes,rate,options', [
    ((784, 64, 32, 10), 0.002, dict(activation='relu', optimizer='adam')),
    ((784, 64, 32, 16, 10), 0.05, dict(activation='tanh', momentum=0.9)),
    ((784, 64, 32, 16, 10), 0.3, dict(activation='sigmoid', momentum=0.9, nesterov=True)),
])
def test_deeper_nets_learn_real_mnist(small, sizes, rate, options):
    train, val = small
    net = btf.Graph(sizes, rate, 32, seed=0, **options)
    net.feed(train, val)
    history = net.run(8, progress=False)
    assert len(net.weights) == len(sizes) - 1
    assert history[-1]['val_accuracy'] > 0.82, history


def test_summary_lists_layers_shapes_parameters_and_options():
    net = btf.Graph((784, 30, 10), 0.5, 128, activation='relu', momentum=0.9)
    text = net.summary()
    assert '(None, 30)' in text and '(None, 10)' in text
    assert '23,550' in text and '310' in text and 'Total params: 23,860' in text
    assert "activation='relu'" in text and 'momentum=0.9' in text and 'softmax' in text
    assert "momentum=0.9" in repr(net) and "schedule=['constant']" in repr(net)


def test_copy_has_its_own_optimiser_state(small):
    train, _ = small
    net = btf.Graph((784, 10, 10), 0.1, 100, momentum=0.9, seed=0)
    net.feed(train)
    net.run(1, progress=False)
    twin = net.copy()
    twin.run(1, progress=False)
    assert not np.array_equal(twin.optimizer.velocities[0], net.optimizer.velocities[0])
    assert net.epochs == 1 and twin.epochs == 2


@pytest.mark.parametrize('members', [20_000, 100_000])  # zip64's end records past 65,535
def test_a_zip_of_many_members_is_refused_before_its_directory_is_read(tmp_path, members):
    # Before: zipfile made a ZipInfo of each entry first (a million: 20 s of CPU, 1 GB),
    # again at each reload attempt of a server's live net.
    import time
    net = btf.Graph((784, 30, 10), seed=0)
    net.save(tmp_path / 'net.npz')
    start = time.process_time()
    btf.Graph.from_file(tmp_path / 'net.npz')
    control = time.process_time() - start
    (tmp_path / 'many.npz').write_bytes(many_members(members))
    start = time.process_time()
    with pytest.raises(btf.RefusedModelFile, match=f'zip directory holds .* bytes '
                                                   rf'\({members} members declared\)'):
        btf.Graph.from_file(tmp_path / 'many.npz')
    assert time.process_time() - start < control + 0.01, control
    with pytest.raises(btf.RefusedModelFile, match='zip directory'):
        btf.Graph.from_file(io.BytesIO(many_members(members)))


def test_configure_changes_how_a_net_trains_and_checks_first():
    X = np.random.default_rng(0).random((64, 784), np.float32)
    y = np.arange(64) % 10
    net = btf.Graph((784, 12, 10), 0.5, 16, optimizer='adam', seed=0)
    net.feed((X, y))
    net.run(1, progress=False)
    moments = [m.copy() for m in net.optimizer.m]
    assert net.configure(learning_rate=0.01, batch_size=8) is net
    assert (net.learning_rate, net.batch_size) == (0.01, 8)
    for a, b in zip(net.optimizer.m, moments):  # the same optimiser goes on
        np.testing.assert_array_equal(a, b)
    # Refused values change nothing, and name themselves.
    for kwargs, error, words in (({'momentum': 0.9}, ValueError, 'momentum applies'),
                                 ({'learning_rate': -1}, ValueError, 'learning_rate must'),
                                 ({'batch_size': 0, 'weight_decay': 0.1}, ValueError,
                                  'batch_size must'),
                                 ({'activation': 'relu'}, TypeError, "'activation' cannot")):
        with pytest.raises(error, match=words):
            net.configure(**kwargs)
        assert (net.learning_rate, net.batch_size, net.config.weight_decay) == (0.01, 8, 0.0)
    # A new optimiser starts from zero; the change is saved with the net.
    net.configure(optimizer='sgd', momentum=0.9, nesterov=True, schedule=('step', 2, 0.5))
    assert isinstance(net.optimizer, btf.SGD) and net.optimizer.nesterov
    assert all(not v.any() for v in net.optimizer.velocities)
    buffer = io.BytesIO()
    net.save(buffer)
    loaded = btf.Graph.from_file(io.BytesIO(buffer.getvalue()))
    assert loaded.options == net.options and loaded.batch_size == 8
    assert loaded.options['schedule'] == ['step', 2.0, 0.5]


def test_max_inflated_bounds_what_a_file_may_cost_to_read():
    buffer = io.BytesIO()
    btf.Graph((784, 30, 10), seed=0).save(buffer)
    data = buffer.getvalue()
    arrays = 4 * (784 * 30 + 30 + 30 * 10 + 10)
    with pytest.raises(btf.RefusedModelFile, match='bytes of arrays'):
        btf.Graph.from_file(io.BytesIO(data), max_inflated=arrays)
    assert btf.Graph.from_file(io.BytesIO(data), max_inflated=len(data)).sizes == (784, 30, 10)


def _reference_outputs(net, X, dtype=None):
    """The forward pass written plainly, one full product per layer (what predict_batch
    computed before it skipped blank input columns and worked in place)."""
    dtype = dtype or net.dtype
    a = np.asarray(X, dtype)
    for layer in net.layers():
        a = btf.ACTIVATIONS[layer.activation](a @ layer.weights.astype(dtype)
                                              + layer.biases.astype(dtype))
    return a


def assert_same_outputs(net, rows):
    """predict_batch's outputs are the plain float32 pass's to 1e-6, or where float32's
    rounding of 784-term sums in another order differs by more, no further from the float64
    pass than the plain float32 pass is."""
    labels, outputs = net.predict_batch(rows)
    plain = _reference_outputs(net, rows)
    exact = _reference_outputs(net, rows, np.float64)
    assert outputs.shape == plain.shape and outputs.dtype == plain.dtype
    far = np.abs(outputs - plain) > 1e-6
    assert np.all(np.abs(outputs - exact)[far] <= 2 * np.abs(plain - exact).max() + 1e-7)
    assert far.mean() < 0.01
    assert np.array_equal(labels, np.argmax(exact, axis=1))


@pytest.mark.parametrize('version', [1, 7])
def test_predict_batch_gives_the_plain_forward_pass(version):
    """Shipped nets on MNIST test digits (blank borders, so the first product reads only the
    middle columns) and on rows with ink up to the edges, one at a time and in batches."""
    net = btf.Graph.from_file(btf.MODELS_DIR / f'model-v{version}.npz')
    test = np.load(btf.MODELS_DIR / 'mnist-test.npz')
    X = test['X'][:300].reshape(300, -1).astype(np.float32) / 255
    edges = X[:20].copy()
    edges[:10, 0] = 0.5  # ink in the first column
    edges[10:, -1] = 0.25  # and in the last
    blank = np.zeros((3, 784), np.float32)
    for rows in (X[:1], X[1:2], X[:7], X[:100], X, edges, edges[:1], edges[-1:], blank,
                 blank[:1], np.concatenate([blank, X[:5]])):
        assert_same_outputs(net, rows)
    label, activations = net.predict(X[3])
    np.testing.assert_allclose(activations[:, 0], _reference_outputs(net, X[3:4])[0], atol=1e-6)
    assert (net.predict_batch(X)[0] == test['y'][:300]).mean() > (0.9 if version == 7 else 0.3)


@pytest.mark.parametrize('activation', ['sigmoid', 'tanh', 'relu'])
def test_predict_batch_gives_the_plain_forward_pass_for_every_activation(activation):
    net = btf.Graph((784, 40, 20, 10), 0.1, 16, activation=activation, seed=3,
                    output='sigmoid' if activation == 'tanh' else 'softmax')
    X = np.random.default_rng(1).random((50, 784), dtype=np.float32)
    X[:, :100] = 0  # a blank top
    for rows in (X, X[:1], X[:16]):
        assert_same_outputs(net, rows)


def _plain_gradient(net, X, Y):
    """dC/dW1 of the cross-entropy/softmax cost written plainly in float64, every column."""
    a = [np.asarray(X, np.float64)]
    for layer in net.layers():
        a.append(btf.ACTIVATIONS[layer.activation](a[-1] @ layer.weights.astype(np.float64)
                                                   + layer.biases))
    delta = (a[-1] - Y) / len(X)
    for l in range(len(net.weights) - 1, 0, -1):
        delta = (delta @ net.weights[l].T.astype(np.float64)) * a[l] * (1 - a[l])
    return a[0].T @ delta + net.config.weight_decay * net.weights[0]


@pytest.mark.parametrize('decay', [0.0, 1e-3])
def test_a_wide_first_layer_trains_on_the_batch_columns_with_ink_only(decay, monkeypatch):
    """A first layer of 128 units or more multiplies only the columns a batch has ink in, and
    its dW's other rows are exact zeros (plus weight decay), whatever the buffer held: the same
    gradient as every column, for a batch whose ink is one span (a view) or scattered
    (gathered), and the same training."""
    test = np.load(btf.MODELS_DIR / 'mnist-test.npz')
    X = test['X'][:64].reshape(64, -1).astype(np.float32) / 255
    Y = np.eye(10, dtype=np.float32)[test['y'][:64]]
    span = X.copy()
    span[:, 200:600] += 0.01  # one span of ink, no blank column inside it
    span[:, :200] = 0
    span[:, 600:] = 0
    net = btf.Graph((784, 200, 10), 0.5, 16, weight_decay=decay, seed=1)
    assert not isinstance(btf._kept_columns(X), slice)  # MNIST batches are gathered
    assert btf._kept_columns(span) == slice(200, 600)
    # one row: a digit's few inked columns are gathered, a row inked all over its span is not
    assert not isinstance(btf._kept_columns(X[:1]), slice)
    assert btf._kept_columns(span[:1]) == slice(200, 600)
    for rows in (X, span, X[:1], np.zeros_like(X[:4])):
        Yr = Y[:len(rows)]
        kept = btf._kept_columns(rows)
        stale = np.full_like(net.weights[0], 7.0)  # a training's buffer, left over
        out = net._backprop(net._forward(rows, kept), Yr,
                            net._forward(rows, kept)[-1] - Yr, kept, stale)[0][0]
        assert out is stale
        expected = _plain_gradient(net, rows, Yr)
        np.testing.assert_allclose(out, expected, atol=1e-6)
        blank = ~rows.any(axis=0)
        assert np.array_equal(out[blank], decay * net.weights[0][blank])
        np.testing.assert_allclose(net.gradients(rows, Yr)[1][0], expected, atol=1e-6)
    wide, plain = net.copy(), net.copy()
    for each in (wide, plain):
        if each is plain:  # every column, as before
            monkeypatch.setattr(btf, '_WIDE_LAYER', 10 ** 6)
        assert (each._columns(X) is None) == (each is plain)
        each.feed((X, test['y'][:64]))
        each.run(2, progress=False)
    for a, b in zip(wide.weights, plain.weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_predict_batch_still_refuses_non_finite_rows():
    net = btf.Graph((784, 30, 10), seed=0)
    X = np.zeros((2, 784), np.float32)
    X[1, 5] = np.nan
    with pytest.raises(ValueError, match='NaN or infinite'):
        net.predict_batch(X)


def _train_choice(choice, seconds_of, batches):
    """The thread count of each of ``batches`` batches that a ThreadChoice picks when a
    batch on n threads takes seconds_of(n, k) (k the batch's index)."""
    used = []
    for k in range(batches):
        n = choice.next()
        used.append(n)
        choice.record(n, seconds_of(n, k))
    return used


def test_thread_choice_keeps_the_faster_count_after_a_trial():
    choice = btf.ThreadChoice((1, 2))
    used = _train_choice(choice, lambda n, k: {1: 10.0, 2: 6.0}[n], 100)
    trial = 2 * btf.ThreadChoice.TRIAL
    assert used[:trial] == [1, 2] * 4  # in turns, so that a change of load hits both
    assert used[trial:] == [2] * (100 - trial) and choice.trials == 1
    choice = btf.ThreadChoice((1, 2))
    used = _train_choice(choice, lambda n, k: {1: 10.0, 2: 13.0}[n], 100)
    assert used[:trial] == [1, 2] * 4 and used[trial:] == [1] * (100 - trial)


def test_thread_choice_drops_a_count_after_one_much_slower_batch():
    """On a busy machine a batch on two threads takes many times one thread's: the trial
    spends one such batch, not TRIAL."""
    choice = btf.ThreadChoice((1, 2))
    used = _train_choice(choice, lambda n, k: {1: 10.0, 2: 80.0}[n], 100)
    assert used.count(2) == 1 and used[:2] == [1, 2] and choice.chosen == 1


def test_thread_choice_tries_again_when_more_threads_slow_down():
    """Two threads win on a quiet machine; then the machine gets busy (two threads 4x
    slower, one thread 1.2x): after RECENT / 2 slow batches a new trial picks one thread,
    which then is not watched (a busier machine never favours more threads)."""
    busy_from = 50

    def seconds(n, k):
        busy = k >= busy_from
        return {1: 12.0 if busy else 10.0, 2: 24.0 if busy else 6.0}[n]

    choice = btf.ThreadChoice((1, 2))
    used = _train_choice(choice, seconds, 200)
    trial, recent = 2 * btf.ThreadChoice.TRIAL, btf.ThreadChoice.RECENT
    assert used[trial:busy_from] == [2] * (busy_from - trial)
    # the median of the last RECENT batches passes SLOWER x 6 once half of them are slow
    retried = busy_from + recent // 2
    assert used[busy_from:retried] == [2] * (retried - busy_from)
    assert used[retried:] == [1, 2] + [1] * (200 - retried - 2)  # 24 > 1.5 x 12: dropped
    assert choice.trials == 2
    choice = btf.ThreadChoice((1, 2))
    used = _train_choice(choice, lambda n, k: {1: 10.0 * (1 + 2 * (k > 50)), 2: 20.0}[n], 300)
    assert choice.trials == 1 and used[2:] == [1] * 298


def test_thread_choice_with_one_count_never_tries():
    choice = btf.ThreadChoice((1,))
    assert _train_choice(choice, lambda n, k: 5.0 * (k + 1), 100) == [1] * 100
    assert choice.trials == 0


def test_training_never_uses_more_blas_threads_than_its_caller_allows(mnist):
    """Under the caller's limit of one thread (the server's trainer) every batch runs on
    one; without it, a net whose products are large enough tries both and the epoch's record
    says which count training kept, a small net stays on one, and the caller's setting is
    back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')

    (X, y), _ = mnist
    seen = []

    def watch(info):
        if info['event'] == 'batch':
            seen.append(blas_threads())

    net = btf.Graph((784, 30, 10), 0.5, 128, seed=0)
    net.feed((X[:5000], y[:5000]))
    with threadpool_limits(1, user_api='blas'):
        history = net.run(1, callback=watch, progress=False)
        assert blas_threads() == 1
    assert seen and set(seen) == {1} and history[-1]['blas_threads'] == 1
    before, seen[:] = blas_threads(), []
    wide = btf.Graph((784, 128, 10), 0.5, 128, seed=0)  # 12.8 million multiply-adds a batch
    wide.feed((X[:5000], y[:5000]))
    with threadpool_limits(2, user_api='blas'):
        allowed = blas_threads()  # 2, or 1 where OpenBLAS started with one core
        history = wide.run(1, callback=watch, progress=False)
        assert blas_threads() == allowed
        assert set(seen) == {1, allowed}  # the trial tried both
        assert history[-1]['blas_threads'] in (1, allowed)
        seen[:] = []
        assert net.run(1, callback=watch, progress=False)[-1]['blas_threads'] == 1
        assert set(seen) == {1}  # 784-30-10's 3 million: no trial
        assert blas_threads() == allowed
    assert blas_threads() == before

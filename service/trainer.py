"""The training process: imports only the library and the data loader (no web server, no
image decoder), trains a copy of the live net and sends it back through a pipe."""
import base64
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import preprocess

log = logging.getLogger(__name__)
VIEW_SAMPLES = 2000  # the first images of each split that the per-epoch view measures
VIEW_UNITS = 16  # first-layer units pictured per epoch (784 bytes each)


@dataclass
class Assignment:
    """What one training process does: train ``net`` ``epochs`` epochs on the data set at
    ``data_path`` (and, with ``samples`` (X_train, y_train, X_val, y_val) of users' drawings,
    uint8, on them too: ``share`` of every epoch); report a batch at most every ``interval``
    / 2 seconds and score the result on ``score_samples`` validation samples; run at
    ``niceness``, with ``options`` applied to the net first (they are saved with it).
    ``test_path``: MNIST's official test images (models/mnist-test.npz), on
    which the gate's figures are measured before and after (None, or a missing file: not
    measured)."""
    net: btf.Graph
    data_path: Path
    epochs: int
    score_samples: int = 100
    interval: float = 0.1
    niceness: int = 10
    samples: tuple | None = None
    share: float = 0.1
    options: dict | None = None  # Graph.configure's (learning rate, batch size, optimiser...)
    test_path: Path | None = None
    adapt: 'Adaptation | None' = None  # the recipe with samples (train_with_samples)


def train(work, pipe, stop):
    """Do the ``work`` (an Assignment) and send through ``pipe`` ("step", info) for epochs and
    batches, then ("done", net, history, correct of the scored validation samples,
    comparison) or ("diverged" | "error", message). Stops after the batch during which
    ``stop`` is set. If the server dies, the next send fails and ends this process.

    With samples, every epoch also draws, with replacement and freshly augmented, as many of
    the training ones as make ``share`` of the epoch; the comparison reports MNIST's and the
    samples' validation accuracy before and after.
    """
    # Ctrl-C in a terminal, or systemd's stop, signals every process of the group: the server
    # stops this one after its batch (``stop``), and its death ends it (the pipe).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    net, epochs, samples, interval = work.net, work.epochs, work.samples, work.interval
    os.nice(work.niceness)  # requests come first
    threadpool_limits(1, user_api='blas')  # the other core serves requests
    last_batch = 0.0

    def callback(info):
        nonlocal last_batch
        if info['event'] == 'epoch':  # what a learner sees of the net, once per epoch
            info = {**info, **epoch_view(net, view)}
        if info['event'] == 'epoch' or time.monotonic() - last_batch >= interval / 2:
            last_batch = time.monotonic()
            pipe.send(('step', info))
        return stop.is_set()

    try:
        net.configure(**(work.options or {}))  # checked by the server before it queued them
        data = preprocess.load_dataset(work.data_path)
        view = view_data(data)
        X_val, y_val = data['val']
        test = official_test(work.test_path)
        before = compare(net, data['val'], samples, test)
        pipe.send(('step', {'event': 'before', 'before': before}))
        if samples is None:
            net.feed(data['train'], data['val'])
            history = net.run(epochs, callback=callback, progress=False)
        else:
            history = train_with_samples(net, data, samples, work.share, epochs, callback, stop,
                                         work.adapt)
        net.train_data = net.val_data = None  # the live net must not hold the data set
        sample = np.random.default_rng().choice(len(y_val), min(work.score_samples, len(y_val)),
                                                replace=False)
        comparison = {'before': before, 'after': compare(net, data['val'], samples, test)}
        pipe.send(('done', net, history, net.validate((X_val[sample], y_val[sample])),
                   comparison))
    except btf.TrainingDiverged as e:
        pipe.send(('diverged', str(e)))
    except Exception:
        log.exception('training failed')
        pipe.send(('error', 'training failed (logged on the server).'))


def extra_per_epoch(n_mnist, share):
    """How many samples an epoch of ``n_mnist`` MNIST images draws to make ``share`` of it."""
    return round(share / (1 - share) * n_mnist)


def train_with_samples(net, data, samples, share, epochs, callback, stop, adapt=None):
    """Train on MNIST and the samples: with ``adapt`` (an Adaptation: what the server runs),
    a fixed number of steps on a mix (``adapt_to``); else ``epochs`` MNIST epochs, each with
    ``share`` of freshly augmented samples."""
    from augment import augment  # OpenCV: only in the processes that train on samples

    if adapt is not None:
        return adapt_to(net, data, samples, adapt, epochs, callback, stop)
    X_train, y_train = data['train']
    X_s, y_s = samples[0], samples[1].astype(np.int64)
    extra = extra_per_epoch(len(y_train), share)
    rng = np.random.default_rng()
    history = []
    for _ in range(epochs):
        drawn = rng.integers(0, len(y_s), extra)
        X_extra = augment(X_s[drawn], rng).astype(np.float32) / np.float32(255)
        net.feed((np.concatenate([X_train, X_extra]), np.concatenate([y_train, y_s[drawn]])),
                 data['val'])
        history += net.run(1, callback=callback, progress=False)
        if stop.is_set():
            break
    return history


@dataclass(frozen=True)
class Adaptation:
    """How a net learns from drawings (chosen with ``bench.adapt``, see docs/models.md):
    ``steps`` mini-batches of ``batch`` per requested epoch, each ``share`` drawings (freshly
    augmented, ``distortion`` times augment.py's default ranges) and the rest MNIST training
    images (replay, against forgetting); plain SGD with ``momentum`` taking steps ``rate``
    times as large as the net's own training did (its base learning rate and momentum), on
    the layers ``layers`` ('all', or 'last': only the output layer)."""
    steps: int = 120
    batch: int = 64
    share: float = 0.5
    rate: float = 0.2
    momentum: float = 0.9
    layers: str = 'all'
    distortion: float = 1.0

    def __post_init__(self):
        if self.layers not in ('all', 'last'):
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}.")
        if not 0 < self.share <= 1:
            raise ValueError(f'share must be in (0, 1], got {self.share!r}.')
        for name in ('steps', 'batch'):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f'{name} must be a positive int, got {getattr(self, name)!r}.')
        if not self.rate > 0 or not 0 <= self.momentum < 1:
            raise ValueError(f'rate must be > 0 and momentum in [0, 1), got {self.rate!r}, '
                             f'{self.momentum!r}.')


ADAPT = Adaptation()  # a private net: its owner's few dozen drawings, half of every batch
SHARED = Adaptation(steps=800, share=0.1, rate=0.1)  # the live net: everyone's, by the
#                                                       thousand (share: --sample-share)


def distorted(X, rng, distortion):
    """augment.augment with its affine ranges scaled by ``distortion`` (0: as drawn)."""
    import augment  # OpenCV: only in the processes that train on samples

    if distortion == 0:
        return X
    lo, hi = augment.SCALE
    return augment.augment(X, rng, max_shift=augment.MAX_SHIFT * distortion,
                           max_rotation=augment.MAX_ROTATION * distortion,
                           max_shear=augment.MAX_SHEAR * distortion,
                           scale=(1 - (1 - lo) * distortion, 1 + (hi - 1) * distortion))


def adapt_to(net, data, samples, recipe=ADAPT, epochs=1, callback=None, stop=None, rng=None):
    """Train ``net`` on drawings: ``epochs`` x ``recipe.steps`` SGD steps, each on a
    batch of ``recipe.share`` augmented drawings (samples[0], uint8, labels samples[1]) and
    MNIST training images (``data['train']``, float in [0, 1]) for the rest. Returns the
    history, one record per epoch (MNIST validation accuracy when ``data['val']`` is set),
    as Graph.run does; ``callback`` gets the same batch and epoch events."""
    rng = np.random.default_rng() if rng is None else rng
    X_train, y_train = data['train']
    X_s, y_s = samples[0], np.asarray(samples[1], np.int64)
    own = max(1, round(recipe.batch * recipe.share))
    replay = recipe.batch - own
    moving = (range(len(net.weights)) if recipe.layers == 'all' else [len(net.weights) - 1])
    velocity = {l: (np.zeros_like(net.weights[l]), np.zeros_like(net.biases[l]))
                for l in moving}
    eye = np.eye(net.sizes[-1], dtype=net.dtype)
    # A step as large as ``rate`` of the net's own (its base rate, with its own momentum):
    rate = recipe.rate * net.learning_rate * (1 - recipe.momentum) / (1 - net.momentum)
    history = []
    for _ in range(epochs):
        started, total = time.perf_counter(), 0.0
        drawn = rng.integers(0, len(y_s), (recipe.steps, own))
        X_own = distorted(X_s[drawn.ravel()], rng, recipe.distortion).reshape(
            recipe.steps, own, -1).astype(net.dtype) / net.dtype.type(255)
        mnist = rng.integers(0, len(y_train), (recipe.steps, replay))
        stopped = False
        for k in range(recipe.steps):
            X = np.concatenate([X_own[k], X_train[mnist[k]]])
            y = np.concatenate([y_s[drawn[k]], y_train[mnist[k]]])
            loss, grad_w, grad_b = net.gradients(X, eye[y])
            if not np.isfinite(loss):
                raise btf.TrainingDiverged(f'loss became {loss} in step {k + 1} of adapting')
            for l in moving:
                for param, grad, v in ((net.weights[l], grad_w[l], velocity[l][0]),
                                       (net.biases[l], grad_b[l], velocity[l][1])):
                    v *= recipe.momentum
                    v -= rate * grad.reshape(v.shape)
                    param += v
            total += float(loss)
            if callback is not None and callback({'event': 'batch', 'epoch': net.epochs + 1,
                                                  'batch': k + 1, 'batches': recipe.steps,
                                                  'loss': float(loss)}):
                stopped = True
                break
        if stopped or (stop is not None and stop.is_set()):
            break
        net.epochs += 1
        record = {'epoch': net.epochs, 'loss': total / recipe.steps,
                  'learning_rate': rate,
                  'val_accuracy': (net.evaluate(*data['val']) if data.get('val') is not None
                                   else None),
                  'seconds': time.perf_counter() - started}
        history.append(record)
        if callback is not None:
            callback({'event': 'epoch', 'batches': recipe.steps, 'batch': recipe.steps,
                      **record})
    return history


def official_test(path):
    """(X (10000, 784) uint8, y (10000,) int64) of MNIST's official test images in the file
    the server ships (models/mnist-test.npz), or None when there is none (logged when it
    cannot be read)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            X, y = f['X'], f['y'].astype(np.int64)
        if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),):
            raise ValueError(f'it holds {X.dtype} images {X.shape} and labels {y.shape}')
    except (OSError, ValueError, KeyError) as e:
        log.error('the test images in %s cannot be read (%s): the gate does without them',
                  path, e)
        return None
    return X, y


def compare(net, val, samples, test=None):
    """What the net reads right, on images it does not train on: MNIST's validation split
    ("mnist"), the held-out samples ("samples", "samples_right" of "samples_count"; None
    without them) and MNIST's official test images ``test`` (X, y), overall and per digit
    ("test", "test_per_class", "test_count"; None without them)."""
    figures = {'mnist': round(net.evaluate(*val), 4), 'samples': None, 'samples_count': 0,
               'samples_right': None, 'test': None, 'test_per_class': None, 'test_count': 0}
    if samples is not None and len(samples[3]):
        X, y = samples[2], samples[3].astype(np.int64)
        right = int((net.predict_batch(X)[0] == y).sum())  # uint8 pixels: scaled by the net
        figures.update(samples=round(right / len(y), 4), samples_count=len(y),
                       samples_right=right)
    if test is not None:
        X, y = test
        read = net.predict_batch(X)[0] == y
        figures.update(test=round(float(read.mean()), 4), test_count=len(y),
                       test_per_class=[round(float(read[y == d].mean()), 4)
                                       for d in range(10)])
    return figures


# ---------------------------------------------------------------------------------------
# What a learner sees of the net once per epoch (service/playground.py, the page's curves,
# matrix and pictures): cheap next to an epoch, on fixed images so that epochs compare.

def view_data(data):
    """(X_train, y_train, X_val, y_val): the first VIEW_SAMPLES images of each split."""
    (X, y), (Xv, yv) = data['train'], data['val']
    return X[:VIEW_SAMPLES], y[:VIEW_SAMPLES], Xv[:VIEW_SAMPLES], yv[:VIEW_SAMPLES]


def epoch_view(net, view):
    """What a learner sees of the net after an epoch: training accuracy and validation loss
    on the fixed images of ``view``, the validation confusion matrix (rows: the true digit,
    columns: the net's answer; counts) and the first layer's first units as pictures."""
    X, y, Xv, yv = view
    classes = net.sizes[-1]
    train_labels = net.predict_batch(X)[0]
    labels, outputs = net.predict_batch(Xv)
    loss = btf.COSTS[net.config.cost, net.config.output].fn(
        outputs, np.eye(classes, dtype=outputs.dtype)[yv])
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (yv, labels), 1)
    return {'train_accuracy': round(float(np.mean(train_labels == y)), 4),
            'val_loss': round(float(loss), 6), 'view_samples': len(yv),
            'confusion': confusion.tolist(), 'units': unit_pictures(net)}


def unit_pictures(net, count=VIEW_UNITS):
    """The first layer's first ``count`` units' input weights as 28x28 grey pictures:
    base64 of 784 bytes each, row by row, 128 for a weight of 0, 255 and 1 for the unit's
    largest positive and negative weight."""
    W = net.weights[0][:, :count].T.astype(np.float64)  # (units, 784)
    side = int(round(W.shape[1] ** 0.5))
    scale = np.abs(W).max(axis=1, keepdims=True)
    scale[scale == 0] = 1
    pixels = np.clip(np.round(128 + 127 * W / scale), 0, 255).astype(np.uint8)
    return {'layer': 0, 'total': net.sizes[1], 'shape': [side, side],
            'pixels': [base64.b64encode(row.tobytes()).decode() for row in pixels]}

"""better_tensorflow: a small fully connected neural network in pure numpy.

A ``Graph`` is a stack of fully connected layers: sigmoid hidden layers and a sigmoid or
softmax output, trained by mini-batch gradient descent on a mean-squared-error or
cross-entropy cost. Rows are samples and every step is vectorised: one matrix product per
layer per batch. Models are saved as one self-describing NPZ that loads with
``allow_pickle=False``.

    import better_tensorflow as btf
    net = btf.Graph((784, 30, 10), 0.5, 128)
    net.feed((X_train, y_train), (X_val, y_val))
    net.run(epochs=20)
    label, activations = net.predict(x)            # int, (10, 1) array

Left out on purpose: convolutions, momentum and other optimisers, regularisation, GPUs.
"""
import copy
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / 'models'
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# Activations and costs: small pure functions in tables.

def sigmoid(z, out=None):
    """Logistic function 1 / (1 + e^-z), in place when ``out`` is ``z``."""
    with np.errstate(over='ignore'):  # e^-z overflows to inf for z << 0; 1/inf = 0 is right
        out = np.negative(z, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def softmax(z, out=None):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    out = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


ACTIVATIONS = {'sigmoid': sigmoid, 'softmax': softmax}

# Derivatives written from the activation's output a, so the activation is not recomputed.
DERIVATIVES = {'sigmoid': lambda a: a * (1 - a)}

_EPS = 1e-12  # keeps log() finite when an output saturates at exactly 0 or 1


def mse(a, y):
    """Mean over samples of 0.5 * ||a - y||^2 (the original's quadratic cost)."""
    return 0.5 * float(np.sum(np.square(a - y))) / len(a)


def cross_entropy(a, y, output='sigmoid'):
    """Mean over samples of the cross-entropy matching the output layer."""
    if output == 'softmax':
        return -float(np.sum(y * np.log(a + _EPS))) / len(a)
    return -float(np.sum(y * np.log(a + _EPS) + (1 - y) * np.log(1 - a + _EPS))) / len(a)


COSTS = {'mse': mse, 'cross_entropy': cross_entropy}


def _mse_sigmoid_delta(a, y):
    return (a - y) * a * (1 - a)


def _mse_softmax_delta(a, y):
    # J^T (a - y) with the softmax Jacobian J = diag(a) - a a^T
    g = a - y
    return a * (g - np.sum(g * a, axis=1, keepdims=True))


def _cross_entropy_delta(a, y):
    # Cross-entropy matched to its output (binary for sigmoid, categorical for softmax)
    # cancels the output derivative: dC/dz = a - y.
    return a - y


# dC/dz at the output layer, per sample, for each (cost, output) pair.
OUTPUT_DELTAS = {
    ('mse', 'sigmoid'): _mse_sigmoid_delta,
    ('mse', 'softmax'): _mse_softmax_delta,
    ('cross_entropy', 'sigmoid'): _cross_entropy_delta,
    ('cross_entropy', 'softmax'): _cross_entropy_delta,
}

INITS = ('scaled', 'normal')
DTYPES = ('float32', 'float64')


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'{name} must be one of {sorted(choices)}, got {value!r}.')


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the net keeps the weights of its last good epoch."""


class StopTraining(Exception):
    """Raised by a ``run`` callback to stop training early (returning True does the same)."""


# A batch's matrix products (128 x 784 x 30) are too small to share between cores: on a
# 2-core machine two BLAS threads made an epoch at best 1.2x faster when the machine was quiet,
# and up to 25x slower when other processes kept a core busy (every product waits for the
# descheduled thread; still 18x with the row blocks below on OpenBLAS's AVX2 kernels). So
# batches train on one BLAS thread. The limit is process-wide: concurrent trainings share it
# and the last one to finish restores the previous setting.
_blas_lock = threading.Lock()
_blas_trainings = 0
_blas_limits = None


@contextmanager
def _one_blas_thread():
    global _blas_trainings, _blas_limits
    with _blas_lock:
        if not _blas_trainings:
            _blas_limits = threadpool_limits(1, user_api='blas')
        _blas_trainings += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_trainings -= 1
            if not _blas_trainings:
                _blas_limits.restore_original_limits()


# OpenBLAS multiplies matrices of at most 100^3 multiply-adds with a kernel that skips
# packing them into blocks first. A batch's (128, 784) @ (784, 30) is three times that; cut
# into four row blocks it ran 1.4x (weight gradient) to 2x (forward) faster on one core.
# A wide layer is another matter: a row of (n, 784) @ (784, 800) alone is 0.6 * 100^3, and
# blocks of a row or two are matrix-vector products that each read all of the 2.5 MB of
# weights: 2.2x slower than one plain product (batches of 32 and 128, one core).
_SMALL_PRODUCT = 100 ** 3
_MIN_BLOCK_ROWS = 8


def _matmul(a, b):
    """a @ b, as one stacked product of equal row blocks of at most _SMALL_PRODUCT each
    when such blocks hold _MIN_BLOCK_ROWS rows or more, else as one plain product."""
    if _SMALL_PRODUCT // (a.shape[1] * b.shape[1]) < _MIN_BLOCK_ROWS:
        return a @ b
    blocks = max(1, min(len(a), -(-len(a) * a.shape[1] * b.shape[1] // _SMALL_PRODUCT)))
    while len(a) % blocks:  # the next divisor of len(a)
        blocks += 1
    return (a.reshape(blocks, -1, a.shape[1]) @ b).reshape(len(a), b.shape[1])


# ---------------------------------------------------------------------------------------
# Data: the original list of (x, y) pairs, or arrays (X, y).

def as_arrays(data, n_in=784, n_out=10, dtype=np.float32):
    """Return ``(X, labels)``: X (n, n_in) of ``dtype`` in [0, 1], labels (n,) int64.

    ``data`` is either a sequence of ``(x, y)`` pairs (x with n_in values, y an int label
    or a one-hot (n_out, 1) vector) or a pair ``(X, y)`` with X (n, n_in) and y (n,) int
    labels or (n, n_out) one-hot rows. uint8 pixels are scaled by 1/255.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], np.ndarray) \
            and data[0].ndim == 2:
        X, y = data
        y = np.asarray(y)
    else:
        try:
            pairs = list(data)
        except TypeError:
            raise TypeError('data must be a list of (x, y) pairs or a tuple (X, y) of arrays, '
                            f'got {type(data).__name__}.') from None
        if not pairs:
            raise ValueError('data is empty: expected at least one (x, y) sample.')
        try:
            X = np.stack([np.asarray(x).reshape(-1) for x, _ in pairs])
            y = np.stack([np.asarray(t).reshape(-1) for _, t in pairs])
        except (ValueError, TypeError) as e:
            raise ValueError(f'data must be (x, y) pairs with x of {n_in} values and y an int '
                             f'label or a one-hot ({n_out}, 1) vector: {e}') from None
        if y.shape[1] == 1:
            y = y[:, 0]
    _check_rows(X, n_in)
    if len(X) == 0:
        raise ValueError('data is empty: expected at least one sample.')
    labels = _labels(y, len(X), n_out)
    return _pixels(X, dtype, unit_range=True), labels


def _check_rows(X, n_in):
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f'X must have shape (n, {n_in}), got {X.shape}.')


def _pixels(X, dtype, unit_range):
    """Rows X as a contiguous ``dtype`` array: uint8 pixels scaled by 1/255, others checked
    to be finite (and, with ``unit_range``, within [0, 1])."""
    if X.dtype == np.uint8:
        return X.astype(dtype) / dtype(255)
    X = np.ascontiguousarray(X, dtype=dtype)
    if not np.all(np.isfinite(X)):
        raise ValueError('X contains NaN or infinite values.')
    if unit_range:
        lo, hi = float(X.min()), float(X.max())
        if lo < 0 or hi > 1:
            raise ValueError(f'pixel values must be in [0, 1], got values from {lo} to {hi} '
                             '(divide uint8 images by 255).')
    return X


def _labels(y, n, n_out):
    """Int labels (n,) from int labels or one-hot rows, validated."""
    if y.ndim == 2 and y.shape == (n, n_out):
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise ValueError(f'one-hot labels must have a single 1 per row of {n_out}.')
        return np.argmax(y, axis=1).astype(np.int64)
    if y.shape != (n,):
        raise ValueError(f'labels must have shape ({n},) or ({n}, {n_out}), got {y.shape}.')
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise ValueError(f'labels must be integers, got dtype {y.dtype}.')
    labels = y.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_out:
        raise ValueError(f'labels must be in 0..{n_out - 1}, '
                         f'got values from {labels.min()} to {labels.max()}.')
    return labels


# ---------------------------------------------------------------------------------------
# The network.

class Graph:
    """A fully connected network: sigmoid hidden layers, sigmoid or softmax output.

    ``Graph(sizes, learning_rate, batch_size)``, e.g. ``Graph((784, 30, 10), 0.5, 128)``.
    Keyword options: ``init`` ('scaled' N(0, 1/fan_in) or the original 'normal' N(0, 1)),
    ``cost`` ('cross_entropy' or the original 'mse'), ``output`` ('softmax' or the
    original 'sigmoid'), ``dtype`` ('float32' or 'float64'), ``seed`` (int or None).
    Weights are W[l] (sizes[l], sizes[l+1]) so that a batch X (n, sizes[0]) goes
    forward as X @ W[0] + b[0].
    """

    def __init__(self, sizes, learning_rate=0.5, batch_size=128, *, init='scaled',
                 cost='cross_entropy', output='softmax', dtype='float32', seed=None):
        try:
            valid = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                        for s in sizes)
        except TypeError:
            valid = False
        if not valid or len(sizes) < 2 or min(sizes) < 1:
            raise ValueError('sizes must list at least 2 layers of positive ints, '
                             f'got {sizes!r}.')
        sizes = tuple(int(s) for s in sizes)
        if not (isinstance(learning_rate, (int, float, np.number)) and 0 < learning_rate < 1e6
                and np.isfinite(learning_rate)) or isinstance(learning_rate, bool):
            raise ValueError(f'learning_rate must be a positive number, got {learning_rate!r}.')
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
                or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}.')
        _check_choice('init', init, INITS)
        _check_choice('cost', cost, COSTS)
        _check_choice('output', output, ACTIVATIONS)
        try:
            dtype_name = np.dtype(dtype).name
        except TypeError:
            dtype_name = repr(dtype)
        _check_choice('dtype', dtype_name, DTYPES)
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f'seed must be a non-negative int or None, got {seed!r}.')
        self.sizes = sizes
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.init, self.cost, self.output = init, cost, output
        self.dtype = np.dtype(dtype_name)
        self.seed = seed
        self.epochs = 0
        self.rng = np.random.default_rng(seed)
        self.weights, self.biases = self._initial_parameters()
        self.train_data = self.val_data = None

    def _initial_parameters(self):
        weights, biases = [], []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            scale = 1 / np.sqrt(n_in) if self.init == 'scaled' else 1.0
            weights.append((self.rng.standard_normal((n_in, n_out)) * scale).astype(self.dtype))
            biases.append(self.rng.standard_normal(n_out).astype(self.dtype))
        return weights, biases

    def __repr__(self):
        return (f'Graph({self.sizes}, {self.learning_rate}, {self.batch_size}, '
                f'init={self.init!r}, cost={self.cost!r}, output={self.output!r}, '
                f'dtype={self.dtype.name!r}, seed={self.seed}) trained {self.epochs} epochs')

    def copy(self):
        """A deep copy: training the copy never changes this net."""
        return copy.deepcopy(self)

    @property
    def options(self):
        """Everything besides the parameters needed to rebuild this net."""
        return dict(init=self.init, cost=self.cost, output=self.output,
                    dtype=self.dtype.name, seed=self.seed)

    # -- forward, backward, update ---------------------------------------------------

    def _forward(self, X):
        """Activations of every layer for a batch X (n, sizes[0]): [X, a1, ..., aL]."""
        activations = [X]
        last = len(self.weights) - 1
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = _matmul(activations[-1], W)  # (n, sizes[l+1])
            z += b
            activations.append(ACTIVATIONS[self.output if l == last else 'sigmoid'](z, out=z))
        return activations

    def _backprop(self, activations, Y):
        """Gradients of the summed (not mean) cost over the batch: ([dW], [db])."""
        delta = OUTPUT_DELTAS[self.cost, self.output](activations[-1], Y)  # (n, sizes[-1])
        grad_w, grad_b = [None] * len(self.weights), [None] * len(self.weights)
        for l in range(len(self.weights) - 1, -1, -1):
            grad_w[l] = _matmul(activations[l].T, delta)  # (sizes[l], sizes[l+1])
            grad_b[l] = delta.sum(axis=0)
            if l:  # the input layer needs no delta
                a = activations[l]
                delta = (delta @ self.weights[l].T) * DERIVATIVES['sigmoid'](a)
        return grad_w, grad_b

    def _update(self, grad_w, grad_b, n):
        """One gradient-descent step by learning_rate * the mean gradient over n samples."""
        step = self.dtype.type(self.learning_rate / n)
        for W, b, gW, gb in zip(self.weights, self.biases, grad_w, grad_b):
            gW *= step
            W -= gW
            b -= step * gb

    # -- training --------------------------------------------------------------------

    def feed(self, train_data, val_data=None):
        """Set the training data and (optionally) the validation data, in either format."""
        n_in, n_out = self.sizes[0], self.sizes[-1]
        train = as_arrays(train_data, n_in, n_out, self.dtype.type)
        val = None if val_data is None else as_arrays(val_data, n_in, n_out, self.dtype.type)
        self.train_data, self.val_data = train, val

    def run(self, epochs=1, callback=None, progress=True):
        """Train for ``epochs`` epochs on the fed data; return the history (a dict per epoch).

        ``callback(info)`` is called after every batch (``info['event'] == 'batch'``) and
        every epoch (``'epoch'``, with the epoch's loss and validation accuracy); returning
        True or raising ``StopTraining`` stops training after that batch, keeping the
        weights learnt so far. A NaN or infinite loss raises ``TrainingDiverged`` and restores
        the weights of the last good epoch.
        """
        if self.train_data is None:
            raise RuntimeError('no training data: call feed(train_data, val_data) first.')
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f'epochs must be a positive int, got {epochs!r}.')
        with np.errstate(over='ignore', invalid='ignore'):  # divergence is checked below
            return self._epochs(epochs, callback, progress)

    def _epochs(self, epochs, callback, progress):
        X, labels = self.train_data
        n, bs = len(X), self.batch_size
        batches = -(-n // bs)
        eye = np.eye(self.sizes[-1], dtype=self.dtype)
        batch_X = np.empty((min(bs, n), X.shape[1]), X.dtype)  # every batch is gathered here
        cost = COSTS[self.cost]
        cost_args = (self.output,) if self.cost == 'cross_entropy' else ()
        history = []
        for _ in range(epochs):
            good = ([W.copy() for W in self.weights], [b.copy() for b in self.biases])
            started, total_loss = time.perf_counter(), 0.0
            order = self.rng.permutation(n)  # shuffle indices, not data
            stop = False
            with _one_blas_thread(), tqdm(total=batches, desc=f'epoch {self.epochs + 1}',
                                          unit='batch', leave=False, disable=not progress) as bar:
                for k in range(batches):
                    idx = order[k * bs:(k + 1) * bs]
                    # idx is a permutation, so mode='clip' is safe, and unlike 'raise' it
                    # writes straight into out without a buffer
                    Xb = np.take(X, idx, axis=0, out=batch_X[:len(idx)], mode='clip')
                    Yb = eye[labels[idx]]
                    activations = self._forward(Xb)
                    loss = cost(activations[-1], Yb, *cost_args)
                    if not np.isfinite(loss):
                        self._diverged(good, f'loss became {loss} in batch {k + 1}')
                    self._update(*self._backprop(activations, Yb), len(idx))
                    total_loss += loss * len(idx)
                    bar.update()
                    if callback is not None:
                        stop = self._call(callback, event='batch', epoch=self.epochs + 1,
                                          batch=k + 1, batches=batches, loss=loss)
                        if stop:
                            break
            if stop:
                log.info('training stopped by the callback in epoch %d', self.epochs + 1)
                break
            if not all(np.isfinite(p).all() for p in self.weights + self.biases):
                self._diverged(good, 'weights became infinite or NaN')
            self.epochs += 1
            record = {'epoch': self.epochs, 'loss': total_loss / n,
                      'val_accuracy': None if self.val_data is None else
                      self.evaluate(*self.val_data),
                      'seconds': time.perf_counter() - started}
            history.append(record)
            log.info('epoch %d: %.2f s, loss %.4f, validation accuracy %s', self.epochs,
                     record['seconds'], record['loss'],
                     'n/a' if record['val_accuracy'] is None else
                     f"{100 * record['val_accuracy']:.2f}%")
            if callback is not None and self._call(callback, event='epoch', batches=batches,
                                                   batch=batches, **record):
                break
        return history

    def _diverged(self, good, what):
        self.weights, self.biases = good
        raise TrainingDiverged(f'{what} in epoch {self.epochs + 1}; restored the weights of '
                               f'epoch {self.epochs}. Try a learning_rate smaller than '
                               f'{self.learning_rate}.')

    @staticmethod
    def _call(callback, **info):
        try:
            return bool(callback(info))
        except StopTraining:
            return True

    # -- inference -------------------------------------------------------------------

    def predict_batch(self, X):
        """Labels (n,) and output activations (n, sizes[-1]) for inputs X (n, sizes[0])."""
        X = np.asarray(X)
        _check_rows(X, self.sizes[0])
        X = _pixels(X, self.dtype.type, unit_range=False)
        outputs = self._forward(X)[-1]
        return np.argmax(outputs, axis=1), outputs

    def predict(self, x):
        """Label and output activations (sizes[-1], 1) of one input of sizes[0] values."""
        x = np.asarray(x)
        if x.size != self.sizes[0]:
            raise ValueError(f'x must hold {self.sizes[0]} values, got shape {x.shape}.')
        labels, outputs = self.predict_batch(x.reshape(1, -1))
        return int(labels[0]), outputs.reshape(-1, 1)

    def evaluate(self, X, y=None):
        """Fraction of samples classified correctly, for (X, y) arrays or any data format."""
        X, labels = as_arrays(X if y is None else (X, y), self.sizes[0], self.sizes[-1],
                              self.dtype.type)
        return self._correct(X, labels) / len(labels)

    def validate(self, val_data):
        """Number of correctly classified samples (int) in val_data, in either format."""
        X, labels = as_arrays(val_data, self.sizes[0], self.sizes[-1], self.dtype.type)
        return self._correct(X, labels)

    def _correct(self, X, labels, chunk=10000):
        return int(sum(np.count_nonzero(self.predict_batch(X[i:i + chunk])[0] ==
                                        labels[i:i + chunk]) for i in range(0, len(X), chunk)))

    # -- save and load ---------------------------------------------------------------

    def save(self, path):
        """Write the net to one NPZ atomically; a bare file name goes under models/."""
        path = _resolve(path)
        arrays = {'format_version': np.int64(FORMAT_VERSION),
                  'sizes': np.array(self.sizes, dtype=np.int64),
                  'learning_rate': np.float64(self.learning_rate),
                  'batch_size': np.int64(self.batch_size),
                  'epochs': np.int64(self.epochs),
                  'init': np.str_(self.init), 'cost': np.str_(self.cost),
                  'output': np.str_(self.output), 'dtype': np.str_(self.dtype.name),
                  'seed': np.int64(-1 if self.seed is None else self.seed)}
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f'W{l}'], arrays[f'b{l}'] = W, b
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def from_file(cls, path):
        """Build a net, architecture and options included, from a file written by save()."""
        path = _resolve(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # zip, pickle and format errors all mean "not our file"
            raise ValueError(f'{path} is not a readable model file: {e}') from None
        try:
            sizes = tuple(int(s) for s in data['sizes'])
            net = cls(sizes, float(data['learning_rate']), int(data['batch_size']),
                      init=str(data['init']), cost=str(data['cost']),
                      output=str(data['output']), dtype=str(data['dtype']),
                      seed=None if int(data['seed']) < 0 else int(data['seed']))
            net.epochs = int(data['epochs'])
            for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                W, b = data[f'W{l}'], data[f'b{l}']
                if W.shape != (n_in, n_out) or b.shape != (n_out,):
                    raise ValueError(f'layer {l} has W {W.shape} and b {b.shape}, expected '
                                     f'({n_in}, {n_out}) and ({n_out},)')
                if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                    raise ValueError(f'layer {l} holds NaN or infinite weights')
                net.weights[l], net.biases[l] = W.astype(net.dtype), b.astype(net.dtype)
        except KeyError as e:
            raise ValueError(f'{path} is not a model file: missing {e}') from None
        except (ValueError, TypeError) as e:
            raise ValueError(f'{path} is not a valid model file: {e}') from None
        return net

    def load(self, path):
        """Replace this net by the one in ``path``; the file must have this net's sizes.

        On any error (missing, corrupt or mismatched file) the net is left unchanged.
        """
        other = Graph.from_file(path)
        if other.sizes != self.sizes:
            raise ValueError(f'{_resolve(path)} holds a {other.sizes} net, '
                             f'this net is {self.sizes}.')
        data = (self.train_data, self.val_data)
        self.__dict__.update(other.__dict__)
        self.train_data, self.val_data = data
        return self


@contextmanager
def atomic_write(path, durable=True):
    """A binary file object for ``path``: a temporary file that replaces ``path`` on success.

    Readers see the old file or the new one, never a partial one, even if the process dies;
    ``durable`` also flushes it to disk first, so that it survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        with open(tmp, 'xb') as f:  # not mkstemp: its files are private (0600), not per umask
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _resolve(path):
    """A bare file name means models/<name>; '.npz' is added when missing."""
    bare = os.sep not in str(path) and '/' not in str(path)
    path = Path(path)
    if path.suffix != '.npz':
        path = path.with_name(path.name + '.npz')
    return MODELS_DIR / path if bare else path

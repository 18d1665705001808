"""better_tensorflow: a small fully connected neural network in pure numpy.

A ``Graph`` is a stack of fully connected layers: sigmoid, tanh or ReLU hidden layers (any
number of them) and a sigmoid or softmax output, trained on mini-batches by plain or momentum
SGD or by Adam, on a mean-squared-error or cross-entropy cost, with optional L2 weight decay,
a learning-rate schedule and early stopping. Rows are samples and every step is vectorised:
one matrix product per layer per batch. Models are saved as one self-describing NPZ (options,
weights and the optimiser's state) that loads with ``allow_pickle=False``.

    import better_tensorflow as btf
    net = btf.Graph((784, 30, 10), 0.5, 128)
    net.feed((X_train, y_train), (X_val, y_val))
    net.run(epochs=20)
    label, activations = net.predict(x)            # int, (10, 1) array

The module reads top to bottom: activations, costs, schedules, optimisers, the options
object, then ``Graph`` (forward, backward, training, inference, save and load).

Left out on purpose: convolutions, dropout, batch normalisation, GPUs.
"""
import copy
import dataclasses
import functools
import io
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / 'models'
FORMAT_VERSION = 2  # 1: no options object, no optimiser state (still loads)
MAX_PARAMETERS = 10 ** 8  # the largest net from_file builds (400 MB of float32 weights)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{name} must be one of {sorted(choices)}, got {value!r}.')


# ---------------------------------------------------------------------------------------
# Activations: small pure functions in tables.

def sigmoid(z, out=None):
    """Logistic function 1 / (1 + e^-z), in place when ``out`` is ``z``."""
    with np.errstate(over='ignore'):  # e^-z overflows to inf for z << 0; 1/inf = 0 is right
        out = np.negative(z, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def tanh(z, out=None):
    return np.tanh(z, out=out)


def relu(z, out=None):
    # against a row of zeros: numpy's maximum with a scalar 0 takes a loop about twice as slow
    return np.maximum(z, np.zeros(z.shape[-1], z.dtype), out=out)


def softmax(z, out=None):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    out = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


ACTIVATIONS = {'sigmoid': sigmoid, 'tanh': tanh, 'relu': relu, 'softmax': softmax}
HIDDEN_ACTIVATIONS = ('sigmoid', 'tanh', 'relu')
OUTPUTS = ('sigmoid', 'softmax')

# Derivatives written from the activation's output a, so the activation is not recomputed.
DERIVATIVES = {
    'sigmoid': lambda a: a * (1 - a),
    'tanh': lambda a: 1 - a * a,
    'relu': lambda a: a > 0,  # a bool mask: multiplying by it keeps the delta's dtype
}

# Variance gain of the 'scaled' initialisation, N(0, gain / fan_in), per hidden activation:
# LeCun's 1 keeps sigmoid and tanh units out of saturation, He's 2 makes up for ReLU
# zeroing half of its inputs. The output layer always gets 1.
INIT_GAINS = {'sigmoid': 1.0, 'tanh': 1.0, 'relu': 2.0}
INITS = ('scaled', 'normal')


# ---------------------------------------------------------------------------------------
# Costs: one entry per (cost, output) pair, holding the cost and its output delta.

_EPS = 1e-12  # keeps log() finite when an output saturates at exactly 0 or 1


class Cost(NamedTuple):
    fn: Callable     # (a, y) -> mean cost over the samples (rows)
    delta: Callable  # (a, y) -> dC/dz at the output, per sample (n, sizes[-1])


def mse(a, y):
    """Mean over samples of 0.5 * ||a - y||^2 (the original's quadratic cost)."""
    return 0.5 * float(np.sum(np.square(a - y))) / len(a)


def categorical_cross_entropy(a, y):
    return -float(np.sum(y * np.log(a + _EPS))) / len(a)


def binary_cross_entropy(a, y):
    return -float(np.sum(y * np.log(a + _EPS) + (1 - y) * np.log(1 - a + _EPS))) / len(a)


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


COSTS = {
    ('mse', 'sigmoid'): Cost(mse, _mse_sigmoid_delta),
    ('mse', 'softmax'): Cost(mse, _mse_softmax_delta),
    ('cross_entropy', 'sigmoid'): Cost(binary_cross_entropy, _cross_entropy_delta),
    ('cross_entropy', 'softmax'): Cost(categorical_cross_entropy, _cross_entropy_delta),
}
COST_NAMES = ('cross_entropy', 'mse')


# ---------------------------------------------------------------------------------------
# Learning-rate schedules: the rate of an epoch (0-based) from the base rate.

def _constant(rate, epoch):
    return rate


def _step(rate, epoch, every, factor):
    return rate * factor ** (epoch // every)


def _exponential(rate, epoch, gamma):
    return rate * gamma ** epoch


def _cosine(rate, epoch, epochs, floor):
    return floor + (rate - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))


# name: (function, default parameters, check of the parameters)
SCHEDULES = {
    'constant': (_constant, (), lambda: True),
    'step': (_step, (10, 0.5), lambda every, factor: _is_count(every) and 0 < factor <= 1),
    'exponential': (_exponential, (0.95,), lambda gamma: 0 < gamma <= 1),
    'cosine': (_cosine, (50, 0.0), lambda epochs, floor: _is_count(epochs) and floor >= 0),
}


def _is_count(value):
    return float(value).is_integer() and value >= 1


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _normalise_schedule(schedule):
    """A callable, or the tuple (name, *parameters); a bare name takes the defaults."""
    if callable(schedule):
        return schedule
    spec = (schedule,) if isinstance(schedule, str) else schedule
    if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str) \
            and spec[0] in SCHEDULES:
        _, defaults, valid = SCHEDULES[spec[0]]
        params = tuple(spec[1:]) or defaults
        if len(params) == len(defaults) and all(_is_number(p) for p in params) \
                and valid(*params):
            return (spec[0], *(float(p) for p in params))
    raise ValueError(
        f'schedule must be one of {sorted(SCHEDULES)}, a tuple (name, *parameters): '
        "('step', every, factor) with every >= 1 epochs and 0 < factor <= 1, "
        "('exponential', gamma) with 0 < gamma <= 1, ('cosine', epochs, floor) with epochs "
        f'>= 1 and floor >= 0; or a callable epoch -> rate; got {schedule!r}.')


def scheduled_rate(schedule, rate, epoch):
    """The learning rate of ``epoch`` (0-based) under ``schedule``, from the base ``rate``."""
    if callable(schedule):
        got = schedule(epoch)
        if not (_is_number(got) and got > 0):
            raise ValueError(f'the schedule callable returned {got!r} for epoch {epoch}; '
                             'expected a positive number.')
        return float(got)
    name, *params = schedule
    if name in ('step', 'cosine'):
        params[0] = int(params[0])
    return SCHEDULES[name][0](rate, epoch, *params)


# ---------------------------------------------------------------------------------------
# Optimisers: small objects with one update(params, grads), as scikit-learn's
# _stochastic_optimizers.py. ``grads`` are mean gradients over the batch; update may
# overwrite them. The learning rate of the epoch is set by the Graph through the schedule.

class SGD:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Plain: p -= rate * g. Momentum (scikit-learn's form): v = momentum * v - rate * g, then
    p += v, or with Nesterov p += momentum * v - rate * g.
    """

    def __init__(self, params, momentum=0.0, nesterov=False):
        self.momentum, self.nesterov = momentum, nesterov
        self.learning_rate = None
        self.velocities = [np.zeros_like(p) for p in params] if momentum else []

    @classmethod
    def build(cls, params, config):
        """The optimiser a net's options (``config``) ask for."""
        return cls(params, config.momentum, config.nesterov)

    def update(self, params, grads):
        rate = self.learning_rate
        if not self.momentum:
            for p, g in zip(params, grads):
                g *= rate
                p -= g
            return
        for p, g, v in zip(params, grads, self.velocities):
            v *= self.momentum
            g *= rate
            v -= g
            if self.nesterov:
                p += self.momentum * v
                p -= g
            else:
                p += v

    def state(self):
        """The arrays that make training resume exactly, by name."""
        return {f'velocity{i}': v for i, v in enumerate(self.velocities)}

    def set_state(self, arrays):
        self.velocities = [_like(arrays, f'velocity{i}', v) for i, v in
                           enumerate(self.velocities)]


class Adam:
    """Adam (Kingma and Ba, 2015), as PyTorch's ``torch.optim.Adam``:
    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    p -= rate * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, params, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.learning_rate = None
        self.t = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    @classmethod
    def build(cls, params, config):
        """The optimiser a net's options (``config``) ask for."""
        return cls(params)

    def update(self, params, grads):
        self.t += 1
        root = math.sqrt(1 - self.beta2 ** self.t)
        # rate / (1 - b1^t) * m / (sqrt(v) / root + eps), with root multiplied through
        step = self.learning_rate * root / (1 - self.beta1 ** self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m -= g  # m = b1 (m - g) + g = b1 m + (1 - b1) g, in place
            m *= self.beta1
            m += g
            g *= g  # likewise v = b2 (v - g^2) + g^2
            v -= g
            v *= self.beta2
            v += g
            denominator = np.sqrt(v, out=g)  # g is no longer needed
            denominator += self.epsilon * root
            np.divide(m, denominator, out=denominator)
            denominator *= step
            p -= denominator

    def state(self):
        arrays = {'t': np.int64(self.t)}
        arrays |= {f'm{i}': m for i, m in enumerate(self.m)}
        arrays |= {f'v{i}': v for i, v in enumerate(self.v)}
        return arrays

    def set_state(self, arrays):
        self.t = int(arrays['t'])
        self.m = [_like(arrays, f'm{i}', m) for i, m in enumerate(self.m)]
        self.v = [_like(arrays, f'v{i}', v) for i, v in enumerate(self.v)]


def _like(arrays, name, reference):
    """arrays[name] checked to have reference's shape, as reference's dtype."""
    a = arrays[name]
    if a.shape != reference.shape or not np.all(np.isfinite(a)):
        raise ValueError(f'optimiser state {name} has shape {a.shape} or non-finite values, '
                         f'expected finite values of shape {reference.shape}')
    return a.astype(reference.dtype)


OPTIMIZERS = {'sgd': SGD, 'adam': Adam}  # the options' names; each class's build(params, config)


class Layer(NamedTuple):
    """One layer of a net, as Graph.layers() gives it."""
    weights: np.ndarray  # (inputs, units)
    biases: np.ndarray  # (units,)
    activation: str


# ---------------------------------------------------------------------------------------
# The options: one object that __init__ validates and save, load, repr and copy iterate.

DTYPES = ('float32', 'float64')


@dataclasses.dataclass(frozen=True)
class Options:
    """Every keyword option of a Graph (besides sizes, learning_rate and batch_size).

    activation: hidden layers, 'sigmoid' (default), 'tanh' or 'relu'.
    output: 'softmax' (default) or 'sigmoid' (the original). cost: 'cross_entropy' (default)
    or 'mse' (the original). init: 'scaled' (N(0, gain / fan_in), gain 2 for ReLU layers,
    else 1; default) or 'normal' (N(0, 1), the original).
    optimizer: 'sgd' (default) or 'adam'. momentum: 0 <= momentum < 1, SGD only.
    nesterov: Nesterov momentum (needs momentum > 0). weight_decay: L2 coefficient >= 0,
    added as weight_decay * W to each batch's mean weight gradient (Nielsen's lmbda / n).
    schedule: 'constant', 'step', 'exponential', 'cosine' or a tuple with parameters
    (see SCHEDULES), or a callable epoch -> learning rate.
    dtype: 'float32' (default) or 'float64'. seed: int >= 0 or None.
    """
    activation: str = 'sigmoid'
    output: str = 'softmax'
    cost: str = 'cross_entropy'
    init: str = 'scaled'
    optimizer: str = 'sgd'
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: object = 'constant'
    dtype: str = 'float32'
    seed: int | None = None

    def __post_init__(self):
        _check_choice('activation', self.activation, HIDDEN_ACTIVATIONS)
        _check_choice('output', self.output, OUTPUTS)
        _check_choice('cost', self.cost, COST_NAMES)
        _check_choice('init', self.init, INITS)
        _check_choice('optimizer', self.optimizer, OPTIMIZERS)
        if not (_is_number(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f'momentum must be a number in [0, 1), got {self.momentum!r}.')
        if self.momentum and self.optimizer != 'sgd':
            raise ValueError(f"momentum applies to optimizer='sgd' (Adam has its own), got "
                             f'momentum={self.momentum!r} with optimizer={self.optimizer!r}.')
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise ValueError(f'nesterov must be True or False, got {self.nesterov!r}.')
        if self.nesterov and not self.momentum:
            raise ValueError(f'nesterov=True needs momentum > 0, got momentum={self.momentum!r}.')
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f'weight_decay must be a number >= 0, got {self.weight_decay!r}.')
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError:
            dtype = repr(self.dtype)
        _check_choice('dtype', dtype, DTYPES)
        if self.seed is not None and (not isinstance(self.seed, (int, np.integer))
                                      or isinstance(self.seed, bool) or self.seed < 0):
            raise ValueError(f'seed must be a non-negative int or None, got {self.seed!r}.')
        normal = dict(momentum=float(self.momentum), nesterov=bool(self.nesterov),
                      weight_decay=float(self.weight_decay), dtype=dtype,
                      schedule=_normalise_schedule(self.schedule),
                      seed=None if self.seed is None else int(self.seed))
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    def as_dict(self):
        """JSON-ready: the schedule as a list, a callable schedule by its name."""
        d = dataclasses.asdict(self)
        d['schedule'] = (getattr(self.schedule, '__name__', repr(self.schedule))
                         if callable(self.schedule) else list(self.schedule))
        return d


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(Options))
TRAINING_OPTIONS = ('optimizer', 'momentum', 'nesterov', 'weight_decay', 'schedule')  # what
#   Graph.configure may change on a made net (the others say what the net is)


class RefusedModelFile(ValueError):
    """A model file whose members do not hold the net it declares (read no further)."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the net keeps the weights of its last good epoch."""


class StopTraining(Exception):
    """Raised by a ``run`` callback to stop training early (returning True does the same)."""


# Whether a batch's matrix products gain from a second BLAS thread depends on the net and on
# the machine's load at that moment: 784-30-10's (128 x 784 x 30) are too small to share and
# lose nothing on one thread; 784-800-10's gain about 16% on a quiet machine, but on a busy
# one every product waits for a descheduled thread and an epoch took 4x longer
# (docs/performance.md). So training times its batches (ThreadChoice): each epoch starts by
# trying one thread and every thread the caller allows, and keeps the faster until batches
# slow down. The limit is process-wide: a training that runs while another does in the same
# process stays on one thread, and the last one to finish restores the previous setting; a
# caller that allows one thread (the server's trainer: the other core serves) gets one.
_blas_lock = threading.Lock()
_blas_trainings = 0
_blas_limits = None
_blas_ceiling = 1  # the BLAS threads in force before the first of the running trainings
_blas_controller = None  # threadpoolctl's BLAS libraries, found once (_blas)


def _blas():
    """threadpoolctl's controller of the process's BLAS libraries, found at the first call:
    finding them reads the process's maps and every library's symbols (0.3-0.4 ms, 0.6 ms
    with PyTorch loaded), which at every epoch and thread switch cost a small net's epoch
    about 12%. Called with _blas_lock held."""
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController().select(user_api='blas')
    return _blas_controller


@contextmanager
def _one_blas_thread():
    global _blas_trainings, _blas_limits, _blas_ceiling
    with _blas_lock:
        if not _blas_trainings:
            before = [i['num_threads'] for i in _blas().info()]
            _blas_ceiling = max(before, default=1)
            _blas_limits = _blas().limit(limits=1)
        else:  # another training may be on more threads: both go on one
            _blas().limit(limits=1)
        _blas_trainings += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_trainings -= 1
            if not _blas_trainings:
                _blas_limits.restore_original_limits()


def _thread_counts():
    """The BLAS thread counts a training may try now: (1,) or (1, the caller's limit)."""
    with _blas_lock:
        alone = _blas_trainings == 1
    return (1, _blas_ceiling) if alone and _blas_ceiling > 1 else (1,)


def _set_blas_threads(count):
    """Set ``count`` BLAS threads if this is the only training running; the count set."""
    with _blas_lock:
        count = count if _blas_trainings == 1 else 1
        _blas().limit(limits=count)
    return count


# A product of fewer multiply-adds than this gains nothing from a second thread: 784-30-10's
# (128 x 784 x 30, 3 million) trained no faster, and a trial's batches on two threads cost
# it (0.137 s against 0.114 s an epoch, docs/performance.md).
_SHARED_PRODUCT = 10 ** 7


class ThreadChoice:
    """Which of ``counts`` BLAS thread counts (the first is 1) to train the next batch with,
    from the wall times of the batches before.

    A trial gives the counts turns until each has timed TRIAL batches; a count whose batch
    took SLOWER times the median of one thread's is out of the trial at once (on a busy
    machine a batch on two threads can take many times longer: the trial must cost one such
    batch, not TRIAL). Then the count of the lowest median trains. More threads than one are
    watched: when the median of the last RECENT batches is SLOWER times the trial's, the
    machine got busier and a new trial starts. One thread is not: a busier machine makes
    more threads worse, not better. Training starts a trial at every epoch."""

    TRIAL = 4
    RECENT = 16
    SLOWER = 1.5

    def __init__(self, counts):
        self.counts = tuple(counts)
        self.trials = 0
        self.trial()

    def trial(self):
        self.times = {n: [] for n in self.counts} if len(self.counts) > 1 else {}
        if self.times:
            self.trials += 1
        self.chosen, self.pace, self.recent = self.counts[0], None, []

    def next(self):
        """The thread count for the next batch."""
        waiting = [n for n, t in self.times.items() if len(t) < self.TRIAL]
        if waiting:
            return min(waiting, key=lambda n: len(self.times[n]))
        return self.chosen

    def record(self, count, seconds):
        """The wall time of a batch just trained with ``count`` threads."""
        times = self.times.get(count)
        if times is not None and len(times) < self.TRIAL:
            times.append(seconds)
            one = self.times[self.counts[0]]
            if count != self.counts[0] and one and seconds > self.SLOWER * np.median(one):
                del self.times[count]  # out of this trial
            if all(len(t) == self.TRIAL for t in self.times.values()):
                medians = {n: float(np.median(t)) for n, t in self.times.items()}
                self.chosen = min(medians, key=medians.get)
                self.pace, self.times = medians[self.chosen], {}
            return
        if self.pace is None or self.chosen == 1:
            return
        self.recent = (self.recent + [seconds])[-self.RECENT:]
        if len(self.recent) == self.RECENT and np.median(self.recent) > self.SLOWER * self.pace:
            self.trial()


# OpenBLAS multiplies matrices of at most 100^3 multiply-adds with a kernel that skips
# packing them into blocks first; a batch's (128, 784) @ (784, 30) is three times that and
# runs faster cut into row blocks. A wide layer is another matter: a row of
# (n, 784) @ (784, 800) alone is 0.6 * 100^3, and blocks of a row or two are matrix-vector
# products that each read all of the weights, so those stay one plain product. So does a
# large product with short rows: its backward (784, 128) @ (128, 800), 80 times 100^3, cut
# into 98 blocks of 8 rows, took 1.7 ms against 1.5 ms plain on one thread and 1.7 against
# 0.8 on two (the blocks are too small to share); at most _MAX_BLOCKED is cut.
_SMALL_PRODUCT = 100 ** 3
_MIN_BLOCK_ROWS = 8
_MAX_BLOCKED = 16 * _SMALL_PRODUCT


def _row_blocks(n, k, m):
    """How many equal row blocks _matmul cuts an (n, k) @ (k, m) product into (1: none):
    blocks of at most _SMALL_PRODUCT each when they hold _MIN_BLOCK_ROWS rows or more and
    the whole is at most _MAX_BLOCKED."""
    if n < 2 * _MIN_BLOCK_ROWS or _SMALL_PRODUCT // (k * m) < _MIN_BLOCK_ROWS \
            or n * k * m > _MAX_BLOCKED:
        return 1
    blocks = max(1, min(n, -(-n * k * m // _SMALL_PRODUCT)))
    while n % blocks:  # the next divisor of n
        blocks += 1
    return blocks


def _matmul(a, b):
    """a @ b, as one stacked product of _row_blocks equal row blocks, or one plain product."""
    blocks = _row_blocks(len(a), a.shape[1], b.shape[1])
    if blocks == 1:
        return a @ b
    return (a.reshape(blocks, -1, a.shape[1]) @ b).reshape(len(a), b.shape[1])


# Copying a row of weights costs about as much as multiplying this many rows of inputs by it
# (measured at (100, 784) @ (784, 800), one thread); a product reads every row it multiplies
# at least once, which costs about half a copy: a single row multiplies as if it were
# _GATHER_ROWS // 2 (one MNIST digit: 21 us gathered against 25 us over its span).
_GATHER_ROWS = 8


def _kept_columns(X):
    """The columns of X (n, k) that are not zero in every row, as a slice of their span or,
    when copying what they multiply pays (see below), as their indices.

    A digit is drawn in the middle of its 28 x 28 box: a single MNIST row is blank outside
    a span of about 2/3 of the 784 columns, a batch of 100 outside 9/10, and a batch of 100
    has ink in fewer than 2/3 of them. The span is a view (nothing copied: batch 1 is a
    matrix-vector product bound by reading the weights); the exact columns are worth copying
    the weights they keep when the batch has enough rows to multiply by them, or for a single
    row when its ink is less than a third of its span."""
    columns = (X.any(axis=0) if len(X) > 1 else X[0]).nonzero()[0]
    if not len(columns):
        return slice(0, 1)  # all blank: one zero column keeps a shape BLAS takes
    lo, hi = int(columns[0]), int(columns[-1]) + 1
    if max(len(X), _GATHER_ROWS // 2) * (hi - lo - len(columns)) > _GATHER_ROWS * len(columns):
        return columns
    return slice(lo, hi)


def _take(a, columns, axis):
    return a[(slice(None),) * axis + (columns,)] if isinstance(columns, slice) \
        else np.take(a, columns, axis=axis)


# Training leaves out blank columns only for a first layer at least this wide: gathering the
# batch's columns and scattering its gradient's rows costs as much as a narrow layer's whole
# product (784-30-10's epoch took 1.5x longer; 784-800-10's 11% less, docs/performance.md).
_WIDE_LAYER = 128


def _nonblank(X, W, columns=None):
    """X[:, kept] and W[kept] for X's kept columns (_kept_columns): X[:, kept] @ W[kept] is
    X @ W for less work; the sums leave out only products of an exact 0 with a finite
    weight."""
    columns = _kept_columns(X) if columns is None else columns
    return _take(X, columns, 1), _take(W, columns, 0)


def _input_gradient(X, delta, columns, out):
    """X.T @ delta (k, m) into ``out``, multiplying only X's kept ``columns``: the rows of
    the others are exact zeros (each a sum of products with an input that is 0)."""
    if isinstance(columns, slice):
        out[:columns.start] = 0
        out[columns.stop:] = 0
    else:
        out.fill(0)
    out[columns] = _matmul(_take(X, columns, 1).T, delta)
    return out


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
    if not np.isfinite(X).all():
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
    """A fully connected network: sigmoid, tanh or ReLU hidden layers, sigmoid or softmax
    output.

    ``Graph(sizes, learning_rate, batch_size, **options)``, e.g.
    ``Graph((784, 30, 10), 0.5, 128)`` or
    ``Graph((784, 800, 10), 0.1, 64, activation='relu', momentum=0.9, schedule='cosine')``.
    The keyword options are the fields of ``Options`` (activation, output, cost, init,
    optimizer, momentum, nesterov, weight_decay, schedule, dtype, seed); an unknown name
    raises TypeError, a bad value ValueError. ``learning_rate`` is the base rate of the
    schedule. Weights are W[l] (sizes[l], sizes[l+1]) so that a batch X (n, sizes[0]) goes
    forward as X @ W[0] + b[0].
    """

    def __init__(self, sizes, learning_rate=0.5, batch_size=128, **options):
        try:
            valid = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                        for s in sizes)
        except TypeError:
            valid = False
        if not valid or len(sizes) < 2 or min(sizes) < 1:
            raise ValueError('sizes must list at least 2 layers of positive ints, '
                             f'got {sizes!r}.')
        _check_learning_rate(learning_rate)
        _check_batch_size(batch_size)
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f'unknown option {", ".join(map(repr, unknown))}: the options are '
                            f'{", ".join(OPTION_NAMES)}.')
        self.sizes = tuple(int(s) for s in sizes)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.config = Options(**options)
        self.epochs = 0
        self.rng = np.random.default_rng(self.config.seed)
        self.weights, self.biases = self._initial_parameters()
        self.optimizer = self._new_optimizer()
        self.train_data = self.val_data = None

    def __getattr__(self, name):
        # net.activation, net.cost, ...: the options read as attributes of the net
        config = self.__dict__.get('config')
        if config is not None and name in OPTION_NAMES:
            return getattr(config, name)
        raise AttributeError(f'{type(self).__name__!r} object has no attribute {name!r}')

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    @property
    def options(self):
        """The options as a JSON-ready dict (what the manifest and the server show)."""
        return self.config.as_dict()

    def _initial_parameters(self):
        weights, biases = [], []
        last = len(self.sizes) - 2
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            gain = 1.0 if l == last else INIT_GAINS[self.config.activation]
            scale = math.sqrt(gain / n_in) if self.config.init == 'scaled' else 1.0
            weights.append((self.rng.standard_normal((n_in, n_out)) * scale).astype(self.dtype))
            # The original's N(0, 1) biases suit sigmoid units; tanh and ReLU start at 0.
            if self.config.activation == 'sigmoid' or self.config.init == 'normal':
                biases.append(self.rng.standard_normal(n_out).astype(self.dtype))
            else:
                biases.append(np.zeros(n_out, self.dtype))
        return weights, biases

    def _new_optimizer(self):
        """The optimiser the options name, built from OPTIMIZERS (its ``build``)."""
        return OPTIMIZERS[self.config.optimizer].build(self.weights + self.biases, self.config)

    def __repr__(self):
        options = ', '.join(f'{k}={v!r}' for k, v in self.options.items())
        return (f'Graph({self.sizes}, {self.learning_rate}, {self.batch_size}, {options}) '
                f'trained {self.epochs} epochs')

    def summary(self):
        """A table of the layers, their shapes and parameter counts, and the options (as
        Keras's ``model.summary()``); returned as a string."""
        rows = [('layer', 'output shape', 'activation', 'params'),
                ('input', f'(None, {self.sizes[0]})', '', '0')]
        last = len(self.weights) - 1
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            rows.append((f'dense_{l} ({W.shape[0]} x {W.shape[1]})', f'(None, {W.shape[1]})',
                         self.config.output if l == last else self.config.activation,
                         f'{W.size + b.size:,}'))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        line = '-' * (sum(widths) + 6)
        text = [f'Graph {"-".join(map(str, self.sizes))}', line]
        for k, r in enumerate(rows):
            text.append('  '.join(c.ljust(w) if i < 3 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(r, widths))))
            if k == 0:
                text.append(line)
        total = sum(W.size + b.size for W, b in zip(self.weights, self.biases))
        text += [line, f'Total params: {total:,} ({self.dtype.name}, '
                       f'{total * self.dtype.itemsize / 1024:,.1f} KiB)',
                 f'learning_rate={self.learning_rate}, batch_size={self.batch_size}, '
                 f'epochs trained={self.epochs}',
                 'Options: ' + ', '.join(f'{k}={v!r}' for k, v in self.options.items())]
        return '\n'.join(text)

    def copy(self):
        """A deep copy: training the copy never changes this net."""
        return copy.deepcopy(self)

    def configure(self, learning_rate=None, batch_size=None, **options):
        """Change how the net trains from now on: its learning rate, batch size and the
        options of TRAINING_OPTIONS (optimizer, momentum, nesterov, weight_decay, schedule);
        what it is (sizes, activation, output, cost, init, dtype) stays. Everything is
        checked before anything changes (ValueError naming the value; TypeError for another
        option). A change of optimizer, momentum or nesterov starts a new optimiser (its
        state, e.g. Adam's moments, starts from zero); returns the net."""
        fixed = sorted(set(options) - set(TRAINING_OPTIONS))
        if fixed:
            raise TypeError(f'{", ".join(map(repr, fixed))} cannot change once a net is made: '
                            f'configure takes learning_rate, batch_size and '
                            f'{", ".join(TRAINING_OPTIONS)}.')
        if learning_rate is not None:
            _check_learning_rate(learning_rate)
        if batch_size is not None:
            _check_batch_size(batch_size)
        config = dataclasses.replace(self.config, **options)
        if learning_rate is not None:
            self.learning_rate = float(learning_rate)
        if batch_size is not None:
            self.batch_size = int(batch_size)
        renewed = any(getattr(config, k) != getattr(self.config, k)
                      for k in ('optimizer', 'momentum', 'nesterov'))
        self.config = config
        if renewed:
            self.optimizer = self._new_optimizer()
        return self

    # -- the layers, as a reader of the net sees them -------------------------------

    def layers(self):
        """Each layer from the input to the output: its weights (inputs x units), its biases
        (units,) and its activation's name; what a picture or an export of the net reads
        (the arrays are the net's own: copy them to change them)."""
        last = len(self.weights) - 1
        return [Layer(W, b.reshape(-1),
                      self.config.output if l == last else self.config.activation)
                for l, (W, b) in enumerate(zip(self.weights, self.biases))]

    def activations(self, X):
        """Every layer's output for inputs X, (n, sizes[0]) or one (sizes[0],): the same
        forward pass as predict, [a1, ..., aL], each (n, sizes[l])."""
        X = np.asarray(X, self.dtype)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f'X must be (n, {self.sizes[0]}) or ({self.sizes[0]},), got '
                             f'shape {X.shape}')
        return self._forward(X, self._columns(X))[1:]

    # -- forward, backward ----------------------------------------------------------

    def _thread_counts(self):
        """The BLAS thread counts training may try (_thread_counts): one only when the net's
        largest product per batch is under _SHARED_PRODUCT."""
        largest = self.batch_size * max(a * b for a, b in zip(self.sizes, self.sizes[1:]))
        return _thread_counts() if largest >= _SHARED_PRODUCT else (1,)

    def _columns(self, X):
        """The kept columns (_kept_columns) of a batch X to train on, None for all."""
        return _kept_columns(X) if self.sizes[1] >= _WIDE_LAYER else None

    def _forward(self, X, columns=None):
        """Activations of every layer for a batch X (n, sizes[0]): [X, a1, ..., aL]; the
        first layer multiplies only X's kept ``columns`` (_kept_columns), all when None."""
        activations = [X]
        last = len(self.weights) - 1
        hidden = ACTIVATIONS[self.config.activation]
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            # (n, sizes[l+1])
            z = _matmul(*_nonblank(X, W, columns)) if l == 0 and columns is not None \
                else _matmul(activations[-1], W)
            z += b
            f = ACTIVATIONS[self.config.output] if l == last else hidden
            activations.append(f(z, out=z))
        return activations

    def _backprop(self, activations, Y, delta, columns, out=None):
        """Mean gradients over the batch, weight decay included: ([dW], [db]).

        ``delta`` (n, sizes[-1]) is dC/dz at the output per sample; ``columns`` the input's
        kept columns (the forward pass's; None: all), ``out`` an array for the first layer's
        dW."""
        delta *= 1 / len(Y)  # every gradient below is then the batch's mean
        derivative = DERIVATIVES[self.config.activation]
        grad_w, grad_b = [None] * len(self.weights), [None] * len(self.weights)
        for l in range(len(self.weights) - 1, -1, -1):
            if l == 0 and columns is not None:  # (sizes[l], sizes[l+1])
                out = np.empty_like(self.weights[0]) if out is None else out
                grad_w[l] = _input_gradient(activations[0], delta, columns, out)
            else:
                grad_w[l] = _matmul(activations[l].T, delta)
            grad_b[l] = delta.sum(axis=0)
            if l:  # the input layer needs no delta
                delta = delta @ self.weights[l].T
                delta *= derivative(activations[l])
        if self.config.weight_decay:
            for g, W in zip(grad_w, self.weights):
                g += self.config.weight_decay * W
        return grad_w, grad_b

    def gradients(self, X, Y):
        """(mean cost, [dW], [db]) for a batch X (n, sizes[0]) and one-hot Y (n, sizes[-1]);
        the cost includes the weight decay term 0.5 * weight_decay * sum(W^2)."""
        cost = COSTS[self.config.cost, self.config.output]
        X = np.asarray(X, self.dtype)
        columns = self._columns(X)
        activations = self._forward(X, columns)
        loss = cost.fn(activations[-1], Y)
        if self.config.weight_decay:
            loss += 0.5 * self.config.weight_decay * sum(float(np.sum(W * W))
                                                         for W in self.weights)
        return (loss, *self._backprop(activations, Y, cost.delta(activations[-1], Y), columns))

    # -- training --------------------------------------------------------------------

    def feed(self, train_data, val_data=None):
        """Set the training data and (optionally) the validation data, in either format."""
        n_in, n_out = self.sizes[0], self.sizes[-1]
        train = as_arrays(train_data, n_in, n_out, self.dtype.type)
        val = None if val_data is None else as_arrays(val_data, n_in, n_out, self.dtype.type)
        self.train_data, self.val_data = train, val

    def run(self, epochs=1, callback=None, progress=True, patience=None):
        """Train for ``epochs`` epochs on the fed data; return the history (a dict per epoch).

        ``callback(info)`` is called after every batch (``info['event'] == 'batch'``) and
        every epoch (``'epoch'``, with the epoch's loss, learning rate and validation
        accuracy); returning True or raising ``StopTraining`` stops training after that
        batch, keeping the weights learnt so far. ``patience=N`` stops early when the
        validation accuracy has not improved for N epochs, and in any case ends with the
        weights (and optimiser state) of the epoch of best validation accuracy. A NaN or
        infinite loss raises ``TrainingDiverged`` and restores the weights of the last good
        epoch.
        """
        if self.train_data is None:
            raise RuntimeError('no training data: call feed(train_data, val_data) first.')
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f'epochs must be a positive int, got {epochs!r}.')
        if patience is not None:
            if not isinstance(patience, (int, np.integer)) or isinstance(patience, bool) \
                    or patience < 1:
                raise ValueError(f'patience must be a positive int or None, got {patience!r}.')
            if self.val_data is None:
                raise ValueError(f'patience={patience} needs validation data: '
                                 'feed(train_data, val_data).')
        with np.errstate(over='ignore', invalid='ignore'):  # divergence is checked below
            return self._epochs(epochs, callback, progress, patience)

    def _state(self):
        return ([W.copy() for W in self.weights], [b.copy() for b in self.biases],
                copy.deepcopy(self.optimizer), self.epochs)

    def _restore(self, state):
        weights, biases, optimizer, self.epochs = state
        self.weights, self.biases = list(weights), list(biases)
        self.optimizer = copy.deepcopy(optimizer)

    def _epochs(self, epochs, callback, progress, patience):
        X, labels = self.train_data
        n, bs = len(X), self.batch_size
        batches = -(-n // bs)
        eye = np.eye(self.sizes[-1], dtype=self.dtype)
        batch_X = np.empty((min(bs, n), X.shape[1]), X.dtype)  # every batch is gathered here
        first_grad = np.empty_like(self.weights[0])  # and its first layer's dW computed here
        cost = COSTS[self.config.cost, self.config.output]
        history = []
        best, best_state, waited = None, None, 0
        for _ in range(epochs):
            good = self._state()
            rate = scheduled_rate(self.config.schedule, self.learning_rate, self.epochs)
            self.optimizer.learning_rate = rate
            started, total_loss = time.perf_counter(), 0.0
            order = self.rng.permutation(n)  # shuffle indices, not data
            stop = False
            with _one_blas_thread(), tqdm(total=batches, desc=f'epoch {self.epochs + 1}',
                                          unit='batch', leave=False, disable=not progress) as bar:
                choice, threads = ThreadChoice(self._thread_counts()), 1
                for k in range(batches):
                    if (wanted := choice.next()) != threads:
                        threads = _set_blas_threads(wanted)
                        if threads != wanted:  # another training started: one thread
                            choice = ThreadChoice((1,))
                    tick = time.perf_counter()
                    idx = order[k * bs:(k + 1) * bs]
                    # idx is a permutation, so mode='clip' is safe, and unlike 'raise' it
                    # writes straight into out without a buffer
                    Xb = np.take(X, idx, axis=0, out=batch_X[:len(idx)], mode='clip')
                    Yb = eye[labels[idx]]
                    columns = self._columns(Xb)
                    activations = self._forward(Xb, columns)
                    loss = cost.fn(activations[-1], Yb)
                    if not np.isfinite(loss):
                        self._diverged(good, f'loss became {loss} in batch {k + 1}')
                    grad_w, grad_b = self._backprop(activations, Yb,
                                                    cost.delta(activations[-1], Yb), columns,
                                                    first_grad)
                    self.optimizer.update(self.weights + self.biases, grad_w + grad_b)
                    choice.record(threads, time.perf_counter() - tick)
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
            record = {'epoch': self.epochs, 'loss': total_loss / n, 'learning_rate': rate,
                      'val_accuracy': None if self.val_data is None else
                      self.evaluate(*self.val_data),
                      'seconds': time.perf_counter() - started,
                      'blas_threads': choice.chosen}
            history.append(record)
            log.info('epoch %d: %.2f s, learning rate %.4g, loss %.4f, validation accuracy %s',
                     self.epochs, record['seconds'], rate, record['loss'],
                     'n/a' if record['val_accuracy'] is None else
                     f"{100 * record['val_accuracy']:.2f}%")
            if callback is not None and self._call(callback, event='epoch', batches=batches,
                                                   batch=batches, **record):
                break
            if patience is not None:
                if best is None or record['val_accuracy'] > best:
                    best, best_state, waited = record['val_accuracy'], self._state(), 0
                else:
                    waited += 1
                    if waited >= patience:
                        log.info('early stop: no better validation accuracy for %d epochs',
                                 patience)
                        break
        if best_state is not None and best_state[3] != self.epochs:
            log.info('restoring epoch %d (validation accuracy %.2f%%)', best_state[3],
                     100 * best)
            self._restore(best_state)
        return history

    def _diverged(self, good, what):
        self._restore(good)
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
        outputs = self._output(X)
        return np.argmax(outputs, axis=1), outputs

    def _output(self, X):
        """The output layer's activations (n, sizes[-1]) for rows X (n, sizes[0]) of the
        net's dtype: _forward's sums without keeping the hidden layers, each layer computed in
        place in its product's array, the first from the input's columns that are not blank."""
        a = _matmul(*_nonblank(X, self.weights[0]))  # (n, sizes[1])
        last = len(self.weights) - 1
        hidden = ACTIVATIONS[self.config.activation]
        for l in range(len(self.weights)):
            if l:
                a = _matmul(a, self.weights[l])  # (n, sizes[l+1])
            a += self.biases[l]
            f = ACTIVATIONS[self.config.output] if l == last else hidden
            a = f(a, out=a)
        return a

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
        """Write the net, its options and its optimiser's state to one NPZ.

        ``path``: a file name (atomic write; a bare name goes under models/) or a binary
        file object (e.g. ``io.BytesIO``). Returns the path written (or the file object).
        """
        if callable(self.config.schedule):
            raise ValueError(f'schedule {self.config.schedule!r} is a callable, which a model '
                             'file cannot hold: use a named schedule to save this net.')
        arrays = {'format_version': np.int64(FORMAT_VERSION),
                  'sizes': np.array(self.sizes, dtype=np.int64),
                  'learning_rate': np.float64(self.learning_rate),
                  'batch_size': np.int64(self.batch_size),
                  'epochs': np.int64(self.epochs),
                  'options': np.str_(json.dumps(self.options)),
                  'rng': np.str_(json.dumps(self.rng.bit_generator.state))}
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f'W{l}'], arrays[f'b{l}'] = W, b
        for name, a in self.optimizer.state().items():
            arrays[f'optimizer_{name}'] = a
        if hasattr(path, 'write'):
            np.savez(path, **arrays)
            return path
        path = _resolve(path)
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def from_file(cls, path, max_parameters=MAX_PARAMETERS, max_inflated=None):
        """Build a net, architecture, options and optimiser state included, from a path or
        a binary file object written by save() (files of format 1 load too).

        Every member's .npy header is checked against the net that ``sizes`` declares (at
        most ``max_parameters`` weights and biases) before any member is read: a file whose
        members declare other shapes, or inflate to more than their shapes hold (a zip
        bomb), is refused with a ValueError naming the member, having read a few bytes;
        so is one whose members declare more than ``max_inflated`` bytes in all (when given:
        what a file of known size may cost to read)."""
        if hasattr(path, 'read'):
            source, name = path, getattr(path, 'name', 'the file object')
        else:
            source = name = _resolve(path)
        try:
            _check_directory(source, name)
            with zipfile.ZipFile(source) as archive:
                data = _read_members(archive, name, max_parameters, max_inflated)
        except (FileNotFoundError, RefusedModelFile):
            raise
        except Exception as e:  # zip and format errors all mean "not our file"
            raise ValueError(f'{name} is not a readable model file: {e}') from None
        try:
            sizes = tuple(int(s) for s in data['sizes'])
            if 'options' in data:
                options = json.loads(str(data['options']))
            else:  # format 1
                options = {k: str(data[k]) for k in ('init', 'cost', 'output', 'dtype')}
                options['seed'] = None if int(data['seed']) < 0 else int(data['seed'])
            net = cls(sizes, float(data['learning_rate']), int(data['batch_size']), **options)
            net.epochs = int(data['epochs'])
            for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                W, b = data[f'W{l}'], data[f'b{l}']
                if W.shape != (n_in, n_out) or b.shape != (n_out,):
                    raise ValueError(f'layer {l} has W {W.shape} and b {b.shape}, expected '
                                     f'({n_in}, {n_out}) and ({n_out},)')
                if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                    raise ValueError(f'layer {l} holds NaN or infinite weights')
                net.weights[l], net.biases[l] = W.astype(net.dtype), b.astype(net.dtype)
            net.optimizer = net._new_optimizer()
            state = {k[len('optimizer_'):]: v for k, v in data.items()
                     if k.startswith('optimizer_')}
            if state:
                net.optimizer.set_state(state)
            if 'rng' in data:
                net.rng.bit_generator.state = json.loads(str(data['rng']))
        except KeyError as e:
            raise ValueError(f'{name} is not a model file: missing {e}') from None
        except (ValueError, TypeError) as e:
            raise ValueError(f'{name} is not a valid model file: {e}') from None
        return net

    def load(self, path):
        """Replace this net by the one in ``path`` (a path or a binary file object); the
        file must have this net's sizes. On any error (missing, corrupt or mismatched file)
        the net is left unchanged."""
        other = Graph.from_file(path)
        if other.sizes != self.sizes:
            where = path if hasattr(path, 'read') else _resolve(path)
            raise ValueError(f'{where} holds a {other.sizes} net, this net is {self.sizes}.')
        data = (self.train_data, self.val_data)
        self.__dict__.update(other.__dict__)
        self.train_data, self.val_data = data
        return self


# ---------------------------------------------------------------------------------------
# Reading a model file: every member's declared shape is checked before it is inflated.

_SCALARS = ('format_version', 'learning_rate', 'batch_size', 'epochs', 'seed',
            'optimizer_t')  # seed: format 1
_TEXTS = ('options', 'rng', 'init', 'cost', 'output', 'dtype')  # the last four: format 1
_TEXT_CHARS = 1 << 16  # options and the rng state are a few hundred characters of JSON
_MAX_LAYERS = 1000


_MAX_MEMBERS = 16 + 8 * _MAX_LAYERS  # sizes, scalars, texts; W, b, 3 optimizer states each
_MAX_DIRECTORY = 128 * _MAX_MEMBERS  # bytes of a zip's central directory (56 per member)


def _check_directory(source, name):
    """Refuse a zip whose central directory is larger than a model file's can be, before
    zipfile reads it (a ZipInfo per entry: a million empty members, 47 MB, cost 20 s of
    CPU and 1 GB)."""
    f = source if hasattr(source, 'read') else open(source, 'rb')
    try:
        start = f.tell()
        end = zipfile._EndRecData(f)  # the end record, zip64's included, as ZipFile reads it
        f.seek(start)
    finally:
        if f is not source:
            f.close()
    if end is not None and end[zipfile._ECD_SIZE] > _MAX_DIRECTORY:
        raise RefusedModelFile(f'{name}: its zip directory holds {end[zipfile._ECD_SIZE]} bytes '
                               f'({end[zipfile._ECD_ENTRIES_TOTAL]} members declared); a model '
                               f'file\'s holds at most {_MAX_DIRECTORY}')


def _member_header(archive, info, name):
    """(shape, dtype, bytes the member must inflate to) from a member's .npy header."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and LZMA members are inflated without a bound by zipfile
        raise RefusedModelFile(f'{name}: member {info.filename!r} uses compression method '
                         f'{info.compress_type}; a model file is stored or deflated')
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise RefusedModelFile(f'{name}: member {info.filename!r} has .npy version {version}')
        header = f.tell()
    if dtype.hasobject:
        raise RefusedModelFile(f'{name}: member {info.filename!r} holds Python objects ({dtype})')
    return shape, dtype, header + math.prod(shape) * dtype.itemsize


def _expected_shapes(sizes):
    """{member: shape} of the arrays a net of ``sizes`` saves."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    params = [(n_in, n_out) for n_in, n_out in layers] + [(n_out,) for _, n_out in layers]
    shapes = {f'W{l}': params[l] for l in range(len(layers))}
    shapes |= {f'b{l}': params[len(layers) + l] for l in range(len(layers))}
    for i, shape in enumerate(params):
        for state in ('velocity', 'm', 'v'):
            shapes[f'optimizer_{state}{i}'] = shape
    return shapes


def _read_members(archive, name, max_parameters, max_inflated=None):
    """{member: array} of a model file, each member's header checked before it is read."""
    infos = {}
    for info in archive.infolist():
        key = info.filename.removesuffix('.npy')
        if key in infos:
            raise RefusedModelFile(f'{name}: member {info.filename!r} appears twice')
        infos[key] = info
    if 'sizes' not in infos:
        raise RefusedModelFile(f'{name} is not a model file: missing \'sizes\'')
    declared = {key: _member_header(archive, info, name) for key, info in infos.items()}

    def read(key):
        with archive.open(infos[key]) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    shape, dtype, _ = declared['sizes']
    if len(shape) != 1 or not 2 <= shape[0] <= _MAX_LAYERS or dtype.kind not in 'iu':
        raise RefusedModelFile(f'{name}: member \'sizes.npy\' declares {dtype} {shape}, expected '
                         f'2 to {_MAX_LAYERS} ints')
    sizes = [int(s) for s in read('sizes')]
    parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    if min(sizes) < 1 or parameters > max_parameters:
        raise RefusedModelFile(f'{name}: sizes {sizes} declare a net of {parameters} parameters, '
                         f'expected positive sizes and at most {max_parameters}')
    arrays = _expected_shapes(sizes)
    for key, (shape, dtype, inflated) in declared.items():
        member = repr(infos[key].filename)
        if key in arrays:
            expected, kinds = arrays[key], 'f'
        elif key in _SCALARS:
            expected, kinds = (), 'iuf'
        elif key in _TEXTS:
            expected, kinds = (), 'U'
            if dtype.itemsize > 4 * _TEXT_CHARS:
                raise RefusedModelFile(f'{name}: member {member} declares {dtype}, a text of at '
                                 f'most {_TEXT_CHARS} characters expected')
        elif key == 'sizes':
            expected, kinds = shape, 'iu'
        else:
            raise RefusedModelFile(f'{name}: member {member} is not part of a model file')
        if shape != expected or dtype.kind not in kinds:
            raise RefusedModelFile(f'{name}: member {member} declares {dtype} {shape}, expected '
                             f'shape {expected} for the {tuple(sizes)} net')
        if infos[key].file_size != inflated:
            raise RefusedModelFile(f'{name}: member {member} inflates to {infos[key].file_size} '
                             f'bytes, its header declares {dtype} {shape}: {inflated} bytes')
    total = sum(inflated for _, _, inflated in declared.values())
    if max_inflated is not None and total > max_inflated:
        raise RefusedModelFile(f'{name}: its members declare {total} bytes of arrays, more than '
                               f'the {max_inflated} bytes a file of its size may hold')
    return {key: read(key) for key in infos}


def _check_batch_size(batch_size):
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or not 1 <= batch_size < 2 ** 63:  # a model file holds it as an int64
        raise ValueError(f'batch_size must be a positive int (below 2**63), got '
                         f'{batch_size!r}.')


def _check_learning_rate(learning_rate):
    if not (isinstance(learning_rate, (int, float, np.number)) and 0 < learning_rate < 1e6
            and np.isfinite(learning_rate)) or isinstance(learning_rate, bool):
        raise ValueError(f'learning_rate must be a positive number, got {learning_rate!r}.')


TEMPORARY_STALE = 600.0  # seconds: a temporary file whose writer cannot be asked is older


@functools.cache  # a process never changes machine or pid namespace
def _machine():
    """This machine and pid namespace, as 8 hex digits: a process id in a temporary file's
    name can be checked only by a process that sees the same ones."""
    parts = [os.uname().nodename]
    for source in ('/proc/sys/kernel/random/boot_id', '/proc/self/ns/pid'):
        try:
            parts.append(os.readlink(source) if source.endswith('pid') else
                         Path(source).read_text().strip())
        except OSError:
            parts.append('')
    return f'{zlib.crc32("|".join(parts).encode()):08x}'


_TAG = r'\d+@[0-9a-f]{8}'  # a process_tag: PID@MACHINE


def process_tag():
    """This process, as ``PID@MACHINE``: in a file's name, says who writes it."""
    return f'{os.getpid()}@{_machine()}'


def process_alive(tag):
    """Whether the process of a ``process_tag`` lives: True or False when it ran on this
    machine (and pid namespace), None when that cannot be told (another machine, not a tag)."""
    if not re.fullmatch(_TAG, tag):
        return None
    pid, machine = tag.split('@')
    return pid_alive(int(pid)) if machine == _machine() else None


def pid_alive(pid):
    """Whether a process of this pid namespace runs as ``pid``; None for no valid pid."""
    if not 0 < pid < 2 ** 31:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive: another user's
    return True


def temporary_path(path):
    """Where to write ``path`` before it replaces it: a hidden file beside it whose name says
    who writes it (``.NAME.PID@MACHINE.RANDOM.tmp``), so that ``temporary_in_use`` can tell
    a write in progress from what a killed process left."""
    path = Path(path)
    return path.with_name(f'.{path.name}.{process_tag()}.{uuid.uuid4().hex[:12]}.tmp')


def temporary_in_use(path, stale=TEMPORARY_STALE):
    """Whether a temporary file (``temporary_path``) may still be written: its process is
    alive, when it ran on this machine; else (another machine, or a name of before) whether
    it changed in the last ``stale`` seconds."""
    path = Path(path)
    found = re.fullmatch(rf'\..+\.({_TAG})\.[0-9a-f]+\.tmp', path.name)
    alive = process_alive(found[1]) if found else None
    if alive is not None:
        return alive
    try:
        return time.time() - path.stat().st_mtime < stale
    except FileNotFoundError:
        return False


@contextmanager
def atomic_write(path, durable=True):
    """A binary file object for ``path``: a temporary file that replaces ``path`` on success.

    Readers see the old file or the new one, never a partial one, even if the process dies;
    ``durable`` also flushes it to disk first, so that it survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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
    if isinstance(path, io.IOBase):
        return path
    bare = os.sep not in str(path) and '/' not in str(path)
    path = Path(path)
    if path.suffix != '.npz':
        path = path.with_name(path.name + '.npz')
    return MODELS_DIR / path if bare else path

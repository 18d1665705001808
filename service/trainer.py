"""The training process: imports only the library and the data loader (no web server, no
image decoder), trains a copy of the live net and sends it back through a pipe."""
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import preprocess

log = logging.getLogger(__name__)


@dataclass
class Assignment:
    """What one training process does: train ``net`` ``epochs`` epochs on the data set at
    ``data_path`` (and, with ``samples`` (X_train, y_train, X_val, y_val) of users' drawings,
    uint8, on them too: ``share`` of every epoch); report a batch at most every ``interval``
    / 2 seconds and score the result on ``score_samples`` validation samples; run at
    ``niceness``."""
    net: btf.Graph
    data_path: Path
    epochs: int
    score_samples: int = 100
    interval: float = 0.1
    niceness: int = 10
    samples: tuple | None = None
    share: float = 0.1


def train(work, pipe, stop):
    """Do the ``work`` (an Assignment) and send through ``pipe`` ("step", info) for epochs and
    batches, then ("done", net, history, correct of the scored validation samples,
    comparison) or ("diverged" | "error", message). Stops after the batch during which
    ``stop`` is set. If the server dies, the next send fails and ends this process.

    With samples, every epoch also draws, with replacement and freshly augmented, as many of
    the training ones as make ``share`` of the epoch; the comparison reports MNIST's and the
    samples' validation accuracy before and after.
    """
    net, epochs, samples, interval = work.net, work.epochs, work.samples, work.interval
    os.nice(work.niceness)  # requests come first
    threadpool_limits(1, user_api='blas')  # the other core serves requests
    last_batch = 0.0

    def callback(info):
        nonlocal last_batch
        if info['event'] == 'epoch' or time.monotonic() - last_batch >= interval / 2:
            last_batch = time.monotonic()
            pipe.send(('step', info))
        return stop.is_set()

    try:
        data = preprocess.load_dataset(work.data_path)
        X_val, y_val = data['val']
        before = compare(net, data['val'], samples)
        pipe.send(('step', {'event': 'before', 'before': before}))
        if samples is None:
            net.feed(data['train'], data['val'])
            history = net.run(epochs, callback=callback, progress=False)
        else:
            history = train_with_samples(net, data, samples, work.share, epochs, callback, stop)
        net.train_data = net.val_data = None  # the live net must not hold the data set
        sample = np.random.default_rng().choice(len(y_val), min(work.score_samples, len(y_val)),
                                                replace=False)
        comparison = {'before': before, 'after': compare(net, data['val'], samples)}
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


def train_with_samples(net, data, samples, share, epochs, callback, stop):
    from augment import augment  # OpenCV: only in the processes that train on samples

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


def compare(net, val, samples):
    """Validation accuracy on MNIST, and on the held-out samples (None without them)."""
    figures = {'mnist': round(net.evaluate(*val), 4), 'samples': None, 'samples_count': 0}
    if samples is not None and len(samples[3]):
        X, y = samples[2], samples[3]
        figures.update(samples=round(net.evaluate(X.astype(np.float32) / np.float32(255),
                                                  y.astype(np.int64)), 4),
                       samples_count=len(y))
    return figures

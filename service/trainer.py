"""The training process: imports only the library and the data loader (no web server, no
image decoder), trains a copy of the live net and sends it back through a pipe."""
import logging
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import preprocess

log = logging.getLogger(__name__)


def train(net, data_path, epochs, pipe, stop, score_samples, interval, niceness):
    """Train ``net`` on the data set at ``data_path`` and send through ``pipe`` ("step", info)
    for epochs and batches (at most one batch every ``interval`` / 2 seconds), then ("done",
    net, history, correct of ``score_samples`` validation samples) or ("diverged" | "error",
    message). Stops after the batch during which ``stop`` is set. If the server dies, the next
    send fails and ends this process."""
    os.nice(niceness)  # requests come first
    threadpool_limits(1, user_api='blas')  # the other core serves requests
    last_batch = 0.0

    def callback(info):
        nonlocal last_batch
        if info['event'] == 'epoch' or time.monotonic() - last_batch >= interval / 2:
            last_batch = time.monotonic()
            pipe.send(('step', info))
        return stop.is_set()

    try:
        data = preprocess.load_dataset(data_path)
        net.feed(data['train'], data['val'])
        history = net.run(epochs, callback=callback, progress=False)
        net.train_data = net.val_data = None  # the live net must not hold the data set
        X, y = data['val']
        sample = np.random.default_rng().choice(len(y), min(score_samples, len(y)),
                                                replace=False)
        pipe.send(('done', net, history, net.validate((X[sample], y[sample]))))
    except btf.TrainingDiverged as e:
        pipe.send(('diverged', str(e)))
    except Exception:
        log.exception('training failed')
        pipe.send(('error', 'training failed (logged on the server).'))

"""Shared fixtures: real MNIST from ../shared/data/mnist (or $MNIST_DIR).

In CI (CI=true) missing data is a failure, never a skip.
"""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get('MNIST_DIR', ROOT.parent / 'shared' / 'data' / 'mnist'))
IDX_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
             't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def read_idx(path):
    """A (gzipped) IDX file as a numpy array; a reference reader independent of preprocess.py."""
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


@pytest.fixture(scope='session')
def mnist_dir():
    missing = [f for f in IDX_FILES if not (MNIST_DIR / f).exists()]
    if missing:
        message = f'real MNIST not found in {MNIST_DIR}: missing {missing}'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return MNIST_DIR


@pytest.fixture(scope='session')
def mnist(mnist_dir):
    """Official split as uint8 arrays: (X_train, y_train) 60000, (X_test, y_test) 10000."""
    X = read_idx(mnist_dir / IDX_FILES[0]).reshape(-1, 784)
    y = read_idx(mnist_dir / IDX_FILES[1])
    Xt = read_idx(mnist_dir / IDX_FILES[2]).reshape(-1, 784)
    yt = read_idx(mnist_dir / IDX_FILES[3])
    return (X, y), (Xt, yt)

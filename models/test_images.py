"""MNIST's 10,000 official test images in one small file beside the models:
``models/mnist-test.npz`` (``make models`` writes it; ``python -m models.test_images`` alone).

The server measures every confusion matrix on these images, so that a server without the
training file (a fresh clone, no MNIST) still shows where each shipped net goes wrong. The
file holds ``X`` (10000, 784) uint8, white ink on black as MNIST stores it, and ``y``
(10000,) uint8 labels, in MNIST's own order; it loads with ``allow_pickle=False``
(the server reads it through ``service.insight.official_test``, which checks its shapes).
Its licence and checksum: models/MNIST-TEST.md.
"""
import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

import preprocess

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / 'models' / 'mnist-test.npz'
COUNT = 10_000  # MNIST's official test set
# The sha256 of the file this repository ships (models/MNIST-TEST.md); a rebuild from the
# canonical IDX files gives the same pixels and labels, and the same bytes with this numpy.
SHA256 = '96ec6a9c413a1e20a45398cb23275e33c439c12ee65564d4b8ff0a0ef4d64f14'


def build(source, output=OUTPUT):
    """Write the official test images of the raw MNIST in ``source``; the file's sha256."""
    X, y, n_train = preprocess.read_raw(source)  # the 60,000 training images first
    X, y = np.asarray(X[n_train:], np.uint8), np.asarray(y[n_train:], np.uint8)
    if X.shape != (COUNT, 784):
        raise SystemExit(f'{source} holds {X.shape} test images, expected ({COUNT}, 784).')
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, X=X, y=y)
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    source = preprocess.find_mnist()
    if source is None:
        raise SystemExit('no raw MNIST found: set MNIST_DIR, or run '
                         '`.venv/bin/python preprocess.py --download`.')
    start = time.perf_counter()
    digest = build(source, args.output)
    print(f'wrote {args.output}: {COUNT:,} images from {source}, '
          f'{args.output.stat().st_size:,} bytes, sha256 {digest}, '
          f'{time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()

"""The playground's costs (issue #25): what the per-epoch view (trainer.epoch_view) adds to
an epoch, and the size and build time of a net's exports (NPZ, ONNX), for a few shapes.

    python -m bench.playground           # about 5 minutes on 2 cores (the widest net)
    python -m bench.playground --quick   # 784-30-10 and 784-800-10 only

Real MNIST (found by preprocess.find_mnist) is split by preprocess.build into a temporary
file; each net trains one epoch on ROWS training images on one BLAS thread, as the training
process does, and the epoch's time is scaled to the 49,000 of the split.
"""
import argparse
import io
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import preprocess
from service import exporting, trainer

SHAPES = ((784, 30, 10), (784, 800, 10), (784, 2048, 2048, 10))
ROWS = 10_000  # training images timed per net (2,000 for the widest)


def measure(sizes, data, view, rows):
    net = btf.Graph(sizes, 0.1, 128, activation='relu', seed=0)
    X, y = data['train']
    net.feed((X[:rows], y[:rows]))
    started = time.perf_counter()
    net.run(1, progress=False)
    epoch = (time.perf_counter() - started) * len(y) / rows
    started = time.perf_counter()
    trainer.epoch_view(net, view)
    seen = time.perf_counter() - started
    exporting.to_onnx(btf.Graph((784, 2, 10)))  # the first call imports onnx
    started = time.perf_counter()
    onnx = exporting.to_onnx(net)
    built = time.perf_counter() - started
    npz = io.BytesIO()
    net.save(npz)
    print(f'{"-".join(map(str, sizes)):>18}  epoch ~{epoch:6.1f} s  view {1000 * seen:6.0f} ms '
          f'({100 * seen / epoch:4.1f}%)  NPZ {len(npz.getvalue()) / 1e6:6.2f} MB  '
          f'ONNX {len(onnx) / 1e6:6.2f} MB in {1000 * built:5.0f} ms')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='skip the widest net')
    args = parser.parse_args(argv)
    threadpool_limits(1, user_api='blas')
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / 'mnist.npz'
        preprocess.build(preprocess.find_mnist(), path)
        data = preprocess.load_dataset(path)
    view = trainer.view_data(data)
    for sizes in SHAPES[:2] if args.quick else SHAPES:
        measure(sizes, data, view, ROWS if max(sizes[1:-1]) < 2048 else 2_000)


if __name__ == '__main__':
    main()

"""How often the page's "not sure" rule (service.insight.unsure) flags real digits and
things that are not one digit.

    python -m bench.unsure [--count 500] [--seed 1] [--models models/]

Sources, each as the server sees it (28x28 in [0, 1]):
- MNIST's official 10,000 test digits (raw MNIST from $MNIST_DIR or data/raw/);
- handwriting.py's 400 canvas drawings of digits, through imaging.prepare like /predict;
- scribbles: 2 to 5 random strokes drawn with OpenCV on a 280x280 canvas;
- two MNIST test digits side by side on one canvas;
- letters (A-Z, a-z) drawn with cv2.putText in OpenCV's Hershey fonts.
Prints a Markdown table of the share flagged per source and net (docs/api.md, "Not sure"),
and the 0.5th and 99.5th percentiles of MNIST's shape statistics behind the rule's ranges.
"""
import imaging  # noqa: I001  first: it sets OpenCV's pixel limit, read when cv2 is imported

import argparse
import base64
import time
from pathlib import Path

import cv2
import numpy as np

import handwriting
import preprocess
from service.insight import shape_of, unsure
from service.nets import load_pretrained
from service.settings import Settings

COUNT = 500  # drawings per made-up source
SEED = 1
MODELS = Path(__file__).resolve().parent.parent / 'models'
CANVAS = 280
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
         cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
LETTERS = [chr(c) for c in (*range(ord('A'), ord('Z') + 1), *range(ord('a'), ord('z') + 1))]


def data_url(image):
    return 'data:image/png;base64,' + base64.b64encode(cv2.imencode('.png', image)[1]).decode()


def scribble(rng, mnist):
    canvas = np.full((CANVAS, CANVAS), 255, np.uint8)
    for _ in range(rng.integers(2, 6)):
        points = rng.integers(20, CANVAS - 20, (rng.integers(2, 6), 2)).astype(np.int32)
        cv2.polylines(canvas, [points], False, 0, int(rng.integers(14, 28)), cv2.LINE_AA)
    return canvas


def two_digits(rng, mnist):
    a, b = (255 - mnist[i].reshape(28, 28) for i in rng.integers(0, len(mnist), 2))
    return cv2.resize(np.hstack([a, b]), (2 * CANVAS, CANVAS))


def letter(rng, mnist):
    canvas = np.full((CANVAS, CANVAS), 255, np.uint8)
    cv2.putText(canvas, str(rng.choice(LETTERS)), (60, 220), int(rng.choice(FONTS)), 6, 0,
                int(rng.integers(12, 24)), cv2.LINE_AA)
    return canvas


MADE_UP = {'scribbles': scribble, 'two digits side by side': two_digits, 'letters': letter}


def made_up(make, count, rng, mnist):
    """``count`` drawings of one kind, as /predict prepares them (blank ones skipped)."""
    out = []
    while len(out) < count:
        try:
            out.append(imaging.prepare(data_url(make(rng, mnist))).reshape(-1))
        except imaging.NoDigitError:
            continue
    return np.array(out, np.float32)


def flagged(net, X):
    _, outputs = net.predict_batch(X)
    return np.mean([unsure(x, float(p.max())) is not None for x, p in zip(X, outputs)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--count', type=int, default=COUNT, help='drawings per made-up source')
    parser.add_argument('--seed', type=int, default=SEED)
    parser.add_argument('--models', type=Path, default=MODELS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    folder = preprocess.find_mnist()
    if folder is None:
        raise SystemExit('raw MNIST not found: set MNIST_DIR or run `make mnist`.')
    fmt, files = preprocess.find_source(folder)
    X, y, n_train = preprocess.read_contents(fmt, {p.name: p.read_bytes() for p in files})
    mnist = X[n_train:]
    rng = np.random.default_rng(args.seed)
    sources = {'MNIST test digits': mnist.astype(np.float32) / 255,
               'canvas digits (handwriting.py)': handwriting.dataset()[0]}
    for name, make in MADE_UP.items():
        sources[name] = made_up(make, args.count, rng, mnist)
    pretrained, _ = load_pretrained(Settings(models_dir=args.models))
    nets = {f'v{v}': net for v, (_, net) in sorted(pretrained.items())}

    shapes = np.array([shape_of(x) for x in sources['MNIST test digits']])
    low, high = np.percentile(shapes, [0.5, 99.5], axis=0)
    print(f'MNIST test digits, 0.5th to 99.5th percentile: ink fraction {low[0]:.4f} to '
          f'{high[0]:.4f}, horizontal / vertical spread {low[1]:.3f} to {high[1]:.3f}')
    print()
    print('| source | images | ' + ' | '.join(nets) + ' |')
    print('|---|---:|' + '---:|' * len(nets))
    for name, images in sources.items():
        rates = ' | '.join(f'{flagged(net, images):.1%}' for net in nets.values())
        print(f'| {name} | {len(images):,} | {rates} |')
    print(f'\n{time.perf_counter() - started:.1f} s')


if __name__ == '__main__':
    main()

"""Rebuild every pretrained model, seeded, from raw MNIST: ``make models``.

    python models/build.py    # -> models/model-v1.npz ... model-v6.npz, models.json, *.png

Trains on the 60,000 official training images, then scores every model on the 10,000 official
test images and on the handwriting check (``handwriting.py``: digits drawn as pen strokes on a
canvas, sent through the server's own image pipeline), and prints a summary.

- v1 ... v5, the ladder: one seeded 784-30-10 net (sigmoid hidden layer, softmax output,
  cross-entropy), saved after a few mini-batches, after its first epoch, and when fully trained.
- v6, the best model and the default of ``/pretrain``: 784-800-10, trained on freshly
  distorted digits every epoch (``augment.py``: shifts, rotations, scaling, shear, stroke
  thickness) with a step schedule of the learning rate, so that it also reads canvas drawings.

Raw MNIST is looked for in $MNIST_DIR, data/raw/ and ../shared/data/mnist/. Weights may differ
in the last bits between BLAS builds, so a rebuild elsewhere may score a few images differently.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import augment  # noqa: E402
import better_tensorflow as btf  # noqa: E402
import handwriting  # noqa: E402
import preprocess  # noqa: E402

OUT_DIR = ROOT / 'models'
MANIFEST = 'models.json'
PLOT = 'ladder.png'
PREVIEW = 'handwriting.png'  # the first drawings of every digit and what the server makes of them
PREVIEW_PER_DIGIT = 4
SEED = 0
BEST = 6

# The ladder: one net, trained by this schedule of (epochs, learning rate) ...
LADDER_SIZES = (784, 30, 10)
LADDER_BATCH_SIZE = 128
LADDER_SCHEDULE = ((20, 1.0), (10, 0.3))
# ... and saved as (version, after this many mini-batches); v5 is the end of the schedule.
LADDER_STOPS = ((1, 10), (2, 25), (3, 60), (4, 469))  # 469 batches of 128 = one epoch

# The best model: a fresh augmentation of the training set every epoch.
BEST_SIZES = (784, 800, 10)
BEST_BATCH_SIZE = 32
BEST_SCHEDULE = ((10, 0.8), (10, 0.3), (6, 0.1), (4, 0.03))

COMMON = f'sigmoid hidden layer, softmax output, cross-entropy, scaled init, seed {SEED}'


def mnist_dirs():
    """Where raw MNIST may be, in order: $MNIST_DIR, data/raw, ../shared/data/mnist."""
    env = [Path(os.environ['MNIST_DIR'])] if os.environ.get('MNIST_DIR') else []
    return env + [preprocess.RAW_DIR, ROOT.parent / 'shared' / 'data' / 'mnist']


def load_mnist(folders):
    """The official split from the first folder holding raw MNIST (IDX or mnist.pkl.gz).

    Returns ((X (60000, 784) uint8, y int64), (X (10000, 784), y)) and the folder used.
    """
    for folder in folders:
        if preprocess.has_source(folder):
            X, y, n_train = preprocess.read_raw(folder)  # 60,000 training images first
            y = y.astype(np.int64)
            return ((X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])), folder
    raise SystemExit('no raw MNIST found in ' + ', '.join(map(str, folders)) +
                     ': set MNIST_DIR, or run `python preprocess.py --download`.')


def _schedule_text(schedule):
    return ', then '.join(f'{epochs} epochs at learning rate {lr}' for epochs, lr in schedule)


def _epochs(schedule):
    return sum(epochs for epochs, _ in schedule)


def _tick(bar, info):
    """Advance the bar by one mini-batch (never stops training: returns None)."""
    if info['event'] == 'batch':
        bar.update()


def train_ladder(train, out):
    """v1..v5: one seeded 784-30-10 net, saved at LADDER_STOPS and at the end."""
    batches_per_epoch = -(-len(train[0]) // LADDER_BATCH_SIZE)
    stops = dict((batches, version) for version, batches in LADDER_STOPS)
    net = btf.Graph(LADDER_SIZES, LADDER_SCHEDULE[0][1], LADDER_BATCH_SIZE, seed=SEED)
    net.feed(train)
    built = []
    bar = tqdm(total=_epochs(LADDER_SCHEDULE) * batches_per_epoch, unit='batch',
               desc='v1-v5 784-30-10')

    def snapshot(info):
        _tick(bar, info)
        if info['event'] == 'batch' and info['batch'] == batches_per_epoch:
            return  # the 'epoch' event that follows saves it, with the epoch counted
        seen = (info['epoch'] - 1) * batches_per_epoch + info['batch']
        if seen in stops:
            built.append((stops[seen], net.save(out / f'model-v{stops[seen]}.npz'), dict(
                batches=seen,
                recipe=f'784-30-10, {COMMON}, batch size {LADDER_BATCH_SIZE}, learning rate '
                       f'{net.learning_rate}, the 60,000 training images: stopped after {seen} '
                       f'mini-batches ({seen / batches_per_epoch:.2g} epoch).')))

    for epochs, learning_rate in LADDER_SCHEDULE:
        net.learning_rate = learning_rate
        net.run(epochs, callback=snapshot, progress=False)
    bar.close()
    built.append((5, net.save(out / 'model-v5.npz'), dict(
        batches=net.epochs * batches_per_epoch,
        recipe=f'784-30-10, {COMMON}, batch size {LADDER_BATCH_SIZE}, all 60,000 training '
               f'images: {_schedule_text(LADDER_SCHEDULE)}.')))
    return built


def train_best(train, out):
    """v6: 784-800-10 on a fresh seeded augmentation of the training set every epoch."""
    X, y = train
    rng = np.random.default_rng(SEED)
    net = btf.Graph(BEST_SIZES, BEST_SCHEDULE[0][1], BEST_BATCH_SIZE, seed=SEED)
    batches_per_epoch = -(-len(X) // BEST_BATCH_SIZE)
    bar = tqdm(total=_epochs(BEST_SCHEDULE) * batches_per_epoch, unit='batch',
               desc=f'v{BEST} 784-800-10')
    for epochs, learning_rate in BEST_SCHEDULE:
        net.learning_rate = learning_rate
        for _ in range(epochs):
            net.feed((augment.augment(X, rng), y))
            net.run(1, callback=lambda info: _tick(bar, info), progress=False)
    bar.close()
    ranges = (f'shift up to {augment.MAX_SHIFT} px, rotation up to {augment.MAX_ROTATION} '
              f'degrees, scale {augment.SCALE[0]}-{augment.SCALE[1]} per axis, shear up to '
              f'{augment.MAX_SHEAR}, strokes thinner/unchanged/thicker with probabilities '
              f'{"/".join(map(str, augment.THICKNESS))}')
    return [(BEST, net.save(out / f'model-v{BEST}.npz'), dict(
        batches=net.epochs * batches_per_epoch,
        recipe=f'784-800-10, {COMMON}, batch size {BEST_BATCH_SIZE}, every epoch on a fresh '
               f'random distortion of all 60,000 training images ({ranges}; augment.py, '
               f'seed {SEED}): {_schedule_text(BEST_SCHEDULE)}.'))]


def describe(version, path, extra, test, hand):
    """The manifest entry of one saved model, scored on the test set and the handwriting."""
    net = btf.Graph.from_file(path)
    return {'version': version, 'file': path.name, 'sizes': list(net.sizes),
            'options': net.options, 'learning_rate': net.learning_rate,
            'batch_size': net.batch_size, 'epochs': net.epochs, 'batches': extra['batches'],
            'recipe': extra['recipe'], 'test_accuracy': net.evaluate(*test),
            'handwriting_accuracy': net.evaluate(*hand),
            'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}


def plot(models, path, width=520, height=280):
    """A small bar chart of test (dark) and handwriting (light) accuracy per version."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 46, 12, 30, 34
    span = height - top - bottom

    def y_of(fraction):
        return int(round(top + span * (1 - fraction)))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        cv2.line(img, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(img, f'{tick}%', (4, y + 4), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    slot = (width - left - right) / len(models)
    dark, light = (150, 90, 30), (225, 180, 120)  # BGR blues
    for k, m in enumerate(models):
        x0 = int(left + k * slot + slot * 0.15)
        bar = int(slot * 0.35)
        for j, (key, colour) in enumerate((('test_accuracy', dark),
                                           ('handwriting_accuracy', light))):
            cv2.rectangle(img, (x0 + j * bar, y_of(m[key])), (x0 + (j + 1) * bar - 2,
                                                              y_of(0)), colour, -1)
        cv2.putText(img, f'{100 * m["test_accuracy"]:.1f}', (x0 - 2, y_of(m['test_accuracy']) - 4),
                    font, 0.35, (40, 40, 40), 1, cv2.LINE_AA)
        cv2.putText(img, f'v{m["version"]}', (x0 + bar - 8, height - bottom + 16), font, 0.45,
                    (40, 40, 40), 1, cv2.LINE_AA)
    for j, (text, colour) in enumerate((('MNIST test', dark), ('handwriting check', light))):
        x = left + 8 + j * 150
        cv2.rectangle(img, (x, 10), (x + 12, 22), colour, -1)
        cv2.putText(img, text, (x + 18, 21), font, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mnist-dir', type=Path,
                        help='folder with the raw MNIST files (default: the first of $MNIST_DIR, '
                             'data/raw, ../shared/data/mnist that has them)')
    parser.add_argument('--out', type=Path, default=OUT_DIR,
                        help='where to write the models (default: %(default)s)')
    args = parser.parse_args(argv)
    started = time.perf_counter()
    (train, test), folder = load_mnist([args.mnist_dir] if args.mnist_dir else mnist_dirs())
    print(f'MNIST from {folder}: {len(train[0]):,} training and {len(test[0]):,} test images')
    args.out.mkdir(parents=True, exist_ok=True)
    built = train_ladder(train, args.out) + train_best(train, args.out)
    drawn = handwriting.samples()
    hand = handwriting.prepare(drawn), np.array([label for label, _, _ in drawn])
    shown = [k for k, (_, _, p) in enumerate(drawn) if p['index'] < PREVIEW_PER_DIGIT]
    cv2.imwrite(str(args.out / PREVIEW), handwriting.preview([drawn[k] for k in shown],
                                                             hand[0][shown], size=48))
    models = [describe(*b, test, hand) for b in sorted(built, key=lambda b: b[0])]
    manifest = {'best': BEST,
                'test_set': 'official MNIST test set, 10,000 images',
                'handwriting_set': f'handwriting.py: {len(hand[1])} canvas drawings '
                                   f'({handwriting.PER_DIGIT} per digit, seed '
                                   f'{handwriting.SEED}) through imaging.prepare',
                'models': models}
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
    plot(models, args.out / PLOT)
    print(f'\n{"model":6} {"sizes":12} {"batches":>8} {"MNIST test":>10} {"handwriting":>11}')
    for m in models:
        print(f'v{m["version"]:<5} {"-".join(map(str, m["sizes"])):12} {m["batches"]:8} '
              f'{100 * m["test_accuracy"]:9.2f}% {100 * m["handwriting_accuracy"]:10.2f}%')
    print(f'wrote {len(models)} models, {MANIFEST}, {PLOT} and {PREVIEW} to {args.out} in '
          f'{time.perf_counter() - started:.0f} s')


if __name__ == '__main__':
    main()

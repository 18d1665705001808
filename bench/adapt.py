"""Adapting a private net to one writer: the bench that chose the recipe (docs/models.md).

    python -m bench.adapt                       # MNIST writers + handwriting.py writers
    python -m bench.adapt --writers 12 --steps 60 --rate 0.01 --share 0.5 --layers all
    python -m bench.adapt --shared              # the shared net learning from 30 writers

Writers never seen by any shipped model: the NIST writers of MNIST's official test set
(QMNIST's writer ids, ../shared/data/qmnist; the models train on official training images
only) with at least 6 digits of every class. For each: a copy of v7; 5 of the writer's digits
per class posted as drawings (50), of which the server trains on 4 in 5 (every fifth by id is
held out, as the sample store does); ``trainer.adapt_to``, the code /train runs for a private
net; then the writer's other digits read before and after, and MNIST's official test set on
the other writers' images. The second figure does the same for writers drawn with
handwriting.py's styles (one style per digit, a writer's own pen, slant and size), 5 drawings
per digit to adapt and 20 fresh ones read. Seconds are the adaptation's own CPU seconds
(one core: BLAS runs one thread, as in the training process).

``--shared``: the shared net's training with samples (``trainer.train_with_samples`` with
``trainer.SHARED``, or the flags; ``--shared-recipe epochs``: the MNIST epochs used before),
with 30 test-set writers' digits and 30 handwriting.py writers' drawings (250 each) as
everyone's shared drawings; then 14 other writers of each kind read before and after, and
MNIST's test set on the remaining writers' images.
"""
import argparse
import dataclasses
import gzip
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import handwriting
import preprocess
from service import trainer

ROOT = Path(__file__).resolve().parent.parent
QMNIST = ROOT.parent / 'shared' / 'data' / 'qmnist' / 'qmnist-test-labels-idx2-int.gz'
PER_CLASS = 5


def test_writers(path=QMNIST):
    """The NIST writer of each of MNIST's 10,000 official test images."""
    raw = np.frombuffer(gzip.decompress(Path(path).read_bytes()), '>i4')
    rows = raw[3:].reshape(-1, 8)[:10_000]
    return rows[:, 2].astype(np.int64)


def held_out(n, rng):
    """Which of n drawings posted in a random order the sample store keeps out of training
    (every fifth by id)."""
    ids = rng.permutation(n) + 1
    return preprocess.is_sample_validation(ids)


def adapt_one(base, data, X_own, y_own, recipe, rng):
    """(adapted net, CPU seconds): a copy of ``base`` adapted to the drawings the server would
    train on (4 in 5 of X_own, uint8)."""
    keep = ~held_out(len(y_own), rng)
    net = base.copy()
    started = time.process_time()  # one core's seconds, however busy the machine is
    trainer.adapt_to(net, {'train': data['train']}, (X_own[keep], y_own[keep]), recipe,
                     rng=rng)
    return net, time.process_time() - started


def errors(net, X, y):
    return int(np.count_nonzero(net.predict_batch(X)[0] != y))


def mnist_writers(base, data, test, writers, recipe, count, seed):
    """Per writer: (writer, read, errors before, after, MNIST test before, after on the other
    writers' images, seconds), and per class (errors before, after)."""
    X_test, y_test = test
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(writers, return_counts=True)
    eligible = [w for w in ids if np.bincount(y_test[writers == w], minlength=10).min()
                > PER_CLASS]
    rows, per_class = [], np.zeros((2, 10), int)
    for w in eligible[:count]:
        mine = np.flatnonzero(writers == w)
        pick = np.random.default_rng([seed, int(w)])  # the same digits whatever the recipe
        chosen = np.concatenate([pick.choice(mine[y_test[mine] == d], PER_CLASS, replace=False)
                                 for d in range(10)])
        rest = np.setdiff1d(mine, chosen)
        others = writers != w
        net, seconds = adapt_one(base, data, X_test[chosen], y_test[chosen], recipe, rng)
        Xr = X_test[rest].astype(np.float32) / 255
        before, after = (m.predict_batch(Xr)[0] != y_test[rest] for m in (base, net))
        np.add.at(per_class[0], y_test[rest][before], 1)
        np.add.at(per_class[1], y_test[rest][after], 1)
        Xo = X_test[others].astype(np.float32) / 255
        rows.append((int(w), len(rest), int(before.sum()), int(after.sum()),
                     base.evaluate(Xo, y_test[others].astype(np.int64)),
                     net.evaluate(Xo, y_test[others].astype(np.int64)), seconds))
    return rows, per_class


def drawn_writer(rng, per_digit, styles):
    """A handwriting.py writer: per digit its one style, its pen, size and slant; X uint8."""
    drawn = []
    pen = dict(thickness=int(rng.integers(handwriting.THICKNESS[0],
                                          handwriting.THICKNESS[1] + 1)),
               slant=rng.uniform(*handwriting.SLANT), height=rng.uniform(*handwriting.HEIGHT))
    for digit in range(10):
        for _ in range(per_digit):
            ink, background = handwriting.INKS[rng.integers(len(handwriting.INKS))]
            height = pen['height'] * rng.uniform(0.9, 1.1)
            params = dict(thickness=int(np.clip(pen['thickness'] + rng.integers(-3, 4), 4, 40)),
                          height=height, aspect=rng.uniform(*handwriting.ASPECT),
                          slant=pen['slant'] + rng.uniform(-0.05, 0.05),
                          rotation=rng.uniform(*handwriting.ROTATION),
                          centre=tuple(rng.uniform(0.5 - (1 - height) / 3,
                                                   0.5 + (1 - height) / 3, 2)),
                          ink=ink, background=background)
            strokes = handwriting._shaky(handwriting.STYLES[digit][styles[digit]], rng,
                                         handwriting.JITTER)
            drawn.append((digit, handwriting.render(strokes, **params), params))
    X = np.clip(np.rint(handwriting.prepare(drawn) * 255), 0, 255).astype(np.uint8)
    return X, np.repeat(np.arange(10), per_digit)


def style_writers(base, data, test, recipe, count, seed, read=20):
    """The same for ``count`` handwriting.py writers (MNIST test: all of it)."""
    rng = np.random.default_rng(seed)
    X_test, y_test = test[0].astype(np.float32) / 255, test[1].astype(np.int64)
    rows, per_class = [], np.zeros((2, 10), int)
    before_mnist = base.evaluate(X_test, y_test)
    X_styles, y_styles = style_drawings(count, PER_CLASS + read, seed)
    for w in range(count):
        X_all, y_all = X_styles[w], y_styles[w]
        first = np.arange(len(y_all)) % (PER_CLASS + read) < PER_CLASS
        net, seconds = adapt_one(base, data, X_all[first], y_all[first], recipe, rng)
        Xr, yr = X_all[~first].astype(np.float32) / 255, y_all[~first]
        before, after = (m.predict_batch(Xr)[0] != yr for m in (base, net))
        np.add.at(per_class[0], yr[before], 1)
        np.add.at(per_class[1], yr[after], 1)
        rows.append((w, len(yr), int(before.sum()), int(after.sum()), before_mnist,
                     net.evaluate(X_test, y_test), seconds))
    return rows, per_class


def report(title, rows, per_class):
    print(f'\n{title}')
    print(f'{"writer":>7} {"read":>5} {"errors before":>14} {"after":>6} {"MNIST before":>13} '
          f'{"after":>7} {"seconds":>8}')
    for w, n, b, a, mb, ma, s in rows:
        print(f'{w:>7} {n:>5} {b:>14} {a:>6} {100 * mb:>12.2f}% {100 * ma:>6.2f}% {s:>8.2f}')
    rows = np.array(rows, float)
    read, before, after = rows[:, 1].sum(), rows[:, 2].sum(), rows[:, 3].sum()
    change = 100 * (rows[:, 3] - rows[:, 2]) / rows[:, 1]  # points of each writer's accuracy
    cut = 1 - after / before if before else 0.0
    print(f'total: {len(rows)} writers, {int(read)} digits read, errors {int(before)} -> '
          f'{int(after)} ({100 * cut:.0f}% fewer); accuracy {100 * (1 - before / read):.2f}% '
          f'-> {100 * (1 - after / read):.2f}%')
    print(f'per writer: errors cut on {int((rows[:, 3] < rows[:, 2]).sum())}, same on '
          f'{int((rows[:, 3] == rows[:, 2]).sum())}, more on '
          f'{int((rows[:, 3] > rows[:, 2]).sum())}; worst change {change.max():+.2f} points of '
          'errors')
    print(f'MNIST test: {100 * rows[:, 4].mean():.2f}% -> {100 * rows[:, 5].mean():.2f}% '
          f'(mean; worst {100 * (rows[:, 5] - rows[:, 4]).min():+.2f} points)')
    print(f'CPU seconds per adaptation (one core): mean {rows[:, 6].mean():.2f}, max '
          f'{rows[:, 6].max():.2f}')
    print('errors per class before: ' + ' '.join(f'{d}:{n}' for d, n in enumerate(per_class[0])))
    print('errors per class after:  ' + ' '.join(f'{d}:{n}' for d, n in enumerate(per_class[1])))
    return cut


def style_drawings(count, per_digit, seed, cache=Path('/tmp')):
    """``count`` handwriting.py writers' drawings: X (count, 10 * per_digit, 784) uint8, y;
    kept in ``cache`` (rendering thousands of canvases takes a while)."""
    path = cache / f'bench-adapt-styles-{count}-{per_digit}-{seed}.npz'
    if path.is_file():
        with np.load(path) as f:
            return f['X'], f['y']
    rng = np.random.default_rng(seed)
    drawn = [drawn_writer(rng, per_digit, [int(rng.integers(len(handwriting.STYLES[d])))
                                           for d in range(10)]) for _ in range(count)]
    X, y = np.stack([X for X, _ in drawn]), np.stack([y for _, y in drawn])
    np.savez(path, X=X, y=y)
    return X, y


def shared(base, data, test, writers, args):
    """The shared net trained once with 30 writers' digits as samples, 14 others read: the
    MNIST test-set writers with most digits, and handwriting.py writers (25 drawings of each
    digit to learn from, 10 of each read)."""
    X_test, y_test = test
    ids, counts = np.unique(writers, return_counts=True)
    order = ids[np.argsort(-counts, kind='stable')]
    taught, reading = np.isin(writers, order[:30]), np.isin(writers, order[30:44])
    rest = ~taught & ~reading
    X_styles, y_styles = style_drawings(44, 25, args.seed + 1)
    picked = np.flatnonzero(taught)
    X_all = np.concatenate([X_test[picked], X_styles[:30].reshape(-1, 784)])
    y_all = np.concatenate([y_test[picked], y_styles[:30].ravel()]).astype(np.int64)
    rng = np.random.default_rng(args.seed)
    keep = ~held_out(len(y_all), rng)
    samples = X_all[keep], y_all[keep], X_all[~keep], y_all[~keep]
    net = base.copy()
    started = time.process_time()
    recipe = None if args.shared_recipe == 'epochs' else args.recipe
    trainer.train_with_samples(net, data, samples, args.sample_share, args.epochs, None,
                               threading.Event(), recipe)
    seconds = time.process_time() - started
    f = np.float32(255)
    read = (('14 other MNIST test-set writers', X_test[reading], y_test[reading]),
            ('14 other handwriting.py writers', X_styles[30:].reshape(-1, 784),
             y_styles[30:].ravel()),
            ('MNIST test (the other writers)', X_test[rest], y_test[rest]))
    for name, X, y in read:
        X, y = X / f, y.astype(np.int64)
        print(f'{name}: {100 * base.evaluate(X, y):.2f}% -> {100 * net.evaluate(X, y):.2f}% '
              f'({len(y)} images)')
    print(f'{len(y_all)} drawings of 30 + 30 writers as samples ({keep.sum()} trained on), '
          f'{"share " + str(args.sample_share) if recipe is None else recipe}, '
          f'{args.epochs} epoch(s): {seconds:.0f} s')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', type=Path, default=ROOT / 'models' / 'model-v7.npz')
    p.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT)
    p.add_argument('--writers', type=int, default=40, help='MNIST test-set writers (at most)')
    p.add_argument('--styles', type=int, default=20, help='handwriting.py writers (0: none)')
    for name, kind in (('steps', int), ('batch', int), ('share', float), ('rate', float),
                       ('momentum', float), ('distortion', float)):
        p.add_argument(f'--{name}', type=kind, help='the recipe\'s (trainer.ADAPT, with '
                       '--shared trainer.SHARED); --rate times the net\'s learning rate')
    p.add_argument('--layers', choices=('all', 'last'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--shared', action='store_true', help='the shared-net protocol instead')
    p.add_argument('--sample-share', type=float, default=trainer.SHARED.share,
                   help='--shared: the share of samples (the server\'s --sample-share)')
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--shared-recipe', choices=('epochs', 'steps'), default='steps',
                   help='--shared: the steps of adapt_to (the server\'s), or MNIST epochs with '
                        '--sample-share of samples (before)')
    args = p.parse_args(argv)
    threadpool_limits(1, user_api='blas')  # one core, as the training process runs
    base = btf.Graph.from_file(args.model)
    data = preprocess.load_dataset(args.data)
    with np.load(ROOT / 'models' / 'mnist-test.npz') as f:
        test = f['X'], f['y']
    writers = test_writers()
    given = {k: getattr(args, k) for k in ('steps', 'batch', 'share', 'rate', 'momentum',
                                           'layers', 'distortion') if getattr(args, k) is not None}
    if args.shared:
        given.setdefault('share', args.sample_share)
    recipe = args.recipe = dataclasses.replace(trainer.SHARED if args.shared else trainer.ADAPT,
                                               **given)
    if args.shared:
        shared(base, data, test, writers, args)
        return
    print(f'{args.model.name}, {recipe}')
    if args.writers:
        report('MNIST test-set writers (unseen by every shipped model)',
               *mnist_writers(base, data, test, writers, recipe, args.writers, args.seed))
    if args.styles:
        report('handwriting.py writers (styles MNIST lacks)',
               *style_writers(base, data, test, recipe, args.styles, args.seed))


if __name__ == '__main__':
    main()

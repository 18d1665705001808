"""Poisoned drawings beside honest ones: how many the server holds back, and what one training
with samples does to the shared net.

    python -m bench.poison                      # the table in docs/models.md; ~15 minutes
    python -m bench.poison --runs 400:400:4to9 --epochs 1
    python -m bench.poison --thresholds          # how judge.py's LOW and HIGH were chosen

A run is N honest corrections plus M poisoned drawings, posted to a real server
(`server.py`, the shipped models, its live net a copy of the best) as the page would, then
one `/train` with samples, once with drawings judged mislabelled held back (the default) and
once with `--no-hold-suspect`. Honest corrections are handwriting.py canvases of every digit
and style (seeded, labelled right). Poison is real MNIST writers' digits no shipped net
trained on (official training images in preprocess's validation part; past its 1,074 4s, the
other official training 4s, which v7 learned from): ``4to9`` posts 4s labelled 9 (the attack
in issue 23), ``random`` digits of every class with a random wrong label. Reported: poisoned
and honest drawings held back, the trained version's accuracy on MNIST's official test set
(overall, and on the worst-hit class), and on fresh handwriting.py
canvases (another seed: what the honest drawings teach); "(not live)" when the gate kept
the trained version from going live.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import better_tensorflow as btf
import handwriting
import imaging
import preprocess
from bench.learn import drawings
from tests.conftest import IDX_FILES, Process, read_idx

RUNS = ('400:0:4to9', '400:400:4to9', '0:1353:4to9', '2000:2000:4to9', '2000:2000:random')
EPOCHS = 1
TOKEN = 'bench-poison'  # the harness holds the token: the per-client limits do not apply
FRESH = 20  # fresh canvases per digit and style, read after training
SEED = 3


def honest(n, seed):
    """n handwriting.py canvases spread over every digit and style, with their labels."""
    styles = [(d, s) for d, group in handwriting.STYLES.items() for s in range(len(group))]
    out = []
    for k, (digit, style) in enumerate(styles):
        count = n // len(styles) + (k < n % len(styles))
        out += [(handwriting.data_url(canvas), digit)
                for digit, canvas, _ in drawings(digit, style, count, seed + k)]
    return out


def poison(kind, m, X, y, unseen, rng):
    """m (data URL, label) of real MNIST digits with a wrong label: the ``unseen`` ones (a
    mask) first."""
    pool = np.flatnonzero(y == 4) if kind == '4to9' else np.arange(len(y))
    pool = np.concatenate([rng.permutation(pool[unseen[pool]]),
                           rng.permutation(pool[~unseen[pool]])])
    chosen = pool[:m]
    if kind == '4to9':
        labels = np.full(m, 9)
    elif kind == 'random':
        labels = (y[chosen] + rng.integers(1, 10, m)) % 10
    else:
        raise SystemExit(f'poison must be 4to9 or random, got {kind!r}')
    return [(png_url(X[i]), int(label)) for i, label in zip(chosen, labels)]


def png_url(x):
    import base64

    import cv2
    big = cv2.resize(x.reshape(28, 28), (56, 56), interpolation=cv2.INTER_LINEAR)
    return 'data:image/png;base64,' + base64.b64encode(cv2.imencode('.png', 255 - big)[1]
                                                         ).decode()


def run(tmp, data, good, bad, hold, epochs):
    """Post the drawings, train once; (held-back poison, held-back honest, the trained
    version, whether the gate let it go live, seconds)."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    args = ('--data', str(data), *(() if hold else ('--no-hold-suspect',)))
    auth = {'Authorization': f'Bearer {TOKEN}'}
    with Process(folder, *args, env={'BTF_TOKEN': TOKEN}) as server:
        drawn = [(url, label, False) for url, label in good] + \
            [(url, label, True) for url, label in bad]
        order = np.random.default_rng(SEED).permutation(len(drawn))
        held = {False: 0, True: 0}
        for k in order:
            url, label, poisoned = drawn[k]
            answer = server.post('/samples', {'image': url, 'label': label}, headers=auth)
            assert answer.status in (200, 201), answer
            held[poisoned] += answer.json['suspect']
        started = time.perf_counter()
        trained = server.post('/train', {'epochs': epochs, 'samples': True}, headers=auth,
                              timeout=3600)
        assert trained.status == 200, trained
        seconds = time.perf_counter() - started
        version = trained.json['version']
        net = btf.Graph.from_file(server.state / 'versions' / 'live' / f'{version:06d}.npz')
    return held[True], held[False], net, trained.json.get('promoted', True), seconds


def per_class(net, X, y):
    labels = net.predict_batch(X)[0]
    return float(np.mean(labels == y)), [float(np.mean(labels[y == c] == c)) for c in range(10)]


def thresholds(X_test, y_test):
    """Share of drawings judge.py's rule calls suspect, for thresholds around its own: on
    MNIST's test digits (out of sample for the shipped judges) relabelled (poison), and on
    honest ones, every one and those v7 misreads; on handwriting.py's 400 canvases."""
    from service import judge
    models = Path(__file__).resolve().parent.parent / 'models'
    graphs = [btf.Graph.from_file(models / f'model-v{v}.npz') for v in (6, 7)]
    X_hand, y_hand = handwriting.dataset()
    X_hand = np.rint(X_hand * 255).astype(np.uint8)
    X_test = np.rint(X_test * 255).astype(np.uint8)
    rng = np.random.default_rng(SEED)
    fours = y_test == 4
    wrong_labels = (y_test + rng.integers(1, 10, len(y_test))) % 10
    v7 = graphs[1]
    misread = v7.predict_batch(X_test / np.float32(255))[0] != y_test
    misread_hand = v7.predict_batch(X_hand / np.float32(255))[0] != y_hand
    sets = [('4s labelled 9', X_test[fours], np.full(fours.sum(), 9)),
            ('random wrong labels', X_test, wrong_labels),
            (f'MNIST test, right ({len(y_test)})', X_test, y_test),
            (f'v7 misreads, right ({misread.sum()})', X_test[misread], y_test[misread]),
            (f'canvases, right ({len(y_hand)})', X_hand, y_hand),
            (f'canvases v7 misreads ({misread_hand.sum()})', X_hand[misread_hand],
             y_hand[misread_hand]),
            ('a 1 with a long upstroke, right (100)', *upstroke())]
    print('| label below | other digit at least | ' + ' | '.join(n for n, _, _ in sets) + ' |')
    print('|---|---|' + '---|' * len(sets))
    for low in (0.005, 0.01, 0.02, 0.05, 0.1):
        for high in (0.5, 0.9):
            shares = [judge.verdicts(graphs, X, y, low, high)[0].mean() for _, X, y in sets]
            mark = '**' if (low, high) == (judge.LOW, judge.HIGH) else ''
            print(f'| {mark}{100 * low:g}%{mark} | {mark}{100 * high:g}%{mark} | '
                  + ' | '.join(f'{100 * s:.1f}%' for s in shares) + ' |')


def upstroke():
    """100 canvases of handwriting.py's style v7 reads worst (bench.learn: the 1 with a long
    upstroke), labelled right: honest corrections of a style."""
    drawn = drawings(1, 3, 100, seed=1)
    return np.rint(handwriting.prepare(drawn) * 255).astype(np.uint8), np.ones(100, np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', nargs='+', default=list(RUNS),
                        help='N:M:kind (kind 4to9 or random) (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--thresholds', action='store_true',
                        help="only the table of judge.py's thresholds")
    args = parser.parse_args(argv)
    source = preprocess.find_mnist()
    if source is None:
        raise SystemExit('no raw MNIST: set MNIST_DIR or run `make data`')
    X_train = read_idx(source / IDX_FILES[0]).reshape(-1, 784)
    y_train = read_idx(source / IDX_FILES[1]).astype(np.int64)
    X_test = read_idx(source / IDX_FILES[2]).reshape(-1, 784).astype(np.float32) / 255
    y_test = read_idx(source / IDX_FILES[3]).astype(np.int64)
    if args.thresholds:
        return thresholds(X_test, y_test)
    val = preprocess.split_indices(70_000, 60_000)['val']
    unseen = np.zeros(60_000, bool)  # official training images no shipped net trained on
    unseen[val[val < 60_000]] = True
    fresh = honest(FRESH * sum(map(len, handwriting.STYLES.values())), seed=1000)
    X_fresh = np.stack([imaging.prepare(url).reshape(-1) for url, _ in fresh])
    y_fresh = np.array([label for _, label in fresh])
    best = btf.Graph.from_file(Path(__file__).resolve().parent.parent / 'models' /
                               'model-v7.npz')
    overall, classes = per_class(best, X_test, y_test)
    print(f'before: v7 reads {100 * overall:.2f}% of MNIST\'s test, '
          f'{100 * best.evaluate(X_fresh, y_fresh):.1f}% of {len(y_fresh)} fresh canvases; '
          'per class ' + ' '.join(f'{100 * c:.2f}' for c in classes), flush=True)
    print('| N honest | M poisoned | held back: poisoned | held back: honest | '
          'test (held back) | worst class (held back) | canvases (held back) | '
          'test (all trained) | worst class (all trained) | canvases (all trained) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / 'mnist.npz'
        preprocess.build(source, data)
        for spec in args.runs:
            n, m, kind = spec.split(':')
            n, m = int(n), int(m)
            rng = np.random.default_rng(SEED)
            good = honest(n, seed=10)
            bad = poison(kind, m, X_train, y_train, unseen, rng)
            cells = []
            for hold in (True, False):
                held_bad, held_good, net, promoted, seconds = run(tmp, data, good, bad, hold,
                                                                  args.epochs)
                acc, by_class = per_class(net, X_test, y_test)
                drop = [by_class[c] - classes[c] for c in range(10)]
                worst = int(np.argmin(drop))
                if hold:
                    held = (f'{held_bad} of {m}', f'{held_good} of {n}')
                cells += [f'{100 * acc:.2f}%' + ('' if promoted else ' (not live)'),
                          f'{worst}: {100 * by_class[worst]:.2f}% ({100 * drop[worst]:+.2f})',
                          f'{100 * net.evaluate(X_fresh, y_fresh):.1f}%']
                print(f'  ({spec}, hold={hold}: trained in {seconds:.0f} s)', file=sys.stderr,
                      flush=True)
            print(f'| {n} | {m} {kind} | {held[0]} | {held[1]} | ' + ' | '.join(cells) + ' |',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Learns your style: a style of handwriting the best model misreads, corrected through
/samples, then one training with samples; the style's accuracy on a fresh set drawn with
another seed, and the MNIST test accuracy, before and after.

    python -m bench.learn                 # k = 10, 30, 100 corrections; a few minutes
    python -m bench.learn --k 30 --epochs 2

It runs a real server (`server.py`, the shipped models, its live net a copy of the best)
and sends every drawing as the page would: a PNG canvas through /samples. The accuracies are
computed here on the net the server saved, through the same image pipeline as /predict.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import better_tensorflow as btf
import handwriting
import preprocess
from tests.conftest import IDX_FILES, Process, read_idx

KS = (10, 30, 100)
EPOCHS = 1
FRESH = 200  # drawings of the style read after training (another seed)
PROBE = 40  # drawings per style when looking for the worst one


def drawings(digit, style, n, seed):
    """n canvases of one (digit, style), drawn with the check set's random parameters."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ink, background = handwriting.INKS[rng.integers(len(handwriting.INKS))]
        height = rng.uniform(*handwriting.HEIGHT)
        params = dict(thickness=int(rng.integers(handwriting.THICKNESS[0],
                                                 handwriting.THICKNESS[1] + 1)),
                      height=height, aspect=rng.uniform(*handwriting.ASPECT),
                      slant=rng.uniform(*handwriting.SLANT),
                      rotation=rng.uniform(*handwriting.ROTATION),
                      centre=tuple(rng.uniform(0.5 - (1 - height) / 3, 0.5 + (1 - height) / 3,
                                               2)), ink=ink, background=background)
        strokes = handwriting._shaky(handwriting.STYLES[digit][style], rng, handwriting.JITTER)
        out.append((digit, handwriting.render(strokes, **params), params))
    return out


def accuracy(net, drawn):
    X = handwriting.prepare(drawn)
    return float(np.mean(net.predict_batch(X)[0] == drawn[0][0]))


def worst_style(net):
    scores = {(d, s): accuracy(net, drawings(d, s, PROBE, seed=7))
              for d, styles in handwriting.STYLES.items() for s in range(len(styles))}
    return min(scores, key=scores.get), scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--k', type=int, nargs='+', default=list(KS))
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--sample-share', default='0.1',
                        help="the server's --sample-share (default: %(default)s)")
    args = parser.parse_args(argv)
    source = preprocess.find_mnist()
    if source is None:
        raise SystemExit('no raw MNIST: set MNIST_DIR or run `make data`')
    X_test = read_idx(source / IDX_FILES[2]).reshape(-1, 784).astype(np.float32) / 255
    y_test = read_idx(source / IDX_FILES[3]).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / 'mnist.npz'
        preprocess.build(source, data)
        with Process(tmp, '--data', str(data), '--sample-share', args.sample_share) as server:
            server.get('/pretrain')
            best = btf.Graph.from_file(server.state / 'live.npz')
            (digit, style), scores = worst_style(best)
            print(f'worst style of the best model: {digit} style {style} '
                  f'({100 * scores[digit, style]:.0f}% of {PROBE}); next worst: '
                  + ', '.join(f'{d}/{s} {100 * v:.0f}%' for (d, s), v in
                              sorted(scores.items(), key=lambda kv: kv[1])[1:4]))
            fresh = drawings(digit, style, FRESH, seed=2)
            print('| corrections k | style before | style after | MNIST test before | '
                  'MNIST test after | training (s) |')
            print('|---|---|---|---|---|---|')
            for k in args.k:
                server.get('/pretrain')
                for sample in server.get('/samples?limit=500').json['samples']:
                    server.call('DELETE', f'/samples/{sample["id"]}')
                for _, canvas, _ in drawings(digit, style, k, seed=1):
                    answer = server.post('/samples', {'image': handwriting.data_url(canvas),
                                                      'label': digit})
                    assert answer.status in (200, 201), answer
                started = time.perf_counter()
                trained = server.post('/train', {'epochs': args.epochs, 'samples': True},
                                      timeout=3600)
                assert trained.status == 200, trained
                seconds = time.perf_counter() - started
                after = btf.Graph.from_file(server.state / 'live.npz')
                print(f'| {k} | {100 * accuracy(best, fresh):.1f}% | '
                      f'{100 * accuracy(after, fresh):.1f}% | '
                      f'{100 * best.evaluate(X_test, y_test):.2f}% | '
                      f'{100 * after.evaluate(X_test, y_test):.2f}% | {seconds:.0f} |',
                      flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

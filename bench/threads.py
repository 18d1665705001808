"""Training's BLAS threads: an epoch that picks its thread count (ThreadChoice: one thread or
the caller's limit, whichever trains the batches faster now) against the same epoch pinned to
one thread (the library before the choice), interleaved, as the machine is and with a second
process keeping one core busy.

    python -m bench.threads                   # 784-800-10, momentum SGD, about 3 minutes
    python -m bench.threads --sizes 784 30 10 --reps 5

Data: the first N_TRAIN rows of data/mnist_preprocessed.npz or of the raw files that
preprocess.find_mnist finds ($MNIST_DIR).
"""
import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import preprocess
from bench.serve import training_file

# Defaults (flags override them).
SIZES = (784, 800, 10)
N_TRAIN = 20_000
BATCH = 64
REPS = 5
PAUSE = 0.3  # seconds of rest before each epoch: idle OpenBLAS threads spin for a while


def spin(stop):
    """Keep one core busy until ``stop`` is set (the busy machine's second process)."""
    while not stop.is_set():
        sum(range(10_000))


def epoch(net, threads):
    """Seconds of one epoch with ``threads`` BLAS threads allowed, and the count it kept."""
    time.sleep(PAUSE)
    with threadpool_limits(threads, user_api='blas'):
        started = time.perf_counter()
        record = net.run(1, progress=False)[-1]
    return time.perf_counter() - started, record['blas_threads']


def measure(data, sizes, reps, cores):
    cases = {'pinned to 1 thread': 1, f'choice (1 or {cores})': cores}
    times, kept = {c: [] for c in cases}, []
    nets = {}
    for case in cases:
        nets[case] = btf.Graph(sizes, 0.05, BATCH, activation='relu', momentum=0.9, seed=0)
        nets[case].feed(data)
    for r in range(reps):
        for case in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
            threads = cases[case]
            seconds, count = epoch(nets[case], threads)
            times[case].append(seconds)
            if threads > 1:
                kept.append(count)
    return times, kept


def report(label, times, kept):
    base = times['pinned to 1 thread']
    print(f'\n{label} (load average {os.getloadavg()[0]:.2f}):')
    print('| epoch | median s | against pinned to 1 (same round, median) |')
    print('|---|---|---|')
    for case, t in times.items():
        ratio = statistics.median(b / x for b, x in zip(base, t))
        print(f'| {case} | {statistics.median(t):.3f} | {ratio:.2f}x faster |')
    print(f'threads the choice kept, epoch by epoch: {kept}; the rounds: ' + '; '.join(
        ' '.join(f'{t[r]:.2f}' for t in times.values()) for r in range(len(base))), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=SIZES)
    parser.add_argument('--reps', type=int, default=REPS)
    parser.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        X, y = preprocess.load_dataset(training_file(args.data, Path(tmp)))['train']
    data = (np.asarray(X[:N_TRAIN], np.float32), np.asarray(y[:N_TRAIN]))
    print(f'{"-".join(map(str, args.sizes))}, momentum SGD, batch {BATCH}, {len(data[0]):,} '
          f'rows an epoch, {args.reps} interleaved repetitions, {cores} cores; load average '
          f'{os.getloadavg()[0]:.2f} at the start')
    report('as the machine is', *measure(data, tuple(args.sizes), args.reps, cores))
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    busy.start()
    try:
        report('with a second process keeping one core busy',
               *measure(data, tuple(args.sizes), args.reps, cores))
    finally:
        stop.set()
        busy.join(10)
    return 0


if __name__ == '__main__':
    sys.exit(main())

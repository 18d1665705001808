"""Several servers on one PostgreSQL database, as separate machines would be: how long from
"a new net is saved" on one server to "every other answers with it", and /predict throughput
of two servers on one database against one server, side by side in one run.

    python -m bench.machines            # about a minute; needs Debian's postgresql
    python -m bench.machines --quick

It starts its own PostgreSQL (initdb in a temporary folder, as the tests do) and servers.
"""
import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import preprocess
from bench.serve import asyncio_client, canvases
from tests.conftest import Postgres, Process, postgres_bin

CHANGES = 40  # /reset and /pretrain in turn on one server, watched on the other
SECONDS = 5.0  # per throughput row
CONCURRENCY = 16


def propagation(a, b, changes):
    """Seconds from a change answered by ``a`` to ``b``'s first answer with the new net."""
    delays = []
    for k in range(changes):
        path = '/pretrain' if k % 2 else '/reset'
        assert a.get(path).status == 200
        done = time.perf_counter()
        want = a.get('/models').json['live']['sizes']
        while b.get('/models').json['live']['sizes'] != want:
            pass
        delays.append(time.perf_counter() - done)
    return delays


async def throughput(servers, bodies, seconds, concurrency):
    """Requests/s of /predict spread over ``servers`` (each gets concurrency / n users)."""
    share = max(1, concurrency // len(servers))
    results = await asyncio.gather(*(asyncio_client(s.port, '/predict', bodies, share, seconds)
                                     for s in servers))
    errors = sum(r['errors'] for r in results)
    return sum(r['requests'] for r in results) / seconds, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if postgres_bin() is None:
        raise SystemExit('PostgreSQL is not installed (Debian: apt-get install postgresql)')
    changes, seconds = (10, 2.0) if args.quick else (CHANGES, SECONDS)
    source = preprocess.find_mnist()
    if source is None:
        raise SystemExit('no raw MNIST: set MNIST_DIR or run `make data`')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / 'mnist.npz'
        preprocess.build(source, data)
        bodies = canvases(preprocess.load_dataset(data)['test'][0], 200)
        database = Postgres(Path(tempfile.mkdtemp(prefix='btf-bench-pg-')))
        servers = []
        try:
            for k in range(2):
                home = tmp / f'machine-{k}'
                home.mkdir()
                servers.append(Process(home, '--data', str(data), '--database', database.url))
            a, b = servers
            delays = propagation(a, b, changes)
            print(f'new net on one server -> the other answers with it, {changes} changes: '
                  f'median {1000 * statistics.median(delays):.1f} ms, max '
                  f'{1000 * max(delays):.1f} ms')
            a.get('/pretrain')
            one = asyncio.run(throughput([a], bodies, seconds, CONCURRENCY))
            two = asyncio.run(throughput([a, b], bodies, seconds, CONCURRENCY))
            print(f'/predict, {CONCURRENCY} connections, {seconds:g} s: one server '
                  f'{one[0]:,.0f} requests/s ({one[1]} errors); two servers on one database '
                  f'{two[0]:,.0f} requests/s ({two[1]} errors)')
        finally:
            for s in servers:
                s.stop()
            database.stop('immediate')
    return 0


if __name__ == '__main__':
    sys.exit(main())

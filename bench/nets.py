"""Many nets on one server (issue #21): C clients each make a net and train it one epoch at
the same moment, while another client sends /predict to the shared net; then the memory of
1,000 stored nets with 50 in use, and the --net-memory bound with 200 nets used in turn.

    python -m bench.nets                # about 5 minutes on 2 cores
    python -m bench.nets --clients 10
    python -m bench.nets --quick        # a smoke run: 5 clients, 100 nets, 10 in use

It starts its own servers (`server.py` with default flags except those named, a fresh state
folder each) on a training file cut to the first ROWS rows of real MNIST (built from the raw
files that preprocess.find_mnist finds, as bench/serve.py does), and prints what it measured:

- queue: every client's answer status, submit time, the first queue position /train/status
  showed it, when its job ran, and fairness: inversions between the order the trainings were
  submitted and the order they started (0: first come, first served), the longest wait;
- /predict on the shared net from one keep-alive client sending back to back: p50 and p99
  during the trainings against a baseline measured just before, in the same run;
- memory: the server's resident memory (its processes and their children) and its state
  folder on disk, empty, with STORED nets and with IN_USE of them answering; time per POST /nets;
- the bound: LRU_NETS nets used in turn PASSES times with --net-memory SMALL_BUDGET against
  the default.
"""
import argparse
import http.client
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import preprocess
from bench.serve import ROOT, canvases, rss, training_file
from tests.conftest import Process

# Defaults (flags override them).
CLIENTS = 30          # each makes a net and trains it one epoch, all at once
ROWS = 5_000          # rows of the training file (each array cut to its first ROWS)
BASELINE_SECONDS = 10.0  # /predict alone on the shared net before the trainings
STORED = 1_000        # nets made for the memory figures
IN_USE = 50           # of them answering /predict, round-robin
ROUNDS = 4            # /predict rounds over the nets in use
LRU_NETS = 200        # nets used in turn under a small and the default --net-memory
PASSES = 2            # over those nets
SMALL_BUDGET = 4      # MB of --net-memory for the bound (the live net's 2.5 count too)
POLL = 0.05           # seconds between two sweeps of /train/status


class Connection:
    """One keep-alive connection; ``send`` answers (status, parsed JSON, seconds taken)."""

    def __init__(self, port, timeout=900):
        self.port, self.timeout, self.conn = port, timeout, None

    def send(self, method, path, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=self.timeout)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=data,
                              headers={'Content-Type': 'application/json'})
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None, None, time.perf_counter() - started
        taken = time.perf_counter() - started
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        return response.status, answer, taken

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def percentiles(seconds):
    ms = np.array(seconds) * 1000
    if not len(ms):
        return {'n': 0, 'p50': float('nan'), 'p99': float('nan')}
    return {'n': len(ms), 'p50': float(np.percentile(ms, 50)),
            'p99': float(np.percentile(ms, 99))}


def disk(folder):
    """(bytes on disk, files) of a folder."""
    used = files = 0
    for top, _, names in os.walk(folder):
        for name in names:
            try:
                used += os.lstat(os.path.join(top, name)).st_blocks * 512
                files += 1
            except OSError:
                continue
    return used, files


def inversions(order):
    """Pairs out of order in a sequence of submit ranks (0 when sorted)."""
    return sum(a > b for i, a in enumerate(order) for b in order[i + 1:])


def small_training_file(source, folder, rows):
    path = folder / f'mnist-{rows}.npz'
    with np.load(source, allow_pickle=False) as f:
        np.savez(path, **{k: f[k][:rows] if f[k].ndim else f[k] for k in f.files})
    return path


class Hammer(threading.Thread):
    """/predict on the shared net, back to back on one connection: (sent at, seconds,
    status) of every request until stopped."""

    def __init__(self, port, bodies):
        super().__init__(daemon=True)
        self.port, self.bodies = port, bodies
        self.samples, self.stopped = [], threading.Event()

    def run(self):
        connection, k = Connection(self.port, timeout=60), 0
        while not self.stopped.is_set():
            sent = time.perf_counter()
            status, _, taken = connection.send('POST', '/predict',
                                               self.bodies[k % len(self.bodies)])
            self.samples.append((sent, taken, status))
            k += 1
        connection.close()

    def window(self, start, end):
        inside = [(taken, status) for sent, taken, status in self.samples
                  if start <= sent < end]
        return percentiles([t for t, _ in inside]), sum(s != 200 for _, s in inside)


def queue(server, clients, bodies, baseline_seconds):
    """C clients make a net and train it one epoch at once; /predict meanwhile."""
    hammer = Hammer(server.port, bodies)
    hammer.start()
    time.sleep(1.0)  # warm-up
    baseline_start = time.perf_counter()
    time.sleep(baseline_seconds)
    baseline_end = time.perf_counter()

    records = [{'client': k} for k in range(clients)]
    made, go = threading.Barrier(clients + 1), threading.Barrier(clients + 1)

    def client(record):
        connection = Connection(server.port)
        status, answer, _ = connection.send('POST', '/nets', {'from': 'live'})
        record['made'] = status
        record['net'] = answer['net'] if status == 201 else None
        made.wait()
        go.wait()
        record['submit'] = time.perf_counter()
        status, answer, _ = connection.send('POST', '/train',
                                            {'epochs': 1, 'net': record['net']})
        record['end'] = time.perf_counter()
        record['status'], record['answer'] = status, answer or {}
        connection.close()

    threads = [threading.Thread(target=client, args=(r,), daemon=True) for r in records]
    for t in threads:
        t.start()
    made.wait()
    go.wait()
    started = time.perf_counter()

    poller = Connection(server.port)
    while any(t.is_alive() for t in threads):
        for record in records:
            if 'end' in record or record['net'] is None:
                continue
            status, answer, _ = poller.send('GET', f'/train/status?net={record["net"]}')
            seen = time.perf_counter()
            if status != 200 or answer is None:
                continue
            if answer.get('state') == 'queued' and 'position' not in record:
                record['position'] = answer.get('position')
            if answer.get('state') == 'running' and 'running' not in record:
                record['running'] = seen
        time.sleep(POLL)
    poller.close()
    ended = time.perf_counter()
    hammer.stopped.set()
    hammer.join()

    baseline, baseline_errors = hammer.window(baseline_start, baseline_end)
    during, during_errors = hammer.window(started, ended)
    return records, started, ended, (baseline, baseline_errors), (during, during_errors)


def queue_order(state, records):
    """Each record's job id in the server's queue (its jobs.sqlite3: ids are the order in
    which the server queued the jobs, the order it promises to run them in)."""
    db = sqlite3.connect(f'file:{state / "jobs.sqlite3"}?mode=ro', uri=True)
    try:
        ids = dict(db.execute('SELECT net, id FROM jobs').fetchall())
    finally:
        db.close()
    for r in records:
        r['job'] = ids.get(r['net'])


def report_queue(records, started, ended, baseline, during):
    statuses = {}
    for r in records:
        statuses[r['status']] = statuses.get(r['status'], 0) + 1
    ok = [r for r in records if r['status'] == 200]
    for r in ok:  # the job's start: its end less the seconds the server says it trained
        r['start'] = r['end'] - r['answer'].get('seconds', 0)
    by_submit = sorted(ok, key=lambda r: r['submit'])
    rank = {id(r): k for k, r in enumerate(by_submit)}
    queued = {id(r): k for k, r in enumerate(sorted(ok, key=lambda r: r['job']))}
    start_order = [queued[id(r)] for r in sorted(ok, key=lambda r: r['start'])]
    polled = [r for r in ok if 'running' in r]
    polled_order = [queued[id(r)] for r in sorted(polled, key=lambda r: r['running'])]
    arrival_order = [rank[id(r)] for r in sorted(ok, key=lambda r: r['job'])]
    n = len(ok)
    pairs = n * (n - 1) // 2
    waits = [r['start'] - r['submit'] for r in ok]
    trained = [r['answer'].get('seconds', 0) for r in ok]
    spread = max(r['submit'] for r in records) - min(r['submit'] for r in records)
    positions = [r.get('position') for r in by_submit]

    print(f'\n## {len(records)} clients: POST /nets, then /train {{"epochs": 1}} at once\n')
    print('| client (by submit) | submit ms | job id | first position seen | start s | '
          'end s | trained s | status | epochs |')
    print('|---|---|---|---|---|---|---|---|---|')
    for k, r in enumerate(sorted(records, key=lambda r: r['submit'])):
        print(f"| {k + 1} | {1000 * (r['submit'] - started):.1f} | {r.get('job')} | "
              f"{r.get('position', '-')} | {r.get('start', float('nan')) - started:.2f} | "
              f"{r['end'] - started:.2f} | {r['answer'].get('seconds', '-')} | "
              f"{r['status']} | {r['answer'].get('epochs', '-')} |")
    print()
    print(f'answers: {statuses}; nets made: {sum(r["made"] == 201 for r in records)} '
          f'of {len(records)}')
    print(f'wall time, first submit to last answer: {ended - started:.1f} s; one job trained '
          f'{statistics.median(trained):.2f} s (median), the {n} back to back '
          f'{sum(trained):.1f} s')
    print(f'submits spread over {1000 * spread:.1f} ms; first positions seen (by submit): '
          f'{positions}')
    print(f'fairness: {inversions(start_order)} inversions of {pairs} pairs between queue '
          f'order (job ids) and start order (end less the answer\'s seconds); '
          f'{inversions(polled_order)} of {len(polled) * (len(polled) - 1) // 2} by the first '
          f'"running" polled; {inversions(arrival_order)} of {pairs} between the clients\' '
          f'submit order and the queue order (requests sent within {1000 * spread:.1f} ms)')
    print(f'wait from submit to start: median {statistics.median(waits):.1f} s, max '
          f'{max(waits):.1f} s')
    (b, be), (d, de) = baseline, during
    print('\n| /predict on the shared net, one client back to back | requests | p50 ms | '
          'p99 ms | errors |')
    print('|---|---|---|---|---|')
    print(f"| baseline, just before | {b['n']} | {b['p50']:.1f} | {b['p99']:.1f} | {be} |")
    print(f"| during the {len(records)} trainings | {d['n']} | {d['p50']:.1f} | "
          f"{d['p99']:.1f} | {de} |")
    print(f"| ratio | | {d['p50'] / b['p50']:.2f}x | {d['p99'] / b['p99']:.2f}x | |")
    return statuses == {200: len(records)}


def make_nets(connection, count):
    """``count`` fresh nets; (names, seconds per POST /nets)."""
    names, times = [], []
    for _ in range(count):
        status, answer, taken = connection.send('POST', '/nets', {'from': 'fresh'})
        if status != 201:
            raise SystemExit(f'POST /nets answered {status}: {answer}')
        names.append(answer['net'])
        times.append(taken)
    return names, times


def use(connection, names, bodies, rounds):
    """/predict on each net in turn, ``rounds`` times; seconds per request of the last round."""
    last = []
    for _ in range(rounds):
        last = []
        for i, name in enumerate(names):
            body = dict(bodies[i % len(bodies)], net=name)
            status, answer, taken = connection.send('POST', '/predict', body)
            if status != 200:
                raise SystemExit(f'/predict on a private net answered {status}: {answer}')
            last.append(taken)
    return last


def loaded(connection):
    status, answer, _ = connection.send('GET', '/nets')
    return sum(n['loaded'] for n in answer['nets']) if status == 200 else None


def memory(folder, data, stored, in_use, rounds, bodies):
    mib = 2 ** 20
    with Process(folder, '--data', str(data), '--nets-per-hour', str(10 * stored),
                 '--max-nets', str(max(1000, stored))) as server:
        c = Connection(server.port)
        use(c, ['live'], bodies, 3)  # warm: the first /predict builds what it needs
        base, (base_disk, base_files) = rss(server.process.pid), disk(server.state)
        names, times = make_nets(c, stored)
        time.sleep(1.0)
        after_store, (store_disk, store_files) = rss(server.process.pid), disk(server.state)
        use(c, names[:in_use], bodies, rounds)
        after_use = rss(server.process.pid)
        count = loaded(c)
        c.close()
        tenth = max(1, stored // 10)
        first, last = percentiles(times[:tenth]), percentiles(times[-tenth:])
        every = percentiles(times)
        print(f'\n## {stored} nets stored (POST /nets {{"from": "fresh"}}: 784-30-10), '
              f'{in_use} in use\n')
        print('| | server RSS MiB (with children) | state folder on disk MiB | files |')
        print('|---|---|---|---|')
        print(f'| empty (live net only, after a few /predict) | {base / mib:.1f} | '
              f'{base_disk / mib:.1f} | {base_files} |')
        print(f'| {stored} nets stored | {after_store / mib:.1f} | {store_disk / mib:.1f} | '
              f'{store_files} |')
        print(f'| {in_use} of them answering /predict ({rounds} rounds), {count} loaded | '
              f'{after_use / mib:.1f} | | |')
        print(f'\nper net stored: {(store_disk - base_disk) / stored / 1024:.0f} KiB on disk; '
              f'per net in use: {(after_use - after_store) / in_use / 1024:.0f} KiB of RSS')
        print(f"POST /nets: p50 {every['p50']:.1f} ms, p99 {every['p99']:.1f} ms over "
              f"{stored}; the first {tenth}: p50 {first['p50']:.1f} ms, the last {tenth}: "
              f"p50 {last['p50']:.1f} ms, p99 {last['p99']:.1f} ms")


def bound(folder, data, count, small, bodies, passes):
    mib, rows = 2 ** 20, []
    for budget in (small, None):
        home = folder / f'budget-{budget}'
        home.mkdir()
        flags = () if budget is None else ('--net-memory', str(budget))
        with Process(home, '--data', str(data), '--nets-per-hour', str(10 * count),
                     *flags) as server:
            c = Connection(server.port)
            use(c, ['live'], bodies, 3)
            base = rss(server.process.pid)
            names, _ = make_nets(c, count)
            after = []
            for _ in range(passes):
                again = use(c, names, bodies, 1)
                after.append(rss(server.process.pid))
            rows.append((budget, base, after, loaded(c), percentiles(again)))
            c.close()
    print(f'\n## --net-memory: {count} nets used in turn, {passes} times\n')
    print('| --net-memory MB | RSS before MiB | after one pass | after the last | nets loaded '
          '| /predict p50 ms, last pass | p99 ms |')
    print('|---|---|---|---|---|---|---|')
    for budget, base, after, count_loaded, again in rows:
        print(f"| {budget or '512 (default)'} | {base / mib:.1f} | {after[0] / mib:.1f} | "
              f"{after[-1] / mib:.1f} | {count_loaded} | {again['p50']:.1f} | "
              f"{again['p99']:.1f} |")
    for budget, _, after, _, _ in rows:
        print(f"RSS MiB after each pass, --net-memory {budget or 512}: "
              f"{' '.join(f'{a / mib:.1f}' for a in after)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--clients', type=int, default=CLIENTS)
    parser.add_argument('--rows', type=int, default=ROWS)
    parser.add_argument('--stored', type=int, default=STORED)
    parser.add_argument('--in-use', type=int, default=IN_USE)
    parser.add_argument('--lru-nets', type=int, default=LRU_NETS)
    parser.add_argument('--passes', type=int, default=PASSES)
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.stored, args.in_use, args.lru_nets = 5, 100, 10, 40
    baseline_seconds = 3.0 if args.quick else BASELINE_SECONDS
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
          f'load average {os.getloadavg()[0]:.1f} at the start')
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"command: python -m bench.nets {' '.join(argv or sys.argv[1:])}".rstrip() +
          f' (commit {commit})')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full = training_file(ROOT / 'data' / 'mnist_preprocessed.npz', tmp)
        data = small_training_file(full, tmp, args.rows)
        with np.load(data, allow_pickle=False) as f:
            print(f"data: {data.name}, {len(f['y_train'])} training rows cut from {full}")
        test = preprocess.load_dataset(full)['test'][0]
        bodies = canvases(test, 100)
        dicts = [json.loads(b) for b in bodies]

        home = tmp / 'queue'
        home.mkdir()
        with Process(home, '--data', str(data)) as server:
            records, started, ended, baseline, during = queue(server, args.clients, bodies,
                                                              baseline_seconds)
            queue_order(server.state, records)
        finished = report_queue(records, started, ended, baseline, during)
        print(f'load average after the trainings: {os.getloadavg()[0]:.1f}')

        home = tmp / 'memory'
        home.mkdir()
        memory(home, data, args.stored, args.in_use, ROUNDS, dicts)
        home = tmp / 'bound'
        home.mkdir()
        bound(home, data, args.lru_nets, SMALL_BUDGET, dicts, args.passes)
        print(f'\nload average at the end: {os.getloadavg()[0]:.1f}')
    return 0 if finished else 1


if __name__ == '__main__':
    sys.exit(main())

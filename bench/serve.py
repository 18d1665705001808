"""Load on the HTTP API: /predict against /health on the same server in the same run, at a
few concurrency levels, idle and while a training runs, then a soak at the highest level.

A bounded load generator on loopback, wrk when it is installed (`make bench-serve` installs
Debian's), else an asyncio client of its own: each of C keep-alive connections sends its next
request when the last answer arrived, for a fixed time, from one thread.
/predict bodies are what the drawing page sends: its 336x336 pad shrunk to 56x56 as a PNG
(here black MNIST test digits on white), with return_input, a different one each time. It
starts its own server (`server.py` in a subprocess, a fresh models folder in a temporary
directory) and checks the targets:
/predict at least 40% of /health's throughput, p99 under 50 ms while training, and in the
soak zero errors and resident memory growing by at most 10%.

    python -m bench.serve                       # about 3 minutes
    python -m bench.serve --quick               # a smoke run in about 30 s
    python -m bench.serve --workers 2 --concurrency 1 8 32
    python -m bench.serve --observability       # /predict with metrics and request ids
                                                # on, then off, interleaved (5% at most)
    python -m bench.serve --observability --aa  # the same with both off: the noise floor
    python -m bench.serve --observability --instructions  # the same cost counted in CPU
                                                # instructions under valgrind: no noise
    python -m bench.serve --peer                # against the same /predict in FastAPI +
                                                # uvicorn (bench/peer_app.py), alternating
    python -m bench.serve --peer --instructions --processes 2   # the same, counted

Data: data/mnist_preprocessed.npz when it exists, else built from the raw files that
preprocess.find_mnist finds ($MNIST_DIR, then data/raw/) into the temporary directory.
"""
import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import preprocess

ROOT = Path(__file__).resolve().parent.parent

# Defaults (flags override them).
CONCURRENCY = (1, 8, 32)      # connections sending requests back to back
SECONDS = 6.0                 # per measurement
SOAK_SECONDS = 60.0           # at the highest concurrency
WORKERS = 1                   # server processes
CANVAS = 56                   # side of the image the drawing page sends, in pixels
IMAGES = 200                  # distinct canvases sent to /predict
TRAIN_EPOCHS = 100            # of the training that runs meanwhile (stopped at the end)
# Targets.
MIN_PREDICT_RATIO = 0.40      # /predict throughput over /health throughput
MAX_P99_TRAINING_MS = 50.0    # /predict p99 latency while a training runs
MAX_RSS_GROWTH = 0.10         # resident memory growth over the soak
MAX_OBSERVABILITY_COST = 0.05  # /predict throughput lost, p99 gained, with metrics and ids on
ROUNDS = 4                    # interleaved on/off rounds of --observability
PROCESSES = 3                 # server processes on each side of --observability
COUNTED = 400                 # /predict requests counted by --instructions
SLOWDOWN = 100                # about how much slower a server runs under callgrind
OFF = ('--no-metrics', '--no-request-ids')
# Metrics are written every 0.2 s of wall time: 100 times slower under valgrind, a server would
# write them every request or two instead of every few hundred, so the interval stretches too.
METRICS_STRETCHED = ('--metrics-interval', f'{0.2 * SLOWDOWN:g}')
PEER_ROUNDS = 3               # of --peer: each round measures both servers at each level


def canvases(X, count, size=CANVAS):
    """Request bodies: MNIST digits drawn black on a white size x size canvas, as PNG:
    solid strokes with anti-aliased edges, like a pen on the page."""
    bodies = []
    for x in X[:count]:
        digit = cv2.resize(x.reshape(28, 28), (size, size), interpolation=cv2.INTER_LINEAR)
        grey = (255 - np.clip((digit - 0.3) * 4, 0, 1) * 255).astype(np.uint8)
        png = cv2.imencode('.png', cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA),
                           [cv2.IMWRITE_PNG_COMPRESSION, 6])[1].tobytes()
        image = 'data:image/png;base64,' + base64.b64encode(png).decode()
        bodies.append(json.dumps({'image': image, 'pretrained': None,
                                  'return_input': True}).encode())
    return bodies


class Connection:
    """One keep-alive HTTP/1.1 connection; request() returns the status."""

    def __init__(self, port):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method, path, body=b''):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection('127.0.0.1', self.port)
        self.writer.write(f'{method} {path} HTTP/1.1\r\nHost: localhost\r\n'
                          'Content-Type: application/json\r\n'
                          f'Content-Length: {len(body)}\r\n\r\n'.encode() + body)
        head = await self.reader.readuntil(b'\r\n\r\n')
        length = int(re.search(rb'(?i)\r\ncontent-length: *(\d+)', head).group(1))
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def asyncio_client(port, path, bodies, concurrency, seconds):
    """Latencies (s) and error count of ``concurrency`` connections of this process sending
    requests back to back for ``seconds`` (GET without bodies, else POST of each in turn)."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds

    async def user(k):
        nonlocal errors
        connection, i = Connection(port), k
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)] if bodies else b''
            i += concurrency
            sent = time.perf_counter()
            try:
                status = await connection.request('POST' if bodies else 'GET', path, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                connection.close()
                continue
            latencies.append(time.perf_counter() - sent)
            errors += status != 200
        connection.close()

    await asyncio.gather(*(user(k) for k in range(concurrency)))
    ms = np.array(latencies) * 1000
    return {'requests': len(ms), 'errors': errors,
            'p50': float(np.percentile(ms, 50)) if len(ms) else 0,
            'p99': float(np.percentile(ms, 99)) if len(ms) else 0}


WRK_SCRIPT = """
local bodies, i = {}, 0
for line in io.lines("%s") do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
UNITS = {'us': 1e-3, 'ms': 1.0, 's': 1000.0}


def wrk_client(folder, bodies):
    """A client like asyncio_client, run by wrk (one thread, as the asyncio client has),
    that POSTs ``bodies`` (written to ``folder`` for its script) when it is given any."""
    script, bodies_file = folder / 'post.lua', folder / 'bodies.jsonl'
    bodies_file.write_bytes(b'\n'.join(bodies) + b'\n')
    script.write_text(WRK_SCRIPT % bodies_file)

    async def client(port, path, bodies, concurrency, seconds):
        command = ['wrk', '-t1', f'-c{concurrency}', f'-d{seconds:g}s', '--latency']
        if bodies:
            command += ['-s', str(script)]
        process = await asyncio.create_subprocess_exec(
            *command, f'http://127.0.0.1:{port}{path}', stdout=subprocess.PIPE)
        out = (await process.communicate())[0].decode()
        if process.returncode:
            raise SystemExit(f'wrk failed (exit code {process.returncode}):\n{out}')

        def find(pattern):
            found = re.search(pattern, out)
            return found.groups() if found else None

        latency = {p: float(v) * UNITS[unit] for p, v, unit in
                   re.findall(r'(50|99)%\s+([0-9.]+)(us|ms|s)\b', out)}
        socket_errors = find(r'Socket errors: connect (\d+), read (\d+), write (\d+), '
                             r'timeout (\d+)') or ()
        return {'requests': int(find(r'(\d+) requests in')[0]),
                'errors': int((find(r'Non-2xx or 3xx responses: (\d+)') or [0])[0]) +
                sum(map(int, socket_errors)),
                'p50': latency.get('50', 0.0), 'p99': latency.get('99', 0.0)}

    return client


async def load(server, client, path, bodies, concurrency, seconds):
    """Throughput, latency percentiles, errors and the server's CPU time per request of
    ``concurrency`` connections sending requests back to back for ``seconds``; ``server``
    is (port, pid), ``client`` asyncio_client or a wrk_client."""
    port, pid = server
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    result = await client(port, path, bodies, concurrency, seconds)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    return dict(result, path=path, concurrency=concurrency,
                rps=result['requests'] / elapsed,
                cpu_ms=1000 * cpu / max(1, result['requests']))


def processes(pid):
    """A process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f'/proc/{p}/task').iterdir():
                todo += [int(c) for c in (task / 'children').read_text().split()]
        except OSError:
            continue
    return found


def rss(pid):
    """Resident memory (bytes) of a process and all its descendants."""
    total = 0
    for p in processes(pid):
        try:
            status = Path(f'/proc/{p}/status').read_text()
            total += int(re.search(r'VmRSS:\s+(\d+) kB', status).group(1)) * 1024
        except (OSError, AttributeError):
            continue
    return total


def cpu_seconds(pid):
    """CPU time (user + system) used so far by a process and all its descendants."""
    total = 0
    for p in processes(pid):
        try:
            fields = Path(f'/proc/{p}/stat').read_text().rsplit(')', 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            continue
    return total / os.sysconf('SC_CLK_TCK')


def training_file(path, folder):
    """``path`` when it exists, else a training file built into ``folder`` from the raw
    MNIST that preprocess.find_mnist finds."""
    if path.exists():
        return path
    source = preprocess.find_mnist()
    if source is None:
        raise SystemExit('no raw MNIST: set MNIST_DIR or run `make data`')
    preprocess.build(source, folder / 'mnist.npz')
    return folder / 'mnist.npz'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start_server(folder, data, workers, *extra, wrap=(), env=None, patience=60):
    """server.py on the shipped models, its state in ``folder`` (the live net starts as the
    best model), with ``extra`` arguments, run under ``wrap`` (e.g. valgrind) when given."""
    port = free_port()
    process = subprocess.Popen(
        [*wrap, sys.executable, str(ROOT / 'server.py'), '--port', str(port), '--state',
         str(folder / 'state'), '--data', str(data), '--workers', str(workers), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return process, listening(process, port, patience)


def start_peer(model, patience=60, wrap=(), env=None):
    """bench/peer_app.py under uvicorn (uvloop, httptools, no access log), one process, run
    under ``wrap`` when given."""
    port = free_port()
    process = subprocess.Popen(
        [*wrap, sys.executable, '-m', 'uvicorn', 'bench.peer_app:app', '--port', str(port),
         '--loop', 'uvloop', '--http', 'httptools', '--no-access-log', '--log-level',
         'warning'], cwd=ROOT, env=dict(env or os.environ, BTF_PEER_MODEL=str(model)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, listening(process, port, patience)


def listening(process, port, patience):
    """``port`` once ``process`` accepts connections on it."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('the server did not start (exit code '
                                 f'{process.poll()})') from None
            time.sleep(0.1)


async def status(port):
    """/train/status, on a connection of its own."""
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write(b'GET /train/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
    answer = await reader.read()
    writer.close()
    return json.loads(answer.split(b'\r\n\r\n', 1)[1])


def row(label, result, health=None):
    ratio = f"{result['rps'] / health['rps']:.0%}" if health else ''
    return (f"| {label} | {result['concurrency']} | {result['rps']:,.0f} | {ratio} | "
            f"{result['p50']:.1f} | {result['p99']:.1f} | {result['errors']} | "
            f"{result['cpu_ms']:.2f} |")


async def run(args, bodies, server, client):
    print('| phase | connections | requests/s | of /health | p50 ms | p99 ms | errors '
          '| server CPU ms per request |')
    print('|---|---|---|---|---|---|---|---|')
    failures = []
    await load(server, client, '/predict', bodies, max(args.concurrency), 2)  # warm-up
    for c in args.concurrency:
        health = await load(server, client, '/health', None, c, args.seconds)
        predict = await load(server, client, '/predict', bodies, c, args.seconds)
        print(row('idle: /health', health), flush=True)
        print(row('idle: /predict', predict, health), flush=True)
        if predict['rps'] < MIN_PREDICT_RATIO * health['rps']:
            failures.append(f'/predict at {c} connections: {predict["rps"]:.0f} requests/s '
                            f'< {MIN_PREDICT_RATIO:.0%} of /health\'s {health["rps"]:.0f}')

    top, (port, pid) = max(args.concurrency), server
    before = rss(pid)
    soak = await load(server, client, '/predict', bodies, top, args.soak)
    after = rss(pid)
    growth = after / before - 1
    print(row(f'soak {args.soak:.0f} s: /predict', soak), flush=True)
    if soak['errors'] or growth > MAX_RSS_GROWTH:
        failures.append(f'soak: {soak["errors"]} errors, memory {growth:+.1%}')

    training = Connection(port)
    job = asyncio.create_task(training.request('POST', '/train',
                                               json.dumps({'epochs': TRAIN_EPOCHS}).encode()))
    while not (await status(port))['running']:
        await asyncio.sleep(0.05)
    for c in args.concurrency:
        health = await load(server, client, '/health', None, c, args.seconds)
        predict = await load(server, client, '/predict', bodies, c, args.seconds)
        print(row('training: /health', health), flush=True)
        print(row('training: /predict', predict, health), flush=True)
        if predict['p99'] > MAX_P99_TRAINING_MS:
            failures.append(f'/predict p99 while training at {c} connections: '
                            f'{predict["p99"]:.1f} ms > {MAX_P99_TRAINING_MS:.0f} ms')
    progress = await status(port)
    if not progress['running']:
        failures.append('the training ended before the measurements did')
    print(f'\nresident memory over the soak: {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB '
          f'({growth:+.1%}); the training reached epoch {progress["epoch"]}, '
          f'batch {progress["batch"]} of {progress["batches"]} meanwhile')
    job.cancel()
    training.close()
    return failures


async def observability(args, bodies, servers, client):
    """/predict on servers with metrics and request ids on and off (``servers``: name ->
    [(port, pid), ...], several processes of each), in interleaved rounds (the machine's
    other load hits both alike), the order reversed every other round; the median round of
    each side over all its processes."""
    print('| /predict | connections | requests/s | p50 ms | p99 ms | errors | server CPU ms '
          'per request |')
    print('|---|---|---|---|---|---|---|')
    failures = []
    everyone = [(name, server) for name, group in servers.items() for server in group]
    # Alternate on, off, on, off, ...: each side's processes spread over the round.
    everyone = [x for pair in zip(everyone[:len(everyone) // 2], everyone[len(everyone) // 2:])
                for x in pair]
    for _, server in everyone:  # warm-up
        await load(server, client, '/predict', bodies, max(args.concurrency), 2)
    for c in args.concurrency:
        runs = {name: [] for name in servers}
        for k in range(args.rounds):
            # Whichever runs first measured slower in an A/A run (the same server twice).
            for name, server in (everyone if k % 2 == 0 else everyone[::-1]):
                runs[name].append(await load(server, client, '/predict', bodies, c,
                                             args.seconds))
        median = {name: {key: float(np.median([r[key] for r in rs]))
                         for key in ('rps', 'p50', 'p99', 'cpu_ms', 'errors')}
                  for name, rs in runs.items()}
        for name in ('on', 'off'):
            m = median[name]
            label = {'on': 'A: off', 'off': 'B: off'}[name] if args.aa else \
                f'metrics and ids {name}'
            print(f"| {label} | {c} | {m['rps']:,.0f} | {m['p50']:.2f} | "
                  f"{m['p99']:.2f} | {m['errors']:.0f} | {m['cpu_ms']:.3f} |", flush=True)
        lost = 1 - median['on']['rps'] / median['off']['rps']
        slower = median['on']['p99'] / median['off']['p99'] - 1
        cpu = median['on']['cpu_ms'] / median['off']['cpu_ms'] - 1
        print(f'| cost at {c} | | {lost:+.1%} throughput | | {slower:+.1%} p99 | | '
              f'{cpu:+.1%} CPU |', flush=True)
        if lost > MAX_OBSERVABILITY_COST or slower > MAX_OBSERVABILITY_COST:
            failures.append(f'observability at {c} connections: {lost:.1%} throughput lost, '
                            f'p99 {slower:+.1%} (at most {MAX_OBSERVABILITY_COST:.0%})')
    return failures


def count_instructions(folder, data, bodies, extra, requests, peer=None):
    """CPU instructions per /predict of a server.py with ``extra`` arguments (or of the
    FastAPI peer on the model file ``peer``), counted by valgrind's callgrind over
    ``requests`` requests sent one at a time after a warm-up (instrumentation is switched on
    for them alone). User-space instructions of the whole process (Python, C extensions, the
    event loop), not the kernel's. Deterministic to about 0.2%, where timings on a shared
    machine move by a few percent from one process to the next."""
    folder.mkdir()
    out = folder / 'callgrind.out'
    wrap = ('valgrind', '--tool=callgrind', '--instr-atstart=no', f'--callgrind-out-file={out}')
    env = dict(os.environ, PYTHONMALLOC='malloc')  # valgrind sees every allocation
    if peer is None:
        process, port = start_server(folder, data, 1, *extra, patience=300, wrap=wrap, env=env)
    else:
        process, port = start_peer(peer, patience=300, wrap=wrap, env=env)

    async def send(n):
        connection = Connection(port)
        for k in range(n):
            if await connection.request('POST', '/predict', bodies[k % len(bodies)]) != 200:
                raise SystemExit('/predict failed under valgrind')
        connection.close()

    def control(*what):
        subprocess.run(['callgrind_control', *what, str(process.pid)], check=True,
                       capture_output=True)

    try:
        asyncio.run(send(50))
        control('-i', 'on')
        asyncio.run(send(requests))
        control('-i', 'off')
        control('-d')
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(300)
    totals = [int(t) for f in folder.glob('callgrind.out*')
              for t in re.findall(rb'^totals: (\d+)', f.read_bytes(), re.M)]
    return max(totals) / requests


def counted_sides(args, folder, data, bodies, sides):
    """Instructions per /predict of ``args.processes`` processes of each side (a row label:
    count_instructions' keyword arguments), printed as a table; the medians by label."""
    if not shutil.which('valgrind'):
        raise SystemExit("--instructions needs valgrind (Debian's `valgrind` package)")
    print('| /predict | instructions per request (each process) | median |')
    print('|---|---|---|')
    median = {}
    for k, (label, kwargs) in enumerate(sides.items()):
        counts = [count_instructions(folder / f'side{k}-{n}', data, bodies, requests=args.requests,
                                     **kwargs) for n in range(args.processes)]
        median[label] = float(np.median(counts))
        print(f'| {label} | {", ".join(f"{c:,.0f}" for c in counts)} | {median[label]:,.0f} |',
              flush=True)
    return median


def compare_peer_instructions(args, folder, data, bodies):
    """server.py (metrics and request ids on) and the FastAPI peer, CPU instructions per
    /predict counted by callgrind: the ratio a busy machine cannot blur (the kernel's share,
    the loopback write above all, is left out of both)."""
    model = best_model()
    print(f'server.py (metrics and request ids on) and FastAPI {_version("fastapi")} + uvicorn '
          f'{_version("uvicorn")} (bench/peer_app.py), {model.name}, user-space CPU '
          f'instructions per /predict counted by callgrind over {args.requests} requests, '
          f'{args.processes} processes of each\n')
    median = counted_sides(args, folder, data, bodies, {
        'server.py': dict(extra=METRICS_STRETCHED), 'FastAPI': dict(extra=(), peer=model)})
    ratio = median['FastAPI'] / median['server.py']
    print(f'\nFastAPI / server.py: {ratio:.2f}x the instructions (issue 26 asks 1.5x the '
          'throughput per core)')
    return 0


def compare_instructions(args, folder, data, bodies):
    print(f'server.py, metrics and request ids on and off ({" ".join(OFF)}), CPU instructions '
          f'per /predict counted by callgrind over {args.requests} requests, '
          f'{args.processes} processes of each; metrics written every {0.2 * SLOWDOWN:g} s, '
          f'as 0.2 s is for a server {SLOWDOWN}x faster\n')
    median = counted_sides(args, folder, data, bodies, {
        'metrics and ids on': dict(extra=OFF if args.aa else METRICS_STRETCHED),
        'metrics and ids off': dict(extra=OFF)})
    cost = median['metrics and ids on'] / median['metrics and ids off'] - 1
    print(f'\ncost: {cost:+.1%} of the instructions of a /predict')
    if cost > MAX_OBSERVABILITY_COST:
        print(f'MISSED: observability costs {cost:.1%} of the instructions (at most '
              f'{MAX_OBSERVABILITY_COST:.0%})')
        return 1
    print('all targets met')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--concurrency', type=int, nargs='+', default=CONCURRENCY)
    parser.add_argument('--seconds', type=float, default=SECONDS)
    parser.add_argument('--soak', type=float, default=SOAK_SECONDS)
    parser.add_argument('--workers', type=int, default=WORKERS)
    parser.add_argument('--canvas', type=int, default=CANVAS,
                        help='side of the /predict images in pixels (default: %(default)s)')
    parser.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT)
    parser.add_argument('--quick', action='store_true', help='2 s per measurement, 5 s soak')
    parser.add_argument('--observability', action='store_true',
                        help='only compare /predict with metrics and request ids on and off')
    parser.add_argument('--aa', action='store_true',
                        help='with --observability: both servers off, to see the noise floor')
    parser.add_argument('--rounds', type=int, default=ROUNDS,
                        help='interleaved on/off rounds of --observability (default: %(default)s)')
    parser.add_argument('--processes', type=int, default=PROCESSES,
                        help='server processes on each side of --observability '
                        '(default: %(default)s)')
    parser.add_argument('--instructions', action='store_true',
                        help='with --observability or --peer: count CPU instructions under '
                        'valgrind instead of timing')
    parser.add_argument('--requests', type=int, default=COUNTED,
                        help='/predict requests counted by --instructions (default: %(default)s)')
    parser.add_argument('--peer', action='store_true',
                        help='only compare /predict with the same in FastAPI + uvicorn '
                        '(bench/peer_app.py), alternating, same-round ratios')
    parser.add_argument('--client', choices=('auto', 'wrk', 'asyncio'), default='auto',
                        help='load generator (default: wrk when installed, else asyncio)')
    args = parser.parse_args(argv)
    if args.client == 'auto':
        args.client = 'wrk' if shutil.which('wrk') else 'asyncio'
    if args.quick:
        args.seconds, args.soak = 2.0, 5.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = training_file(args.data, folder)
        X_test, _ = preprocess.load_dataset(data)['test']
        bodies = canvases(X_test, IMAGES, args.canvas)
        client = wrk_client(folder, bodies) if args.client == 'wrk' else asyncio_client
        if args.observability and args.instructions:
            return compare_instructions(args, folder, data, bodies)
        if args.peer and args.instructions:
            return compare_peer_instructions(args, folder, data, bodies)
        if args.observability:
            return compare_observability(args, folder, data, bodies, client)
        if args.peer:
            return compare_peer(args, folder, data, bodies, client)
        process, port = start_server(folder, data, args.workers)
        size = np.mean([len(b) for b in bodies]) / 1024
        print(f'server.py --workers {args.workers} on 127.0.0.1:{port}, {os.cpu_count()} '
              f'cores, load from {args.client} (one thread), {args.seconds:g} s per row, '
              f'/predict: {args.canvas}x{args.canvas} PNG canvases, bodies of {size:.1f} KiB\n')
        try:
            failures = asyncio.run(run(args, bodies, (port, process.pid), client))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    print('\n' + ('\n'.join(f'MISSED: {f}' for f in failures) if failures else
                  'all targets met'))
    return 1 if failures else 0


def compare_observability(args, folder, data, bodies, client):
    """``args.processes`` servers with metrics and ids on and as many off: two processes of
    the same code differ by a percent or two (memory layout, hash seeds), as much as the
    cost measured, so each side is several processes."""
    servers, started = {'on': [], 'off': []}, []
    for k in range(args.processes):
        # Started in turns, each side first every other time: in A/A runs the processes
        # started later measured up to 3% faster.
        for name in (('on', 'off') if k % 2 == 0 else ('off', 'on')):
            where = folder / f'{name}-{k}'
            where.mkdir()
            extra = OFF if name == 'off' or args.aa else ()
            process, port = start_server(where, data, args.workers, *extra)
            started.append(process)
            servers[name].append((port, process.pid))
    what = ('an A/A run: both sides off, "on" is a second "off"' if args.aa else
            'metrics and request ids on (the default) and off')
    print(f'server.py --workers {args.workers}, {what} ({" ".join(OFF)}), '
          f'{args.processes} processes of each, {os.cpu_count()} cores, load from '
          f'{args.client} (one thread), {args.rounds} interleaved rounds of {args.seconds:g} s '
          'on each process, medians\n')
    try:
        failures = asyncio.run(observability(args, bodies, servers, client))
    finally:
        for process in started:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    print('\n' + ('\n'.join(f'MISSED: {f}' for f in failures) if failures else
                  'all targets met'))
    return 1 if failures else 0



def work_floor(bodies, model):
    """CPU ms per prediction of the work itself, warm, in this process: the canvas decoded
    and prepared, the net's answer, the answer's JSON (what no server can skip)."""
    import better_tensorflow as btf
    import imaging
    from service.parsing import dump_numpy
    net = btf.Graph.from_file(model)
    texts = [json.loads(body)['image'] for body in bodies]

    def one(text):
        x = imaging.prepare(imaging.decode_base64(text))
        label, outputs = net.predict(x.reshape(-1))
        return dump_numpy({'label': label, 'predictions': [
            {'label': k, 'confidence': c} for k, c in enumerate(outputs[:, 0])], 'input': x})

    for text in texts:
        one(text)
    best = float('inf')
    for _ in range(5):
        started = time.thread_time()
        for text in texts:
            one(text)
        best = min(best, (time.thread_time() - started) / len(texts))
    return best * 1000


def peer_answers_agree(ours, peer, body):
    """The two servers' answers to one body: the same label, input (the peer writes float32
    values in float64's digits) and confidences (to float32's rounding: the peer's numpy sums
    in its own order)."""
    import urllib.request
    answers = []
    for port in (ours, peer):
        request = urllib.request.Request(f'http://127.0.0.1:{port}/predict', body,
                                         {'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=30) as answer:
            answers.append(json.loads(answer.read()))
    a, b = answers
    same = a['label'] == b['label'] and np.allclose(
        [p['confidence'] for p in a['predictions']],
        [p['confidence'] for p in b['predictions']], atol=1e-6) \
        and np.array_equal(np.float32(a['input']), np.float32(b['input']))
    if not same:
        raise SystemExit(f"the peer answers otherwise: {a['predictions']} against "
                         f"{b['predictions']}")


async def peer_rounds(args, bodies, servers, client):
    ours, peer = servers['server.py'], servers['FastAPI']
    peer_answers_agree(ours[0], peer[0], bodies[0])
    for server in servers.values():  # warm-up
        await load(server, client, '/predict', bodies, max(args.concurrency), 2)
    health = await load(ours, client, '/health', None, 8, args.seconds)
    results = {(name, c): [] for name in servers for c in args.concurrency}
    for r in range(args.rounds):
        for c in args.concurrency:
            names = list(servers) if (r + c) % 2 == 0 else list(servers)[::-1]
            for name in names:
                results[name, c].append(
                    await load(servers[name], client, '/predict', bodies, c, args.seconds))
            print(f'round {r + 1}, {c} connections: ' + ', '.join(
                f"{name} {results[name, c][-1]['rps']:,.0f}/s p99 "
                f"{results[name, c][-1]['p99']:.1f} ms" for name in servers)
                + f" (load average {os.getloadavg()[0]:.2f})", flush=True)
    return results, health


def best_model():
    best = json.loads((ROOT / 'models' / 'models.json').read_text())['best']
    return ROOT / 'models' / f'model-v{best}.npz'


def compare_peer(args, folder, data, bodies, client):
    """server.py (metrics and request ids on, the defaults) and bench/peer_app.py, both up,
    loaded in turns (who goes first alternates); ratios of the same round, then medians."""
    import statistics
    model = best_model()
    args.rounds = args.rounds if args.rounds != ROUNDS else PEER_ROUNDS
    load_before = os.getloadavg()
    ours, port = start_server(folder, data, args.workers)
    peer, peer_port = start_peer(model)
    servers = {'server.py': (port, ours.pid), 'FastAPI': (peer_port, peer.pid)}
    print(f'server.py --workers {args.workers} (metrics and request ids on) against FastAPI '
          f'{_version("fastapi")} + uvicorn {_version("uvicorn")} (bench/peer_app.py), '
          f'{model.name}, {len(bodies)} canvases, {os.cpu_count()} cores, load from '
          f'{args.client} (one thread), {args.rounds} rounds of {args.seconds:g} s, load '
          f'average {" ".join(f"{x:.2f}" for x in load_before)}\n')
    try:
        results, health = asyncio.run(peer_rounds(args, bodies, servers, client))
    finally:
        for process in (ours, peer):
            process.send_signal(signal.SIGINT)
            process.wait(60)
    floor = work_floor(bodies, model)
    median = statistics.median
    print('\n| /predict | connections | server.py requests/s | FastAPI requests/s | '
          'ratio (same round, median) | p99 ms server.py / FastAPI | server CPU ms per '
          'request server.py / FastAPI |')
    print('|---|---|---|---|---|---|---|')
    for c in args.concurrency:
        a, b = results['server.py', c], results['FastAPI', c]
        print(f"| | {c} | {median(x['rps'] for x in a):,.0f} | "
              f"{median(x['rps'] for x in b):,.0f} | "
              f"{median(x['rps'] / y['rps'] for x, y in zip(a, b)):.2f}x | "
              f"{median(x['p99'] for x in a):.1f} / {median(x['p99'] for x in b):.1f} | "
              f"{median(x['cpu_ms'] for x in a):.3f} / {median(x['cpu_ms'] for x in b):.3f} |")
    print(f"\nfloor: the work itself {floor:.3f} ms per prediction (in-process, warm) + "
          f"server.py's /health {health['cpu_ms']:.3f} ms = {floor + health['cpu_ms']:.3f} ms; "
          f'load average after {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return 0


def _version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == '__main__':
    sys.exit(main())

"""Shared fixtures and helpers: real MNIST (found by preprocess.find_mnist: $MNIST_DIR, then
data/raw/), one server in a thread (``Server``), one server process (``Process``), one
``free_port``, one HTTP client (``call``).

Tests that need MNIST depend on the ``mnist_dir`` fixture: without the data they skip with
one summary line (in CI, CI=true, missing data is a failure, never a skip). Tests that need no
data never depend on it.
"""
import asyncio
import base64
import gzip
import hashlib
import http.client
import io
import itertools
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from sanic import Sanic

import better_tensorflow as btf
import imaging
import preprocess
import service

ROOT = Path(__file__).resolve().parent.parent
IDX_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
             't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
_names = itertools.count()
_missing_data = []


# ---------------------------------------------------------------------------------------
# Real MNIST.

def read_idx(path):
    """A (gzipped) IDX file as a numpy array; a reference reader independent of preprocess.py."""
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


@pytest.fixture(scope='session')
def mnist_dir():
    folder = preprocess.find_mnist()
    if folder is None:
        message = (f'real MNIST not found (looked in {", ".join(map(str, preprocess.mnist_dirs()))}'
                   '): set MNIST_DIR or run `make data`')
        if os.environ.get('CI'):
            pytest.fail(message)
        _missing_data.append(message)
        pytest.skip(message)
    return folder


def pytest_terminal_summary(terminalreporter):
    if _missing_data:
        skipped = [r for r in terminalreporter.stats.get('skipped', [])
                   if 'real MNIST not found' in str(r.longrepr)]
        terminalreporter.write_line(f'{len(skipped)} tests skipped because {_missing_data[0]}',
                                    yellow=True)


@pytest.fixture(scope='session')
def mnist(mnist_dir):
    """Official split as uint8 arrays: (X_train, y_train) 60000, (X_test, y_test) 10000."""
    X = read_idx(mnist_dir / IDX_FILES[0]).reshape(-1, 784)
    y = read_idx(mnist_dir / IDX_FILES[1])
    Xt = read_idx(mnist_dir / IDX_FILES[2]).reshape(-1, 784)
    yt = read_idx(mnist_dir / IDX_FILES[3])
    return (X, y), (Xt, yt)


@pytest.fixture(scope='session')
def data_file(mnist_dir, tmp_path_factory):
    """preprocess.py's output for the real MNIST, cut to its first 4,000 rows per array so
    that an epoch takes a fraction of a second."""
    folder = tmp_path_factory.mktemp('data')
    full = folder / 'full.npz'
    preprocess.build(mnist_dir, full)
    with np.load(full, allow_pickle=False) as f:
        arrays = {k: f[k][:4000] if f[k].ndim else f[k] for k in f.files}
    path = folder / 'small.npz'
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope='session')
def dataset(data_file):
    return preprocess.load_dataset(data_file)


def tiny_data(data_file, folder, rows=300):
    """The first ``rows`` rows of the test training file: an epoch in a few milliseconds."""
    path = folder / f'data-{rows}.npz'
    with np.load(data_file, allow_pickle=False) as f:
        np.savez(path, **{k: f[k][:rows] if f[k].ndim else f[k] for k in f.files})
    return path


# ---------------------------------------------------------------------------------------
# Models and images.

def write_models(folder, specs, best):
    """Pretrained nets (untrained, seeded) and their models.json; {version: Graph}."""
    folder.mkdir(parents=True, exist_ok=True)
    nets, entries = {}, []
    for version, sizes in specs.items():
        net = btf.Graph(sizes, 0.5, 128, seed=version)
        path = net.save(folder / f'model-v{version}.npz')
        entries.append({'version': version, 'file': path.name, 'sizes': list(sizes),
                        'options': net.options, 'learning_rate': 0.5, 'batch_size': 128,
                        'epochs': 0, 'recipe': f'seed {version}',
                        'test_accuracy': 0.1 * version,
                        'sha256': hashlib.sha256(path.read_bytes()).hexdigest()})
        nets[version] = net
    (folder / 'models.json').write_text(json.dumps({'best': best, 'models': entries}))
    return nets


@pytest.fixture
def models(tmp_path):
    """A models folder with v1 (784-20-10) and v2 (784-30-10, the best)."""
    folder = tmp_path / 'models'
    nets = write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    return folder, nets


def png_b64(image):
    png = cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]
    return 'data:image/png;base64,' + base64.b64encode(png).decode()


def drawn_digit():
    """Black strokes of a 4 on a transparent canvas, as a browser exports it."""
    image = np.zeros((280, 280, 4), np.uint8)
    for a, b in (((90, 40), (60, 170)), ((60, 170), (210, 170)), ((170, 60), (170, 250))):
        cv2.line(image, a, b, (0, 0, 0, 255), 18, cv2.LINE_AA)
    return image


DIGIT = png_b64(drawn_digit())


def predict_locally(net, image=DIGIT):
    x = imaging.prepare(image).reshape(-1)
    return net.predict(x)[1][:, 0]


def confidences(answer):
    assert [p['label'] for p in answer['predictions']] == list(range(10))
    return np.array([p['confidence'] for p in answer['predictions']])


def file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def zip_bomb(net, member, shape, inflated):
    """``net``'s NPZ with ``member`` (e.g. 'W0.npy') replaced by a deflated one whose .npy
    header declares float32 ``shape`` and whose data inflates to ``inflated`` MiB of zeros:
    about 1 KiB of file per MiB (a fully flushed deflate block of a MiB of zeros repeats)."""
    buffer = io.BytesIO()
    net.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {'descr': '<f4', 'fortran_order': False, 'shape': tuple(shape)})
    zeros, squeeze = bytes(2 ** 20), zlib.compressobj(9, zlib.DEFLATED, -15)
    start = squeeze.compress(header.getvalue()) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block = squeeze.compress(zeros) + squeeze.flush(zlib.Z_FULL_FLUSH)  # the one that repeats
    crc = zlib.crc32(header.getvalue())
    for _ in range(inflated):
        crc = zlib.crc32(zeros, crc)
    bomb = (zipfile.ZIP_DEFLATED, crc, start + block * inflated + squeeze.flush(),
            len(header.getvalue()) + inflated * 2 ** 20)
    entries = [(name, bomb if name == member else
                (zipfile.ZIP_STORED, zlib.crc32(data), data, len(data)))
               for name, data in members.items()]
    return raw_zip(entries)


def raw_zip(entries):
    """A zip file of (name, (method, crc, stored bytes, inflated size)) entries, as given."""
    out, directory = bytearray(), bytearray()
    for name, (method, crc, data, size) in entries:
        offset, name = len(out), name.encode()
        out += struct.pack('<IHHHHHIIIHH', 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data),
                           size, len(name), 0) + name + data
        directory += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 20, 20, 0, method, 0, 0x21,
                                 crc, len(data), size, len(name), 0, 0, 0, 0, 0, offset) + name
    return bytes(out + directory + struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, len(entries),
                                               len(entries), len(directory), len(out), 0))

# ---------------------------------------------------------------------------------------
# HTTP.

def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.02)


def latency_ok(measured, baseline, factor=4.0, jitter=None):
    """Whether a latency (seconds) measured under load or attack is within ``factor`` times a
    baseline measured in the same test, on the same machine (never a fixed limit: a busy
    2-core machine slows both). ``jitter`` (default: the baseline, at least 50 ms) allows
    for a descheduled moment."""
    jitter = max(baseline, 0.05) if jitter is None else jitter
    return measured <= factor * baseline + jitter


def median_latency(port, path='/health', calls=15):
    """Median seconds of ``calls`` GET requests made one after another."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        answer = call(port, 'GET', path, timeout=60)
        times.append(time.perf_counter() - start)
        assert answer.status == 200, answer
    return statistics.median(times)


def latencies(client, path='/health', n=20):
    """Seconds each of ``n`` GETs of ``path`` took, one after the other."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        assert client.get(path, timeout=60).status == 200
        times.append(time.perf_counter() - started)
    return times


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f'<{self.status} {self.body[:300]!r}>'


def call(port, method, path, body=None, headers=None, timeout=120):
    """One HTTP request to the server on ``port``; a dict or list body is sent as JSON, and
    any body as application/json unless ``headers`` say otherwise (as real clients do)."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if body is not None and not any(k.lower() == 'content-type' for k in headers):
        headers['Content-Type'] = 'application/json'
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def read_events(port, until='done', timeout=120):
    """The (event, data) pairs of /train/events up to the first ``until`` event, and the
    stream's headers."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    conn.request('GET', '/train/events', headers={'Origin': 'http://elsewhere.example'})
    response = conn.getresponse()
    events, event = [], None
    try:
        for line in response:
            line = line.decode().rstrip('\n')
            if line.startswith('event: '):
                event = line[7:]
            elif line.startswith('data: '):
                events.append((event, json.loads(line[6:])))
                if event == until:
                    break
    finally:
        conn.close()
    return events, response.headers


class Client:
    def call(self, method, path, body=None, headers=None, timeout=120):
        return call(self.port, method, path, body, headers, timeout)

    def get(self, path, **kw):
        return self.call('GET', path, **kw)

    def post(self, path, body=None, **kw):
        return self.call('POST', path, body, **kw)


class Server(Client):
    """``service.create_app(**options)`` served on 127.0.0.1:<free port> by a thread's event
    loop, with the same start-up and shut-down events as ``app.run``."""

    def __init__(self, **options):
        Sanic.test_mode = True  # lets Sanic set up many apps in one process
        self.app = service.create_app(name=f'test_{next(_names)}', **options)
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.failure = None

    @property
    def state(self):
        return self.app.ctx.settings.state_dir

    async def _serve(self):
        try:
            srv = await self.app.create_server(sock=self.sock, access_log=False,
                                               protocol=service.protocol.Protocol)
            await srv.startup()
            await srv.before_start()
            await srv.after_start()
            self.stop = asyncio.Event()
        except Exception as e:
            self.failure = e
            raise
        finally:
            self.ready.set()
        await self.stop.wait()
        await srv.before_stop()
        srv.close()
        await srv.wait_closed()
        await srv.after_stop()

    def __enter__(self):
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._serve(),), daemon=True)
        self.thread.start()
        self.ready.wait(60)
        if self.failure:
            raise self.failure
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive(), 'the server did not stop'
        self.loop.close()


@pytest.fixture
def serve(models, tmp_path):
    """Start servers on the test's models and state folders (no training data):
    ``with serve(**overrides) as s: ...``."""
    folder, _ = models
    static = tmp_path / 'static'
    static.mkdir()

    def start(**overrides):
        options = dict(models_dir=folder, state_dir=tmp_path / 'state',
                       data_path=tmp_path / 'no-data.npz', static_dir=static)
        return Server(**{**options, **overrides})
    return start


@pytest.fixture
def serve_data(serve, data_file):
    """``serve`` with the test training file."""
    def start(**overrides):
        return serve(**{'data_path': data_file, **overrides})
    return start


class Process(Client):
    """``python server.py --port <free> --state <folder>/state *args`` with a clean environment
    (plus ``env``), its output in a log file; ready when /health answers."""

    def __init__(self, folder, *args, env=None, wait=True):
        self.port = free_port()
        self.state = Path(folder) / 'state'
        self.log = Path(folder) / f'server-{self.port}.log'
        if '--state' not in args:
            args = ('--state', str(self.state), *args)
        clean = {k: v for k, v in os.environ.items()
                 if k not in ('HOST', 'PORT', 'DOC_PORT', 'BTF_TOKEN', 'BTF_CORS_ORIGINS',
                              'BTF_ALLOWED_HOSTS')}
        with open(self.log, 'wb') as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / 'server.py'), '--port', str(self.port), *args],
                cwd=folder, env={**clean, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        if wait:
            try:
                wait_for(self._healthy, 'the server to start', timeout=90)
            except BaseException:
                self.stop()  # never a server left running after its test
                raise

    def _healthy(self):
        assert self.process.poll() is None, self.output()
        try:
            return self.get('/health', timeout=5).status == 200
        except OSError:
            return False

    def output(self):
        return self.log.read_text(errors='replace')

    def peak_memory(self):
        """Peak resident memory (VmHWM, bytes) of the server process."""
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmHWM:\s+(\d+) kB', status).group(1)) * 1024

    def memory(self):
        """Resident memory (VmRSS, bytes) of the server process now."""
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmRSS:\s+(\d+) kB', status).group(1)) * 1024

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self):
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:  # whatever happened: no process of its group outlives the test
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def listening_address(port):
    """The local address of the socket listening on ``port``, from /proc/net/tcp."""
    for line in Path('/proc/net/tcp').read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(':')
        if int(hex_port, 16) == port and state == '0A':  # LISTEN
            return socket.inet_ntoa(struct.pack('<I', int(address, 16)))
    return None


def raw_request(port, data, trickle=b'', pause=0.05, timeout=30):
    """Send ``data`` at once, then ``trickle`` a byte every ``pause`` seconds, reading
    meanwhile. Returns (bytes of ``trickle`` sent, answer) once the server has answered and
    closed the connection (or after ``timeout``)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.setblocking(False)
        answer, sent = b'', 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sent < len(trickle):
                try:
                    sent += sock.send(trickle[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                    pass
            try:
                received = sock.recv(65536)
                if not received:
                    break
                answer += received
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            time.sleep(pause)
    return sent, answer


def status_of(answer):
    return int(answer.split(b' ', 2)[1]) if answer.startswith(b'HTTP/1.1 ') else None


def body_of(answer):
    return json.loads(answer.split(b'\r\n\r\n', 1)[1])


# ---------------------------------------------------------------------------------------
# A real PostgreSQL server (Debian's postgresql), started for the tests on a free port in a
# temporary folder, as an unprivileged user when the tests run as root.

def postgres_bin():
    """The folder holding initdb and pg_ctl, None when PostgreSQL is not installed."""
    import glob
    import shutil
    found = shutil.which('initdb')
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    return Path(versions[-1]).parent if versions else None


class Postgres:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; ``url``; ``restart()``; ``stop()``."""

    def __init__(self, folder):
        import pwd
        import shutil
        self.bin, self.folder, self.port = postgres_bin(), Path(folder), free_port()
        self.data, self.log = self.folder / 'data', self.folder / 'postgres.log'
        self.folder.mkdir(parents=True, exist_ok=True)
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.user = 'postgres'
            pw = pwd.getpwnam(self.user)
            shutil.chown(self.folder, pw.pw_uid, pw.pw_gid)
        self._run('initdb', '-D', str(self.data), '-A', 'trust', '-U', 'btf', '-E', 'UTF8',
                  '--no-sync')
        self.start()
        self.url = f'postgresql://btf@127.0.0.1:{self.port}/postgres'

    def _run(self, *args, check=True):
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ['runuser', '-u', self.user, '--', *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self):
        self._run('pg_ctl', '-D', str(self.data), '-l', str(self.log), '-w', '-t', '60',
                  '-o', f'-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 '
                        '-c fsync=off -c max_connections=100', 'start')

    def stop(self, mode='fast'):
        self._run('pg_ctl', '-D', str(self.data), '-m', mode, '-w', 'stop', check=False)

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture(scope='session')
def postgres():
    """A PostgreSQL server for the session; skipped (one line) when PostgreSQL is not
    installed, except in CI (CI=true), where .ci/run installs it. Its folder is outside
    pytest's (which is kept private to root: the server runs as another user)."""
    import shutil
    import tempfile
    if postgres_bin() is None:
        message = 'PostgreSQL is not installed (Debian: apt-get install postgresql)'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix='btf-postgres-'))
    server = Postgres(folder)
    yield server
    server.stop('immediate')
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database(postgres):
    """A fresh, empty database on the session's server: its URL."""
    import psycopg
    name = f'test_{next(_names)}'
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE {name}')
    return postgres.url.rsplit('/', 1)[0] + f'/{name}'


def many_members(n):
    """A zip of ``n`` empty stored members named x0.npy, x1.npy, ...: a central directory
    of n entries (47 bytes and a name each), zip64's end records past 65,535 of them."""
    local, central = bytearray(), bytearray()
    for i in range(n):
        name = b'x%d.npy' % i
        offset = len(local)
        local += struct.pack('<IHHHHHIIIHH', 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        local += name
        central += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0,
                               len(name), 0, 0, 0, 0, 0, offset) + name
    if n < 0xFFFF:
        return bytes(local + central) + struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, n, n,
                                                    len(central), len(local), 0)
    return (bytes(local + central) +
            struct.pack('<IQHHIIQQQQ', 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central),
                        len(local)) +
            struct.pack('<IIQI', 0x07064B50, 0, len(local) + len(central), 1) +
            struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))

"""HTTP API of better-tensorflow: a live MNIST net to ask, train and inspect from a browser.

Routes (JSON unless said; errors are 4xx {"error": "..."}; every answer has CORS headers):
GET / (the drawing page, static/ under /static), GET /health, POST /predict, GET|POST /train,
GET /train/status, GET /train/events (Server-Sent Events), GET|POST /reset, GET|POST /pretrain,
GET /models, GET /model/hidden, GET /openapi.json. See the README's "HTTP API" and openapi.py.

Training never blocks the server: one job at a time trains a copy of the live net in a
process of its own (no GIL shared with the event loop), which sends its progress and then the
trained net back through a pipe; predictions keep using the last complete net until the copy
replaces it. The live net
is saved atomically to <models>/live.npz after every train, reset and pretrain and restored
at start-up, so a restart loses nothing.

Several worker processes (--workers N, or several machines sharing the models folder) act as
one service: the models folder is the shared state. One exclusive lock file (flock) admits
one training, reset or pretrain at a time; the training worker writes its progress to a status
file that the others read; and every worker reloads live.npz when it changed on disk before
it answers with the live net.

    python server.py [--host 127.0.0.1] [--port 8000] [--data FILE] [--models DIR]
                     [--max-epochs 100] [--workers 1] [--cors-origins '*']
                     [--request-timeout 30]
    environment: HOST, PORT (or DOC_PORT), BTF_TOKEN (required by /train, /reset, /pretrain
    as "Authorization: Bearer <token>" or ?token=<token>), BTF_CORS_ORIGINS
"""
import argparse
import asyncio
import fcntl
import functools
import hashlib
import hmac
import json as jsonlib
import logging
import multiprocessing
import os
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import sanic
from sanic import Sanic, empty, file, html, json, text
from sanic.exceptions import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SanicException,
    ServiceUnavailable,
    Unauthorized,
)
from sanic.handlers import ErrorHandler
from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol
from sanic.worker.loader import AppLoader
from sanic_cors import CORS
from threadpoolctl import threadpool_limits

import better_tensorflow as btf
import imaging
import preprocess
from openapi import openapi_document

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
MODELS_DIR = ROOT / 'models'
STATIC_DIR = ROOT / 'static'
MANIFEST = 'models.json'
LIVE_FILE = 'live.npz'
LIVE_META = 'live.json'  # the live net's validation accuracy and weights digest
LOCK_FILE = 'train.lock'  # flock'ed by the one training, reset or pretrain of the folder
STATUS_FILE = 'train-status.json'  # the current or last training's progress, for every worker
SIZES, LEARNING_RATE, BATCH_SIZE = (784, 30, 10), 0.5, 128  # what /reset builds
MAX_EPOCHS = 100
MAX_BODY = 16 * 2 ** 20  # bytes; a base64 4096x4096 PNG canvas fits
DECODERS = os.cpu_count() or 1  # images decoded at once: each may take ~100s of MB
INLINE_PIXELS = 160 * 160  # images up to this size are prepared on the event loop (< 1 ms)
INLINE_TEXT = 64 * 1024  # base64 characters decoded on the event loop to read the size
SAMPLE = 100  # validation samples behind /train's "accuracy" (the original's score)
PROGRESS_INTERVAL = 0.1  # seconds between "progress" events
KEEP_ALIVE = 15  # seconds between SSE keep-alive comments
TRAIN_TIMEOUT = 3600  # seconds a /train request may wait for its job (Sanic's default is 60)
REQUEST_TIMEOUT = 30  # seconds for a request's head to arrive, and again for its body
KEEP_ALIVE_TIMEOUT = 30  # seconds an idle keep-alive connection stays open
TRAIN_NICENESS = 10  # the training process yields the CPU to requests
SPAWN = multiprocessing.get_context('spawn')  # a fresh interpreter: no copy of the server's threads


class Conflict(SanicException):
    status_code = 409
    quiet = True


class Unprocessable(SanicException):
    status_code = 422
    quiet = True


class TooManyPixels(SanicException):
    status_code = 413
    quiet = True


class DeadlineProtocol(HttpProtocol):
    """Sanic restarts REQUEST_TIMEOUT with every byte received, so a client sending a byte a
    second could hold a connection for hours. Here the head of a request must arrive whole
    within REQUEST_TIMEOUT of its first byte (Request.receive_body bounds the body)."""

    def data_received(self, data):
        http, started = getattr(self, '_http', None), self._time
        super().data_received(data)
        if http is not None and http.stage is Stage.REQUEST:
            self._time = started


class Request(sanic.Request):
    """A request whose body must arrive within REQUEST_TIMEOUT of its head."""

    async def receive_body(self):
        try:
            async with asyncio.timeout(self.app.config.REQUEST_TIMEOUT):
                await super().receive_body()
        except TimeoutError:
            # Answer and hang up instead of reading the rest (Sanic would wait for it).
            self.stream.request_body, self.stream.keep_alive = None, False
            raise RequestTimeout() from None


class JSONErrorHandler(ErrorHandler):
    """Every error, ours or Sanic's, as {"error": message, ...context} with its status."""

    def default(self, request, exception):
        if isinstance(exception, MethodNotAllowed) and request.method == 'OPTIONS':
            return empty()  # a CORS preflight: sanic-cors adds the Access-Control-* headers
        status = getattr(exception, 'status_code', 500)
        if status >= 500:
            self.log(request, exception)
        if isinstance(exception, MethodNotAllowed):
            message = (f'{request.method} is not allowed on {request.path}: use '
                       f'{exception.headers.get("Allow", "another method")}.')
        elif isinstance(exception, NotFound):
            message = f'nothing at {request.path}: the routes are listed at /openapi.json.'
        elif isinstance(exception, PayloadTooLarge):  # raised by Sanic while reading the body
            message = (f'the request is larger than the limit of '
                       f'{request.app.config.REQUEST_MAX_SIZE} bytes.')
        elif isinstance(exception, RequestTimeout):  # a slow client
            message = (f'the request did not arrive within {request.app.config.REQUEST_TIMEOUT} '
                       'seconds.')
        elif isinstance(exception, SanicException):  # raised on purpose, with a message
            message = str(exception)
        else:
            message = 'internal server error (logged on the server).'
        body = {'error': message, **(getattr(exception, 'context', None) or {})}
        return json(body, status=status, headers=getattr(exception, 'headers', None))


# ---------------------------------------------------------------------------------------
# Models on disk: the pretrained ones (read once) and the live net (restored, saved).

def fresh_net():
    """The net /reset builds: untrained 784-30-10, learning rate 0.5."""
    return btf.Graph(SIZES, LEARNING_RATE, BATCH_SIZE)


def _check_shape(net, what):
    if net.sizes[0] != SIZES[0] or net.sizes[-1] != SIZES[-1]:
        raise ValueError(f'{what} is a {net.sizes} net; the server needs {SIZES[0]} inputs '
                         f'and {SIZES[-1]} outputs.')


def load_pretrained(models_dir):
    """({version: (manifest entry, net)}, best version or None) from <models_dir>/models.json.

    A missing manifest means no pretrained models; a broken entry is logged and skipped.
    """
    path = models_dir / MANIFEST
    if not path.exists():
        log.warning('no pretrained models: %s not found (`make models` builds them)', path)
        return {}, None
    try:
        manifest = jsonlib.loads(path.read_text())
        entries = manifest['models']
    except (ValueError, KeyError, TypeError) as e:
        log.error('no pretrained models: %s is not a valid manifest (%s)', path, e)
        return {}, None
    pretrained = {}
    for entry in entries:
        try:
            version, name = entry['version'], entry['file']
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f'version must be a positive int, got {version!r}')
            if Path(name).name != name:
                raise ValueError(f'file must be a file name inside {models_dir}, got {name!r}')
            digest = hashlib.sha256((models_dir / name).read_bytes()).hexdigest()
            if entry.get('sha256', digest) != digest:
                raise ValueError(f'{name} has sha256 {digest}, the manifest says '
                                 f'{entry["sha256"]}')
            net = btf.Graph.from_file(models_dir / name)
            _check_shape(net, name)
        except (ValueError, KeyError, TypeError, OSError) as e:
            log.error('skipping pretrained model %s from %s: %s', entry, path, e)
            continue
        pretrained[version] = entry, net
    best = manifest.get('best')
    if best not in pretrained:
        fallback = max(pretrained, default=None,
                       key=lambda v: pretrained[v][0].get('test_accuracy') or 0)
        if pretrained:
            log.warning('best model %r is not available; using v%s', best, fallback)
        best = fallback
    log.info('pretrained models %s loaded from %s, best v%s', sorted(pretrained), models_dir, best)
    return pretrained, best


def weights_digest(net):
    """sha256 of the net's parameters: ties live.json to the live.npz it describes."""
    digest = hashlib.sha256()
    for array in net.weights + net.biases:
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_live(models_dir):
    """(net, validation accuracy) from live.npz and live.json. The accuracy is None when
    live.json describes another net (a save was cut short between the two files)."""
    path = models_dir / LIVE_FILE
    net = btf.Graph.from_file(path)
    _check_shape(net, path)
    try:
        meta = jsonlib.loads((models_dir / LIVE_META).read_text())
        accuracy = meta['validation_accuracy'] if meta['digest'] == weights_digest(net) else None
    except (OSError, ValueError, KeyError, TypeError):
        accuracy = None
    return net, accuracy


def restore_live(models_dir, pretrained, best, repair=True):
    """(net, validation accuracy, restored?) from live.npz, else a copy of the best
    pretrained model, else a fresh net. With ``repair`` (the caller holds the folder's lock)
    a live.npz that cannot be read is renamed aside, never overwritten."""
    path = models_dir / LIVE_FILE
    if path.exists():
        try:
            net, accuracy = read_live(models_dir)
            log.info('live net restored from %s: %s', path, net)
            return net, accuracy, True
        except (ValueError, OSError) as e:
            if repair:
                aside = path.with_name(time.strftime('live.corrupt-%Y%m%d-%H%M%S-') +
                                       f'{time.time_ns() % 10 ** 9:09d}.npz')
                os.replace(path, aside)
                log.error('cannot restore the live net from %s (%s); moved it to %s and '
                          'starting anew', path, e, aside)
            else:
                log.error('cannot restore the live net from %s (%s); starting anew',
                          path, e)
    net = pretrained[best][1].copy() if best is not None else fresh_net()
    return net, None, False


def write_json(path, data, durable=True):
    """Replace the file atomically: readers see the old or the new one, whole."""
    with btf.atomic_write(path, durable) as f:
        f.write(jsonlib.dumps(data).encode())


def save_live(models_dir, net, accuracy):
    """Write live.npz (atomically, by Graph.save), then live.json naming its weights."""
    net.save(models_dir / LIVE_FILE)
    write_json(models_dir / LIVE_META,
               {'validation_accuracy': accuracy, 'digest': weights_digest(net)})


def file_version(path):
    """(inode, mtime, size) of a file, None when missing: changes whenever it is replaced."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def live_version(models_dir):
    return file_version(models_dir / LIVE_FILE), file_version(models_dir / LIVE_META)


async def persist(app):
    """Save whatever is live now (the caller holds the folder's lock)."""
    ctx, models_dir = app.ctx, app.config.MODELS_DIR
    async with ctx.save_lock:
        await asyncio.get_running_loop().run_in_executor(
            None, save_live, models_dir, ctx.live, ctx.live_accuracy)
        ctx.live_version = live_version(models_dir)


def sync_live(app):
    """Reload the live net when another process (a worker, a machine) saved a new one:
    two stat calls when nothing changed."""
    ctx, models_dir = app.ctx, app.config.MODELS_DIR
    version = live_version(models_dir)
    if version == ctx.live_version or ctx.save_lock.locked():  # unchanged, or ours in progress
        return
    ctx.live_version = version
    try:
        ctx.live, ctx.live_accuracy = read_live(models_dir)
    except (ValueError, OSError) as e:
        log.warning('keeping the live net: %s changed but cannot be read (%s)',
                    models_dir / LIVE_FILE, e)
        return
    log.info('reloaded the live net saved by another process: %s', ctx.live)


def remove_stale_files(models_dir):
    """Delete temporary files left by a process killed while saving (the caller holds the
    folder's lock, so nobody is writing them)."""
    for name in (LIVE_FILE, LIVE_META, STATUS_FILE):
        for tmp in models_dir.glob(f'.{name}.*.tmp'):
            tmp.unlink(missing_ok=True)
            log.warning('removed %s, left by an interrupted save', tmp)


# ---------------------------------------------------------------------------------------
# One training (or reset, or pretrain) at a time across every worker: an exclusive flock on
# LOCK_FILE in the models folder, held for the whole job and released by the kernel if the
# process dies.

def try_lock(models_dir):
    """A file descriptor holding the folder's lock (close it to release), or None when
    another job holds it."""
    fd = os.open(models_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlocked(models_dir):
    """Whether no job holds the folder's lock (taken and released at once to find out)."""
    fd = try_lock(models_dir)
    if fd is not None:
        os.close(fd)
    return fd is not None


def acquire(app, action):
    """try_lock, or 409 with the running job's status."""
    fd = try_lock(app.config.MODELS_DIR)
    if fd is None:
        status = current_status(app)
        busy = ('training runs; wait for it to finish (see /train/status)' if status['running']
                else 'another request changes the live net; try again')
        raise Conflict(f'cannot {action} while {busy}.', context={'status': status})
    return fd


async def replace_live(app, action, make_net):
    """Make ``make_net()`` the live net and save it, under the models folder's lock (409 while
    a job runs or another change is being made)."""
    lock = acquire(app, action)
    try:
        app.ctx.live, app.ctx.live_accuracy = make_net(), None
        await persist(app)
    finally:
        os.close(lock)


def read_status_file(path):
    """The status file's content ({"job", "worker", "status", "done"}), None if unreadable."""
    try:
        state = jsonlib.loads(path.read_text())
        return state if isinstance(state, dict) and isinstance(state.get('status'), dict) \
            else None
    except (OSError, ValueError):
        return None


def current_status(app):
    """/train/status of the current or last job, whichever worker runs it."""
    ctx, models_dir = app.ctx, app.config.MODELS_DIR
    shared = None if ctx.job.running else read_status_file(models_dir / STATUS_FILE)
    if shared is None:
        return ctx.job.status()
    status = shared['status']
    if status.get('running') and unlocked(models_dir):  # its worker died
        status = {**status, 'running': False}
    return status


# ---------------------------------------------------------------------------------------
# Training jobs.

class Job:
    """Progress of the current (or last) training job, as /train/status shows it.

    Only the event loop changes it: the thread reading the training process's pipe posts
    each step with call_soon_threadsafe. The job's worker publishes it to STATUS_FILE for
    the others.
    """

    def __init__(self, epochs=0, batches=0, start=0, name=''):
        self.name = name  # unique across workers
        self.running = epochs > 0
        self.epochs, self.batches = epochs, batches
        self.start = start  # epochs the net had before this job
        self.epoch, self.batch = min(epochs, 1), 0
        self.history = []
        self.last_progress = 0.0

    def progress(self):
        return {'epoch': self.epoch, 'epochs': self.epochs, 'batch': self.batch,
                'batches': self.batches}

    def status(self):
        return {'running': self.running, **self.progress(), 'history': list(self.history)}


def broadcast(ctx, event, payload):
    """Queue an SSE event for every open /train/events stream (a stalled one misses it)."""
    for queue in ctx.listeners:
        if not queue.full():
            queue.put_nowait((event, payload))


def publish(app, job, done=None):
    """Write the job's status (and its final answer) for the other workers."""
    write_json(app.config.MODELS_DIR / STATUS_FILE,
               {'job': job.name, 'worker': app.ctx.worker, 'status': job.status(),
                'done': done}, durable=False)  # rewritten ~10 times a second, on the loop


def on_step(app, job, info):
    """Record one batch or epoch reported by Graph.run (on the event loop)."""
    ctx = app.ctx
    job.epoch, job.batch = info['epoch'] - job.start, info['batch']
    if info['event'] == 'epoch':
        record = {'epoch': job.epoch, 'loss': info['loss'], 'val_accuracy': info['val_accuracy'],
                  'seconds': info['seconds']}
        job.history.append(record)
        broadcast(ctx, 'epoch', {**record, 'epochs': job.epochs})
        publish(app, job)
    elif time.monotonic() - job.last_progress >= PROGRESS_INTERVAL:
        job.last_progress = time.monotonic()
        broadcast(ctx, 'progress', job.progress())
        publish(app, job)


def finish(app, job, done):
    job.running = False
    broadcast(app.ctx, 'done', done)
    publish(app, job, done)


def replay(ctx, seen, state):
    """Broadcast what another worker's job did between two reads of its status file."""
    if seen is None or seen['job'] != state['job']:
        seen = {'status': {'history': [], 'epoch': 0, 'batch': 0}, 'done': None}
    old, new = seen['status'], state['status']
    for record in new['history'][len(old['history']):]:
        broadcast(ctx, 'epoch', {**record, 'epochs': new['epochs']})
    if new['running'] and (new['epoch'], new['batch']) != (old['epoch'], old['batch']):
        broadcast(ctx, 'progress', {k: new[k] for k in ('epoch', 'epochs', 'batch', 'batches')})
    if state['done'] is not None and seen['done'] is None:
        broadcast(ctx, 'done', state['done'])


def orphaned(app, state):
    """Whether ``state`` is another worker's job that ended without a word: it is running
    and has no answer, yet nobody holds the folder's lock (its worker was killed)."""
    return (state is not None and state.get('worker') != app.ctx.worker and
            state.get('done') is None and state['status'].get('running') and
            unlocked(app.config.MODELS_DIR))


async def relay(app):
    """Forward other workers' training events to this worker's /train/events streams: one
    stat of the status file every PROGRESS_INTERVAL. A job whose worker died ends them with
    an error."""
    ctx, path = app.ctx, app.config.MODELS_DIR / STATUS_FILE
    version, seen = file_version(path), read_status_file(path)
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        if file_version(path) == version:
            if orphaned(app, seen):
                log.warning('a training of the live net ended unfinished: its worker died')
                seen = {**seen, 'done': {'error': 'the training stopped: the server process '
                                         'running it ended. The live net is the last one '
                                         'saved.'}}
                broadcast(ctx, 'done', seen['done'])
            continue
        version, state = file_version(path), read_status_file(path)
        if state is not None and state.get('worker') != ctx.worker:
            try:
                replay(ctx, seen, state)
            except (KeyError, TypeError, ValueError) as e:
                log.warning('ignoring a malformed %s (%s)', path, e)
        seen = state


def train(net, data_path, epochs, pipe, stop):
    """The training process: train ``net`` on the data set at ``data_path`` and send through
    ``pipe`` ("step", info) for epochs and batches (at most one batch every
    PROGRESS_INTERVAL / 2), then ("done", net, history, correct of SAMPLE val samples) or
    ("diverged" | "error", message). Stops after the batch during which ``stop`` is set.
    If the server dies, the next send fails and ends this process."""
    os.nice(TRAIN_NICENESS)
    threadpool_limits(1, user_api='blas')  # the other core serves requests
    last_batch = 0.0

    def callback(info):
        nonlocal last_batch
        if info['event'] == 'epoch' or time.monotonic() - last_batch >= PROGRESS_INTERVAL / 2:
            last_batch = time.monotonic()
            pipe.send(('step', info))
        return stop.is_set()

    try:
        data = preprocess.load_dataset(data_path)
        net.feed(data['train'], data['val'])
        history = net.run(epochs, callback=callback, progress=False)
        net.train_data = net.val_data = None  # the live net must not hold the data set
        X, y = data['val']
        sample = np.random.default_rng().choice(len(y), min(SAMPLE, len(y)), replace=False)
        pipe.send(('done', net, history, net.validate((X[sample], y[sample]))))
    except btf.TrainingDiverged as e:
        pipe.send(('diverged', str(e)))
    except Exception:
        log.exception('training failed')
        pipe.send(('error', 'training failed (logged on the server).'))


def receive(pipe, loop, on_step):
    """In a thread: hand the training process's steps to the event loop; its last message."""
    while True:
        try:
            message = pipe.recv()
        except EOFError:
            return 'error', 'the training process ended unexpectedly (logged on the server).'
        if message[0] != 'step':
            return message
        loop.call_soon_threadsafe(on_step, message[1])


async def run_job(app, job, lock):
    """Train a copy of the live net in a process, then make it live and save it; the /train
    answer. Releases the folder's ``lock`` when done."""
    ctx = app.ctx
    loop = asyncio.get_running_loop()
    receiver, sender = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=train, name='train', args=(
        ctx.live.copy(), app.config.DATA_PATH, job.epochs, sender, ctx.stopping))
    started = time.perf_counter()
    try:
        process.start()
        sender.close()  # only the process holds it now: its end is our EOF
        outcome, *result = await loop.run_in_executor(
            ctx.trainer, receive, receiver, loop, functools.partial(on_step, app, job))
        if outcome == 'diverged':
            raise btf.TrainingDiverged(result[0])
        if outcome != 'done':
            log.error('training failed: %s (exit code %s)', result[0], process.exitcode)
            raise SanicException(result[0], 500)
        if ctx.stopping.is_set():
            raise ServiceUnavailable('the server is shutting down; training was stopped and '
                                     'the live net is unchanged.')
        net, history, accuracy = result
        ctx.live, ctx.live_accuracy = net, history[-1]['val_accuracy']
        await persist(app)
        result = {'accuracy': accuracy, 'validation_accuracy': ctx.live_accuracy,
                  'epochs': net.epochs, 'seconds': time.perf_counter() - started}
        log.info('trained %d epochs in %.1f s: validation accuracy %.4f, %d/%d', job.epochs,
                 result['seconds'], ctx.live_accuracy, accuracy, SAMPLE)
        finish(app, job, result)
        return result
    except btf.TrainingDiverged as e:
        finish(app, job, {'error': f'training diverged: {e}'})
        raise SanicException(f'training diverged: {e}', 500) from None
    except Exception as e:  # the page must learn that the job ended
        finish(app, job, {'error': str(e) if isinstance(e, SanicException) else
                          'training failed (logged on the server).'})
        raise
    finally:
        job.running = False
        receiver.close()
        os.close(lock)
        if process.is_alive():  # it ends right after its last message
            await loop.run_in_executor(ctx.trainer, process.join)


def training_samples(path):
    """How many training samples the data set at ``path`` holds, read without loading its
    images (the training process loads them); 503 when it is missing or unreadable."""
    if not path.is_file():
        raise ServiceUnavailable(f'no training data: {path} does not exist. Create it with '
                                 '`python preprocess.py` (or `make data`).')
    try:
        with np.load(path, allow_pickle=False) as f:
            return len(f['y_train'])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ServiceUnavailable(f'the training data {path} cannot be read ({e}); '
                                 'rebuild it with `python preprocess.py --force`.') from None


# ---------------------------------------------------------------------------------------
# Request parsing: every check names the bad value and what is expected.

def json_body(request, allowed, example):
    """The JSON object in the body (None when the body is empty), with only ``allowed`` keys."""
    if not request.body:
        return None
    try:
        body = jsonlib.loads(request.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f'the body is not valid JSON ({e}); expected an object like '
                         f'{example}.') from None
    except RecursionError:
        raise BadRequest(f'the body is JSON nested too deeply; expected an object like '
                         f'{example}.') from None
    if not isinstance(body, dict):
        raise BadRequest(f'the body must be a JSON object like {example}, '
                         f'got {shown(body)}.')
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f'unknown field(s) {unknown}: the accepted fields are {list(allowed)}.')
    return body


def dump_numpy(data):
    """JSON of data holding (C-contiguous) numpy arrays and numpy floats, each number in the
    fewest digits that read back to the same value: for /predict's float32s a fifth of the
    time of ujson on .tolist() (17-digit float64 reprs, half the answer's bytes again); for
    /model/hidden's 627,200 weights 20 ms instead of 80 ms on the event loop."""
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def shown(value):
    """A value as JSON, cut short, for error messages."""
    try:
        text = jsonlib.dumps(value)
    except (RecursionError, ValueError):  # nested deeper than the encoder goes
        text = f'a deeply nested {type(value).__name__}'
    return text if len(text) <= 60 else text[:57] + '...'


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def query_int(value):
    """A query-string value as an int when it is one (up to 9 digits), else unchanged."""
    return int(value) if isinstance(value, str) and re.fullmatch(r'[0-9]{1,9}', value) else value


def parse_epochs(value, maximum):
    if not is_int(value) or not 1 <= value <= maximum:
        raise BadRequest(f'epochs must be an integer from 1 to {maximum}, got {shown(value)}.')
    return value


async def prepare(app, image):
    """imaging.prepare of a base64 image: a small one (what the page sends) on the event
    loop, where it costs less than handing it to a thread and back; others in the decoding
    pool."""
    if len(image) <= INLINE_TEXT:
        image = imaging.decode_base64(image)
        _, width, height = imaging.image_size(image)
        if width * height <= INLINE_PIXELS:
            return imaging.prepare(image)
    return await asyncio.get_running_loop().run_in_executor(
        app.ctx.decoders, imaging.prepare, image)


def pick_net(app, version):
    """("live", live net) for None/0, ("vK", pretrained net) for a listed version K."""
    ctx = app.ctx
    if version is None or (is_int(version) and version == 0):
        sync_live(app)
        return 'live', ctx.live
    if is_int(version) and version in ctx.pretrained:
        return f'v{version}', ctx.pretrained[version][1]
    listed = (f'one of {sorted(ctx.pretrained)}' if ctx.pretrained else
              'absent (no pretrained models are installed)')
    raise BadRequest(f'pretrained must be {listed}, or null/0 for the live net; '
                     f'got {shown(version)}.')


def authorize(request):
    """With a token configured (BTF_TOKEN), the routes that change the live net need it as
    "Authorization: Bearer <token>" or ?token=<token>; else 401."""
    token = request.app.config.TOKEN
    if token is None:
        return
    scheme, _, given = request.headers.get('authorization', '').partition(' ')
    if scheme.lower() != 'bearer':
        given = request.get_args(keep_blank_values=True).get('token')
    if given is None:
        problem = 'no token was given'
    elif hmac.compare_digest(given.strip().encode(errors='surrogatepass'),
                             token.encode(errors='surrogatepass')):
        return
    else:
        problem = 'the token is wrong'
    raise Unauthorized(f'{request.path} changes the live net and needs the server\'s token '
                       f'({problem}): send "Authorization: Bearer <token>" or add '
                       '?token=<token>.', scheme='Bearer', realm='better-tensorflow')


def describe(net, accuracy):
    return {'sizes': list(net.sizes), 'epochs': net.epochs, 'validation_accuracy': accuracy,
            'learning_rate': net.learning_rate, 'batch_size': net.batch_size,
            'options': net.options}


def sse(event, payload):
    return f'event: {event}\ndata: {jsonlib.dumps(payload)}\n\n'


PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>better-tensorflow</title>
<h1>better-tensorflow</h1><p>The drawing page is not installed yet (static/index.html).
The API answers at <a href="/openapi.json">/openapi.json</a>.</p>"""


# ---------------------------------------------------------------------------------------
# The app.

def create_app(models_dir=MODELS_DIR, data_path=None, max_epochs=MAX_EPOCHS,
               static_dir=STATIC_DIR, max_body=MAX_BODY, name='better_tensorflow', *,
               token=None, cors_origins='*', request_timeout=REQUEST_TIMEOUT):
    """The Sanic app; its state (nets, training job) is built when the server starts.

    ``token``: what /train, /reset and /pretrain require (None: open to all).
    ``cors_origins``: '*' or a list of the origins allowed to call cross-origin.
    ``request_timeout``: seconds for a request's head to arrive, and again for its body.
    """
    if not is_int(max_epochs) or max_epochs < 1:
        raise ValueError(f'max_epochs must be a positive int, got {max_epochs!r}.')
    if cors_origins != '*' and (isinstance(cors_origins, str) or not cors_origins):
        raise ValueError(f"cors_origins must be '*' or a list of origins, got {cors_origins!r}.")
    app = Sanic(name, error_handler=JSONErrorHandler(), request_class=Request,
                configure_logging=False)
    app.config.update(MODELS_DIR=Path(models_dir), STATIC_DIR=Path(static_dir),
                      DATA_PATH=Path(data_path or preprocess.DEFAULT_OUTPUT),
                      MAX_EPOCHS=max_epochs, REQUEST_MAX_SIZE=max_body, TOKEN=token or None,
                      RESPONSE_TIMEOUT=TRAIN_TIMEOUT, REQUEST_TIMEOUT=request_timeout,
                      KEEP_ALIVE_TIMEOUT=KEEP_ALIVE_TIMEOUT)
    # Every answer, errors included, names the allowed origin ('*' even without an Origin
    # header). Preflights are answered by JSONErrorHandler (sanic-cors's automatic ones send
    # "content-type: None").
    anyone = cors_origins == '*'
    CORS(app, origins=cors_origins, send_wildcard=anyone, always_send=anyone,
         automatic_options=False, max_age=600)
    app.static('/static', app.config.STATIC_DIR, name='static')

    @app.before_server_start
    async def setup(app):
        ctx, models_dir = app.ctx, app.config.MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        ctx.worker = f'{os.getpid()}-{id(app):x}'
        ctx.pretrained, ctx.best = load_pretrained(models_dir)
        ctx.job, ctx.job_task, ctx.listeners = Job(), None, set()
        ctx.save_lock = asyncio.Lock()
        ctx.stopping = SPAWN.Event()  # set at shutdown: the training process stops
        # Sanic's worker processes are daemonic, and multiprocessing refuses to start a child
        # from one. The training process cannot outlive its worker anyway: it sends through
        # a pipe whose other end dies with the worker.
        multiprocessing.current_process().daemon = False
        ctx.trainer = ThreadPoolExecutor(1, thread_name_prefix='train')  # reads its pipe
        ctx.decoders = ThreadPoolExecutor(DECODERS, thread_name_prefix='decode')
        # Only the worker that gets the lock repairs; the others read what is there and
        # reload once it is repaired.
        lock = try_lock(models_dir)
        try:
            if lock is not None:
                remove_stale_files(models_dir)
            ctx.live_version = live_version(models_dir)
            ctx.live, ctx.live_accuracy, restored = restore_live(
                models_dir, ctx.pretrained, ctx.best, repair=lock is not None)
            if lock is not None and not restored:
                await persist(app)
        finally:
            if lock is not None:
                os.close(lock)
        ctx.relay = asyncio.create_task(relay(app))

    @app.before_server_stop
    async def stop_training(app):
        ctx = app.ctx
        ctx.relay.cancel()
        ctx.stopping.set()  # the training process sees it after the current batch
        for queue in ctx.listeners:  # ends the event streams
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        if ctx.job_task is not None:  # its /train request gets a 503
            await asyncio.gather(ctx.job_task, return_exceptions=True)
        ctx.trainer.shutdown()
        ctx.decoders.shutdown()

    @app.get('/')
    async def index(request):
        page = request.app.config.STATIC_DIR / 'index.html'
        return await file(page) if page.is_file() else html(PLACEHOLDER)

    @app.get('/health')
    async def health(request):
        return json({'status': 'ok'})

    @app.get('/openapi.json')
    async def openapi(request):
        config = request.app.config
        return json(openapi_document(config.MAX_EPOCHS, config.REQUEST_MAX_SIZE,
                                     sorted(request.app.ctx.pretrained),
                                     protected=config.TOKEN is not None))

    @app.post('/predict')
    async def predict(request):
        example = '{"image": "data:image/png;base64,...", "pretrained": null}'
        body = json_body(request, ('image', 'pretrained', 'return_input'), example)
        if body is None:
            raise BadRequest(f'the body is empty; expected JSON like {example}.')
        image = body.get('image')
        if not isinstance(image, str):
            raise BadRequest('image must be a string: a base64 PNG, JPEG, WebP or BMP, '
                             'e.g. "data:image/png;base64,iVBOR..."; got '
                             f'{"nothing" if image is None else type(image).__name__}.')
        model, net = pick_net(request.app, body.get('pretrained'))
        return_input = body.get('return_input', False)
        if not isinstance(return_input, bool):
            raise BadRequest(f'return_input must be true or false, got {shown(return_input)}.')
        try:
            x = await prepare(request.app, image)
        except imaging.NoDigitError as e:
            raise Unprocessable(str(e)) from None
        except imaging.ImageTooLarge as e:
            raise TooManyPixels(str(e)) from None
        except imaging.ImageError as e:
            raise BadRequest(str(e)) from None
        label, outputs = net.predict(x.reshape(-1))
        answer = {'label': label, 'model': model,
                  'predictions': [{'label': k, 'confidence': c}
                                  for k, c in enumerate(outputs[:, 0])]}
        if return_input:
            answer['input'] = x
        return json(answer, dumps=dump_numpy)

    @app.route('/train', methods=['GET', 'POST'])
    async def train_route(request):
        app, ctx = request.app, request.app.ctx
        authorize(request)
        body = json_body(request, ('epochs',), '{"epochs": 5}')
        query = request.get_args(keep_blank_values=True)  # "?epochs=" is an error, not 1
        value = body.get('epochs', 1) if body is not None else query_int(query.get('epochs', 1))
        epochs = parse_epochs(value, app.config.MAX_EPOCHS)
        lock = acquire(app, 'start another training')
        try:
            samples = training_samples(app.config.DATA_PATH)
        except BaseException:
            os.close(lock)
            raise
        sync_live(app)  # train the newest net, whichever worker saved it
        batches = -(-samples // ctx.live.batch_size)
        ctx.job = Job(epochs, batches, ctx.live.epochs, f'{ctx.worker}-{time.time_ns()}')
        publish(app, ctx.job)
        log.info('training %d epochs of %d batches', epochs, batches)
        # The job outlives this request: a client that hangs up does not stop it.
        ctx.job_task = asyncio.create_task(run_job(app, ctx.job, lock))
        return json(await asyncio.shield(ctx.job_task))

    @app.get('/train/status')
    async def train_status(request):
        return json(current_status(request.app))

    @app.get('/train/events')
    async def train_events(request):
        ctx = request.app.ctx
        queue = asyncio.Queue(maxsize=1000)
        response = await request.respond(
            content_type='text/event-stream',
            headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        ctx.listeners.add(queue)
        try:
            await response.send(sse('status', current_status(request.app)))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEP_ALIVE)
                except TimeoutError:
                    await response.send(': keep-alive\n\n')
                    continue
                if item is None:
                    break
                await response.send(sse(*item))
        finally:
            ctx.listeners.discard(queue)
        await response.eof()

    @app.route('/reset', methods=['GET', 'POST'])
    async def reset(request):
        authorize(request)
        await replace_live(request.app, 'reset', fresh_net)
        log.info('live net reset: %s', request.app.ctx.live)
        return text('OK')

    @app.route('/pretrain', methods=['GET', 'POST'])
    async def pretrain(request):
        ctx = request.app.ctx
        authorize(request)

        def best_copy():
            if ctx.best is None:
                raise ServiceUnavailable(
                    f'no pretrained models in {request.app.config.MODELS_DIR} ({MANIFEST} is '
                    'missing or lists none); `make models` builds them.')
            return ctx.pretrained[ctx.best][1].copy()

        await replace_live(request.app, 'load the pretrained model', best_copy)
        log.info('live net is now a copy of pretrained v%d', ctx.best)
        return text('OK')

    @app.get('/models')
    async def models(request):
        ctx = request.app.ctx
        sync_live(request.app)
        return json({
            'live': describe(ctx.live, ctx.live_accuracy),
            'best': ctx.best,
            'pretrained': [{'version': v, 'sizes': list(net.sizes), 'epochs': net.epochs,
                            'test_accuracy': entry.get('test_accuracy'),
                            'recipe': entry.get('recipe'), 'best': v == ctx.best}
                           for v, (entry, net) in sorted(ctx.pretrained.items())]})

    @app.get('/model/hidden')
    async def hidden(request):
        version = request.get_args(keep_blank_values=True).get('pretrained')
        model, net = pick_net(request.app, query_int(version))
        units = np.round(np.ascontiguousarray(net.weights[0].T, np.float64), 4)  # (hidden, 784)
        return json({'model': model, 'sizes': list(net.sizes), 'units': units},
                    dumps=dump_numpy)

    return app


def configured_app(**options):
    """create_app for `python server.py` and each of its workers: logging on, and matrix
    products on one BLAS thread. A prediction's products are tiny: with OpenBLAS's threads
    (one per core) a 784-800-10 net took a median 12 ms instead of 0.06 ms on a busy
    2-core machine, waiting for descheduled threads (training uses one thread anyway)."""
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(process)d %(levelname)s %(message)s')
    threadpool_limits(1, user_api='blas')
    return create_app(**options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', default=os.environ.get('HOST', '127.0.0.1'),
                        help='address to listen on (default: %(default)s, this machine only)')
    parser.add_argument('--port', type=int,
                        default=int(os.environ.get('PORT', os.environ.get('DOC_PORT', 8000))))
    parser.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT,
                        help='preprocessed data set for /train (default: %(default)s)')
    parser.add_argument('--models', type=Path, default=MODELS_DIR,
                        help='folder with models.json, the pretrained and the live net '
                             '(default: %(default)s)')
    parser.add_argument('--max-epochs', type=int, default=MAX_EPOCHS,
                        help='largest epochs a /train request may ask for (default: %(default)s)')
    parser.add_argument('--workers', type=int, default=1,
                        help='worker processes sharing the port (default: %(default)s)')
    parser.add_argument('--cors-origins', default=os.environ.get('BTF_CORS_ORIGINS', '*'),
                        help="comma-separated origins allowed to call cross-origin, or '*' "
                             '(default: $BTF_CORS_ORIGINS or %(default)s)')
    parser.add_argument('--request-timeout', type=float, default=REQUEST_TIMEOUT,
                        help="seconds for a request's head to arrive, and again for its body "
                             '(default: %(default)s)')
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f'--workers must be at least 1, got {args.workers}')
    origins = [o.strip() for o in args.cors_origins.split(',') if o.strip()]
    # The token comes from the environment only: a command line is visible to every user.
    factory = functools.partial(
        configured_app, models_dir=args.models, data_path=args.data,
        max_epochs=args.max_epochs, token=os.environ.get('BTF_TOKEN'),
        cors_origins='*' if origins in ([], ['*']) else origins,
        request_timeout=args.request_timeout)
    app = factory()
    settings = dict(host=args.host, port=args.port, access_log=False,
                    protocol=DeadlineProtocol)
    if args.workers == 1:
        app.run(**settings, single_process=True)
    else:  # each worker process builds its own app with the same options
        app.prepare(**settings, workers=args.workers)
        Sanic.serve(primary=app, app_loader=AppLoader(factory=factory))


if __name__ == '__main__':
    main()

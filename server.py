"""HTTP API of better-tensorflow: a live MNIST net to ask, train and inspect from a browser.

Routes (JSON unless said; errors are 4xx {"error": "..."}; every answer has CORS headers):
GET / (the drawing page, static/ under /static), GET /health, POST /predict, GET|POST /train,
GET /train/status, GET /train/events (Server-Sent Events), GET|POST /reset, GET|POST /pretrain,
GET /models, GET /model/hidden, GET /openapi.json. See the README's "HTTP API" and openapi.py.

Training never blocks the server: one job at a time trains a copy of the live net in a worker
thread; predictions keep using the last complete net until the copy replaces it. The live net
is saved atomically to <models>/live.npz after every train, reset and pretrain and restored
at start-up, so a restart loses nothing.

    python server.py [--host 127.0.0.1] [--port 8000] [--data FILE] [--models DIR]
                     [--max-epochs 100]          # environment: HOST, PORT (or DOC_PORT)
"""
import argparse
import asyncio
import hashlib
import json as jsonlib
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sanic import Sanic, empty, file, html, json, text
from sanic.exceptions import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SanicException,
    ServiceUnavailable,
)
from sanic.handlers import ErrorHandler
from sanic_cors import CORS

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
LIVE_META = 'live.json'  # the live net's last validation accuracy, next to live.npz
SIZES, LEARNING_RATE, BATCH_SIZE = (784, 30, 10), 0.5, 128  # what /reset builds
MAX_EPOCHS = 100
MAX_BODY = 16 * 2 ** 20  # bytes; a base64 4096x4096 PNG canvas fits
SAMPLE = 100  # validation samples behind /train's "accuracy" (the original's score)
PROGRESS_INTERVAL = 0.1  # seconds between "progress" events
KEEP_ALIVE = 15  # seconds between SSE keep-alive comments
TRAIN_TIMEOUT = 3600  # seconds a /train request may wait for its job (Sanic's default is 60)


class Conflict(SanicException):
    status_code = 409
    quiet = True


class Unprocessable(SanicException):
    status_code = 422
    quiet = True


class TooManyPixels(SanicException):
    status_code = 413
    quiet = True


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


def restore_live(models_dir, pretrained, best):
    """(net, validation accuracy, restored?) from live.npz, else a copy of the best
    pretrained model, else a fresh net."""
    path = models_dir / LIVE_FILE
    if path.exists():
        try:
            net = btf.Graph.from_file(path)
            _check_shape(net, path)
            meta = models_dir / LIVE_META
            accuracy = jsonlib.loads(meta.read_text())['validation_accuracy'] \
                if meta.exists() else None
            log.info('live net restored from %s: %s', path, net)
            return net, accuracy, True
        except (ValueError, KeyError, TypeError, OSError) as e:
            log.error('cannot restore the live net from %s (%s); starting anew', path, e)
    net = pretrained[best][1].copy() if best is not None else fresh_net()
    return net, None, False


def save_live(models_dir, net, accuracy):
    """Write live.npz (atomically, by Graph.save) and its validation accuracy."""
    net.save(models_dir / LIVE_FILE)
    meta = models_dir / LIVE_META
    tmp = meta.with_name(f'.{meta.name}.{os.getpid()}.tmp')
    tmp.write_text(jsonlib.dumps({'validation_accuracy': accuracy}))
    os.replace(tmp, meta)


async def persist(app):
    """Save whatever is live now; saves run one at a time, so the last one wins."""
    ctx = app.ctx
    async with ctx.save_lock:
        await asyncio.get_running_loop().run_in_executor(
            None, save_live, app.config.MODELS_DIR, ctx.live, ctx.live_accuracy)


# ---------------------------------------------------------------------------------------
# Training jobs.

class Job:
    """Progress of the current (or last) training job, as /train/status shows it.

    Only the event loop changes it: the worker thread posts each step with
    call_soon_threadsafe.
    """

    def __init__(self, epochs=0, batches=0, start=0):
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


def on_step(ctx, job, info):
    """Record one batch or epoch reported by Graph.run (on the event loop)."""
    job.epoch, job.batch = info['epoch'] - job.start, info['batch']
    if info['event'] == 'epoch':
        record = {'epoch': job.epoch, 'loss': info['loss'], 'val_accuracy': info['val_accuracy'],
                  'seconds': info['seconds']}
        job.history.append(record)
        broadcast(ctx, 'epoch', {**record, 'epochs': job.epochs})
    elif time.monotonic() - job.last_progress >= PROGRESS_INTERVAL:
        job.last_progress = time.monotonic()
        broadcast(ctx, 'progress', job.progress())


def train(net, data, epochs, callback):
    """Train ``net`` (a copy) in the worker thread: (history, correct of SAMPLE val samples)."""
    net.feed(data['train'], data['val'])
    try:
        history = net.run(epochs, callback=callback, progress=False)
    finally:
        net.train_data = net.val_data = None  # the live net must not hold the data set
    X, y = data['val']
    sample = np.random.default_rng().choice(len(y), min(SAMPLE, len(y)), replace=False)
    return history, net.validate((X[sample], y[sample]))


async def run_job(app, job, data):
    """Train a copy of the live net, then make it live and save it; the /train answer."""
    ctx = app.ctx
    loop = asyncio.get_running_loop()
    net = ctx.live.copy()

    def callback(info):  # in the worker thread; True stops training
        loop.call_soon_threadsafe(on_step, ctx, job, info)
        return ctx.stopping.is_set()

    started = time.perf_counter()
    try:
        history, accuracy = await loop.run_in_executor(
            ctx.trainer, train, net, data, job.epochs, callback)
        if ctx.stopping.is_set():
            raise ServiceUnavailable('the server is shutting down; training was stopped and '
                                     'the live net is unchanged.')
        ctx.live, ctx.live_accuracy = net, history[-1]['val_accuracy']
        await persist(app)
        result = {'accuracy': accuracy, 'validation_accuracy': ctx.live_accuracy,
                  'epochs': net.epochs, 'seconds': time.perf_counter() - started}
        log.info('trained %d epochs in %.1f s: validation accuracy %.4f, %d/%d', job.epochs,
                 result['seconds'], ctx.live_accuracy, accuracy, SAMPLE)
        broadcast(ctx, 'done', result)
        return result
    except btf.TrainingDiverged as e:
        broadcast(ctx, 'done', {'error': f'training diverged: {e}'})
        raise SanicException(f'training diverged: {e}', 500) from None
    except Exception as e:  # the page must learn that the job ended
        broadcast(ctx, 'done', {'error': str(e) if isinstance(e, SanicException) else
                                'training failed (logged on the server).'})
        raise
    finally:
        job.running = False


async def training_data(app):
    """The preprocessed data set, read once (503 when it is missing)."""
    ctx, path = app.ctx, app.config.DATA_PATH
    async with ctx.data_lock:
        if ctx.data is None:
            if not path.is_file():
                raise ServiceUnavailable(
                    f'no training data: {path} does not exist. Create it with '
                    '`python preprocess.py` (or `make data`).')
            try:
                ctx.data = await asyncio.get_running_loop().run_in_executor(
                    None, preprocess.load_dataset, path)
            except (ValueError, KeyError, OSError) as e:
                raise ServiceUnavailable(f'the training data {path} cannot be read ({e}); '
                                         'rebuild it with `python preprocess.py`.') from None
    return ctx.data


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
    if not isinstance(body, dict):
        raise BadRequest(f'the body must be a JSON object like {example}, '
                         f'got {shown(body)}.')
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f'unknown field(s) {unknown}: the accepted fields are {list(allowed)}.')
    return body


def shown(value):
    """A value as JSON, cut short, for error messages."""
    text = jsonlib.dumps(value)
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


def pick_net(ctx, version):
    """("live", live net) for None/0, ("vK", pretrained net) for a listed version K."""
    if version is None or (is_int(version) and version == 0):
        return 'live', ctx.live
    if is_int(version) and version in ctx.pretrained:
        return f'v{version}', ctx.pretrained[version][1]
    listed = (f'one of {sorted(ctx.pretrained)}' if ctx.pretrained else
              'absent (no pretrained models are installed)')
    raise BadRequest(f'pretrained must be {listed}, or null/0 for the live net; '
                     f'got {shown(version)}.')


def ensure_idle(ctx, action):
    if ctx.job.running:
        raise Conflict(f'cannot {action} while training runs; wait for it to finish '
                       '(see /train/status).', context={'status': ctx.job.status()})


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
               static_dir=STATIC_DIR, max_body=MAX_BODY, name='better_tensorflow'):
    """The Sanic app; its state (nets, training job) is built when the server starts."""
    if not is_int(max_epochs) or max_epochs < 1:
        raise ValueError(f'max_epochs must be a positive int, got {max_epochs!r}.')
    app = Sanic(name, error_handler=JSONErrorHandler(), configure_logging=False)
    app.config.update(MODELS_DIR=Path(models_dir), STATIC_DIR=Path(static_dir),
                      DATA_PATH=Path(data_path or preprocess.DEFAULT_OUTPUT),
                      MAX_EPOCHS=max_epochs, REQUEST_MAX_SIZE=max_body,
                      RESPONSE_TIMEOUT=TRAIN_TIMEOUT)
    # '*' on every answer, errors included. Preflights are answered by JSONErrorHandler
    # (sanic-cors's automatic ones send "content-type: None").
    CORS(app, send_wildcard=True, automatic_options=False, max_age=600)
    app.static('/static', app.config.STATIC_DIR, name='static')

    @app.before_server_start
    async def setup(app):
        ctx, models_dir = app.ctx, app.config.MODELS_DIR
        ctx.pretrained, ctx.best = load_pretrained(models_dir)
        ctx.live, ctx.live_accuracy, restored = restore_live(models_dir, ctx.pretrained,
                                                             ctx.best)
        ctx.job, ctx.job_task, ctx.data, ctx.listeners = Job(), None, None, set()
        ctx.data_lock, ctx.save_lock = asyncio.Lock(), asyncio.Lock()
        ctx.stopping = threading.Event()
        ctx.trainer = ThreadPoolExecutor(1, thread_name_prefix='train')
        if not restored:
            await persist(app)

    @app.before_server_stop
    async def stop_training(app):
        ctx = app.ctx
        ctx.stopping.set()  # the training callback sees it after the current batch
        for queue in ctx.listeners:  # ends the event streams
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        if ctx.job_task is not None:  # its /train request gets a 503
            await asyncio.gather(ctx.job_task, return_exceptions=True)
        ctx.trainer.shutdown()

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
                                     sorted(request.app.ctx.pretrained)))

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
        model, net = pick_net(request.app.ctx, body.get('pretrained'))
        return_input = body.get('return_input', False)
        if not isinstance(return_input, bool):
            raise BadRequest(f'return_input must be true or false, got {shown(return_input)}.')
        try:
            x = await asyncio.get_running_loop().run_in_executor(None, imaging.prepare, image)
        except imaging.NoDigitError as e:
            raise Unprocessable(str(e)) from None
        except imaging.ImageTooLarge as e:
            raise TooManyPixels(str(e)) from None
        except imaging.ImageError as e:
            raise BadRequest(str(e)) from None
        label, outputs = net.predict(x.reshape(-1))
        answer = {'label': label, 'model': model,
                  'predictions': [{'label': k, 'confidence': float(c)}
                                  for k, c in enumerate(outputs[:, 0])]}
        if return_input:
            answer['input'] = x.tolist()
        return json(answer)

    @app.route('/train', methods=['GET', 'POST'])
    async def train_route(request):
        app, ctx = request.app, request.app.ctx
        body = json_body(request, ('epochs',), '{"epochs": 5}')
        query = request.get_args(keep_blank_values=True)  # "?epochs=" is an error, not 1
        value = body.get('epochs', 1) if body is not None else query_int(query.get('epochs', 1))
        epochs = parse_epochs(value, app.config.MAX_EPOCHS)
        ensure_idle(ctx, 'start another training')
        data = await training_data(app)
        ensure_idle(ctx, 'start another training')  # one may have started while reading
        batches = -(-len(data['train'][1]) // ctx.live.batch_size)
        ctx.job = Job(epochs, batches, ctx.live.epochs)
        log.info('training %d epochs of %d batches', epochs, batches)
        # The job outlives this request: a client that hangs up does not stop it.
        ctx.job_task = asyncio.create_task(run_job(app, ctx.job, data))
        return json(await asyncio.shield(ctx.job_task))

    @app.get('/train/status')
    async def train_status(request):
        return json(request.app.ctx.job.status())

    @app.get('/train/events')
    async def train_events(request):
        ctx = request.app.ctx
        queue = asyncio.Queue(maxsize=1000)
        response = await request.respond(
            content_type='text/event-stream',
            headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        ctx.listeners.add(queue)
        try:
            await response.send(sse('status', ctx.job.status()))
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
        ctx = request.app.ctx
        ensure_idle(ctx, 'reset')
        ctx.live, ctx.live_accuracy = fresh_net(), None
        await persist(request.app)
        log.info('live net reset: %s', ctx.live)
        return text('OK')

    @app.route('/pretrain', methods=['GET', 'POST'])
    async def pretrain(request):
        ctx = request.app.ctx
        ensure_idle(ctx, 'load the pretrained model')
        if ctx.best is None:
            raise ServiceUnavailable(
                f'no pretrained models in {request.app.config.MODELS_DIR} ({MANIFEST} is '
                'missing or lists none); `make models` builds them.')
        ctx.live, ctx.live_accuracy = ctx.pretrained[ctx.best][1].copy(), None
        await persist(request.app)
        log.info('live net is now a copy of pretrained v%d', ctx.best)
        return text('OK')

    @app.get('/models')
    async def models(request):
        ctx = request.app.ctx
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
        model, net = pick_net(request.app.ctx, query_int(version))
        units = np.round(net.weights[0].T.astype(np.float64), 4)  # (hidden, 784)
        return json({'model': model, 'sizes': list(net.sizes), 'units': units.tolist()})

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', default=os.environ.get('HOST', '127.0.0.1'))
    parser.add_argument('--port', type=int,
                        default=int(os.environ.get('PORT', os.environ.get('DOC_PORT', 8000))))
    parser.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT,
                        help='preprocessed data set for /train (default: %(default)s)')
    parser.add_argument('--models', type=Path, default=MODELS_DIR,
                        help='folder with models.json, the pretrained and the live net '
                             '(default: %(default)s)')
    parser.add_argument('--max-epochs', type=int, default=MAX_EPOCHS,
                        help='largest epochs a /train request may ask for (default: %(default)s)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    app = create_app(args.models, args.data, args.max_epochs)
    app.run(host=args.host, port=args.port, single_process=True, access_log=False)


if __name__ == '__main__':
    main()

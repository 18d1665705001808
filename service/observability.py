"""What an operator sees: request ids on every log line, text or JSON logs, and Prometheus
metrics that add up across the worker processes of ``--workers N``.

- Request ids: a valid ``X-Request-ID`` (at most 128 of ``[A-Za-z0-9._-]``) is kept, any other
  is replaced by a fresh uuid4; it is echoed in the answer and set in a context variable that
  ``RequestIdFilter`` copies onto every log record written while the request is handled.
- Metrics: ``prometheus_client``, imported when the first app is built, so that ``server.py``
  can set ``PROMETHEUS_MULTIPROC_DIR`` first: then every worker writes its figures to that
  folder and /metrics sums them. Without it (tests' in-process servers), each app keeps its
  own registry. Nothing here is module state: the metrics live on ``app.ctx.metrics``.
- Per request: ``Tracker.start`` in the app's one request middleware (the start time, the id)
  and ``Tracker.finish`` where every answer passes (the header, the request counted in memory;
  the counts reach the metrics every ``metrics_interval`` seconds, 0.2 by default).
"""
import asyncio
import bisect
import contextlib
import contextvars
import datetime
import json
import logging
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import better_tensorflow as btf

from .errors import clip
from .logs import escape

log = logging.getLogger(__name__)
access = logging.getLogger('btf.access')
REQUEST_ID = contextvars.ContextVar('request_id', default='-')
VALID_ID = re.compile(r'[A-Za-z0-9._-]{1,128}')
# The id ends the line: lines keep the start they always had (scripts read "<pid> INFO ...").
TEXT_FORMAT = '%(asctime)s %(process)d %(levelname)s %(message)s%(request_suffix)s'
IMAGE_ROUTES = ('/predict', '/samples')  # where a refused request is a refused image
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
# The method label: what a client sends is any token up to kilobytes long, and every new
# label value is a new series in every worker's metrics file; the rest count as 'other'.
METHODS = frozenset(('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'))
PENDING = 10_000  # answers counted in memory at most, between two writes to the metrics
EPOCH_BUCKETS = (.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


# ---------------------------------------------------------------------------------------
# Logs.

class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or '-') on every record, and " [<id>]" to end a text
    line with (nothing outside a request)."""

    def filter(self, record):
        record.request_id = rid = REQUEST_ID.get()
        record.request_suffix = f' [{rid}]' if rid != '-' else ''
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, request_id, logger, message, and the access
    lines' route, method, status and duration_ms."""

    FIELDS = ('route', 'method', 'status', 'duration_ms')

    def format(self, record):
        line = {'time': datetime.datetime.fromtimestamp(record.created, datetime.UTC)
                .isoformat(timespec='milliseconds').replace('+00:00', 'Z'),
                'level': record.levelname, 'request_id': getattr(record, 'request_id', '-'),
                'process': record.process, 'logger': record.name,
                'message': record.getMessage()}
        for name in self.FIELDS:
            if hasattr(record, name):
                value = getattr(record, name)  # a method is what the client sent
                line[name] = escape(value) if isinstance(value, str) else value
        if record.exc_info:  # Redact normally merged it into the message already
            line['message'] += '\n' + self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings):
    """logs.configure (Redact first on every handler), then the request id filter and the
    chosen format on the root handlers."""
    from . import logs

    logs.configure(settings.token)
    formatter = JSONFormatter() if settings.log_format == 'json' else \
        logging.Formatter(TEXT_FORMAT)
    for logger in (logging.getLogger(), *(logging.getLogger(n) for n in (
            'sanic.root', 'sanic.error', 'sanic.access', 'sanic.server'))):
        for handler in logger.handlers:
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())  # after Redact, which stays first
            handler.setFormatter(formatter)


# ---------------------------------------------------------------------------------------
# Metrics.

def allocated_files():
    """prometheus-client's multiprocess files, with their blocks allocated before they are
    written through mmap: on a full disk, a page written through mmap into a file's hole is a
    SIGBUS, and the worker died (at its start, or at the first new label set: a new route or
    status). posix_fallocate says ENOSPC instead (an OSError: that value is not kept)."""
    import errno
    import struct

    from prometheus_client import mmap_dict, values

    def allocate(f, offset, length):
        try:
            os.posix_fallocate(f.fileno(), offset, length)
        except OSError as e:  # a file system that cannot allocate ahead: as before
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise

    class AllocatedMmapedDict(mmap_dict.MmapedDict):
        def __init__(self, filename, read_mode=False):
            if not read_mode:
                with open(filename, 'a+b') as f:
                    if os.fstat(f.fileno()).st_size == 0:
                        allocate(f, 0, mmap_dict._INITIAL_MMAP_SIZE)
            super().__init__(filename, read_mode)

        def _init_value(self, key):  # the library's sizes (prometheus-client is pinned)
            encoded = key.encode('utf-8')
            size = struct.calcsize(f'i{len(encoded) + 8 - (len(encoded) + 4) % 8}sdd')
            capacity = self._capacity
            while self._used + size > capacity:
                capacity *= 2
            allocate(self._f, self._used, capacity - self._used)
            super()._init_value(key)

    values.MmapedDict = AllocatedMmapedDict  # what MultiProcessValue opens its files with


class Metrics:
    """The service's metrics, on one registry (this app's, or the multiprocess folder's)."""

    def __init__(self):
        import prometheus_client as prom
        from prometheus_client import multiprocess

        self.prom, self.folder = prom, os.environ.get('PROMETHEUS_MULTIPROC_DIR')
        self.full = None  # why the last values could not be kept (logged once per reason)
        if self.folder:  # the folder's files are the registry; the metrics register nowhere
            allocated_files()
            own, self.registry = None, prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)
        else:
            own = self.registry = prom.CollectorRegistry()
        # Its _count is the requests answered, by route, method and status: a counter of
        # its own would cost every request one more write.
        self.latency = prom.Histogram('btf_request_duration_seconds',
                                      'time from the request to its answer, by route, '
                                      'method and status', ('route', 'method', 'status'),
                                      buckets=LATENCY_BUCKETS, registry=own)
        self.predictions = prom.Counter('btf_predictions', 'digits read, by model (live, vK)',
                                        ('model',), registry=own)
        self.refused = prom.Counter('btf_images_refused',
                                    'requests to /predict and /samples refused',
                                    ('status', 'reason'), registry=own)
        self.jobs = prom.Counter('btf_training_jobs', 'training jobs by event',
                                 ('event',), registry=own)
        self.epochs = prom.Histogram('btf_training_epoch_seconds', 'duration of an epoch',
                                     buckets=EPOCH_BUCKETS, registry=own)
        self.streams = prom.Gauge('btf_event_streams', 'open /train/events streams',
                                  multiprocess_mode='livesum', registry=own)
        self.samples = prom.Counter('btf_samples_stored', 'samples stored by POST /samples',
                                    registry=own)
        for event in ('started', 'finished', 'failed'):
            self.jobs.labels(event)  # present at 0 from the start
        self.children = {}  # (route, method, status) -> its histogram child
        self.models = {}  # model -> its predictions counter child
        # A request only appends to a list; flush() sorts and writes them every
        # metrics_interval seconds, before /metrics answers, and at PENDING answers (memory
        # stays bounded whatever the interval): a write to the multiprocess files costs each
        # request more than the rest of the observability together.
        self.answered = []  # (Sanic route or None, method, status, seconds) of each answer
        self.predicted = Counter()  # model -> digits read

    def flush(self):
        answered, predicted = self.answered, self.predicted
        self.answered, self.predicted = [], Counter()
        with self.keeping():
            self._write(answered, predicted)

    @contextlib.contextmanager
    def keeping(self):
        """Where new values are written: a full disk loses them (logged), never a worker."""
        try:
            yield
        except OSError as e:
            if self.full != e.strerror:
                log.error('metrics: a new value could not be kept (%s); the server serves on',
                          e.strerror)
            self.full = e.strerror

    def _write(self, answered, predicted):
        tally, seconds = Counter(), Counter()
        for route, method, status, spent in answered:
            key = ('/' + route.path if route is not None else 'unmatched',
                   method if method in METHODS else 'other', status)
            tally[key, bisect.bisect_left(LATENCY_BUCKETS, spent)] += 1
            seconds[key] += spent
        for (key, bucket), count in tally.items():
            child = self.children.get(key)
            if child is None:
                child = self.children[key] = self.latency.labels(key[0], key[1], str(key[2]))
            # Histogram.observe, n at a time: the observation's bucket and the sum (the
            # library's own two values; prometheus-client is pinned).
            child._buckets[bucket].inc(count)
        for key, total in seconds.items():
            self.children[key]._sum.inc(total)
        for model, count in predicted.items():
            child = self.models.get(model)
            if child is None:
                child = self.models[model] = self.predictions.labels(model)
            child.inc(count)

    def exposition(self):
        self.flush()
        if self.folder:
            self.bury()
        return self.prom.generate_latest(self.registry)

    def bury(self):
        """Marks dead the processes whose live gauges are still in the folder: a worker killed
        (SIGKILL, out of memory) could not do it itself."""
        from prometheus_client import multiprocess

        for path in Path(self.folder).glob('gauge_live*_*.db'):
            pid = int(path.stem.rsplit('_', 1)[1])
            if btf.pid_alive(pid) is False:  # (the folder is this server's: its pids)
                multiprocess.mark_process_dead(pid, self.folder)

    def worker_ended(self):
        """Drops this process's live gauges from the sums (its counters stay counted)."""
        self.flush()
        if self.folder:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(os.getpid(), self.folder)


def metrics(app):
    """The app's Metrics, or None when they are off."""
    return getattr(app.ctx, 'metrics', None)


def predicted(app, model, count=1):
    if (m := metrics(app)) is not None:
        m.predicted[model] += count


async def flushing(app):
    """Write the counted requests and predictions to the metrics every metrics_interval."""
    while True:
        await asyncio.sleep(app.ctx.settings.metrics_interval)
        app.ctx.metrics.flush()


def training(app, event, seconds=None):
    """A job 'started', 'finished' or 'failed', or an epoch of ``seconds``."""
    if (m := metrics(app)) is None:
        return
    if event == 'epoch':
        m.epochs.observe(seconds)
    else:
        m.jobs.labels(event).inc()


def stream(app, change):
    if (m := metrics(app)) is not None:
        m.streams.inc(change)


# ---------------------------------------------------------------------------------------
# Per request.

VARIANT = {c: '89ab'[int(c, 16) & 3] for c in '0123456789abcdef'}  # uuid4's 17th digit


def new_id():
    """A random uuid4, as text (uuid.uuid4() reads the kernel's entropy each time, for an
    id that needs no secrecy; this is a third of its cost)."""
    h = f'{random.getrandbits(128):032x}'
    return f'{h[:8]}-{h[8:12]}-4{h[13:16]}-{VARIANT[h[16]]}{h[17:20]}-{h[20:]}'


def route_of(request):
    route = request.route
    return '/' + route.path if route is not None else 'unmatched'


class Tracker:
    """What every request passes through, with the settings looked up once: ``start`` in the
    app's one request middleware (the start time and the id), ``finish`` from
    protocol.Request.respond (the id in the answer, the metrics, the access line). The
    benchmark `python -m bench.serve --observability` holds their cost under 5%."""

    __slots__ = ('ids', 'metrics', 'access')

    def __init__(self, settings, metrics):
        self.ids, self.metrics, self.access = settings.request_ids, metrics, settings.access_log

    def start(self, request):
        request.ctx.started = time.perf_counter()
        if self.ids:
            given = request.headers.get('x-request-id')
            rid = given if given is not None and VALID_ID.fullmatch(given) else new_id()
            request._id = rid  # request.id answers it
            REQUEST_ID.set(rid)

    def finish(self, request, response):
        if self.ids:
            rid = request._id
            if rid.__class__ is not str:  # start did not run (a request refused before it)
                rid = request._id = new_id()
                REQUEST_ID.set(rid)
            response.headers['X-Request-ID'] = rid
        m = self.metrics
        if m is None and not self.access:
            return
        try:
            seconds = time.perf_counter() - request.ctx.started
        except AttributeError:  # refused before the request middleware (an unknown route)
            seconds = 0.0
        status, method, route = response.status, request.method, request.route
        if m is not None:
            m.answered.append((route, method, status, seconds))
            if len(m.answered) >= PENDING:
                m.flush()
            if (status >= 400 or status == 201) and method == 'POST':
                images(m, route_of(request), status, request)
        if self.access:
            method = method if method in METHODS else clip(method, 16)
            access.info('%s %s %d %.1f ms', method, clip(request.path, 200), status,
                        seconds * 1000,
                        extra={'route': route_of(request), 'method': method, 'status': status,
                               'duration_ms': round(seconds * 1000, 3)})


def images(m, route, status, request):
    """A refused image (4xx from /predict or /samples), or a sample stored (201)."""
    if route not in IMAGE_ROUTES:
        return
    if 400 <= status < 500:
        with m.keeping():
            m.refused.labels(str(status), getattr(request.ctx, 'error', 'Error')).inc()
    elif status == 201 and route == '/samples':
        m.samples.inc()


def install(app):
    """Request ids, metrics and access lines for ``app``: its Tracker (also app.ctx.tracker),
    or None when all three are off."""
    settings = app.ctx.settings
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.graceful_timeout
    if settings.metrics:
        try:
            app.ctx.metrics = Metrics()
        except OSError as e:  # its files cannot be made (a full disk): serving comes first
            log.error('metrics are off in this process: %s', e)
        else:
            app.after_server_stop(lambda app: app.ctx.metrics.worker_ended())
    tracked = settings.metrics or settings.request_ids or settings.access_log
    app.ctx.tracker = Tracker(settings, metrics(app)) if tracked else None
    return app.ctx.tracker

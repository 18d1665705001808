"""The app factory: settings in, a Sanic app out; its state lives on ``app.ctx``, built when
a server process starts (``setup``) and torn down when it stops."""
import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sanic import Sanic

import better_tensorflow as btf
import imaging  # noqa: F401  before cv2 anywhere: it sets OpenCV's pixel limit

from . import observability
from .cors import Cors
from .errors import JSONErrorHandler
from .guard import check_host
from .jobs import SQLiteJobs
from .nets import Net, Registry, first_net, load_pretrained, restore_live
from .protocol import Budget, Request, install_header_cleaner
from .routes import routes
from .samples import SQLiteSampleStore
from .settings import Settings
from .state import WorkerState
from .store import LIVE, FolderStore, StoreError
from .streams import Streams, keep_alive, relay
from .training import SPAWN, dispatch

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def create_app(settings=None, *, name='better_tensorflow', **overrides):
    """The Sanic app for ``settings`` (a Settings; keyword arguments override its fields)."""
    settings = (settings or Settings()).but(**overrides) if overrides else (settings or Settings())
    install_header_cleaner()
    app = Server(name, error_handler=JSONErrorHandler(), request_class=Request,
                configure_logging=False, ctx=WorkerState(settings))
    app.config.update(REQUEST_MAX_SIZE=settings.max_body, REQUEST_TIMEOUT=settings.request_timeout,
                      RESPONSE_TIMEOUT=settings.train_timeout,
                      KEEP_ALIVE_TIMEOUT=settings.keep_alive_timeout)
    # Every answer, errors included, names the allowed origin ('*' even without an Origin
    # header), by sanic-cors's rules applied in Request.respond (service/cors.py). Preflights
    # are answered by JSONErrorHandler (sanic-cors's automatic ones send "content-type: None").
    anyone = settings.cors_origins == '*'
    app.ctx.cors = Cors(app, origins='*' if anyone else list(settings.cors_origins),
                        send_wildcard=anyone, always_send=anyone, max_age=600,
                        methods=['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS'])  # routes' own
    app.blueprint(routes)
    # One request middleware (each costs Sanic two signal dispatches per request): the id and
    # start time first, so that a refused request has an id and is counted too.
    tracker = observability.install(app)

    def front_door(request):
        if tracker is not None:
            tracker.start(request)
        check_host(request)

    app.on_request(front_door)
    app.before_server_start(setup)
    app.before_server_stop(teardown)
    return app


def die_with_parent():
    """A worker process of --workers N ends when the main process dies (even by kill -9),
    instead of serving on alone and holding the port."""
    if 'SANIC_WORKER_NAME' not in os.environ:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError) as e:
        log.warning('workers will not stop with the main process: %s', e)
    if os.getppid() == 1:  # already orphaned before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


STOP_AGAIN = 0.05  # seconds between looks at whether a stop asked while starting can be made
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(Sanic):
    """Sanic, whose ``stop`` waits for the server to run: asked while it still started (its
    after-start listeners run in a run of the loop of their own), Sanic's stopped that run,
    not the one that serves, and the server served on."""

    def stop(self, terminate=True, unregister=False):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and not self.state.is_running:  # still starting: once it runs
            loop.call_later(STOP_AGAIN, self.stop, terminate, unregister)
            return
        super().stop(terminate=terminate, unregister=unregister)


def stop_cleanly(app):
    """Ctrl-C or SIGTERM stops a serving process (a worker of --workers N, or the only one)
    whenever it comes; a second Ctrl-C interrupts the shutdown, as in any Python program.
    Sanic lost a signal of a process's first instants: before its handlers were installed,
    KeyboardInterrupt was raised in whatever ran (a starting worker died unacknowledged and
    the main process waited 30 s for it; or a request's task swallowed it); then it ignored
    both signals for a moment (SIG_IGN) before giving them to uvloop, which drops one that
    comes between two runs of the loop (Sanic runs it several times while starting); and a
    stop during the after-start listeners ended their run, not the serving one
    (``Server.stop``). Here one plain Python handler takes both signals from the app's
    creation to its end (Sanic's are never installed): it records a signal, and hands it to
    the loop once the loop serves. Call it in the serving process's main thread, before it
    starts."""
    from sanic.server import runners

    serving = []  # the loop, once the server runs

    def asked(signum, frame):
        if app.ctx.stop_asked is not None and signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)  # the second Ctrl-C
        app.ctx.stop_asked = signum
        if serving and not serving[0].is_closed():  # (closed: the process ends anyway)
            serving[0].call_soon_threadsafe(app.stop, False)

    for signum in STOP_SIGNALS:
        signal.signal(signum, asked)

    def setup_system_signals(app, run_multiple, register_sys_signals, loop):
        os.environ['SANIC_WORKER_PROCESS'] = 'true'  # what Sanic's does, but the signals

    runners._setup_system_signals = setup_system_signals  # Sanic 25.12's, where it serves

    @app.after_server_start
    def take_over(app):
        serving.append(asyncio.get_running_loop())
        if app.ctx.stop_asked is not None:
            log.info('stopping: %s came while the server was starting',
                     signal.Signals(app.ctx.stop_asked).name)
            app.stop(terminate=False)


RESTARTS = 5  # workers started again in RESTART_WINDOW seconds at most; past it, the server ends
RESTART_WINDOW = 60.0


def watch_workers(app, _loop):
    """Main process of --workers N (a main_process_ready listener): a worker that dies (kill -9,
    out of memory, a crash) is started again, logged, instead of leaving the server at N-1
    workers, or with none and its port still open, silently. Sanic's manager marks it FAILED
    and does nothing more. Past RESTARTS in RESTART_WINDOW seconds (a worker that cannot
    start), or when one ends before every worker has started, the server shuts down and exits
    1 (``app.ctx.ended``, read by server.main) so that a supervisor sees it. And a shutdown
    while workers start ends at once."""
    from sanic.worker.constants import ProcessState

    manager = app._manager  # Sanic's WorkerManager, set before this listener runs
    restarts = []
    # A worker told to stop while it started never acknowledges its start, and Sanic's manager
    # waited for it its 30 s, then killed the whole process group: a Ctrl-C in the first
    # second took 30 s and ended in SIGKILL. Once shutting down, it waits for nobody.
    # And it restarts none before every one has started (wait_for_ack): ``started`` says
    # when it has left that wait.
    acknowledged, started = manager._all_workers_ack, threading.Event()

    def all_acknowledged():  # what wait_for_ack asks, until it is True
        if manager._shutting_down or acknowledged():
            started.set()
        return started.is_set()

    manager._all_workers_ack = all_acknowledged

    def watch():
        while not manager._shutting_down:
            time.sleep(1)
            for process in list(manager.transient_processes):
                if manager._shutting_down or process.is_alive() or process.state in (
                        ProcessState.RESTARTING, ProcessState.TERMINATED, ProcessState.NONE):
                    continue
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
                if not started.is_set():  # the manager restarts none before all have started
                    app.ctx.ended = (f'worker {process.name} (pid {process.pid}) ended while '
                                     f'starting (exit code {process.exitcode})')
                elif len(restarts) > RESTARTS:
                    app.ctx.ended = f'workers died {len(restarts)} times in {RESTART_WINDOW:.0f} s'
                if app.ctx.ended:  # (it spun at 100% CPU on the message, serving nothing)
                    log.error('%s: shutting the server down', app.ctx.ended)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                log.error('worker %s (pid %s) ended unexpectedly (exit code %s): starting it '
                          'again', process.name, process.pid, process.exitcode)
                process.set_state(ProcessState.RESTARTING, force=True)  # asked once
                manager.monitor_publisher.send(process.name)  # the manager restarts it

    threading.Thread(target=watch, name='watch-workers', daemon=True).start()


def open_stores(settings):
    """(the nets' store, the sample store, the training queue): PostgreSQL with --database,
    else the state folder and SQLite files in it. A sample store that cannot be opened is
    None (logged): the rest still serves."""
    if settings.database:
        from .jobs import PostgresJobs  # psycopg only when used
        from .postgres import PostgresSampleStore, PostgresStore
        store = PostgresStore(settings.database)
        store.prepare()
        return (store, PostgresSampleStore(settings.database, settings.max_samples),
                PostgresJobs(settings.database))
    store = FolderStore(settings.state_dir)
    store.prepare(legacy=settings.models_dir)
    try:
        samples = SQLiteSampleStore(settings.state_dir / 'samples.sqlite3', settings.max_samples)
    except StoreError as e:
        log.error('%s: /samples will answer 503', e)
        samples = None
    try:
        jobs = SQLiteJobs(settings.state_dir / 'jobs.sqlite3')
    except StoreError as e:  # tried again at every call: a folder mended, or a disk freed
        log.error('%s: /train answers 503 (507 when the disk is full) until it opens', e)
        jobs = SQLiteJobs(settings.state_dir / 'jobs.sqlite3', connect=False)
    return store, samples, jobs


def adopt_state(app):
    """This worker's live net from the store: (graph, meta, token). In a thread: the store
    may wait for a disk or a database. Only the worker that gets the lock repairs and, when
    the store has no live net, saves the first one; the others read what is there and reload
    once it is repaired."""
    ctx = app.ctx
    try:
        lock = ctx.store.try_lock()
    except StoreError as e:
        log.error('%s: this worker cannot train, reset or repair the state', e)
        lock = None
    try:
        if lock is not None:
            ctx.store.repair()
        restored = restore_live(app, repair=lock is not None)
        if restored is not None:
            return restored
        graph, meta = first_net(app), {'validation_accuracy': None}
        if lock is not None:
            try:
                version = ctx.store.save_live(graph, meta, 'start')
                meta = {**meta, 'version': version, 'cause': 'start', 'epochs': graph.epochs}
            except StoreError as e:
                log.error('the live net is not saved (%s); it is served from memory', e)
        return graph, meta, ctx.store.live_version()
    finally:
        if lock is not None:
            ctx.store.release_lock(lock)


async def setup(app):
    ctx, settings = app.ctx, app.ctx.settings
    ctx.worker = f'{socket.gethostname()}:{btf.process_tag()}-{id(app):x}'  # unique, and
    #          says whether it is alive (training.gone: the process's id and its namespace)
    ctx.budget = Budget(settings.max_buffered)
    # The sample store's and the training queue's calls: one thread (a database connection
    # is used by one thread at a time).
    ctx.db = ThreadPoolExecutor(1, thread_name_prefix='samples')
    loop = asyncio.get_running_loop()
    ctx.store, ctx.samples, ctx.jobs = await loop.run_in_executor(ctx.db, open_stores, settings)
    ctx.pretrained, ctx.best = load_pretrained(settings)
    ctx.streams = Streams(settings.max_streams)
    ctx.hidden_cache, ctx.hidden_tasks = {}, {}  # the shipped models' (routes/models.py)
    ctx.changes = set()  # changes of a net under way (changes.outlive_request)
    ctx.running = set()  # training jobs this worker runs (training.dispatch)
    ctx.job_stops = set()  # their stop events
    ctx.wake = asyncio.Event()  # a job was queued, or a slot freed
    ctx.finished, ctx.job_ended = {}, asyncio.Event()  # answers of jobs run here
    ctx.waiting = set()  # /train requests waiting for their job (training.wait_for_job)
    ctx.large_answers = asyncio.Semaphore(settings.max_large_answers)
    ctx.held_out, ctx.confusion, ctx.insight_tasks = None, {}, {}  # routes/insight.py
    ctx.created = {}  # client address -> times it created nets (routes/nets.py)
    ctx.posting = {}  # client address -> its limits.Poster (routes/samples.py)
    ctx.stopping = SPAWN.Event()  # set at shutdown: the training process stops
    # Sanic's worker processes are daemonic, and multiprocessing refuses to start a child
    # from one. The training process cannot outlive its worker anyway: it sends through a
    # pipe whose other end dies with the worker.
    multiprocessing.current_process().daemon = False
    ctx.trainer = ThreadPoolExecutor(1, thread_name_prefix='train')  # reads its pipe
    ctx.decoders = ThreadPoolExecutor(settings.decoders, thread_name_prefix='decode')
    ctx.nets = Registry(app)
    ctx.nets.nets[LIVE] = Net(LIVE, *await loop.run_in_executor(None, adopt_state, app))
    ctx.tasks = [asyncio.create_task(relay(app)), asyncio.create_task(keep_alive(app)),
                 asyncio.create_task(ctx.nets.follow()), asyncio.create_task(dispatch(app)),
                 asyncio.create_task(expire(app))]
    if getattr(ctx, 'metrics', None) is not None:
        ctx.tasks.append(asyncio.create_task(observability.flushing(app)))


async def expire(app):
    """Delete the private nets idle for longer than --net-idle-days (at start, then hourly);
    with several workers or servers each does it, harmlessly."""
    from .routes.nets import expire_idle
    while True:
        try:
            await expire_idle(app)
        except Exception:
            log.exception('idle nets could not be expired')
        await asyncio.sleep(3600)


async def teardown(app):
    ctx = app.ctx
    for task in ctx.tasks:
        task.cancel()
    ctx.stopping.set()  # the training processes see it after their current batch
    for stop in ctx.job_stops:
        stop.set()
    ctx.streams.end()
    if ctx.running:  # their /train requests get a 503
        await asyncio.gather(*ctx.running, return_exceptions=True)
    if ctx.waiting:  # and answer it before the queue closes
        await asyncio.wait(ctx.waiting, timeout=2)
    if ctx.changes:  # a reset or pretrain being saved ends first
        await asyncio.gather(*ctx.changes, return_exceptions=True)
    ctx.trainer.shutdown()
    ctx.decoders.shutdown()
    loop = asyncio.get_running_loop()  # closing connections waits for the network: a thread
    if ctx.samples is not None:
        await loop.run_in_executor(ctx.db, ctx.samples.close)
    if ctx.jobs is not None:
        await loop.run_in_executor(ctx.db, ctx.jobs.close)
    ctx.db.shutdown()
    await loop.run_in_executor(None, ctx.store.close)

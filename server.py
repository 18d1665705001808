"""better-tensorflow's HTTP server: arguments and environment -> settings -> app -> run.

    python server.py [--host 127.0.0.1] [--port 8000] [--workers 1] [--models models/]
                     [--state data/state/ | --database postgresql://...]
                     [--data data/mnist_preprocessed.npz]
                     [--max-epochs 100] [--cors-origins '*'] [--allowed-hosts ...]
                     [--request-timeout 30] [--max-connections 1000] [--max-streams 100]
                     [--max-samples 100000] [--sample-share 0.1] [--no-hold-suspect]
                     [--sample-rate 50] [--sample-burst 500] [--samples-per-hour 20000]
                     [--gate-test-points 0.3] [--gate-class-points 1] [--gate-samples-points 1]
                     [--gate-private-test-points 1.0] [--gate-private-drawings 0]
                     [--max-nets 1000] [--nets-per-hour 200] [--max-versions 10]
                     [--net-idle-days 30] [--net-memory 512] [--max-trainings N]
                     [--max-queued 100] [--max-hidden-layers 4] [--max-units 2048]
                     [--max-import-bytes 16777216] [--max-training-work 63601000]
                     [--log-format text|json] [--access-log] [--no-metrics] [--no-request-ids]
                     [--metrics-token T] [--metrics-interval 0.2] [--graceful-timeout 15]
    environment: HOST, PORT, DATABASE_URL, BTF_CORS_ORIGINS, BTF_ALLOWED_HOSTS, BTF_TOKEN (then
    required by every route that changes state, as "Authorization: Bearer <token>" or
    ?token=<token>),
    BTF_METRICS_TOKEN (guards /metrics; else BTF_TOKEN does), PROMETHEUS_MULTIPROC_DIR
    (a folder in which the server makes its own metrics folder; default: <state>/metrics,
    emptied at start)

The service itself is the ``service`` package (see its docstring and docs/architecture.md).
"""
import argparse
import atexit
import errno
import fcntl
import functools
import logging
import os
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from sanic import Sanic
from sanic.worker.loader import AppLoader
from threadpoolctl import threadpool_limits

from service import Settings, create_app, observability
from service.app import die_with_parent, stop_cleanly, watch_workers
from service.protocol import Protocol

DEFAULTS = Settings()


def configured_app(settings):
    """create_app for `python server.py` and each of its workers: logging that never writes
    the token, and matrix products on one BLAS thread (a prediction's products are tiny;
    OpenBLAS's threads, one per core, waited for descheduled threads on a busy machine)."""
    die_with_parent()  # first: a worker whose main process is killed must not serve on
    observability.configure_logging(settings)
    threadpool_limits(1, user_api='blas')
    app = create_app(settings)
    if settings.workers == 1 or 'SANIC_WORKER_NAME' in os.environ:  # a serving process
        stop_cleanly(app)  # (not the main process of --workers N: Sanic's manager's own)
    return app


def parse(argv=None, environ=os.environ):
    """Settings from the command line and the environment; exits with a message on bad ones."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add = parser.add_argument
    add('--host', default=environ.get('HOST', DEFAULTS.host),
        help='address to listen on (default: %(default)s, this machine only)')
    add('--port', type=int, default=int(environ.get('PORT', environ.get('DOC_PORT',
                                                                         DEFAULTS.port))))
    add('--workers', type=int, default=DEFAULTS.workers,
        help='worker processes sharing the port (default: %(default)s)')
    add('--models', type=Path, default=DEFAULTS.models_dir,
        help='shipped pretrained models, read only (default: %(default)s)')
    add('--state', type=Path, default=DEFAULTS.state_dir,
        help='runtime state: the live net, its lock and training status (default: %(default)s)')
    add('--database', default=environ.get('DATABASE_URL') or None,
        help='postgresql://user:password@host/db: keep the state there, for several machines '
             '(default: $DATABASE_URL, else the state folder)')
    add('--data', type=Path, default=DEFAULTS.data_path,
        help='preprocessed data set for /train (default: %(default)s)')
    add('--max-epochs', type=int, default=DEFAULTS.max_epochs,
        help='largest epochs a /train request may ask for (default: %(default)s)')
    add('--cors-origins', default=environ.get('BTF_CORS_ORIGINS', '*'),
        help="comma-separated origins allowed to call cross-origin (and, without a token, to "
             "change state), or '*' (default: $BTF_CORS_ORIGINS or %(default)s)")
    add('--allowed-hosts', default=environ.get('BTF_ALLOWED_HOSTS') or None,
        help="comma-separated Host names answered, or '*' (only with BTF_TOKEN set) "
             '(default: $BTF_ALLOWED_HOSTS, else loopback names, and any IP address when not '
             'listening on loopback)')
    add('--request-timeout', type=float, default=DEFAULTS.request_timeout,
        help="seconds for a request's head to arrive, and again for its body "
             '(default: %(default)s)')
    add('--max-connections', type=int, default=DEFAULTS.max_connections,
        help='open connections per worker (default: %(default)s)')
    add('--max-streams', type=int, default=DEFAULTS.max_streams,
        help='open /train/events streams per worker (default: %(default)s)')
    add('--max-samples', type=int, default=DEFAULTS.max_samples,
        help='users\' drawings kept at most (default: %(default)s)')
    add('--sample-share', type=float, default=DEFAULTS.sample_share,
        help='share of every batch of the live net\'s training with samples drawn from '
             'them (default: %(default)s)')
    add('--no-hold-suspect', dest='hold_suspect', action='store_false',
        help='drawings judged mislabelled train the shared net all the same (an operator '
             'with trusted users)')
    add('--sample-rate', type=float, default=DEFAULTS.sample_rate,
        help='drawings one client address may store per second, on average, per worker '
             '(default: %(default)s)')
    add('--sample-burst', type=int, default=DEFAULTS.sample_burst,
        help='... and at once (default: %(default)s)')
    add('--samples-per-hour', type=int, default=DEFAULTS.samples_per_hour,
        help='drawings one client address may store in an hour, per worker (default: '
             '%(default)s)')
    add('--gate-test-points', type=float, default=DEFAULTS.gate_test_points,
        help="the gate of the shared net: most points a training may lose on MNIST's test "
             'images, else it is kept as a version that is not live (default: %(default)s)')
    add('--gate-class-points', type=float, default=DEFAULTS.gate_class_points,
        help="the gate of the shared net: most points lost on any digit of MNIST's test "
             'images (default: %(default)s)')
    add('--gate-samples-points', type=float, default=DEFAULTS.gate_samples_points,
        help='the gate of the shared net: most points lost on the held-out drawings, never '
             'less than one drawing (default: %(default)s)')
    add('--gate-private-test-points', type=float, default=DEFAULTS.gate_private_test_points,
        help="the gate of a private net: most points lost on MNIST's test images "
             '(default: %(default)s)')
    add('--gate-private-drawings', type=int, default=DEFAULTS.gate_private_drawings,
        help="the gate of a private net: how many more of its owner's held-out drawings "
             'it may read wrong (default: %(default)s)')
    add('--max-nets', type=int, default=DEFAULTS.max_nets,
        help='private nets kept on the server at most (default: %(default)s)')
    add('--nets-per-hour', type=int, default=DEFAULTS.nets_per_hour,
        help='private nets one client address may make in an hour (default: %(default)s)')
    add('--max-versions', type=int, default=DEFAULTS.max_versions,
        help='versions kept per net, the oldest pruned (default: %(default)s)')
    add('--net-idle-days', type=float, default=DEFAULTS.net_idle_days,
        help='a private net unused this many days is deleted (default: %(default)s)')
    add('--net-memory', type=int, default=DEFAULTS.net_memory // 2 ** 20,
        help='megabytes of loaded nets\' weights per worker; the least recently used private '
             'nets are unloaded past it (default: %(default)s)')
    add('--max-trainings', type=int, default=DEFAULTS.max_trainings,
        help='trainings run at once on this machine, the others queue (default: the usable '
             'CPUs minus one, at least one: %(default)s)')
    add('--max-queued', type=int, default=DEFAULTS.max_queued,
        help='trainings waiting in the queue at most (default: %(default)s)')
    add('--max-hidden-layers', type=int, default=DEFAULTS.max_hidden_layers,
        help='hidden layers a fresh or imported net may have (default: %(default)s)')
    add('--max-units', type=int, default=DEFAULTS.max_units,
        help='units per hidden layer of a fresh or imported net (default: %(default)s)')
    add('--max-import-bytes', type=int, default=DEFAULTS.max_import_bytes,
        help='bytes of an NPZ uploaded to POST /nets/import; any request body is also held '
             'to the server\'s body limit, 16 MiB (default: %(default)s)')
    add('--max-training-work', type=int, default=DEFAULTS.max_training_work,
        help='weight-epochs one training may do: epochs x the net\'s weights, x 64 / batch '
             'size for batches under 64 (default: %(default)s, 100 epochs of 784-800-10)')
    add('--log-format', choices=('text', 'json'), default=DEFAULTS.log_format,
        help='text lines, or one JSON object per line (default: %(default)s)')
    add('--access-log', action='store_true',
        help='one log line per request: route, status, duration')
    add('--no-metrics', dest='metrics', action='store_false', help='no /metrics, no counting')
    add('--no-request-ids', dest='request_ids', action='store_false',
        help='no X-Request-ID in answers and log lines')
    add('--metrics-token', default=environ.get('BTF_METRICS_TOKEN'),
        help='token /metrics requires as "Authorization: Bearer" (default: '
             '$BTF_METRICS_TOKEN, else the server\'s BTF_TOKEN when set, else none)')
    add('--metrics-interval', type=float, default=DEFAULTS.metrics_interval,
        help="seconds between writes of a worker's counted requests to the metrics: a "
             "/metrics answer may miss other workers' last interval (default: %(default)s)")
    add('--graceful-timeout', type=float, default=DEFAULTS.graceful_timeout,
        help='seconds open requests get to finish at SIGTERM (default: %(default)s)')
    args = parser.parse_args(argv)
    token = environ.get('BTF_TOKEN')
    if token is not None and not token.strip():
        parser.error('BTF_TOKEN is set but empty: that would leave /train, /reset and '
                     '/pretrain open to anyone. Set a token, or unset BTF_TOKEN.')
    origins = [o.strip() for o in args.cors_origins.split(',') if o.strip()]
    hosts = None if args.allowed_hosts is None else \
        tuple(h.strip() for h in args.allowed_hosts.split(',') if h.strip())
    try:
        return Settings(
            host=args.host, port=args.port, workers=args.workers, models_dir=args.models,
            state_dir=args.state, database=args.database, data_path=args.data,
            max_epochs=args.max_epochs,
            cors_origins='*' if origins in ([], ['*']) else tuple(origins),
            allowed_hosts=hosts, request_timeout=args.request_timeout,
            max_connections=args.max_connections, max_streams=args.max_streams,
            max_samples=args.max_samples, sample_share=args.sample_share,
            hold_suspect=args.hold_suspect, sample_rate=args.sample_rate,
            sample_burst=args.sample_burst, samples_per_hour=args.samples_per_hour,
            gate_test_points=args.gate_test_points, gate_class_points=args.gate_class_points,
            gate_samples_points=args.gate_samples_points,
            gate_private_test_points=args.gate_private_test_points,
            gate_private_drawings=args.gate_private_drawings,
            max_nets=args.max_nets, nets_per_hour=args.nets_per_hour,
            max_versions=args.max_versions, net_idle_days=args.net_idle_days,
            net_memory=args.net_memory * 2 ** 20, max_trainings=args.max_trainings,
            max_queued=args.max_queued, max_hidden_layers=args.max_hidden_layers,
            max_units=args.max_units, max_import_bytes=args.max_import_bytes,
            max_training_work=args.max_training_work,
            log_format=args.log_format, access_log=args.access_log, metrics=args.metrics,
            request_ids=args.request_ids, metrics_token=args.metrics_token or None,
            metrics_interval=args.metrics_interval,
            graceful_timeout=args.graceful_timeout,
            token=token)  # from the environment only: a command line is visible to all
    except ValueError as e:
        parser.error(str(e))


def main(argv=None):
    settings = parse(argv)
    observability.configure_logging(settings)
    raise_file_limit(settings)
    if settings.metrics:
        metrics_folder(settings)
    factory = functools.partial(configured_app, settings)
    app = factory()
    run = dict(host=settings.host, port=settings.port, access_log=False, protocol=Protocol)
    if settings.workers == 1:
        app.run(**run, single_process=True)
    else:  # each worker process builds its own app with the same settings
        app.prepare(**run, workers=settings.workers)
        app.main_process_ready(watch_workers)
        Sanic.serve(primary=app, app_loader=AppLoader(factory=factory))
        if app.ctx.ended:  # its workers could not serve: a supervisor should know
            raise SystemExit(1)


def metrics_folder(settings, environ=os.environ):
    """PROMETHEUS_MULTIPROC_DIR for every worker, set before any metric exists: a folder this
    server made itself and alone uses: one in <state>/metrics (own_metrics_folder), or, when
    the operator names a folder in PROMETHEUS_MULTIPROC_DIR, a new folder inside it (removed
    when the server ends; nothing else in the named folder is ever touched)."""
    given = environ.get('PROMETHEUS_MULTIPROC_DIR')
    try:
        if given:
            folder = Path(tempfile.mkdtemp(prefix='btf-metrics-', dir=given))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = own_metrics_folder(settings.state_dir / 'metrics')
    except OSError as e:  # the folder is not writable: the server serves all the same
        folder = Path(tempfile.mkdtemp(prefix='btf-metrics-'))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        logging.getLogger('server').warning('metrics in %s: %s', folder, e)
    environ['PROMETHEUS_MULTIPROC_DIR'] = str(folder)
    return folder


FRESH = 60.0  # seconds: a hidden lock this young may be another server's, being made
METRICS_ROOM = 16 << 20  # bytes free the state's disk needs to hold the metrics, else /tmp


def own_metrics_folder(home):
    """A new folder in ``home`` for this server's figures, whose lock file beside it
    (``NAME.lock``, flock'ed before it appears under that name) this process holds until it
    ends, even by kill -9. Several servers may share a state folder: what servers that ended
    left (their lock free) is removed, never a running one's."""
    home.mkdir(parents=True, exist_ok=True)
    for old in home.iterdir():
        lock = old if old.suffix == '.lock' else old.with_name(old.name + '.lock')
        try:
            if held(lock) or old.name.startswith('.') and \
                    time.time() - old.stat().st_mtime < FRESH:
                continue
        except FileNotFoundError:
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:  # a lock without its folder, or the figures of a version that kept them here
            old.unlink(missing_ok=True)
    free = shutil.disk_usage(home).free
    if free < METRICS_ROOM:  # a page written to a file of a full disk through mmap: SIGBUS
        raise OSError(errno.ENOSPC, f'{free // 1024} KiB free, under the {METRICS_ROOM >> 20} '
                      'MiB the metrics files may take')
    name = f'server-{uuid.uuid4().hex[:12]}'
    folder, lock, making = home / name, home / f'{name}.lock', home / f'.{name}.lock'
    owner = open(making, 'xb')  # noqa: SIM115 (held till the process ends)
    fcntl.flock(owner, fcntl.LOCK_EX)
    os.rename(making, lock)  # appears locked
    folder.mkdir()
    atexit.register(lambda: (shutil.rmtree(folder, ignore_errors=True),
                             lock.unlink(missing_ok=True), owner.close()))
    return folder


def held(lock):
    """Whether a running process holds the flock of ``lock`` (False when there is none)."""
    try:
        with open(lock, 'rb') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False

def raise_file_limit(settings):
    """Enough file descriptors for --max-connections plus files and pipes, when allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + 256
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logging.getLogger('server').warning(
                'only %d file descriptors are allowed: lower --max-connections below it', new)


if __name__ == '__main__':
    main()

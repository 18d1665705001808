"""The nets the service answers with: the shipped pretrained models (read once from
``models/models.json``, never written) and the live net (kept in memory, saved in the store,
reloaded when another worker saved a newer one)."""
import asyncio
import hashlib
import json
import logging
from pathlib import Path

import better_tensorflow as btf

from .errors import InsufficientStorage, Unavailable
from .store import StoreError, StoreFull

log = logging.getLogger(__name__)
MANIFEST = 'models.json'


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def fresh_net(settings):
    """The net /reset builds."""
    return btf.Graph(settings.default_sizes, settings.default_learning_rate,
                     settings.default_batch_size)


def check_shape(net, settings, what):
    sizes = settings.default_sizes
    if net.sizes[0] != sizes[0] or net.sizes[-1] != sizes[-1]:
        raise ValueError(f'{what} is a {net.sizes} net; the server needs {sizes[0]} inputs '
                         f'and {sizes[-1]} outputs.')


def load_pretrained(settings):
    """({version: (manifest entry, net)}, best version or None) from the models folder's
    manifest. A missing or broken manifest means no pretrained models; a broken entry or a
    broken "best" is logged and skipped."""
    folder = settings.models_dir
    path = folder / MANIFEST
    if not path.exists():
        log.warning('no pretrained models: %s not found (`make models` builds them)', path)
        return {}, None
    try:
        manifest = json.loads(path.read_text())
        entries = manifest['models']
        if not isinstance(entries, list):
            raise TypeError(f'"models" must be a list, got {type(entries).__name__}')
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.error('no pretrained models: %s is not a valid manifest (%s)', path, e)
        return {}, None
    pretrained = {}
    for entry in entries:
        try:
            if not isinstance(entry, dict):
                raise TypeError(f'an entry must be an object, got {type(entry).__name__}')
            version, name = entry['version'], entry['file']
            if not is_int(version) or version < 1:
                raise ValueError(f'version must be a positive int, got {version!r}')
            if not isinstance(name, str) or Path(name).name != name:
                raise ValueError(f'file must be a file name inside {folder}, got {name!r}')
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            if entry.get('sha256', digest) != digest:
                raise ValueError(f'{name} has sha256 {digest}, the manifest says '
                                 f'{entry["sha256"]}')
            net = btf.Graph.from_file(folder / name)
            check_shape(net, settings, name)
        except (ValueError, KeyError, TypeError, OSError, MemoryError) as e:
            log.error('skipping pretrained model %.200s from %s: %s', entry, path, e)
            continue
        pretrained[version] = entry, net
    best = manifest.get('best')
    if not is_int(best) or best not in pretrained:
        fallback = max(pretrained, default=None, key=lambda v: _accuracy(pretrained[v][0]))
        if pretrained:
            log.warning('%s: best model %.40r is not available; using v%s', path, best,
                        fallback)
        best = fallback
    log.info('pretrained models %s loaded from %s, best v%s', sorted(pretrained), folder, best)
    return pretrained, best


def _accuracy(entry):
    value = entry.get('test_accuracy')
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def describe(net, meta):
    return {'sizes': list(net.sizes), 'epochs': net.epochs,
            'validation_accuracy': meta.get('validation_accuracy'),
            'learning_rate': net.learning_rate, 'batch_size': net.batch_size,
            'options': net.options}


# ---------------------------------------------------------------------------------------
# The live net of this worker: ctx.live, ctx.live_meta, and ctx.live_version, the store's
# version of that net: it moves only once a net is loaded, so a worker that could not load
# the newest net (a stalled or restarted database, an unreadable file) knows it is behind,
# says so in its readiness, and tries again until it has it.

RELOAD_DELAYS = (0.1, 5.0)  # seconds between attempts to load the newest net: first, most
RELOAD_PATIENCE = 0.5  # seconds a request waits for a first attempt before answering


class Reload:
    """The reloading of this worker's live net (ctx.reload): the attempt under way, when the
    next may start, and why the last one failed (None once loaded)."""

    def __init__(self):
        self.task = None
        self.delay, self.after = RELOAD_DELAYS[0], 0.0
        self.problem = None
        self.logged = None  # the version whose failure was logged


def restore_live(app, repair):
    """Load the saved live net, else a copy of the best pretrained model, else a fresh one.
    Only with ``repair`` (the caller holds the job lock) is a broken saved net set aside.
    Returns whether a saved net was restored. Reads the store: called in a thread."""
    ctx, settings = app.ctx, app.ctx.settings
    ctx.live_version = ctx.store.live_version()
    saved = ctx.store.load_live(repair)
    if saved is not None:
        try:
            check_shape(saved[0], settings, 'the saved live net')
        except ValueError as e:
            log.error('%s; starting anew', e)
            saved = None
    if saved is not None:
        ctx.live, ctx.live_meta = saved
        log.info('live net restored from %r: %s', ctx.store, ctx.live)
        return True
    ctx.live = ctx.pretrained[ctx.best][1].copy() if ctx.best is not None else \
        fresh_net(settings)
    ctx.live_meta = {'validation_accuracy': None}
    return False


def behind(app):
    """Whether the store holds a live net this worker has not loaded (one version check: in
    memory for the database, one stat for the folder)."""
    ctx = app.ctx
    return ctx.store.live_version() != ctx.live_version and not ctx.save_lock.locked()


def sync_live(app):
    """Start reloading the live net, off the event loop, when another process (a worker, a
    machine) saved a new one; requests go on with the net loaded until the new one is. One
    attempt at a time; after a failed one, the next waits longer."""
    reload = app.ctx.reload
    loop = asyncio.get_running_loop()
    if (reload.task is None or reload.task.done()) and loop.time() >= reload.after and \
            behind(app):
        reload.task = asyncio.create_task(reload_live(app))
    if not behind(app):
        reload.problem, reload.delay = None, RELOAD_DELAYS[0]
    return reload.task


async def newest_live(app, patience=RELOAD_PATIENCE):
    """sync_live, then wait up to ``patience`` for its attempt: a request right after another
    process's change answers with the new net. Once an attempt failed (the store stalls, the
    net cannot be read), requests no longer wait."""
    task = sync_live(app)
    if task is not None and not task.done() and app.ctx.reload.problem is None:
        await asyncio.wait([task], timeout=patience)  # not cancelled when the wait ends


async def follow_live(app):
    """Notice a new live net, and try again to load one, with no request coming."""
    while True:
        await asyncio.sleep(RELOAD_DELAYS[0])
        sync_live(app)


async def reload_live(app):
    """One attempt to load the store's newest live net in a thread. Its version becomes this
    worker's only once the net is loaded; a failure is logged (once per version) and the
    next attempt waits twice as long as the last."""
    ctx, reload, loop = app.ctx, app.ctx.reload, asyncio.get_running_loop()
    version, before = ctx.store.live_version(), ctx.live_version
    try:
        loaded = await loop.run_in_executor(None, ctx.store.load_live)
        if loaded is not None:
            check_shape(loaded[0], ctx.settings, 'the saved live net')
        why = 'it cannot be read (see the log)'
    except (StoreError, ValueError) as e:
        loaded, why = None, str(e)
    if ctx.live_version != before or ctx.save_lock.locked():
        return  # this worker saved a net meanwhile: what was read is older
    if loaded is not None:
        ctx.live, ctx.live_meta = loaded
        ctx.live_version = version
        reload.problem, reload.delay = None, RELOAD_DELAYS[0]
        log.info('reloaded the live net saved by another process: %s', ctx.live)
        return
    reload.problem = f'the store\'s newest live net is not loaded: {why}'
    reload.after = loop.time() + reload.delay
    reload.delay = min(2 * reload.delay, RELOAD_DELAYS[1])
    if reload.logged != version:
        log.error('%s; the last one loaded answers, trying again', reload.problem)
        reload.logged = version


def live_state(app):
    """'ok', or why this worker's live net is not the store's (for readiness)."""
    ctx = app.ctx
    if getattr(ctx, 'live', None) is None:
        return 'the live net is not loaded'
    if behind(app):
        return (f'behind the store (version {ctx.store.live_version()} saved, '
                f'{ctx.live_version} loaded): {ctx.reload.problem or "loading it"}')
    return 'ok'


async def make_live(app, net, meta):
    """Save ``net`` in the store, then make it live: if the save fails, the live net stays
    as it was, here and in every other worker (507 when the disk is full, 503 otherwise).
    The caller holds the job lock."""
    ctx = app.ctx
    async with ctx.save_lock:
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, ctx.store.save_live, net, meta)
        except StoreFull as e:
            log.error('the new live net was not saved: %s', e)
            raise InsufficientStorage(f'{e.strerror}: the new net could not be saved, so the '
                                      'live net is unchanged. Free some space and try '
                                      'again.') from None
        except StoreError as e:
            log.error('the new live net was not saved: %s', e)
            raise Unavailable(f'{e.strerror}: the new net could not be saved, so the live '
                                 'net is unchanged.') from None
        ctx.live, ctx.live_meta = net, meta
        ctx.live_version = ctx.store.live_version()

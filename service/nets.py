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
# The live net of this worker: ctx.live, ctx.live_meta, ctx.live_version.

def restore_live(app, repair):
    """Load the saved live net, else a copy of the best pretrained model, else a fresh one.
    Only with ``repair`` (the caller holds the job lock) is a broken saved net set aside.
    Returns whether a saved net was restored."""
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


def sync_live(app):
    """Reload the live net when another process (a worker, a machine) saved a new one: one
    version check when nothing changed."""
    ctx = app.ctx
    version = ctx.store.live_version()
    if version == ctx.live_version or ctx.save_lock.locked():  # unchanged, or ours in progress
        return
    ctx.live_version = version
    loaded = ctx.store.load_live()
    if loaded is None:
        log.warning('keeping the live net: the saved one changed but cannot be read')
        return
    ctx.live, ctx.live_meta = loaded
    log.info('reloaded the live net saved by another process: %s', ctx.live)


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

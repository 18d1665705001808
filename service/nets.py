"""The nets the service answers with: the shipped pretrained models (read once from
``models/models.json``, never written), and the nets of the store, each one ``Net`` in this
worker: the shared net ``live`` (always loaded) and private nets (loaded when used, unloaded
when least recently used past the memory budget). ``Registry`` (``app.ctx.nets``) finds,
loads, saves and reloads them: a net saved by another worker or server is loaded off the
event loop, and counts as this worker's only once it is loaded (a worker that could not load
it knows it is behind, says so in its readiness, and tries again)."""
import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path

import better_tensorflow as btf

from .errors import InsufficientStorage, Missing, Unavailable
from .store import LIVE, StoreError, StoreFull, is_net_name

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
            'options': net.options, 'version': meta.get('version')}


# ---------------------------------------------------------------------------------------
# The nets of the store, in this worker.

RELOAD_DELAYS = (0.1, 5.0)  # seconds between attempts to load a net's newest version
RELOAD_PATIENCE = 5.0  # seconds a request waits for a first attempt (a version saved elsewhere
#                        is then answered at once; past a failed attempt, nobody waits)
TOUCH_EVERY = 600.0  # seconds between two records of a private net's use


class Net:
    """One net of the store as this worker holds it: its weights (``graph``), the metadata
    of its version, the store's change token of what is loaded, and what belongs to it: the
    lock its saves take, its training job, what was built from its weights (caches)."""

    def __init__(self, name, graph, meta, token):
        from .training import Job  # the job's progress, as /train/status shows it
        self.name, self.graph, self.meta, self.token = name, graph, meta, token
        self.save_lock = asyncio.Lock()
        self.job, self.job_task = Job(), None
        self.caches = {}  # what was computed from these weights: cleared when they change
        self.reload_task, self.problem, self.logged = None, None, None
        self.delay, self.after = RELOAD_DELAYS[0], 0.0
        self.used, self.touched = time.monotonic(), float('-inf')  # first use: recorded

    def __repr__(self):
        return f'Net({self.label!r}, {self.graph})'

    @property
    def label(self):
        """How answers and logs name it ("live", or the private net's name)."""
        return self.name

    @property
    def title(self):
        """How logs name it: the live net, or the first characters of a private net's name
        (the name is its key: logs never hold it whole)."""
        return 'the live net' if self.name == LIVE else f'net {self.name[:6]}...'

    @property
    def metric(self):
        """Its metrics label: private nets are one series, whatever their number."""
        return 'live' if self.name == LIVE else 'private'

    @property
    def version(self):
        return self.meta.get('version')

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self.graph.weights + self.graph.biases)

    def swap(self, graph, meta, token):
        self.graph, self.meta, self.token = graph, meta, token
        self.caches.clear()
        self.problem, self.delay = None, RELOAD_DELAYS[0]


def gone_message(name):
    return (f'there is no net named {name[:60]!r} (it was deleted, it expired after being '
            'idle, or it never existed): create one with POST /nets.')


class Registry:
    """The nets this worker serves (``app.ctx.nets``), most recently used last."""

    def __init__(self, app):
        self.app = app
        self.nets = OrderedDict()
        self.loading = {}  # name -> the task loading it

    @property
    def store(self):
        return self.app.ctx.store

    @property
    def live(self):
        return self.nets[LIVE]

    def loaded(self, name):
        return self.nets.get(name)

    # -- finding a net

    async def get(self, name=LIVE, wait=True):
        """The net named ``name``, loaded, and its newest version (waiting up to
        RELOAD_PATIENCE for one saved elsewhere, unless not ``wait``): 404 for a name that
        is not a net's."""
        if not is_net_name(name):
            raise Missing(f'there is no net named {str(name)[:60]!r}: a net\'s name is "live" '
                          'or the name POST /nets answered with.')
        net = self.nets.get(name)
        if net is None:
            net = await self._load(name)
        self.nets.move_to_end(name)
        net.used = time.monotonic()
        task = self.sync(net)
        if wait and task is not None and not task.done() and net.problem is None:
            await asyncio.wait([task], timeout=RELOAD_PATIENCE)  # not cancelled at the end
        if self.nets.get(name) is not net:  # deleted by another process meanwhile
            raise Missing(gone_message(name))
        if name != LIVE and net.used - net.touched > TOUCH_EVERY:
            net.touched = net.used
            asyncio.get_running_loop().run_in_executor(None, self.store.touch, name)
        return net

    async def _load(self, name):
        task = self.loading.get(name)
        if task is None:  # one load per net, however many ask at once
            task = asyncio.get_running_loop().run_in_executor(None, self._read, name)
            self.loading[name] = task
        try:
            found = await asyncio.shield(task)
        except StoreError as e:
            raise Unavailable(f'{e.strerror}; nothing was changed.') from None
        finally:
            self.loading.pop(name, None)
        if found is None:
            raise Missing(gone_message(name))
        if name in self.nets:  # loaded by a request that was first
            return self.nets[name]
        net = self.nets[name] = Net(name, *found)
        self.evict()
        return net

    def _read(self, name):
        """In a thread: (graph, meta, token) of a private net from the store, or None."""
        if self.store.about(name) is None:
            return None
        token = self.store.net_version(name)
        loaded = self.store.load_net(name)
        if loaded is None:
            raise StoreError(0, 'the net cannot be read (see the server log)')
        check_shape(loaded[0], self.app.ctx.settings, 'the saved net')
        return (*loaded, token)

    def evict(self):
        """Unload the least recently used private nets while the loaded ones' weights exceed
        the memory budget (never the live net, one that trains or saves, or the newest)."""
        budget = self.app.ctx.settings.net_memory
        total = sum(net.nbytes for net in self.nets.values())
        for name in list(self.nets)[:-1]:
            if total <= budget:
                break
            net = self.nets[name]
            if name == LIVE or net.job.running or net.save_lock.locked() or \
                    net.reload_task is not None and not net.reload_task.done():
                continue
            del self.nets[name]
            total -= net.nbytes
            log.info('unloaded %s (least recently used; loaded nets over %d MB)', net.title,
                     budget // 2 ** 20)

    def forget(self, name):
        """A deleted net: unloaded here."""
        self.nets.pop(name, None)

    # -- following the store

    def behind(self, net):
        """Whether the store holds a version of the net this worker has not loaded (one
        version check: in memory for the database, stats for the folder)."""
        try:
            token = self.store.net_version(net.name)
        except (StoreError, ValueError):
            return False
        return token != net.token and not net.save_lock.locked()

    def sync(self, net):
        """Start reloading the net, off the event loop, when another process saved a new
        version; requests go on with the version loaded until the new one is. One attempt
        at a time; after a failed one, the next waits longer."""
        loop = asyncio.get_running_loop()
        behind = self.behind(net)  # once: two stats a request for the folder store
        if behind and (net.reload_task is None or net.reload_task.done()) and \
                loop.time() >= net.after:
            net.reload_task = asyncio.create_task(self.reload(net))
        if not behind:
            net.problem, net.delay = None, RELOAD_DELAYS[0]
        return net.reload_task

    async def reload(self, net):
        """One attempt to load the store's newest version of a net, in a thread. It becomes
        this worker's only once loaded; a failure is logged (once per version) and the next
        attempt waits twice as long as the last."""
        store, loop = self.store, asyncio.get_running_loop()
        before = net.token
        try:
            token = store.net_version(net.name)
            loaded = await loop.run_in_executor(None, store.load_net, net.name)
            if loaded is not None:
                check_shape(loaded[0], self.app.ctx.settings, 'the saved net')
            why = 'it cannot be read (see the log)'
        except (StoreError, ValueError) as e:
            loaded, why = None, str(e)
        if net.token != before or net.save_lock.locked():
            return  # this worker saved a version meanwhile: what was read is older
        if loaded is not None:
            net.swap(*loaded, token)
            log.info('reloaded %s saved by another process: version %s, %s', net.title,
                     net.version, net.graph)
            return
        if net.name != LIVE and await loop.run_in_executor(None, store.about, net.name) is None:
            self.forget(net.name)  # deleted by another process
            return
        net.problem = f"the store's newest version is not loaded: {why}"
        net.after = loop.time() + net.delay
        net.delay = min(2 * net.delay, RELOAD_DELAYS[1])
        if net.logged != token:
            log.error('%s: %s; the last one loaded answers, trying again', net.title,
                      net.problem)
            net.logged = token

    async def follow(self):
        """Notice new versions of the loaded nets, and try again to load one, with no
        request coming."""
        while True:
            await asyncio.sleep(RELOAD_DELAYS[0])
            for net in list(self.nets.values()):
                self.sync(net)

    def state(self, name=LIVE):
        """'ok', or why this worker's net is not the store's (for readiness)."""
        net = self.nets.get(name)
        if net is None:
            return 'the net is not loaded'
        if self.behind(net):
            return (f'behind the store (version {net.version} loaded): '
                    f'{net.problem or "loading the newest"}')
        return 'ok'

    # -- changing a net

    async def save(self, net, graph, meta, cause, current=True):
        """Save ``graph`` as a new version of ``net``, then make it current here: if the save
        fails, the net stays as it was, here and in every other worker (507 when the disk is
        full, 503 otherwise). With ``current=False`` (a candidate the gate held back) the
        version is only kept: the net stays as it was. The caller holds the net's job lock."""
        settings = self.app.ctx.settings
        keep = settings.max_versions
        async with net.save_lock:
            loop = asyncio.get_running_loop()
            try:
                version = await loop.run_in_executor(
                    None, lambda: self.store.save_net(net.name, graph, meta, cause, keep,
                                                      current))
                token = self.store.net_version(net.name)
            except StoreFull as e:
                log.error('the new version of %s was not saved: %s', net.title, e)
                raise InsufficientStorage(f'{e.strerror}: the new net could not be saved, so '
                                          'the net is unchanged. Free some space and try '
                                          'again.') from None
            except StoreError as e:
                log.error('the new version of %s was not saved: %s', net.title, e)
                raise Unavailable(f'{e.strerror}: the new net could not be saved, so the net '
                                  'is unchanged.') from None
            if not current:
                return version
            record = {**meta, 'version': version, 'cause': cause, 'epochs': graph.epochs}
            net.swap(graph, record, token)
        return version


def first_net(app):
    """The live net a server starts with when the store has none: a copy of the best
    pretrained model, else a fresh one."""
    ctx = app.ctx
    return ctx.pretrained[ctx.best][1].copy() if ctx.best is not None else \
        fresh_net(ctx.settings)


def restore_live(app, repair):
    """(graph, meta, token) of the saved live net, else None (logged): a copy of the best
    pretrained model, else a fresh one, is then saved. Only with ``repair`` (the caller holds
    the job lock) is a broken saved net set aside. Reads the store: called in a thread."""
    store, settings = app.ctx.store, app.ctx.settings
    token = store.live_version()
    saved = store.load_live(repair)
    if saved is not None:
        try:
            check_shape(saved[0], settings, 'the saved live net')
        except ValueError as e:
            log.error('%s; starting anew', e)
            saved = None
    if saved is None:
        return None
    log.info('live net restored from %r: version %s, %s', store, saved[1].get('version'),
             saved[0])
    return (*saved, token)

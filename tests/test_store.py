"""The contract of the service's stores: every implementation (today the folder and SQLite
ones; a database server's later) passes these tests. Add an implementation to the fixtures'
params and it is held to the same contract."""
import multiprocessing
import os
import time

import numpy as np
import pytest

import better_tensorflow as btf
from service.samples import SQLiteSampleStore, is_validation
from service.store import FolderStore, StoreError, StoreFull, weights_digest


@pytest.fixture(params=['folder', 'postgresql'])
def store(request, tmp_path):
    """A fresh live-net store of each implementation."""
    if request.param == 'folder':
        made = FolderStore(tmp_path / 'state')
    else:
        from service.postgres import PostgresStore
        made = PostgresStore(request.getfixturevalue('database'))
    made.prepare()
    yield made
    made.close()


@pytest.fixture(params=['sqlite', 'postgresql'])
def samples(request, tmp_path):
    """A fresh sample store of each implementation, holding at most 5 samples."""
    if request.param == 'sqlite':
        made = SQLiteSampleStore(tmp_path / 'samples.sqlite3', limit=5)
    else:
        from service.postgres import PostgresSampleStore, migrate
        url = request.getfixturevalue('database')
        migrate(url)
        made = PostgresSampleStore(url, limit=5)
    yield made
    made.close()


def settled(store, check, timeout=10):
    """Wait until ``check()`` holds: a database store learns of changes by notification."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def net(seed):
    return btf.Graph((784, 12, 10), 0.5, 32, seed=seed)


def test_live_net_round_trip_and_versions(store):
    assert store.load_live() is None
    empty = store.live_version()
    first = net(1)
    store.save_live(first, {'validation_accuracy': 0.5})
    loaded, meta = store.load_live()
    assert weights_digest(loaded) == weights_digest(first) and meta == {'validation_accuracy': 0.5}
    one = store.live_version()
    assert one != empty
    store.save_live(net(2), {'validation_accuracy': None})
    assert store.live_version() not in (empty, one)
    assert weights_digest(store.load_live()[0]) == weights_digest(net(2))


def reopen(store):
    """The same store opened afresh (in another process): (kind, where)."""
    return ('folder', store.folder) if isinstance(store, FolderStore) else ('postgresql', store.url)


def _hold(where, ready, release):
    kind, place = where
    if kind == 'folder':
        store = FolderStore(place)
    else:
        from service.postgres import PostgresStore
        store = PostgresStore(place)
        store.prepare()
    lock = store.try_lock()
    ready.set()
    release.wait(30)
    store.release_lock(lock)


def test_one_lock_across_processes_released_when_its_holder_dies(store):
    context = multiprocessing.get_context('spawn')  # no copy of this process's connections
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(reopen(store), ready, release))
    holder.start()
    assert ready.wait(60)
    assert settled(store, store.locked) and store.try_lock() is None
    holder.kill()  # dies holding it
    holder.join(30)
    assert settled(store, lambda: not store.locked())
    lock = store.try_lock()
    assert lock is not None and store.locked()
    store.release_lock(lock)
    assert settled(store, lambda: not store.locked())


def test_status_round_trip(store):
    assert store.read_status() is None
    before = store.status_version()
    state = {'job': 'j', 'worker': 'w', 'status': {'running': True, 'history': []}, 'done': None}
    store.write_status(state)  # published to every worker, at once or within moments
    assert settled(store, lambda: store.read_status() == state)
    assert store.status_version() != before


def corrupt(store):
    """Damage the saved live net behind the store's back."""
    if isinstance(store, FolderStore):
        (store.folder / store.LIVE).write_bytes(b'garbage')
    else:
        import psycopg
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("UPDATE btf_live SET net = 'garbage', version = version + 1")
        store._loaded = None  # as after a restart: nothing read yet


def test_an_unreadable_live_net_is_not_loaded_and_repair_clears_it(store):
    store.save_live(net(1), {})
    corrupt(store)
    assert store.load_live() is None
    assert store.load_live() is None  # a reader leaves it for the repairer
    assert store.load_live(repair=True) is None
    store.save_live(net(2), {'validation_accuracy': 0.5})  # a fresh one can be saved
    assert weights_digest(store.load_live()[0]) == weights_digest(net(2))
    if isinstance(store, FolderStore):  # set aside, never overwritten
        assert len(list(store.folder.glob('live.corrupt-*.npz'))) == 1


def test_a_failed_save_changes_nothing(store, monkeypatch):
    if not isinstance(store, FolderStore):
        pytest.skip('a full disk is simulated for the folder; the database refuses for itself')
    store.save_live(net(1), {'validation_accuracy': 0.25})
    version = store.live_version()

    def full(self, path):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(btf.Graph, 'save', full)
    with pytest.raises(StoreFull, match='full'):
        store.save_live(net(2), {'validation_accuracy': 0.75})
    assert store.live_version() == version
    assert store.load_live()[1] == {'validation_accuracy': 0.25}
    assert not [p for p in os.listdir(store.folder) if p.endswith('.tmp')]


def pixels(k):
    return np.full(784, k, np.uint8)


def test_samples_add_dedupe_list_image_delete(samples):
    one = {'id': 1, 'label': 1, 'predicted': 7, 'model': 'live'}
    assert samples.add(b'one', pixels(1), 1, 7, 'live') == (one, True)
    assert samples.add(b'two', pixels(2), 2, 2, 'v3')[0]['id'] == 2
    assert samples.add(b'one', pixels(9), 9, 9, 'live') == (one, False)  # same bytes
    total, rows = samples.list()
    assert total == 2 and [r['id'] for r in rows] == [2, 1]
    assert rows[1] == {'id': 1, 'label': 1, 'predicted': 7, 'model': 'live',
                       'created': rows[1]['created']}
    assert samples.list(label=2)[0] == 1 and samples.list(offset=1, limit=1)[1][0]['id'] == 1
    assert samples.image(1) == bytes(pixels(1)) and samples.image(1, original=True) == b'one'
    assert samples.image(3) is None
    assert samples.delete(1) is True and samples.delete(1) is False
    assert samples.count() == 1


def test_samples_arrays_and_their_validation_part(samples):
    for k in range(5):
        samples.add(bytes([k]), pixels(k), k, k, 'live')
    ids, X, y = samples.arrays()
    assert ids.tolist() == [1, 2, 3, 4, 5] and X.shape == (5, 784) and X.dtype == np.uint8
    assert y.tolist() == [0, 1, 2, 3, 4] and (X[:, 0] == y).all()
    assert is_validation(ids).tolist() == [False, False, False, False, True]


def test_samples_limit_and_bad_rows(samples):
    for k in range(5):
        samples.add(bytes([k]), pixels(k), k, k, 'live')
    with pytest.raises(StoreFull, match='5 samples'):
        samples.add(b'sixth', pixels(6), 6, 6, 'live')
    assert samples.count() == 5
    samples.delete(5)
    with pytest.raises(StoreError):  # the schema refuses what the service never sends
        samples.add(b'bad', pixels(1), 10, 1, 'live')
    assert samples.count() == 4

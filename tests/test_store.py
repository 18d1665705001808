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
from service.store import (
    LIVE,
    FolderStore,
    StoreError,
    StoreFull,
    is_net_name,
    new_net_name,
    weights_digest,
)
from tests.conftest import ROOT


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
    assert weights_digest(loaded) == weights_digest(first)
    assert meta == {'validation_accuracy': 0.5, 'version': 1, 'cause': 'save',
                    'epochs': 0, 'created': meta['created'], 'sizes': [784, 12, 10]}
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
        (store.folder / store.LIVE_FILE).write_bytes(b'garbage')
    else:
        import psycopg
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("UPDATE btf_versions SET net = 'garbage' FROM btf_nets WHERE "
                         "btf_nets.name = 'live' AND btf_versions.name = 'live' AND "
                         'btf_versions.version = btf_nets.current')


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
    assert store.load_live()[1]['validation_accuracy'] == 0.25
    assert store.versions(LIVE)[1] == 1
    assert not [p for p in os.listdir(store.folder) if p.endswith('.tmp')]


SAVER = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[1])
import better_tensorflow as btf
from service.store import FolderStore
go = pathlib.Path(sys.argv[3])
plain = btf.Graph.save

def paused(self, path):  # the version's file is written after the metadata's temporary file
    (go.parent / 'saving').touch()
    while not go.exists():
        time.sleep(0.01)
    plain(self, path)

btf.Graph.save = paused
print(FolderStore(pathlib.Path(sys.argv[2])).save_net(
    sys.argv[4], btf.Graph((784, 12, 10), 0.5, 32, seed=3), {}, 'train'))
"""


def test_repair_removes_what_dead_writers_left_never_a_save_in_progress(tmp_path):
    """Another worker or server may be saving a private net while a starting worker repairs
    (it holds the live net's lock, not that net's): seen as a 503 'No such file or
    directory' on POST /nets with --workers 2. Only temporary files no process writes go."""
    import subprocess
    import sys
    store = FolderStore(tmp_path / 'state')
    name = new_net_name()
    store.create_net(name, net(1), {}, {'from': 'fresh'})
    home = store.folder / 'nets' / name

    def saver(marker):
        child = subprocess.Popen([sys.executable, '-c', SAVER, str(ROOT), str(store.folder),
                                  str(tmp_path / marker), name], stdout=subprocess.PIPE,
                                 text=True)
        deadline = time.monotonic() + 60
        while not (tmp_path / 'saving').exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        (tmp_path / 'saving').unlink()
        return child

    alive = saver('go')
    writing = list(home.glob('.net.json.*.tmp'))
    assert len(writing) == 1
    store.repair()  # as a worker starting meanwhile does
    assert writing[0].exists()
    (tmp_path / 'go').touch()
    assert alive.communicate(timeout=60)[0].strip() == '2' and alive.returncode == 0
    assert weights_digest(store.load_net(name)[0]) == weights_digest(net(3))
    assert not list(home.glob('.*.tmp'))

    killed = saver('never')
    killed.kill()
    killed.wait()
    left = list(home.glob('.net.json.*.tmp'))
    assert len(left) == 1  # what kill -9 left: its writer is gone, so it goes
    other = home / '.about.json.12345@00000000.0123456789ab.tmp'  # another machine's,
    other.write_bytes(b'{}')  # written now: it may still be writing
    before = home / '.net.json.0123456789ab.tmp'  # a name of before, an hour old
    before.write_bytes(b'{}')
    os.utime(before, (time.time() - 3600,) * 2)
    store.repair()
    assert not left[0].exists() and not before.exists() and other.exists()
    os.utime(other, (time.time() - btf.TEMPORARY_STALE - 1,) * 2)
    store.repair()
    assert not other.exists()
    assert weights_digest(store.load_net(name)[0]) == weights_digest(net(3))


def pixels(k):
    return np.full(784, k, np.uint8)


UNJUDGED = {'judged_suspect': False, 'reads_as': None, 'label_p': None, 'reads_p': None,
            'review': None}


def test_samples_add_dedupe_list_image_delete(samples):
    one = {'id': 1, 'label': 1, 'predicted': 7, 'model': 'live', 'shared': False, **UNJUDGED}
    assert samples.add(b'one', pixels(1), 1, 7, 'live') == (one, True)
    assert samples.add(b'two', pixels(2), 2, 2, 'v3')[0]['id'] == 2
    # the same pixels (other bytes: re-encoded, appended to) are the same sample
    assert samples.add(b'one, again', pixels(1), 9, 9, 'live') == (one, False)
    total, rows = samples.list()
    assert total == 2 and [r['id'] for r in rows] == [2, 1]
    assert rows[1] == {'id': 1, 'label': 1, 'predicted': 7, 'model': 'live',
                       'created': rows[1]['created'], 'shared': False, **UNJUDGED}
    assert samples.list(label=2)[0] == 1 and samples.list(offset=1, limit=1)[1][0]['id'] == 1
    assert samples.image(1) == bytes(pixels(1)) and samples.image(1, original=True) == b'one'
    assert samples.image(3) is None
    assert samples.delete(1) is True and samples.delete(1) is False
    assert samples.count() == 1


def test_samples_belong_to_their_net_and_the_shared_ones_to_live_too(samples):
    mine, other = new_net_name(), new_net_name()
    assert samples.add(b'l', pixels(1), 1, 1, 'live')[0]['id'] == 1
    kept, created = samples.add(b'm', pixels(2), 2, 3, 'live', net=mine)
    assert created and kept['id'] == 2 and kept['shared'] is False
    assert samples.add(b'm', pixels(2), 2, 3, 'live', net=other)[1]  # the same image, apart
    assert samples.add(b'n', pixels(2), 9, 9, 'live', net=mine) == (kept, False)
    assert [r['id'] for r in samples.list(net=mine)[1]] == [2]
    assert [r['id'] for r in samples.list()[1]] == [1]  # live: its own
    assert samples.image(2) is None and samples.image(2, net=other) is None
    assert samples.image(2, net=mine) == bytes(pixels(2))
    assert samples.delete(2) is False and samples.delete(2, net=other) is False
    assert samples.share(2, other, True) is False  # only its own net shares it
    assert samples.share(2, mine, True) is True
    assert [r['id'] for r in samples.list()[1]] == [2, 1] and samples.list()[1][0]['shared']
    assert samples.arrays()[0].tolist() == [1, 2] and samples.arrays(mine)[0].tolist() == [2]
    assert samples.image(2) == bytes(pixels(2))
    assert samples.share(2, mine, False) and samples.arrays()[0].tolist() == [1]
    assert samples.delete_net(mine) == 1 and samples.list(net=mine)[0] == 0
    assert samples.count() == 2


def test_samples_arrays_and_their_validation_part(samples):
    for k in range(5):
        samples.add(bytes([k]), pixels(k), k, k, 'live')
    ids, X, y = samples.arrays()
    assert ids.tolist() == [1, 2, 3, 4, 5] and X.shape == (5, 784) and X.dtype == np.uint8
    assert y.tolist() == [0, 1, 2, 3, 4] and (X[:, 0] == y).all()
    assert is_validation(ids).tolist() == [False, False, False, False, True]
    # A request reads at most the newest few (GET /nets/{name}/ask), still oldest first.
    ids, X, y = samples.arrays(newest=2)
    assert ids.tolist() == [4, 5] and y.tolist() == [3, 4] and (X[:, 0] == y).all()
    assert samples.arrays(newest=10)[0].tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match='newest must be a positive int, got 0'):
        samples.arrays(newest=0)


def test_samples_judged_reviewed_and_held_back(samples):
    """Held back from the shared net: judged suspect and not approved, or rejected."""
    suspect = {'suspect': True, 'reads_as': 4, 'label_p': 0.001, 'reads_p': 0.98}
    fine = {'suspect': False, 'reads_as': 3, 'label_p': 0.9, 'reads_p': 0.05}
    made, _ = samples.add(b'a', pixels(1), 9, 4, 'live', judgement=suspect)
    assert made == {'id': 1, 'label': 9, 'predicted': 4, 'model': 'live', 'shared': False,
                    'judged_suspect': True, 'reads_as': 4, 'label_p': 0.001, 'reads_p': 0.98,
                    'review': None}
    samples.add(b'b', pixels(2), 2, 2, 'live', judgement=fine)
    samples.add(b'c', pixels(3), 3, 3, 'live')
    mine = new_net_name()
    samples.add(b'd', pixels(4), 9, 4, 'live', net=mine, judgement=suspect)

    def ids(held, net=LIVE):
        return samples.arrays(net, held)[0].tolist()
    assert ids(None) == [1, 2, 3] and ids(True) == [1] and ids(False) == [2, 3]
    assert samples.list(held=True)[0] == 1 and samples.list(held=False)[0] == 2
    assert ids(True, mine) == [4]  # judged alike; whether it trains is the service's rule
    assert samples.review(1, 'approve')['review'] == 'approved'
    assert ids(True) == [] and ids(False) == [1, 2, 3]
    rejected = samples.review(2, 'reject')
    assert rejected['review'] == 'rejected' and rejected['created']
    assert ids(True) == [2] and ids(False) == [1, 3]
    assert samples.review(4, 'approve') is None  # a private net's drawing, not shared
    assert samples.review(99, 'reject') is None
    assert samples.judge([(3, True, 7, 0.01, 0.9), (1, False, 9, 0.5, 0.4)]) == 2
    assert ids(True) == [2, 3]  # 1 was approved: a new judgement leaves the review
    rows = {r['id']: r for r in samples.list()[1]}
    assert (rows[3]['judged_suspect'], rows[3]['reads_as'], rows[3]['reads_p']) == \
        (True, 7, 0.9)


def test_samples_limit_and_bad_rows(samples):
    for k in range(5):
        samples.add(bytes([k]), pixels(k), k, k, 'live')
    with pytest.raises(StoreFull, match='5 samples'):
        samples.add(b'sixth', pixels(6), 6, 6, 'live')
    assert samples.count() == 5
    samples.delete(5)
    with pytest.raises(StoreError):  # the schema refuses what the service never sends
        samples.add(b'bad', pixels(7), 10, 1, 'live')
    assert samples.count() == 4


def test_net_names():
    names = {new_net_name() for _ in range(1000)}
    assert len(names) == 1000 and all(is_net_name(n) and len(n) == 22 for n in names)
    for bad in ('', 'LIVE', '../etc', 'a' * 21, 'a' * 23, 'a/' * 11, "x' OR 1=1 --abcdefghi",
                None, 3, 'abcdefghijklmnopqrstu\n'):
        assert not is_net_name(bad), bad
    assert is_net_name(LIVE)


def test_every_save_is_a_version_and_old_ones_are_pruned(store):
    for seed in range(1, 6):
        assert store.save_net(LIVE, net(seed), {'validation_accuracy': seed / 10},
                              cause=f'c{seed}', keep=3) == seed
    kept, current = store.versions(LIVE)
    assert current == 5 and [v['version'] for v in kept] == [3, 4, 5]
    assert [v['cause'] for v in kept] == ['c3', 'c4', 'c5']
    assert kept[0]['validation_accuracy'] == 0.3 and kept[0]['epochs'] == 0
    old, meta = store.load_version(LIVE, 3)
    assert weights_digest(old) == weights_digest(net(3)) and meta['version'] == 3
    assert store.load_version(LIVE, 1) is None and store.load_version(LIVE, 9) is None
    # A rollback is a new version holding an old one's net.
    assert store.save_net(LIVE, old, meta, cause='rollback', keep=3) == 6
    assert weights_digest(store.load_live()[0]) == weights_digest(net(3))
    assert store.versions(LIVE)[1] == 6


def test_a_candidate_is_kept_not_current_and_never_pruned_while_current(store):
    """save_net(current=False): a version listed and loadable, the net and its change token
    as they were; pruning counts it, and never deletes the current version."""
    assert store.save_net(LIVE, net(1), {'validation_accuracy': 0.1}, 'c1', keep=3) == 1
    token = store.live_version()
    gate = {'passed': False, 'reason': "it reads MNIST's 4s 13.1 points worse"}
    for seed in (2, 3, 4):  # three candidates the gate held back
        assert store.save_net(LIVE, net(seed), {'promoted': False, 'gate': gate}, 'train',
                              keep=3, current=False) == seed
    assert weights_digest(store.load_live()[0]) == weights_digest(net(1))
    assert store.load_live()[1]['version'] == 1 and store.live_version() == token
    kept, current = store.versions(LIVE)
    assert current == 1 and [v['version'] for v in kept] == [1, 2, 3, 4]  # 1: current
    assert [v['promoted'] for v in kept] == [None, False, False, False]
    assert kept[1]['gate'] == gate and kept[0]['gate'] is None
    candidate, meta = store.load_version(LIVE, 4)
    assert weights_digest(candidate) == weights_digest(net(4)) and meta['promoted'] is False
    # Made current (promote): a new version; now the oldest candidates may go.
    assert store.save_net(LIVE, candidate, {'promoted': True}, 'promote', keep=3) == 5
    assert settled(store, lambda: store.live_version() != token)
    assert weights_digest(store.load_live()[0]) == weights_digest(net(4))
    kept, current = store.versions(LIVE)
    assert current == 5 and [v['version'] for v in kept] == [3, 4, 5]
    # A private net's candidate does not touch the live net, nor the other way round.
    name = new_net_name()
    store.create_net(name, net(6), {}, {'from': 'live'})
    assert store.save_net(name, net(7), {'promoted': False}, 'train', current=False) == 2
    assert weights_digest(store.load_net(name)[0]) == weights_digest(net(6))
    assert store.versions(name)[1] == 1 and store.versions(LIVE)[1] == 5


def test_private_nets_are_apart_from_the_live_net_and_each_other(store):
    store.save_live(net(1), {})
    a, b = new_net_name(), new_net_name()
    assert store.about(a) is None and store.load_net(a) is None
    store.create_net(a, net(2), {'validation_accuracy': None}, {'from': 'fresh', 'creator': 'x'})
    store.create_net(b, net(3), {}, {'from': 'live', 'creator': 'y'})
    with pytest.raises(StoreError):
        store.create_net(a, net(4), {}, {'from': 'fresh'})  # names are never reused
    assert weights_digest(store.load_net(a)[0]) == weights_digest(net(2))
    assert weights_digest(store.load_live()[0]) == weights_digest(net(1))
    assert store.versions(a) == ([store.versions(a)[0][0]], 1)
    assert store.versions(a)[0][0]['cause'] == 'create'
    about = store.about(a)
    assert about['from'] == 'fresh' and about['creator'] == 'x' and about['created']
    listed = {n['net']: n for n in store.list_nets()}
    assert set(listed) == {a, b} and listed[b]['from'] == 'live' and store.count_nets() == 2
    before = store.net_version(a)
    assert store.save_net(a, net(5), {}, 'train') == 2
    assert store.net_version(a) != before
    lock = store.try_lock(a)  # one job per net: another net is not held up
    assert lock is not None and store.try_lock(a) is None
    other = store.try_lock(b)
    assert other is not None and settled(store, lambda: store.locked(a))
    store.release_lock(lock)
    store.release_lock(other)
    store.write_status({'job': 'j', 'status': {'running': False}}, a)
    assert settled(store, lambda: store.read_status(a) is not None)
    assert store.read_status(b) is None and store.read_status() is None
    store.touch(a)
    assert store.delete_net(a) is True and store.delete_net(a) is False
    assert store.about(a) is None and store.load_net(a) is None
    store.touch(a)  # another worker's late writes do not bring it back
    store.write_status({'job': 'late', 'status': {'running': False}}, a)
    assert store.about(a) is None and a not in [n['net'] for n in store.list_nets()]
    assert store.versions(a) == ([], None)
    assert [n['net'] for n in store.list_nets()] == [b] and store.count_nets() == 1
    with pytest.raises(StoreError):
        store.save_net(a, net(6), {}, 'train')  # a deleted net stays deleted
    with pytest.raises(ValueError):
        store.delete_net(LIVE)
    with pytest.raises(ValueError):
        store.load_net('../../etc/passwd')


@pytest.fixture(params=['sqlite', 'postgresql'])
def jobs(request, tmp_path):
    """A fresh training queue of each implementation."""
    if request.param == 'sqlite':
        from service.jobs import SQLiteJobs
        made = SQLiteJobs(tmp_path / 'jobs.sqlite3')
    else:
        from service.jobs import PostgresJobs
        made = PostgresJobs(request.getfixturevalue('database'))
    yield made
    made.close()


def test_the_queue_runs_jobs_in_order_one_per_net(jobs):
    from service.jobs import JobExists, QueueFull
    a = jobs.submit('na', {'epochs': 1}, limit=2)
    b = jobs.submit('nb', {'epochs': 2}, limit=2)
    with pytest.raises(JobExists) as exists:
        jobs.submit('na', {'epochs': 5}, limit=9)  # one queued or running job per net
    assert exists.value.job['id'] == a and exists.value.job['state'] == 'queued'
    with pytest.raises(QueueFull):
        jobs.submit('nc', {'epochs': 1}, limit=2)
    assert jobs.queued() == 2 and [jobs.position(a), jobs.position(b)] == [1, 2]
    first = jobs.claim('runner-1')
    assert first['id'] == a and first['spec'] == {'epochs': 1} and first['attempts'] == 1
    assert jobs.position(a) == 0 and jobs.position(b) == 1
    assert jobs.active('na')['state'] == 'running'
    second = jobs.claim('runner-2')  # never the same job twice
    assert second['id'] == b and jobs.claim('runner-3') is None
    assert jobs.beat(a, 'runner-1') and not jobs.beat(a, 'runner-2')
    jobs.finish(a, {'status': 200, 'epochs': 9}, runner='runner-2')  # not its runner
    assert jobs.get(a)['state'] == 'running'
    jobs.finish(a, {'status': 200, 'epochs': 1}, runner='runner-1')
    assert jobs.get(a)['state'] == 'done' and jobs.get(a)['result'] == {'status': 200,
                                                                         'epochs': 1}
    assert jobs.active('na') is None
    jobs.submit('na', {'epochs': 3}, limit=2)  # its next job may queue now


def test_a_dead_runners_job_is_run_again_then_failed(jobs):
    job = jobs.submit('net', {'epochs': 1}, limit=5)
    assert jobs.claim('dies')['id'] == job
    time.sleep(0.05)
    assert jobs.recover(stale=60) == []  # a runner that beat lately is alive
    jobs.wait(job)  # a request still waits for it: it runs again
    [(again, what)] = jobs.recover(stale=0.04)
    assert again['id'] == job and what == 'queued' and jobs.get(job)['state'] == 'queued'
    assert jobs.claim('dies too')['attempts'] == 2
    jobs.wait(job)
    [(_, what)] = jobs.recover(stale=60, dead=[job])  # known dead: no need to wait
    failed = jobs.get(job)  # two runs are all it gets
    assert what == 'failed' and failed['state'] == 'failed'
    assert failed['result']['status'] == 500 and 'ended (2 time(s))' in failed['result']['error']
    assert not jobs.beat(job, 'dies too')


def test_a_dead_runners_job_nobody_waits_for_is_not_run_again(jobs):
    job = jobs.submit('net', {'epochs': 1}, limit=5)
    jobs.claim('dies')
    time.sleep(0.05)
    [(_, what)] = jobs.recover(stale=0.04)  # its request left long ago
    assert what == 'failed' and jobs.get(job)['state'] == 'failed'
    assert jobs.recover(stale=0.01, dead=[job]) == []  # ended: nothing to take back

"""The training queue: every /train is a job row, run in order by whichever worker (or, with
PostgreSQL, whichever server) has a free training slot.

- ``submit`` queues a job for a net: at most one queued or running job per net (``JobExists``
  with it: the route's 409) and at most ``limit`` queued in all (``QueueFull``: 503).
- A worker with a free slot ``claim``s the oldest queued job (one transaction: two workers
  never take the same job) and ``beat``s it while it runs; ``finish`` stores its answer.
- A runner that dies (a killed worker or server) stops beating: ``recover`` puts its job
  back in the queue, once, if a request still waits for it (the waiting request ``wait``s:
  a waiter's beat), else ends it ``failed`` with a reason, so no job is left "running"
  forever and none runs again for nobody.

``SQLiteJobs`` keeps the rows in the state folder (one machine's workers); ``PostgresJobs``
in the database (every server on it; ``FOR UPDATE SKIP LOCKED``). Every method blocks: the
service calls them in a thread.
"""
import json
import logging
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from .store import StoreError, StoreFull

log = logging.getLogger(__name__)
ATTEMPTS = 2  # runs a job gets before a runner's death ends it failed
DONE_KEPT = 3600.0  # seconds a finished job's answer is kept for its waiting request


class JobExists(Exception):
    """The net has a job queued or running already: ``job`` is it."""

    def __init__(self, job):
        super().__init__(f'job {job["id"]} is {job["state"]}')
        self.job = job


class QueueFull(Exception):
    """``queued`` jobs wait already, the most the queue takes."""

    def __init__(self, queued):
        super().__init__(f'{queued} trainings are queued')
        self.queued = queued


KEYS = ('id', 'net', 'spec', 'state', 'runner', 'attempts', 'created', 'heartbeat', 'result',
        'waited', 'waiter')


def _row(row):
    if row is None:
        return None
    job = dict(zip(KEYS, row))
    job['spec'] = json.loads(job['spec']) if isinstance(job['spec'], str) else job['spec']
    if isinstance(job['result'], str):
        job['result'] = json.loads(job['result'])
    return job


class Jobs:
    """The interface (see the module's docstring). A job is a dict: id, net, spec (what to
    train: JSON), state ('queued', 'running', 'done', 'failed'), runner, attempts, created,
    heartbeat (seconds since the epoch), result (the answer: JSON, with "status")."""

    def submit(self, net, spec, limit, waiter=None):
        """The new job's id; ``waiter``: the worker whose request waits for it."""
        raise NotImplementedError

    def get(self, job_id):
        raise NotImplementedError

    def active(self, net):
        """The net's queued or running job, None when it has none."""
        raise NotImplementedError

    def latest(self, net):
        """The net's newest job, whatever its state (finished ones are kept an hour)."""
        raise NotImplementedError

    def position(self, job_id):
        """1 for the next job to run, 2 after it, ...; 0 when the job is not queued."""
        raise NotImplementedError

    def queued(self):
        """Jobs waiting, in all."""
        raise NotImplementedError

    def claim(self, runner):
        """The oldest queued job, now running by ``runner``; None when none waits."""
        raise NotImplementedError

    def beat(self, job_id, runner):
        """The runner is alive; False when the job is no longer its (it was taken back)."""
        raise NotImplementedError

    def wait(self, job_id, waiter=None):
        """A request of worker ``waiter`` still waits for the job's answer (a waiter's
        beat)."""
        raise NotImplementedError

    def finish(self, job_id, result, failed=False, runner=None):
        """Store a running job's answer; only its ``runner``'s (when given) counts: a runner
        thought dead, whose job was taken back, changes nothing."""
        raise NotImplementedError

    def recover(self, stale, dead=(), gone=None):
        """Running jobs whose runner has not beaten for ``stale`` seconds, or is known dead
        (``dead``: ids): queued again when a request waited for them within ``stale``
        seconds (and its worker is not ``gone(waiter)``) and they ran fewer than ATTEMPTS
        times, else failed. Returns [(job, 'queued' | 'failed')]."""
        raise NotImplementedError

    def close(self):
        pass


class SQLiteJobs(Jobs):
    """The queue in one SQLite file of the state folder, shared by a machine's workers."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        net TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        runner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        heartbeat REAL,
        result TEXT,
        waited REAL,
        waiter TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
    CREATE INDEX IF NOT EXISTS jobs_net ON jobs (net, state);
    """

    def __init__(self, path, connect=True):
        self.path = path
        self._local = threading.local()
        if connect:  # errors show at start-up; else at the first call (then every call)
            self._connect()

    def __repr__(self):
        return f'SQLiteJobs({str(self.path)!r})'

    def _connect(self):
        db = getattr(self._local, 'db', None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute('PRAGMA journal_mode=WAL')
                db.execute('PRAGMA synchronous=NORMAL')  # a lost job is recovered anyway
                db.executescript(self.SCHEMA)
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                raise self._failed(e, 'cannot open the training queue') from e
            self._local.db = db
        return db

    def _failed(self, error, what='the training queue failed'):
        """The StoreError of an sqlite3 error: StoreFull when the disk is full (SQLite says
        so, or, as it may say "disk I/O error" instead, the folder has under a MiB free)."""
        try:
            free = shutil.disk_usage(Path(self.path).parent).free
        except OSError:
            free = None
        if 'full' in str(error) or free is not None and free < 2 ** 20:
            return StoreFull(28, f'the disk holding {self.path} is full')
        return StoreError(0, f'{what} {self.path}: {error}' if what.startswith('cannot')
                          else f'the training queue {self.path} failed: {error}')

    def _write(self, work):
        """``work(db)`` in one write transaction (one writer at a time, across processes)."""
        db = self._connect()
        try:
            db.execute('BEGIN IMMEDIATE')
            try:
                result = work(db)
                db.execute('COMMIT')
                return result
            except BaseException:
                if db.in_transaction:
                    db.execute('ROLLBACK')
                raise
        except sqlite3.Error as e:
            raise self._failed(e) from e

    def _read(self, query, args=()):
        try:
            return self._connect().execute(query, args).fetchone()
        except sqlite3.Error as e:
            raise self._failed(e) from e

    def submit(self, net, spec, limit, waiter=None):
        def work(db):
            active = _row(db.execute(f'SELECT {", ".join(KEYS)} FROM jobs WHERE net = ? AND '
                                     "state IN ('queued', 'running')", (net,)).fetchone())
            if active is not None:
                raise JobExists(active)
            (queued,) = db.execute("SELECT count(*) FROM jobs WHERE state = 'queued'").fetchone()
            if queued >= limit:
                raise QueueFull(queued)
            db.execute('DELETE FROM jobs WHERE state IN (?, ?) AND created < ?',
                       ('done', 'failed', time.time() - DONE_KEPT))
            now = time.time()
            cursor = db.execute("INSERT INTO jobs (net, spec, state, created, waited, waiter) "
                                "VALUES (?, ?, 'queued', ?, ?, ?)",
                                (net, json.dumps(spec), now, now, waiter))
            return cursor.lastrowid
        return self._write(work)

    def get(self, job_id):
        return _row(self._read(f'SELECT {", ".join(KEYS)} FROM jobs WHERE id = ?', (job_id,)))

    def active(self, net):
        return _row(self._read(f'SELECT {", ".join(KEYS)} FROM jobs WHERE net = ? AND state '
                               "IN ('queued', 'running') ORDER BY id LIMIT 1", (net,)))

    def latest(self, net):
        return _row(self._read(f'SELECT {", ".join(KEYS)} FROM jobs WHERE net = ? ORDER BY id '
                               'DESC LIMIT 1', (net,)))

    def position(self, job_id):
        row = self._read("SELECT count(*) FROM jobs WHERE state = 'queued' AND id <= ? AND "
                         "EXISTS (SELECT 1 FROM jobs WHERE id = ? AND state = 'queued')",
                         (job_id, job_id))
        return row[0]

    def queued(self):
        return self._read("SELECT count(*) FROM jobs WHERE state = 'queued'")[0]

    def claim(self, runner):
        def work(db):
            row = db.execute(f'SELECT {", ".join(KEYS)} FROM jobs WHERE state = ? '
                             'ORDER BY id LIMIT 1', ('queued',)).fetchone()
            if row is None:
                return None
            job = _row(row)
            now = time.time()
            db.execute("UPDATE jobs SET state = 'running', runner = ?, heartbeat = ?, "
                       'attempts = attempts + 1 WHERE id = ?', (runner, now, job['id']))
            return {**job, 'state': 'running', 'runner': runner, 'heartbeat': now,
                    'attempts': job['attempts'] + 1}
        return self._write(work)

    def beat(self, job_id, runner):
        return self._write(lambda db: db.execute(
            "UPDATE jobs SET heartbeat = ? WHERE id = ? AND runner = ? AND state = 'running'",
            (time.time(), job_id, runner)).rowcount > 0)

    def wait(self, job_id, waiter=None):
        self._write(lambda db: db.execute('UPDATE jobs SET waited = ?, waiter = ? WHERE id = ?',
                                          (time.time(), waiter, job_id)))

    def finish(self, job_id, result, failed=False, runner=None):
        self._write(lambda db: db.execute(
            "UPDATE jobs SET state = ?, result = ? WHERE id = ? AND state = 'running' AND "
            '(? IS NULL OR runner = ?)',
            ('failed' if failed else 'done', json.dumps(result), job_id, runner, runner)))

    def recover(self, stale, dead=(), gone=None):
        def work(db):
            running = [_row(r) for r in db.execute(
                f'SELECT {", ".join(KEYS)} FROM jobs WHERE state = ?', ('running',))]
            taken = [job for job in running if _dead(job, stale, dead, gone)]
            return [(job, _take_back(db, job, '?', stale, gone)) for job in taken]
        return self._write(work)

    def close(self):
        db = getattr(self._local, 'db', None)
        if db is not None:
            db.close()
            self._local.db = None


def _dead(job, stale, dead, gone, now=None):
    """Whether a running job's runner is dead: silent for ``stale`` seconds, listed in
    ``dead``, or ``gone`` (a process of this machine that ended). ``now``: the queue's
    clock (the database's), seconds since the epoch."""
    now = time.time() if now is None else now
    return (now - (job['heartbeat'] or 0) > stale or job['id'] in dead or
            gone is not None and gone(job['runner']))


def _take_back(db, job, mark, stale, gone=None, table='jobs', now=None):
    """Queue a dead runner's job again when a request still waits for it and it ran fewer
    than ATTEMPTS times, else end it failed."""
    now = time.time() if now is None else now
    waiting = now - (job.get('waited') or 0) < stale and not (
        gone is not None and job.get('waiter') and gone(job['waiter']))
    if job['attempts'] < ATTEMPTS and waiting:
        db.execute(f"UPDATE {table} SET state = 'queued', runner = NULL WHERE id = {mark}",
                   (job['id'],))
        return 'queued'
    result = {'status': 500, 'error': 'the training stopped: the server process running it '
              f'ended ({job["attempts"]} time(s)). The net is its last saved version.'}
    db.execute(f"UPDATE {table} SET state = 'failed', result = {mark} WHERE id = {mark}",
               (json.dumps(result), job['id']))
    return 'failed'


class PostgresJobs(Jobs):
    """The queue in the database (btf_jobs, made by postgres.migrate), shared by every
    server on it. One connection, used by one thread at a time; times are the database's
    clock, so that servers whose clocks differ agree on which runner is stale."""

    NOW = 'extract(epoch FROM clock_timestamp())'

    def __init__(self, url):
        from . import postgres  # psycopg only when used
        self.url, self.pg = url, postgres
        self._conn = None
        self._migrated = False

    def __repr__(self):
        return f'PostgresJobs({self.pg.where(self.url)!r})'

    def _run(self, work):
        """``work(db)`` in one transaction; StoreError when the database cannot be reached
        (the next call connects again)."""
        import psycopg
        try:
            if self._conn is None or self._conn.closed:
                if not self._migrated:  # the table exists, whoever started first
                    self.pg.migrate(self.url)
                    self._migrated = True
                self._conn = psycopg.connect(self.url, **self.pg.CONNECT)
            with self._conn.transaction():
                return work(self._conn)
        except psycopg.Error as e:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise self.pg.unreachable(self.url, e) from e

    def _one(self, query, args=()):
        return self._run(lambda db: db.execute(query, args).fetchone())

    def submit(self, net, spec, limit, waiter=None):
        import psycopg
        from psycopg.types.json import Jsonb

        def work(db):
            # One submit at a time, across servers: the limit holds (and the partial unique
            # index on (net) keeps one active job per net whatever happens).
            db.execute('SELECT pg_advisory_xact_lock(%s)', (self.pg.QUEUE_LOCK,))
            active = self._active(db, net)
            if active is not None:
                raise JobExists(active)
            (queued,) = db.execute("SELECT count(*) FROM btf_jobs WHERE state = 'queued'"
                                   ).fetchone()
            if queued >= limit:
                raise QueueFull(queued)
            db.execute(f"DELETE FROM btf_jobs WHERE state IN ('done', 'failed') AND "
                       f'created < {self.NOW} - %s', (DONE_KEPT,))
            try:
                with db.transaction():
                    (made,) = db.execute(
                        f"INSERT INTO btf_jobs (net, spec, state, created, waited, waiter) "
                        f"VALUES (%s, %s, 'queued', {self.NOW}, {self.NOW}, %s) RETURNING id",
                        (net, Jsonb(spec), waiter)).fetchone()
            except psycopg.errors.UniqueViolation:
                raise JobExists(self._active(db, net)) from None
            return made
        return self._run(work)

    @staticmethod
    def _active(db, net):
        return _row(db.execute(f'SELECT {", ".join(KEYS)} FROM btf_jobs WHERE net = %s AND '
                               "state IN ('queued', 'running') ORDER BY id LIMIT 1",
                               (net,)).fetchone())

    def get(self, job_id):
        return _row(self._one(f'SELECT {", ".join(KEYS)} FROM btf_jobs WHERE id = %s',
                              (job_id,)))

    def active(self, net):
        return self._run(lambda db: self._active(db, net))

    def latest(self, net):
        return _row(self._one(f'SELECT {", ".join(KEYS)} FROM btf_jobs WHERE net = %s ORDER BY '
                              'id DESC LIMIT 1', (net,)))

    def position(self, job_id):
        return self._one("SELECT count(*) FROM btf_jobs WHERE state = 'queued' AND id <= %s "
                         "AND EXISTS (SELECT 1 FROM btf_jobs WHERE id = %s AND "
                         "state = 'queued')", (job_id, job_id))[0]

    def queued(self):
        return self._one("SELECT count(*) FROM btf_jobs WHERE state = 'queued'")[0]

    def claim(self, runner):
        # Servers claiming at once skip each other's locked rows: never the same job twice.
        return _row(self._one(
            f"UPDATE btf_jobs SET state = 'running', runner = %s, heartbeat = {self.NOW}, "
            'attempts = attempts + 1 WHERE id = (SELECT id FROM btf_jobs WHERE state = '
            "'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f'RETURNING {", ".join(KEYS)}', (runner,)))

    def beat(self, job_id, runner):
        return self._run(lambda db: db.execute(
            f'UPDATE btf_jobs SET heartbeat = {self.NOW} WHERE id = %s AND runner = %s AND '
            "state = 'running'", (job_id, runner)).rowcount > 0)

    def wait(self, job_id, waiter=None):
        self._run(lambda db: db.execute(
            f'UPDATE btf_jobs SET waited = {self.NOW}, waiter = %s WHERE id = %s',
            (waiter, job_id)))

    def finish(self, job_id, result, failed=False, runner=None):
        from psycopg.types.json import Jsonb
        self._run(lambda db: db.execute(
            "UPDATE btf_jobs SET state = %s, result = %s WHERE id = %s AND state = 'running' "
            'AND (%s::text IS NULL OR runner = %s)',
            ('failed' if failed else 'done', Jsonb(result), job_id, runner, runner)))

    def recover(self, stale, dead=(), gone=None):
        def work(db):
            now = float(db.execute(f'SELECT {self.NOW}').fetchone()[0])
            running = [_row(r) for r in db.execute(
                f'SELECT {", ".join(KEYS)} FROM btf_jobs WHERE state = %s FOR UPDATE SKIP '
                'LOCKED', ('running',)).fetchall()]
            taken = [job for job in running if _dead(job, stale, dead, gone, now)]
            return [(job, _take_back(db, job, '%s', stale, gone, 'btf_jobs', now))
                    for job in taken]
        return self._run(work)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

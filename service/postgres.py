"""The service's state in PostgreSQL, for several machines acting as one service
(``--database postgresql://...``): the same interfaces as the folder and SQLite stores.

- The live net and its metadata: one row, replaced in a transaction that also NOTIFYs
  ``btf_live``; every server LISTENs, so each reloads at once instead of polling files.
- The one-job lock: a session-level advisory lock on a connection of its own, held for the
  job; PostgreSQL releases it when that session dies (a killed server), and every other server
  sees it gone in pg_locks.
- The training status: one row, NOTIFY ``btf_status`` on every change.
- The samples: a table (SQLite's schema in PostgreSQL's types).
- The schema is created, or migrated, at start-up under an advisory lock.

Nothing on the event loop touches the database: a listener thread keeps the versions and the
status in memory and reconnects by itself (reading the live version again: notifications sent
while it was away are lost), and a new live net is read in a thread (nets.reload_live), tried
again until it is loaded. Every statement has a time limit (STATEMENT_TIMEOUT, LOCK_TIMEOUT).
While the database is unreachable the routes that change state answer 503 (a StoreError)
and predictions go on from memory.
"""
import datetime
import hashlib
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

import better_tensorflow as btf

from .samples import SampleStore
from .store import Store, StoreError, StoreFull

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
JOB_LOCK = 0x627466_01  # advisory lock keys ('btf' 1, 2, 3)
MIGRATION_LOCK = 0x627466_02
SAMPLES_LOCK = 0x627466_03
# Every connection: a stalled database (a lock held, a server that stops answering) fails a
# statement after these many milliseconds instead of holding a thread forever.
STATEMENT_TIMEOUT, LOCK_TIMEOUT = 5000, 2000
CONNECT = {'connect_timeout': 3, 'autocommit': True,
           'options': f'-c statement_timeout={STATEMENT_TIMEOUT} -c lock_timeout={LOCK_TIMEOUT}'}
LOCKED = ("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
          'AND granted')
LOCK_KEY = (JOB_LOCK >> 32, JOB_LOCK & 0xFFFFFFFF)
SCHEMA = """
CREATE TABLE IF NOT EXISTS btf_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS btf_live (
    id integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL,
    net bytea NOT NULL,
    meta jsonb NOT NULL,
    saved timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS btf_status (
    id integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL,
    state jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS btf_samples (
    id bigserial PRIMARY KEY,
    sha256 text NOT NULL UNIQUE,
    label smallint NOT NULL CHECK (label BETWEEN 0 AND 9),
    predicted smallint NOT NULL CHECK (predicted BETWEEN 0 AND 9),
    model text NOT NULL,
    pixels bytea NOT NULL CHECK (length(pixels) = 784),
    original bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS btf_samples_label ON btf_samples (label, id);
"""


def where(url):
    """The URL without its password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f'{info.get("host", "localhost")}:{info.get("port", 5432)}/{info.get("dbname", "")}'


def unreachable(url, error):
    return StoreError(0, f'the database at {where(url)} is unreachable ({str(error)[:120]})')


def net_bytes(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


def net_from(data):
    return btf.Graph.from_file(io.BytesIO(data))


def migrate(url):
    """Create or migrate the schema (once, whichever server starts first)."""
    with psycopg.connect(url, **CONNECT) as conn, conn.transaction():
        conn.execute('SELECT pg_advisory_xact_lock(%s)', (MIGRATION_LOCK,))
        conn.execute(SCHEMA)
        row = conn.execute('SELECT version FROM btf_schema').fetchone()
        if row is None:
            conn.execute('INSERT INTO btf_schema VALUES (%s)', (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise StoreError(0, f'the database at {where(url)} has schema version {row[0]}, '
                                f'newer than this server\'s {SCHEMA_VERSION}: upgrade it')


class PostgresStore(Store):

    def __init__(self, url):
        self.url = url
        self.healthy = False
        self.live_seen = 0  # the newest live net's version known here (NOTIFY btf_live)
        self.status_seen = 0
        self.status = None  # the last status row read
        self._job_locked = False  # whether some server holds the job lock (pg_locks)
        self._loaded = None  # (version, net, meta) of the last net read or saved here
        self._session = None
        self._session_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix='pg-status')  # ordered writes
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, name='pg-listen', daemon=True)

    def __repr__(self):
        return f'PostgresStore({where(self.url)!r})'

    # -- connection upkeep

    def prepare(self, legacy=None):
        try:
            migrate(self.url)
            self.healthy = True
        except psycopg.Error as e:
            log.error('%s; the server starts and keeps trying', unreachable(self.url, e))
        self._listener.start()

    def close(self):
        self._stop.set()
        self._writer.shutdown()
        if self._listener.is_alive():
            self._listener.join(5)
        with self._session_lock:
            if self._session is not None:
                self._session.close()

    def _listen(self):
        """LISTEN for new nets and status changes; reconnect forever with a backoff."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **CONNECT) as conn:
                    conn.execute('LISTEN btf_live')
                    conn.execute('LISTEN btf_status')
                    if not self.healthy:
                        migrate(self.url)
                        log.info('the database at %s is reachable again', where(self.url))
                    self.healthy, delay = True, 0.2
                    self._read_status(conn)  # anything missed while away
                    row = conn.execute('SELECT version FROM btf_live').fetchone()
                    self._saw_live(row[0] if row else 0)
                    while not self._stop.is_set():
                        status = False  # no queries while the generator runs: read after it
                        for note in conn.notifies(timeout=0.25, stop_after=1):
                            if note.channel == 'btf_live':
                                self._saw_live(int(note.payload))
                            else:
                                status = True
                        if status:
                            self._read_status(conn)
                        self._job_locked = bool(conn.execute(LOCKED, LOCK_KEY).fetchone())
            except (psycopg.Error, StoreError) as e:
                if self.healthy:
                    log.error('%s; reconnecting', unreachable(self.url, e))
                self.healthy = False
                self._stop.wait(delay)
                delay = min(2 * delay, 2.0)

    def _saw_live(self, version):
        self.live_seen = max(self.live_seen, version)

    def _read_status(self, conn):
        row = conn.execute('SELECT version, state FROM btf_status').fetchone()
        if row is not None:
            self.status = row[1]
            self.status_seen = row[0]

    def _command(self, query, args=()):
        """One statement on this server's session, failing fast while the database is down."""
        if not self.healthy:
            raise unreachable(self.url, 'no connection')
        with self._session_lock:
            try:
                if self._session is None or self._session.closed:
                    self._session = psycopg.connect(self.url, **CONNECT)
                cursor = self._session.execute(query, args)
                return cursor.fetchall() if cursor.description else []
            except psycopg.Error as e:
                if self._session is not None:
                    self._session.close()
                self._session = None
                raise unreachable(self.url, e) from e

    # -- the live net

    def load_live(self, repair=False):
        if self._loaded is not None and self._loaded[0] == self.live_seen:
            return self._loaded[1], dict(self._loaded[2])
        try:
            rows = self._command('SELECT net, meta, version FROM btf_live')
        except StoreError as e:
            log.error('cannot read the live net: %s', e)
            return None
        if not rows:
            return None
        try:
            net = net_from(bytes(rows[0][0]))
        except (ValueError, OSError, MemoryError) as e:
            log.error('the live net in the database cannot be read (%s)', e)
            if repair:
                try:
                    self._command('DELETE FROM btf_live')
                except StoreError as error:
                    log.error('cannot remove the unreadable live net: %s', error)
            return None
        self._saw_live(rows[0][2])
        self._loaded = rows[0][2], net, rows[0][1]
        return net, dict(rows[0][1])

    def save_live(self, net, meta):
        data = net_bytes(net)
        if not self.healthy:
            raise unreachable(self.url, 'no connection')
        try:
            with psycopg.connect(self.url, **CONNECT) as conn, conn.transaction():
                (version,) = conn.execute(
                    'INSERT INTO btf_live (id, version, net, meta) VALUES (1, 1, %s, %s) '
                    'ON CONFLICT (id) DO UPDATE SET version = btf_live.version + 1, '
                    'net = EXCLUDED.net, meta = EXCLUDED.meta, saved = now() '
                    'RETURNING version', (data, Jsonb(meta))).fetchone()
                conn.execute("SELECT pg_notify('btf_live', %s)", (str(version),))
            self._saw_live(version)
            self._loaded = version, net, meta
        except psycopg.errors.DiskFull as e:
            raise StoreFull(28, f'the database at {where(self.url)} is out of space') from e
        except psycopg.Error as e:
            raise unreachable(self.url, e) from e

    def live_version(self):
        return self.live_seen

    # -- the one-job lock: a session of its own, so that its death releases it

    def try_lock(self):
        if not self.healthy:
            raise unreachable(self.url, 'no connection')
        try:
            conn = psycopg.connect(self.url, **CONNECT)
            (held,) = conn.execute('SELECT pg_try_advisory_lock(%s)', (JOB_LOCK,)).fetchone()
        except psycopg.Error as e:
            raise unreachable(self.url, e) from e
        if not held:
            conn.close()
            return None
        self._job_locked = True  # known here at once; the listener keeps it true for all
        return conn

    def release_lock(self, handle):
        handle.close()  # ends the session, and the lock with it
        self._job_locked = False

    def locked(self):
        # Read by the listener a few times a second: never a query on the event loop. While
        # the database is unreachable nobody can tell: a job is not declared dead.
        return self._job_locked or not self.healthy

    # -- the training status

    def write_status(self, state):
        self._writer.submit(self._write_status, Jsonb(state))

    def _write_status(self, state):
        try:
            self._command('WITH s AS (INSERT INTO btf_status (id, version, state) '
                          'VALUES (1, 1, %s) ON CONFLICT (id) DO UPDATE SET '
                          'version = btf_status.version + 1, state = EXCLUDED.state '
                          'RETURNING version) '
                          "SELECT pg_notify('btf_status', version::text) FROM s", (state,))
        except StoreError as e:
            log.warning('cannot publish the training status: %s', e)

    def read_status(self):
        state = self.status
        return state if isinstance(state, dict) and isinstance(state.get('status'), dict) \
            else None

    def status_version(self):
        return self.status_seen

    def writable(self):
        return None if self.healthy else f'the database at {where(self.url)} is unreachable'


class PostgresSampleStore(SampleStore):
    """The samples in PostgreSQL (called from one thread: a connection of its own)."""

    def __init__(self, url, limit):
        self.url, self.limit = url, limit
        self._conn = None

    def __repr__(self):
        return f'PostgresSampleStore({where(self.url)!r})'

    def _run(self, work):
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, **CONNECT)
            return work(self._conn)
        except psycopg.errors.DiskFull as e:
            raise StoreFull(28, f'the database at {where(self.url)} is out of space') from e
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as e:
            raise StoreError(0, f'the sample store refused it: {e}') from e
        except psycopg.Error as e:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise unreachable(self.url, e) from e

    def add(self, original, pixels, label, predicted, model):
        digest = hashlib.sha256(original).hexdigest()
        keys = ('id', 'label', 'predicted', 'model')

        def work(db):
            with db.transaction():
                db.execute('SELECT pg_advisory_xact_lock(%s)', (SAMPLES_LOCK,))
                row = db.execute('SELECT id, label, predicted, model FROM btf_samples '
                                 'WHERE sha256 = %s', (digest,)).fetchone()
                if row is not None:
                    return dict(zip(keys, row)), False
                (count,) = db.execute('SELECT count(*) FROM btf_samples').fetchone()
                if count >= self.limit:
                    raise StoreFull(28, f'the sample store holds {count} samples, its limit '
                                        '(--max-samples)')
                (made,) = db.execute(
                    'INSERT INTO btf_samples (sha256, label, predicted, model, pixels, original) '
                    'VALUES (%s, %s, %s, %s, %s, %s) RETURNING id',
                    (digest, label, predicted, model, bytes(pixels), bytes(original))).fetchone()
                db.execute("SELECT pg_notify('btf_samples', %s)", (str(made),))
            return dict(zip(keys, (made, label, predicted, model))), True
        return self._run(work)

    def list(self, label=None, offset=0, limit=50):
        where_label, args = ('WHERE label = %s', (label,)) if label is not None else ('', ())

        def work(db):
            (total,) = db.execute(f'SELECT count(*) FROM btf_samples {where_label}',
                                  args).fetchone()
            rows = db.execute(f'SELECT id, label, predicted, model, created FROM btf_samples '
                              f'{where_label} ORDER BY id DESC LIMIT %s OFFSET %s',
                              (*args, limit, offset)).fetchall()
            keys = ('id', 'label', 'predicted', 'model', 'created')
            return total, [dict(zip(keys, (*r[:4], _iso(r[4])))) for r in rows]
        return self._run(work)

    def image(self, sample_id, original=False):
        column = 'original' if original else 'pixels'

        def work(db):
            row = db.execute(f'SELECT {column} FROM btf_samples WHERE id = %s',
                             (sample_id,)).fetchone()
            return None if row is None else bytes(row[0])
        return self._run(work)

    def delete(self, sample_id):
        return self._run(lambda db: db.execute('DELETE FROM btf_samples WHERE id = %s',
                                               (sample_id,)).rowcount > 0)

    def arrays(self):
        def work(db):
            rows = db.execute('SELECT id, label, pixels FROM btf_samples ORDER BY id').fetchall()
            ids = np.array([r[0] for r in rows], np.int64)
            y = np.array([r[1] for r in rows], np.uint8)
            X = np.frombuffer(b''.join(bytes(r[2]) for r in rows), np.uint8).reshape(-1, 784)
            return ids, X, y
        return self._run(work)

    def count(self):
        return self._run(lambda db: db.execute('SELECT count(*) FROM btf_samples').fetchone()[0])

    def close(self):
        if self._conn is not None:
            self._conn.close()


def _iso(moment):
    return moment.astimezone(datetime.UTC).isoformat(timespec='seconds')


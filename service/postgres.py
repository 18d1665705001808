"""The service's state in PostgreSQL, for several machines acting as one service
(``--database postgresql://...``): the same interfaces as the folder and SQLite stores.

- The nets: one row each in ``btf_nets`` (``live`` always there, private nets made by
  create_net), every version of each in ``btf_versions``; a save adds a version and makes it
  current in one transaction that also NOTIFYs ``btf_nets`` (payload: the net's name and
  version, or "-" when deleted). Every server LISTENs, so each knows every net's newest
  version at once instead of polling.
- A net's job lock: a session-level advisory lock (a 64-bit key from the net's name) on a
  connection of its own, held for the job; PostgreSQL releases it when that session dies (a
  killed server), and every other server sees it gone in pg_locks.
- A net's training status: one row per net in ``btf_net_status``, NOTIFY ``btf_status`` (its
  name) on every change; a server keeps the statuses of the nets it was lately asked about.
- The samples and the training queue (jobs.PostgresJobs): tables of their own.
- The schema is created, or migrated, at start-up under an advisory lock.

Nothing on the event loop touches the database: a listener thread keeps the versions, the held
locks and the statuses in memory and reconnects by itself (reading them all again:
notifications sent while it was away are lost), and a new net is read in a thread
(nets.Registry.reload), tried again until it is loaded. Every statement has a time limit
(STATEMENT_TIMEOUT, LOCK_TIMEOUT). While the database is unreachable the routes that change
state answer 503 (a StoreError) and predictions go on from memory.
"""
import datetime
import errno
import hashlib
import io
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

import better_tensorflow as btf

from .samples import (
    JUDGED,
    VERDICTS,
    SampleStore,
    digest_of,
    held_condition,
    judged,
    newest_rows,
    visible,
)
from .store import (
    LIVE,
    Store,
    StoreError,
    StoreFull,
    _check_name,
    version_record,
    version_summary,
)

log = logging.getLogger(__name__)
SCHEMA_VERSION = 3  # 1: one live net (btf_live, btf_status); 2: many nets, versions, jobs;
#                    3: samples judged, reviewed, identified by their pixels
# Advisory lock keys ('btf' 2, 3, 4; 1 was the one job lock of schema 1; nets' are lock_key's)
MIGRATION_LOCK = 0x627466_02
SAMPLES_LOCK = 0x627466_03
QUEUE_LOCK = 0x627466_04
STATUSES_KEPT = 256  # nets whose training status a server follows: the latest asked about
# Every connection: a stalled database (a lock held, a server that stops answering) fails a
# statement after these many milliseconds instead of holding a thread forever.
STATEMENT_TIMEOUT, LOCK_TIMEOUT = 5000, 2000
CONNECT = {'connect_timeout': 3, 'autocommit': True,
           'options': f'-c statement_timeout={STATEMENT_TIMEOUT} -c lock_timeout={LOCK_TIMEOUT}'}
HELD = ("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE "
        "locktype = 'advisory' AND objsubid = 1 AND granted")  # the bigint keys held
SCHEMA = """
CREATE TABLE IF NOT EXISTS btf_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS btf_nets (
    name text PRIMARY KEY,
    about jsonb NOT NULL DEFAULT '{}',
    created timestamptz NOT NULL DEFAULT now(),
    last_used timestamptz NOT NULL DEFAULT now(),
    current bigint);
CREATE TABLE IF NOT EXISTS btf_versions (
    name text NOT NULL REFERENCES btf_nets ON DELETE CASCADE,
    version bigint NOT NULL,
    net bytea NOT NULL,
    meta jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS btf_net_status (
    name text PRIMARY KEY REFERENCES btf_nets ON DELETE CASCADE,
    version bigint NOT NULL,
    state jsonb NOT NULL);
INSERT INTO btf_nets (name) VALUES ('live') ON CONFLICT DO NOTHING;
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
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS net text NOT NULL DEFAULT 'live';
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS shared boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS btf_samples_net ON btf_samples (net, id);
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS judged_suspect boolean NOT NULL DEFAULT false;
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS reads_as smallint;
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS label_p real;
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS reads_p real;
ALTER TABLE btf_samples ADD COLUMN IF NOT EXISTS review text
    CHECK (review IN ('approved', 'rejected'));
CREATE TABLE IF NOT EXISTS btf_jobs (
    id bigserial PRIMARY KEY,
    net text NOT NULL,
    spec jsonb NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    runner text,
    attempts integer NOT NULL DEFAULT 0,
    created double precision NOT NULL,
    heartbeat double precision,
    result jsonb,
    waited double precision,
    waiter text);
ALTER TABLE btf_jobs ADD COLUMN IF NOT EXISTS waited double precision;
ALTER TABLE btf_jobs ADD COLUMN IF NOT EXISTS waiter text;
CREATE INDEX IF NOT EXISTS btf_jobs_state ON btf_jobs (state, id);
CREATE UNIQUE INDEX IF NOT EXISTS btf_jobs_one_per_net ON btf_jobs (net)
    WHERE state IN ('queued', 'running');
"""


def where(url):
    """The URL without its password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f'{info.get("host", "localhost")}:{info.get("port", 5432)}/{info.get("dbname", "")}'


def unreachable(url, error):
    return StoreError(0, f'the database at {where(url)} is unreachable ({str(error)[:120]})')


def out_of_space(url):
    return StoreFull(errno.ENOSPC, f'the database at {where(url)} is out of space')


def net_bytes(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


def net_from(data):
    return btf.Graph.from_file(io.BytesIO(data))


def lock_key(name):
    """A net's job lock: a bigint advisory lock key. 64 bits, not hashtext()'s 32, so that two
    nets practically never share one; computed here so that pg_locks tells which net's lock
    is held."""
    return int.from_bytes(hashlib.sha256(b'btf-job\0' + name.encode()).digest()[:8], 'big',
                          signed=True)


def migrate(url):
    """Create or migrate the schema (once, whichever server starts first)."""
    with psycopg.connect(url, **CONNECT) as conn, conn.transaction():
        conn.execute('SELECT pg_advisory_xact_lock(%s)', (MIGRATION_LOCK,))
        conn.execute('CREATE TABLE IF NOT EXISTS btf_schema (version integer NOT NULL)')
        row = conn.execute('SELECT version FROM btf_schema').fetchone()
        if row is not None and row[0] > SCHEMA_VERSION:
            raise StoreError(0, f'the database at {where(url)} has schema version {row[0]}, '
                                f'newer than this server\'s {SCHEMA_VERSION}: upgrade it')
        if row is not None and row[0] == SCHEMA_VERSION:
            return
        conn.execute(SCHEMA)
        if row is None:
            conn.execute('INSERT INTO btf_schema VALUES (%s)', (SCHEMA_VERSION,))
        else:
            if row[0] < 2:
                _from_one_net(conn)
            if row[0] < 3:
                _identify_by_pixels(conn)
            conn.execute('UPDATE btf_schema SET version = %s', (SCHEMA_VERSION,))
            log.warning('migrated the database at %s from schema version %d to %d', where(url),
                        row[0], SCHEMA_VERSION)


# A sample's identity (samples.digest_of) computed by the database: its pixels, per net.
PIXEL_DIGEST = ("encode(sha256(CASE WHEN net = 'live' THEN pixels ELSE "
                "convert_to(net, 'UTF8') || '\\x00'::bytea || pixels END), 'hex')")


def _identify_by_pixels(conn):
    """Schema 2 to 3: samples identified by their bytes get their pixels' identity (the later
    of two rows with the same pixels and net goes: it was the same drawing)."""
    gone = conn.execute('DELETE FROM btf_samples s WHERE EXISTS (SELECT 1 FROM btf_samples t '
                        'WHERE t.id < s.id AND t.net = s.net AND t.pixels = s.pixels)').rowcount
    conn.execute('UPDATE btf_samples SET sha256 = sha256 || \'-old\'')  # no clash midway
    kept = conn.execute(f'UPDATE btf_samples SET sha256 = {PIXEL_DIGEST}').rowcount
    if kept or gone:
        log.warning('samples identified by their pixels now: %d kept, %d duplicates deleted',
                    kept, gone)


def _from_one_net(conn):
    """Schema 1 to 2: the one live net (btf_live) becomes version 1 of the net 'live', its
    training status (btf_status) the live net's; the old tables go."""
    if conn.execute("SELECT to_regclass('btf_live')").fetchone()[0] is not None:
        old = conn.execute('SELECT net, meta, saved FROM btf_live').fetchone()
        if old is not None:
            data, meta, saved = bytes(old[0]), dict(old[1] or {}), old[2]
            try:
                net = net_from(data)
                record = version_record(net, meta, 1, 'migrated')
            except (ValueError, OSError, MemoryError) as e:  # kept: load_net sets it aside
                log.error('the live net of schema version 1 cannot be read (%s)', e)
                record = {**meta, 'version': 1, 'cause': 'migrated'}
            record['created'] = _iso(saved)
            conn.execute('INSERT INTO btf_versions (name, version, net, meta, created) VALUES '
                         '(%s, 1, %s, %s, %s) ON CONFLICT DO NOTHING',
                         (LIVE, data, Jsonb(record), saved))
            conn.execute('UPDATE btf_nets SET current = 1 WHERE name = %s', (LIVE,))
        conn.execute('DROP TABLE btf_live')
    if conn.execute("SELECT to_regclass('btf_status')").fetchone()[0] is not None:
        conn.execute('INSERT INTO btf_net_status (name, version, state) '
                     'SELECT %s, version, state FROM btf_status ON CONFLICT DO NOTHING', (LIVE,))
        conn.execute('DROP TABLE btf_status')


class Lock:
    """A held job lock: the session holding it, and the net's key."""

    def __init__(self, conn, key):
        self.conn, self.key = conn, key


class PostgresStore(Store):

    def __init__(self, url):
        self.url = url
        self.healthy = False
        self._memory = threading.Lock()  # guards what the listener and callers share:
        self._versions = {}  # name -> the newest version known here (NOTIFY btf_nets)
        self._held = set()  # the job locks' keys held by any server (pg_locks)
        self._mine = set()  # the keys held here, known before the listener's next look
        self._statuses = OrderedDict()  # name -> (row version, state, token), latest last
        self._unread = set()  # names asked about whose status the listener has to read
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
        except (psycopg.Error, StoreError) as e:
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
        """LISTEN for new versions and status changes; reconnect forever with a backoff."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **CONNECT) as conn:
                    conn.execute('LISTEN btf_nets')
                    conn.execute('LISTEN btf_status')
                    if not self.healthy:
                        migrate(self.url)
                        log.info('the database at %s is reachable again', where(self.url))
                    self.healthy, delay = True, 0.2
                    # Anything missed while away: notifications are not kept for us.
                    self._read_versions(conn)
                    with self._memory:
                        self._unread.update(self._statuses)
                    while not self._stop.is_set():
                        changed = set()  # no queries while the generator runs: read after it
                        for note in conn.notifies(timeout=0.25, stop_after=1):
                            if note.channel == 'btf_nets':
                                self._saw(*note.payload.rsplit(' ', 1))
                            else:
                                changed.add(note.payload)
                        with self._memory:
                            changed = {n for n in changed if n in self._statuses}
                            first, self._unread = self._unread - changed, set()
                        if changed or first:
                            self._read_statuses(conn, changed, first)
                        held = {row[0] for row in conn.execute(HELD)}
                        self._held = {k - 2 ** 64 if k >= 2 ** 63 else k for k in held}
            except (psycopg.Error, StoreError) as e:
                if self.healthy:
                    log.error('%s; reconnecting', unreachable(self.url, e))
                self.healthy = False
                with self._memory:
                    self._unread.update(self._statuses)
                self._stop.wait(delay)
                delay = min(2 * delay, 2.0)

    def _read_versions(self, conn):
        found = dict(conn.execute('SELECT name, coalesce(current, 0) FROM btf_nets').fetchall())
        with self._memory:
            # A version saved here after that read is newer; a net gone from it was deleted
            # (one made since is announced: LISTEN came first).
            self._versions = {name: max(version, self._versions.get(name, 0))
                              for name, version in found.items()}

    def _saw(self, name, version):
        """A net's newest version (``-``: deleted), as announced or saved."""
        with self._memory:
            if version == '-':
                self._versions.pop(name, None)
            else:
                self._versions[name] = max(int(version), self._versions.get(name, 0))

    def _read_statuses(self, conn, changed, first=()):
        """Read the statuses of followed nets: ``changed`` ones (announced), and ``first``
        ones, asked about since the last read (or missed while away)."""
        names = [*changed, *first]
        rows = conn.execute('SELECT name, version, state FROM btf_net_status '
                            'WHERE name = ANY(%s)', (names,)).fetchall()
        found = {name: (version, state) for name, version, state in rows}
        for name in names:
            self._keep_status(name, *found.get(name, (0, None)), name in changed)

    def _keep_status(self, name, version, state, changed=False):
        """A followed net's status as read or written. Its token changes when it replaces
        one known here, or a change of it was announced; the first one read is no change
        (it was there before we asked)."""
        with self._memory:
            known = self._statuses.get(name)
            if known is None or known[0] is not None and known[0] >= version:
                return
            changed = changed or known[0] is not None
            self._statuses[name] = version, state, known[2] + changed

    def _followed(self, name):
        """(row version, state, token) of a net's status; a net not asked about lately is
        followed from now on (its status is read by the listener, moments later)."""
        _check_name(name)
        with self._memory:
            found = self._statuses.get(name)
            if found is None:
                found = self._statuses[name] = None, None, 0
                self._unread.add(name)
                while len(self._statuses) > STATUSES_KEPT:
                    self._statuses.popitem(last=False)
            else:
                self._statuses.move_to_end(name)
            return found

    def _run(self, work, transaction=False):
        """``work(conn)`` on this server's session (one caller at a time), in a transaction
        if asked; failing fast while the database is down."""
        if not self.healthy:
            raise unreachable(self.url, 'no connection')
        with self._session_lock:
            try:
                if self._session is None or self._session.closed:
                    self._session = psycopg.connect(self.url, **CONNECT)
                if not transaction:
                    return work(self._session)
                with self._session.transaction():
                    return work(self._session)
            except psycopg.errors.DiskFull as e:
                raise out_of_space(self.url) from e
            except psycopg.errors.IntegrityError:
                raise  # the statement's fault, not the connection's: the caller says why
            except psycopg.Error as e:
                if self._session is not None:
                    self._session.close()
                self._session = None
                raise unreachable(self.url, e) from e

    def _command(self, query, args=()):
        """One statement; its rows."""
        def work(conn):
            cursor = conn.execute(query, args)
            return cursor.fetchall() if cursor.description else []
        return self._run(work)

    # -- the nets and their versions

    def load_net(self, name, repair=False):
        _check_name(name)
        try:
            rows = self._command(
                'SELECT v.net, v.meta, v.version FROM btf_nets n JOIN btf_versions v ON '
                'v.name = n.name AND v.version = n.current WHERE n.name = %s', (name,))
        except StoreError as e:
            log.error('cannot read net %s: %s', name, e)
            return None
        if not rows:
            return None
        data, meta, version = rows[0]
        try:
            net = net_from(bytes(data))
        except (ValueError, OSError, MemoryError) as e:
            if not repair:
                log.error('net %s: version %d in the database cannot be read (%s)', name,
                          version, e)
                return None
            try:  # set aside: kept, no longer current; the next save is a new version
                self._command('UPDATE btf_nets SET current = NULL WHERE name = %s AND '
                              'current = %s', (name, version))
                log.error('net %s: version %d in the database cannot be read (%s); it is no '
                          'longer current, and the net starts anew', name, version, e)
            except StoreError as error:
                log.error('net %s: version %d cannot be read (%s), nor set aside (%s)', name,
                          version, e, error)
            return None
        self._saw(name, version)
        meta = dict(meta)
        meta.pop('digest', None)
        return net, meta

    def save_net(self, name, net, meta, cause='save', keep=None, current=True):
        _check_name(name)
        data = net_bytes(net)
        try:
            version = self._run(lambda conn: self._save(conn, name, net, data, meta, cause,
                                                        keep, current), transaction=True)
        except psycopg.errors.IntegrityError as e:
            raise StoreError(0, f'the database refused the new version: {e}') from e
        if current:
            self._saw(name, version)
        return version

    def _save(self, conn, name, net, data, meta, cause, keep, current=True):
        """In a transaction: a new version of the net, current unless not ``current``
        (then nobody is notified: the net did not change); its number."""
        # The net's row, locked: two servers' saves of a net are one after the other.
        if conn.execute('SELECT 1 FROM btf_nets WHERE name = %s FOR UPDATE',
                        (name,)).fetchone() is None:
            raise StoreError(errno.ENOENT, f'there is no net {name!r}')
        (version,) = conn.execute('SELECT coalesce(max(version), 0) + 1 FROM btf_versions '
                                  'WHERE name = %s', (name,)).fetchone()
        record = version_record(net, meta, version, cause)
        conn.execute('INSERT INTO btf_versions (name, version, net, meta) VALUES '
                     '(%s, %s, %s, %s)', (name, version, data, Jsonb(record)))
        if current:
            conn.execute('UPDATE btf_nets SET current = %s WHERE name = %s', (version, name))
        if keep is not None:  # never the current version
            conn.execute('DELETE FROM btf_versions WHERE name = %s AND version <= %s AND '
                         'version IS DISTINCT FROM (SELECT current FROM btf_nets WHERE '
                         'name = %s)', (name, version - keep, name))
        if current:
            conn.execute("SELECT pg_notify('btf_nets', %s)", (f'{name} {version}',))
        return version

    def net_version(self, name):
        return self._versions.get(name)

    def versions(self, name):
        _check_name(name)

        def work(conn):
            kept = conn.execute('SELECT meta FROM btf_versions WHERE name = %s ORDER BY '
                                'version', (name,)).fetchall()
            current = conn.execute('SELECT current FROM btf_nets WHERE name = %s',
                                   (name,)).fetchone()
            return [version_summary(row[0]) for row in kept], current and current[0]
        return self._run(work, transaction=True)

    def load_version(self, name, version):
        _check_name(name)
        rows = self._command('SELECT net, meta FROM btf_versions WHERE name = %s AND '
                             'version = %s', (name, int(version)))
        if not rows:
            return None
        try:
            net = net_from(bytes(rows[0][0]))
        except (ValueError, OSError, MemoryError) as e:
            log.error('cannot read version %s of net %s (%s)', version, name, e)
            return None
        record = dict(rows[0][1])
        record.pop('digest', None)
        return net, record

    def create_net(self, name, net, meta, about):
        if name == LIVE:
            raise ValueError('the live net is not created: it is always there')
        _check_name(name)
        data = net_bytes(net)

        def work(conn):
            conn.execute('INSERT INTO btf_nets (name, about) VALUES (%s, %s)',
                         (name, Jsonb(about)))
            return self._save(conn, name, net, data, meta, 'create', None)
        try:
            version = self._run(work, transaction=True)
        except psycopg.errors.UniqueViolation:
            raise StoreError(errno.EEXIST, f'a net named {name!r} exists already') from None
        except psycopg.errors.IntegrityError as e:
            raise StoreError(0, f'the database refused the net: {e}') from e
        self._saw(name, version)

    def about(self, name):
        _check_name(name)
        if name == LIVE:
            return None
        rows = self._command('SELECT about, created, last_used FROM btf_nets WHERE name = %s',
                             (name,))
        if not rows:
            return None
        about, created, last_used = rows[0]
        return {**about, 'created': _iso(created), 'last_used': _iso(last_used)}

    def list_nets(self):
        rows = self._command(
            'SELECT n.name, n.about, n.created, n.last_used, v.meta -> \'version\', '
            "v.meta -> 'sizes' FROM btf_nets n LEFT JOIN btf_versions v ON v.name = n.name "
            'AND v.version = n.current WHERE n.name <> %s ORDER BY n.name', (LIVE,))
        return [{'net': name, **about, 'created': _iso(created), 'last_used': _iso(used),
                 'version': version, 'sizes': sizes}
                for name, about, created, used, version, sizes in rows]

    def count_nets(self):
        return self._command('SELECT count(*) FROM btf_nets WHERE name <> %s', (LIVE,))[0][0]

    def delete_net(self, name):
        if name == LIVE:
            raise ValueError('the live net cannot be deleted')
        _check_name(name)

        def work(conn):
            gone = conn.execute('DELETE FROM btf_nets WHERE name = %s', (name,)).rowcount > 0
            if gone:
                conn.execute("SELECT pg_notify('btf_nets', %s)", (f'{name} -',))
            return gone
        gone = self._run(work, transaction=True)
        if gone:
            self._saw(name, '-')
        return gone

    def touch(self, name):
        _check_name(name)
        try:
            self._command('UPDATE btf_nets SET last_used = now() WHERE name = %s', (name,))
        except StoreError as e:
            log.warning('cannot record the use of a net: %s', e)

    # -- a net's job lock: a session of its own, so that its death releases it

    def try_lock(self, name=LIVE):
        _check_name(name)
        if not self.healthy:
            raise unreachable(self.url, 'no connection')
        key = lock_key(name)
        try:
            conn = psycopg.connect(self.url, **CONNECT)
        except psycopg.Error as e:
            raise unreachable(self.url, e) from e
        try:
            (held,) = conn.execute('SELECT pg_try_advisory_lock(%s)', (key,)).fetchone()
        except psycopg.Error as e:
            conn.close()
            raise unreachable(self.url, e) from e
        if not held:
            conn.close()
            return None
        with self._memory:
            self._mine.add(key)  # known here at once; the listener's look tells the others
        return Lock(conn, key)

    def release_lock(self, handle):
        handle.conn.close()  # ends the session, and the lock with it
        with self._memory:
            self._mine.discard(handle.key)
            self._held = self._held - {handle.key}

    def locked(self, name=LIVE):
        # Read by the listener a few times a second: never a query on the event loop. While
        # the database is unreachable nobody can tell: a job is not declared dead.
        key = lock_key(name)
        return key in self._held or key in self._mine or not self.healthy

    # -- a net's training status

    def write_status(self, state, name=LIVE):
        _check_name(name)
        self._writer.submit(self._write_status, name, state)

    def _write_status(self, name, state):
        try:
            rows = self._command(
                'WITH s AS (INSERT INTO btf_net_status (name, version, state) '
                'VALUES (%s, 1, %s) ON CONFLICT (name) DO UPDATE SET '
                'version = btf_net_status.version + 1, state = EXCLUDED.state '
                'RETURNING version) '
                "SELECT version, pg_notify('btf_status', %s) FROM s",
                (name, Jsonb(state), name))
        except (StoreError, psycopg.errors.IntegrityError) as e:  # e.g. a net deleted since
            log.warning('cannot publish the training status of net %s: %s', name, e)
            return
        self._followed(name)
        self._keep_status(name, rows[0][0], state, changed=True)

    def read_status(self, name=LIVE):
        state = self._followed(name)[1]
        return state if isinstance(state, dict) and isinstance(state.get('status'), dict) \
            else None

    def status_version(self, name=LIVE):
        return self._followed(name)[2]

    def writable(self):
        return None if self.healthy else f'the database at {where(self.url)} is unreachable'


class PostgresSampleStore(SampleStore):
    """The samples in PostgreSQL (called from one thread: a connection of its own)."""

    KEYS = ('id', 'label', 'predicted', 'model', 'shared', *JUDGED)
    ROW = ', '.join(KEYS)

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
            raise out_of_space(self.url) from e
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as e:
            raise StoreError(0, f'the sample store refused it: {e}') from e
        except psycopg.Error as e:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise unreachable(self.url, e) from e

    def _row(self, row):
        out = dict(zip(self.KEYS, row))
        for name in ('label_p', 'reads_p'):  # real: as the SQLite store rounds them
            if out[name] is not None:
                out[name] = round(out[name], 4)
        return out

    def add(self, original, pixels, label, predicted, model, net=LIVE, shared=False,
            judgement=None):
        digest = digest_of(pixels, net)
        verdict = judged(judgement)

        def work(db):
            with db.transaction():
                db.execute('SELECT pg_advisory_xact_lock(%s)', (SAMPLES_LOCK,))
                row = db.execute(f'SELECT {self.ROW} FROM btf_samples WHERE sha256 = %s',
                                 (digest,)).fetchone()
                if row is not None:
                    return self._row(row), False
                (count,) = db.execute('SELECT count(*) FROM btf_samples').fetchone()
                if count >= self.limit:
                    raise StoreFull(errno.ENOSPC, f'the sample store holds {count} samples, '
                                                  'its limit (--max-samples)')
                (made,) = db.execute(
                    'INSERT INTO btf_samples (sha256, label, predicted, model, pixels, original, '
                    'net, shared, judged_suspect, reads_as, label_p, reads_p) VALUES (%s, %s, '
                    '%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id',
                    (digest, label, predicted, model, bytes(pixels), bytes(original), net,
                     bool(shared), *verdict)).fetchone()
            return self._row((made, label, predicted, model, bool(shared), *verdict,
                              None)), True
        return self._run(work)

    def list(self, label=None, offset=0, limit=50, net=LIVE, held=None):
        condition, args = visible(net, '%s')
        condition += held_condition(held)
        if label is not None:
            condition, args = f'{condition} AND label = %s', (*args, label)

        def work(db):
            (total,) = db.execute(f'SELECT count(*) FROM btf_samples WHERE {condition}',
                                  args).fetchone()
            rows = db.execute(f'SELECT {self.ROW}, created FROM btf_samples WHERE {condition} '
                              'ORDER BY id DESC LIMIT %s OFFSET %s',
                              (*args, limit, offset)).fetchall()
            return total, [{**self._row(r[:-1]), 'created': _iso(r[-1])} for r in rows]
        return self._run(work)

    def judge(self, rows):
        def work(db):
            with db.cursor() as cursor:
                cursor.executemany(
                    'UPDATE btf_samples SET judged_suspect = %s, reads_as = %s, label_p = %s, '
                    'reads_p = %s WHERE id = %s',
                    [(bool(s), r, lp, rp, i) for i, s, r, lp, rp in rows])
            return len(rows)
        return self._run(work)

    def review(self, sample_id, verdict):
        condition, args = visible(LIVE, '%s')

        def work(db):
            row = db.execute(f'UPDATE btf_samples SET review = %s WHERE id = %s AND {condition} '
                             f'RETURNING {self.ROW}, created',
                             (VERDICTS[verdict], sample_id, *args)).fetchone()
            return None if row is None else {**self._row(row[:-1]), 'created': _iso(row[-1])}
        return self._run(work)

    def image(self, sample_id, original=False, net=LIVE):
        column = 'original' if original else 'pixels'
        condition, args = visible(net, '%s')

        def work(db):
            row = db.execute(f'SELECT {column} FROM btf_samples WHERE id = %s AND {condition}',
                             (sample_id, *args)).fetchone()
            return None if row is None else bytes(row[0])
        return self._run(work)

    def delete(self, sample_id, net=LIVE):
        condition, args = visible(net, '%s')
        return self._run(lambda db: db.execute(
            f'DELETE FROM btf_samples WHERE id = %s AND {condition}',
            (sample_id, *args)).rowcount > 0)

    def share(self, sample_id, net, shared):
        return self._run(lambda db: db.execute(
            'UPDATE btf_samples SET shared = %s WHERE id = %s AND net = %s',
            (bool(shared), sample_id, net)).rowcount > 0)

    def delete_net(self, net):
        return self._run(lambda db: db.execute('DELETE FROM btf_samples WHERE net = %s',
                                               (net,)).rowcount)

    def arrays(self, net=LIVE, held=None, newest=None):
        condition, args = visible(net, '%s')
        condition += held_condition(held)
        last = newest_rows(newest, '%s')

        def work(db):
            rows = db.execute(f'SELECT id, label, pixels FROM btf_samples WHERE {condition} '
                              f'{last}', args + ((newest,) if newest else ())).fetchall()
            rows.sort(key=lambda r: r[0])
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

"""Users' corrected drawings: the sample store.

``SampleStore`` is the interface (a database server can stand behind it; tests/test_store.py
is its contract); ``SQLiteSampleStore`` keeps the samples in one SQLite file in the state
folder (the standard library's sqlite3, WAL journal, every commit synced to disk), shared by
every worker of the machine: a sample is seen by all as soon as its insert commits, and a
process killed mid-insert leaves no half-written row.

A sample is the image as submitted, less what imaging.strip_metadata leaves out (a PNG's
text, profile and other chunks; its sha256 makes a second post of the same image to the same
net the same sample), the 28x28 uint8 image the net sees, the label the user gave, what the
net read when it was stored, and the net it was kept with: the live net's own, or a private
net's. A private net's drawing is its owner's alone unless shared: the live net sees (lists,
trains on) its own drawings and the shared ones. Every fifth sample by id (id % 5 == 0) is
never trained on: those are the samples' validation set.
"""
import datetime
import hashlib
import logging
import sqlite3
import threading

import numpy as np

from preprocess import is_sample_validation as is_validation  # noqa: F401  one rule for all

from .errors import Unavailable, store_call
from .store import LIVE, StoreError, StoreFull

log = logging.getLogger(__name__)


def digest_of(original, net):
    """A sample's identity: its bytes, per net (the live net's as before nets had names)."""
    return hashlib.sha256(original if net == LIVE else
                          net.encode() + b'\0' + original).hexdigest()


def visible(net, mark):
    """(SQL condition, arguments) of the samples ``net`` sees; ``mark`` the driver's
    placeholder."""
    if net == LIVE:
        return f'(net = {mark} OR shared)', (LIVE,)
    return f'net = {mark}', (net,)


class SampleStore:
    """The interface; every method may raise StoreError (StoreFull at the limit). ``net``:
    the net the samples belong to (``live`` sees its own and the shared ones)."""

    def add(self, original, pixels, label, predicted, model, net=LIVE, shared=False):
        """Store a sample: ``original`` bytes, ``pixels`` (784,) uint8, ``label`` 0..9, what
        ``model`` read (``predicted``), kept with ``net`` (shared with the live net or not).
        Returns ({id, label, predicted, model, shared}, created); created is False when the
        same original bytes were stored with that net before: that sample is returned and
        nothing changes."""
        raise NotImplementedError

    def list(self, label=None, offset=0, limit=50, net=LIVE):
        """(total matching, [{id, label, predicted, model, created, shared}] newest first)."""
        raise NotImplementedError

    def image(self, sample_id, original=False, net=LIVE):
        """The 784 pixels (bytes) or the original bytes of a sample; None if unknown."""
        raise NotImplementedError

    def delete(self, sample_id, net=LIVE):
        """Whether a sample was deleted."""
        raise NotImplementedError

    def share(self, sample_id, net, shared):
        """Share a private net's sample with the live net (or stop); whether it is the net's."""
        raise NotImplementedError

    def delete_net(self, net):
        """Delete every sample kept with a private net; how many."""
        raise NotImplementedError

    def arrays(self, net=LIVE):
        """(ids (n,), X (n, 784) uint8, y (n,) uint8) of every sample, oldest first."""
        raise NotImplementedError

    def count(self):
        raise NotImplementedError

    def close(self):
        pass


class SQLiteSampleStore(SampleStore):

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL UNIQUE,
        label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
        predicted INTEGER NOT NULL CHECK (predicted BETWEEN 0 AND 9),
        model TEXT NOT NULL,
        pixels BLOB NOT NULL CHECK (length(pixels) = 784),
        original BLOB NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS samples_label ON samples (label, id);
    """
    # Added when nets got names: the net a sample was kept with, and whether it is shared.
    COLUMNS = {'net': "TEXT NOT NULL DEFAULT 'live'", 'shared': 'INTEGER NOT NULL DEFAULT 0'}

    def __init__(self, path, limit):
        self.path, self.limit = path, limit
        self._local = threading.local()  # one connection per thread
        self._connect()  # creates the file and the schema now, so errors show at start-up

    def __repr__(self):
        return f'SQLiteSampleStore({str(self.path)!r})'

    def _connect(self):
        db = getattr(self._local, 'db', None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute('PRAGMA journal_mode=WAL')
                db.execute('PRAGMA synchronous=FULL')  # a commit is on disk when it returns
                db.executescript(self.SCHEMA)
                have = {row[1] for row in db.execute('PRAGMA table_info(samples)')}
                for name, kind in self.COLUMNS.items():
                    if name not in have:
                        db.execute(f'ALTER TABLE samples ADD COLUMN {name} {kind}')
                db.execute('CREATE INDEX IF NOT EXISTS samples_net ON samples (net, id)')
            except sqlite3.Error as e:
                raise StoreError(0, f'cannot open the sample store {self.path}: {e}') from e
            self._local.db = db
        return db

    def _run(self, work):
        try:
            return work(self._connect())
        except sqlite3.OperationalError as e:
            if 'full' in str(e):
                raise StoreFull(28, f'the disk holding {self.path} is full') from e
            raise StoreError(0, f'the sample store {self.path} failed: {e}') from e
        except sqlite3.Error as e:  # e.g. a row the schema refuses
            raise StoreError(0, f'the sample store {self.path} refused it: {e}') from e

    def add(self, original, pixels, label, predicted, model, net=LIVE, shared=False):
        digest = digest_of(original, net)
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
        keys = ('id', 'label', 'predicted', 'model', 'shared')

        def work(db):
            db.execute('BEGIN IMMEDIATE')  # one writer at a time, across processes
            try:
                row = db.execute('SELECT id, label, predicted, model, shared FROM samples '
                                 'WHERE sha256 = ?', (digest,)).fetchone()
                if row is not None:
                    db.execute('COMMIT')
                    return {**dict(zip(keys, row)), 'shared': bool(row[4])}, False
                (count,) = db.execute('SELECT count(*) FROM samples').fetchone()
                if count >= self.limit:
                    db.execute('ROLLBACK')
                    raise StoreFull(28, f'the sample store holds {count} samples, its limit '
                                        '(--max-samples)')
                cursor = db.execute(
                    'INSERT INTO samples (sha256, label, predicted, model, pixels, original, '
                    'created, net, shared) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (digest, label, predicted, model, bytes(pixels), bytes(original), created,
                     net, int(bool(shared))))
                db.execute('COMMIT')
                return {'id': cursor.lastrowid, 'label': label, 'predicted': predicted,
                        'model': model, 'shared': bool(shared)}, True
            except BaseException:
                if db.in_transaction:
                    db.execute('ROLLBACK')
                raise
        return self._run(work)

    def list(self, label=None, offset=0, limit=50, net=LIVE):
        where, args = visible(net, '?')
        if label is not None:
            where, args = f'{where} AND label = ?', (*args, label)

        def work(db):
            (total,) = db.execute(f'SELECT count(*) FROM samples WHERE {where}',
                                  args).fetchone()
            rows = db.execute(f'SELECT id, label, predicted, model, created, shared FROM '
                              f'samples WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?',
                              (*args, limit, offset))
            keys = ('id', 'label', 'predicted', 'model', 'created', 'shared')
            return total, [{**dict(zip(keys, row)), 'shared': bool(row[5])} for row in rows]
        return self._run(work)

    def image(self, sample_id, original=False, net=LIVE):
        column = 'original' if original else 'pixels'
        where, args = visible(net, '?')

        def work(db):
            row = db.execute(f'SELECT {column} FROM samples WHERE id = ? AND {where}',
                             (sample_id, *args)).fetchone()
            return None if row is None else bytes(row[0])
        return self._run(work)

    def delete(self, sample_id, net=LIVE):
        where, args = visible(net, '?')
        return self._run(lambda db: db.execute(f'DELETE FROM samples WHERE id = ? AND {where}',
                                               (sample_id, *args)).rowcount > 0)

    def share(self, sample_id, net, shared):
        return self._run(lambda db: db.execute(
            'UPDATE samples SET shared = ? WHERE id = ? AND net = ?',
            (int(bool(shared)), sample_id, net)).rowcount > 0)

    def delete_net(self, net):
        return self._run(lambda db: db.execute('DELETE FROM samples WHERE net = ?',
                                               (net,)).rowcount)

    def arrays(self, net=LIVE):
        where, args = visible(net, '?')

        def work(db):
            rows = db.execute(f'SELECT id, label, pixels FROM samples WHERE {where} '
                              'ORDER BY id', args).fetchall()
            ids = np.array([r[0] for r in rows], np.int64)
            y = np.array([r[1] for r in rows], np.uint8)
            X = np.frombuffer(b''.join(r[2] for r in rows), np.uint8).reshape(-1, 784)
            return ids, X, y
        return self._run(work)

    def count(self):
        return self._run(lambda db: db.execute('SELECT count(*) FROM samples').fetchone()[0])

    def close(self):
        db = getattr(self._local, 'db', None)
        if db is not None:
            db.close()
            self._local.db = None


async def in_store(app, method, *args):
    """Run a sample-store call off the event loop; its errors as 507 / 503."""
    if app.ctx.samples is None:
        raise Unavailable('the sample store cannot be opened (see the server log); nothing was '
                          'changed.')
    return await store_call(getattr(app.ctx.samples, method), *args, executor=app.ctx.db,
                            full='nothing was stored. Delete samples (DELETE /samples/{id}) '
                                 'or raise --max-samples.')

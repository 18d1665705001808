"""Users' corrected drawings: the sample store.

``SampleStore`` is the interface (a database server can stand behind it; tests/test_store.py
is its contract); ``SQLiteSampleStore`` keeps the samples in one SQLite file in the state
folder (the standard library's sqlite3, WAL journal, every commit synced to disk), shared by
every worker of the machine: a sample is seen by all as soon as its insert commits, and a
process killed mid-insert leaves no half-written row.

A sample is the image as submitted, less what imaging.strip_metadata leaves out (a PNG's
text, profile and other chunks), the 28x28 uint8 image the net sees (its sha256 is the
sample's identity per net: the same drawing re-encoded, with bytes appended after its end or
other metadata is the same sample), the label the user gave, what the net read when it was
stored, the net it was kept with (the live net's own, or a private net's) and how nets that
never learned from it judged its label (judge.py): ``judged_suspect``, the digit it
``reads_as`` and the judges' mean probability of its label (``label_p``) and of that digit
(``reads_p``); and the shared net's ``review`` of it (None, 'approved' or 'rejected'). A
drawing is *held back* from the shared net's training while it is judged suspect and not
approved, or once it is rejected. A private net's drawing is its owner's alone unless
shared: the live net sees (lists, trains on) its own drawings and the shared ones. Every
fifth sample by id (id % 5 == 0) is never trained on: those are the samples' validation set.
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


def digest_of(pixels, net):
    """A sample's identity: the 784 pixels the net sees, per net (the live net's unprefixed,
    as before nets had names)."""
    pixels = bytes(pixels)
    return hashlib.sha256(pixels if net == LIVE else net.encode() + b'\0' + pixels).hexdigest()


# The samples held back from the shared net's training (SQL, both stores' dialects).
HELD = "((judged_suspect = TRUE AND review IS NULL) OR coalesce(review, '') = 'rejected')"
VERDICTS = {'approve': 'approved', 'reject': 'rejected'}
JUDGED = ('judged_suspect', 'reads_as', 'label_p', 'reads_p', 'review')


def judged(judgement):
    """The judgement columns' values of a judge.judge_one answer (None: not judged)."""
    j = judgement or {}
    return (bool(j.get('suspect', False)), j.get('reads_as'), j.get('label_p'),
            j.get('reads_p'))


def held_condition(held):
    """The SQL condition of arrays(held=...): every sample (None), the held-back ones only
    (True) or the others (False)."""
    return '' if held is None else f' AND {HELD}' if held else f' AND NOT {HELD}'


def newest_rows(newest, mark):
    """The ORDER BY (and LIMIT) of a read of every sample, or of the newest ``newest``."""
    if newest is None:
        return 'ORDER BY id'
    if not isinstance(newest, int) or isinstance(newest, bool) or newest < 1:
        raise ValueError(f'newest must be a positive int, got {newest!r}.')
    return f'ORDER BY id DESC LIMIT {mark}'


def visible(net, mark):
    """(SQL condition, arguments) of the samples ``net`` sees; ``mark`` the driver's
    placeholder."""
    if net == LIVE:
        return f'(net = {mark} OR shared)', (LIVE,)
    return f'net = {mark}', (net,)


class SampleStore:
    """The interface; every method may raise StoreError (StoreFull at the limit). ``net``:
    the net the samples belong to (``live`` sees its own and the shared ones)."""

    def add(self, original, pixels, label, predicted, model, net=LIVE, shared=False,
            judgement=None):
        """Store a sample: ``original`` bytes, ``pixels`` (784,) uint8, ``label`` 0..9, what
        ``model`` read (``predicted``), kept with ``net`` (shared with the live net or not),
        as judged (``judgement``: judge.judge_one's answer, or None). Returns ({id, label,
        predicted, model, shared, judged_suspect, reads_as, label_p, reads_p, review},
        created); created is False when the same pixels were stored with that net before:
        that sample is returned and nothing changes."""
        raise NotImplementedError

    def list(self, label=None, offset=0, limit=50, net=LIVE, held=None):
        """(total matching, [{id, label, predicted, model, created, shared, judged_suspect,
        reads_as, label_p, reads_p, review}] newest first); ``held``: see ``arrays``."""
        raise NotImplementedError

    def judge(self, rows):
        """Record new judgements: rows of (id, judged_suspect, reads_as, label_p, reads_p)."""
        raise NotImplementedError

    def review(self, sample_id, verdict):
        """The shared net's review of a sample it sees ('approve' or 'reject'); the sample
        as ``list`` gives it, or None if the live net does not see it."""
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

    def arrays(self, net=LIVE, held=None, newest=None):
        """(ids (n,), X (n, 784) uint8, y (n,) uint8) of every sample, oldest first; ``held``
        True: only the ones held back from the shared net, False: only the others;
        ``newest``: only the newest that many (what a request may read: bounded)."""
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
    # Added when nets got names: the net a sample was kept with, and whether it is shared;
    # then the judgement and the review (judge.py).
    COLUMNS = {'net': "TEXT NOT NULL DEFAULT 'live'", 'shared': 'INTEGER NOT NULL DEFAULT 0',
               'judged_suspect': 'INTEGER NOT NULL DEFAULT 0', 'reads_as': 'INTEGER',
               'label_p': 'REAL', 'reads_p': 'REAL',
               'review': "TEXT CHECK (review IN ('approved', 'rejected'))"}
    ROW = ('id, label, predicted, model, shared, judged_suspect, reads_as, label_p, reads_p, '
           'review')
    IDENTITY = 1  # PRAGMA user_version: 0 identified a sample by its bytes, 1 by its pixels

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
                if db.execute('PRAGMA user_version').fetchone()[0] < self.IDENTITY:
                    self._identify_by_pixels(db)
            except sqlite3.Error as e:
                raise StoreError(0, f'cannot open the sample store {self.path}: {e}') from e
            self._local.db = db
        return db

    def _identify_by_pixels(self, db):
        """Rows stored when a sample's identity was its bytes get their pixels' (the later
        of two rows with the same pixels and net goes: it was the same drawing)."""
        db.execute('BEGIN IMMEDIATE')
        try:
            if db.execute('PRAGMA user_version').fetchone()[0] < self.IDENTITY:  # not done
                seen, gone = set(), []  # by another process meanwhile
                for row_id, net, pixels in db.execute(
                        'SELECT id, net, pixels FROM samples ORDER BY id').fetchall():
                    digest = digest_of(pixels, net)
                    if digest in seen:
                        gone.append((row_id,))
                    else:
                        seen.add(digest)
                        db.execute('UPDATE samples SET sha256 = ? WHERE id = ?',
                                   (digest, row_id))
                db.executemany('DELETE FROM samples WHERE id = ?', gone)
                db.execute(f'PRAGMA user_version = {self.IDENTITY}')
                if seen or gone:
                    log.warning('samples identified by their pixels now: %d kept, %d '
                                'duplicates deleted', len(seen), len(gone))
            db.execute('COMMIT')
        except BaseException:
            if db.in_transaction:
                db.execute('ROLLBACK')
            raise

    @staticmethod
    def _row(row):
        keys = ('id', 'label', 'predicted', 'model', 'shared', *JUDGED)
        out = dict(zip(keys, row))
        out['shared'], out['judged_suspect'] = bool(out['shared']), bool(out['judged_suspect'])
        return out

    def _run(self, work):
        try:
            return work(self._connect())
        except sqlite3.OperationalError as e:
            if 'full' in str(e):
                raise StoreFull(28, f'the disk holding {self.path} is full') from e
            raise StoreError(0, f'the sample store {self.path} failed: {e}') from e
        except sqlite3.Error as e:  # e.g. a row the schema refuses
            raise StoreError(0, f'the sample store {self.path} refused it: {e}') from e

    def add(self, original, pixels, label, predicted, model, net=LIVE, shared=False,
            judgement=None):
        digest = digest_of(pixels, net)
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
        verdict = judged(judgement)

        def work(db):
            db.execute('BEGIN IMMEDIATE')  # one writer at a time, across processes
            try:
                row = db.execute(f'SELECT {self.ROW} FROM samples WHERE sha256 = ?',
                                 (digest,)).fetchone()
                if row is not None:
                    db.execute('COMMIT')
                    return self._row(row), False
                (count,) = db.execute('SELECT count(*) FROM samples').fetchone()
                if count >= self.limit:
                    db.execute('ROLLBACK')
                    raise StoreFull(28, f'the sample store holds {count} samples, its limit '
                                        '(--max-samples)')
                cursor = db.execute(
                    'INSERT INTO samples (sha256, label, predicted, model, pixels, original, '
                    'created, net, shared, judged_suspect, reads_as, label_p, reads_p) VALUES '
                    '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (digest, label, predicted, model, bytes(pixels), bytes(original), created,
                     net, int(bool(shared)), int(verdict[0]), *verdict[1:]))
                db.execute('COMMIT')
                return self._row((cursor.lastrowid, label, predicted, model, shared, *verdict,
                                  None)), True
            except BaseException:
                if db.in_transaction:
                    db.execute('ROLLBACK')
                raise
        return self._run(work)

    def list(self, label=None, offset=0, limit=50, net=LIVE, held=None):
        where, args = visible(net, '?')
        where += held_condition(held)
        if label is not None:
            where, args = f'{where} AND label = ?', (*args, label)

        def work(db):
            (total,) = db.execute(f'SELECT count(*) FROM samples WHERE {where}',
                                  args).fetchone()
            rows = db.execute(f'SELECT {self.ROW}, created FROM samples WHERE {where} '
                              'ORDER BY id DESC LIMIT ? OFFSET ?', (*args, limit, offset))
            return total, [{**self._row(row[:-1]), 'created': row[-1]} for row in rows]
        return self._run(work)

    def judge(self, rows):
        return self._run(lambda db: db.executemany(
            'UPDATE samples SET judged_suspect = ?, reads_as = ?, label_p = ?, reads_p = ? '
            'WHERE id = ?', [(int(s), r, lp, rp, i) for i, s, r, lp, rp in rows]).rowcount)

    def review(self, sample_id, verdict):
        where, args = visible(LIVE, '?')

        def work(db):
            db.execute('BEGIN IMMEDIATE')
            try:
                db.execute(f'UPDATE samples SET review = ? WHERE id = ? AND {where}',
                           (VERDICTS[verdict], sample_id, *args))
                row = db.execute(f'SELECT {self.ROW}, created FROM samples WHERE id = ? AND '
                                 f'{where}', (sample_id, *args)).fetchone()
                db.execute('COMMIT')
            except BaseException:
                if db.in_transaction:
                    db.execute('ROLLBACK')
                raise
            return None if row is None else {**self._row(row[:-1]), 'created': row[-1]}
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

    def arrays(self, net=LIVE, held=None, newest=None):
        where, args = visible(net, '?')
        where += held_condition(held)
        last = newest_rows(newest, '?')

        def work(db):
            rows = db.execute(f'SELECT id, label, pixels FROM samples WHERE {where} '
                              f'{last}', args + ((newest,) if newest else ())).fetchall()
            rows.sort(key=lambda r: r[0])
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

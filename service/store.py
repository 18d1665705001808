"""Where the service's runtime state lives: the nets (the shared one, named ``live``, and
private ones, named by the server with 128 random bits), every net's versions, its job lock
and its training status. ``Store`` is the seam: the service only talks to it, so a database
can stand behind the same methods (tests/test_store.py is the contract every implementation
passes). ``FolderStore`` keeps the state in one folder, shared by a machine's workers.

Saving is all or nothing: ``save_net`` either completes or raises and leaves the previous
version current (``StoreFull`` when the disk is full), so callers make a net current only
after its save succeeded. Every save is a new version (1, 2, ...); the oldest are pruned
past ``keep``, never the current one. A version saved with ``current=False`` (a candidate
that failed the gate: service/gate.py) is kept and listed, and the net stays as it was.
"""
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import better_tensorflow as btf

log = logging.getLogger(__name__)


LIVE = 'live'  # the shared net's name
_NAME = re.compile(r'[A-Za-z0-9_-]{22}')  # token_urlsafe(16): 128 random bits


def new_net_name():
    """A private net's name: URL-safe, unguessable (the name is the capability)."""
    return secrets.token_urlsafe(16)


def is_net_name(name):
    """Whether ``name`` is ``live`` or could be a private net's name (checked before any
    name reaches a path or a query)."""
    return name == LIVE or (isinstance(name, str) and _NAME.fullmatch(name) is not None)


def now_iso():
    return datetime.now(UTC).isoformat(timespec='seconds')


class StoreError(OSError):
    """The state cannot be written (read-only, unreachable); the message says why."""


class StoreFull(StoreError):
    """No space left for the state."""


def weights_digest(net):
    """sha256 of the net's parameters: ties the metadata to the net it describes."""
    digest = hashlib.sha256()
    for array in net.weights + net.biases:
        digest.update(array.tobytes())
    return digest.hexdigest()


class Store:
    """The interface. A net is named ``live`` (the shared net, always there) or by
    ``new_net_name``; ``meta`` is a JSON-able dict about a version (its validation accuracy,
    ...); loaded, it also holds the version's ``version``, ``created``, ``cause`` and
    ``epochs``. A change token (``net_version``, ``status_version``) is any value that
    changes whenever the net (or status) is replaced."""

    def prepare(self, legacy=None):
        """Make the store ready; never raises (a store that cannot save is logged, and the
        service answers from memory)."""

    # -- nets and their versions

    def load_net(self, name, repair=False):
        """(net, meta) of the net's current version; None when there is none or it cannot be
        read (logged). With ``repair`` (the caller holds the net's lock) an unreadable one is
        also set aside, never overwritten."""
        raise NotImplementedError

    def save_net(self, name, net, meta, cause='save', keep=None, current=True):
        """Save a new version and make it current, atomically: readers see the old or the
        new one, whole. Returns its number. With ``current=False`` the version is only kept
        (listed, loadable by ``load_version``); the current one, and the change token, stay.
        Prunes the oldest past ``keep`` versions, the new one counted (never the current
        one). Raises StoreError (StoreFull when out of space) and then nothing changed."""
        raise NotImplementedError

    def net_version(self, name):
        raise NotImplementedError

    def versions(self, name):
        """([{version, created, cause, epochs, validation_accuracy}] oldest first, the
        current version's number or None)."""
        raise NotImplementedError

    def load_version(self, name, version):
        """(net, meta) of a kept version; None when it was pruned or never existed."""
        raise NotImplementedError

    def create_net(self, name, net, meta, about):
        """A new private net with ``net`` as its version 1; ``about``: JSON-able facts kept
        with it ({"from": ..., "creator": ...}). StoreError if it cannot be saved."""
        raise NotImplementedError

    def about(self, name):
        """{created, last_used, from, ...} of a private net; None when there is no such net."""
        raise NotImplementedError

    def list_nets(self):
        """[{net, created, last_used, from, ...}] of every private net."""
        raise NotImplementedError

    def count_nets(self):
        """How many private nets are stored (what --max-nets limits), without reading them."""
        return len(self.list_nets())

    def delete_net(self, name):
        """Delete a private net with its versions and status; whether it existed."""
        raise NotImplementedError

    def touch(self, name):
        """Record that a private net was used now (its idle time starts again)."""
        raise NotImplementedError

    # -- the live net (the net named 'live'), as before nets had names

    def load_live(self, repair=False):
        return self.load_net(LIVE, repair)

    def save_live(self, net, meta, cause='save'):
        return self.save_net(LIVE, net, meta, cause)

    def live_version(self):
        return self.net_version(LIVE)

    # -- a net's job lock and training status

    def try_lock(self, name=LIVE):
        """A handle that holds the net's job lock (``release_lock`` it), or None when
        another job, in any process, holds it. Released by itself if its process dies."""
        raise NotImplementedError

    def release_lock(self, handle):
        raise NotImplementedError

    def locked(self, name=LIVE):
        """Whether some job holds the net's lock now."""
        raise NotImplementedError

    def write_status(self, state, name=LIVE):
        """Publish the net's current job's state (a JSON-able dict) for every worker."""
        raise NotImplementedError

    def read_status(self, name=LIVE):
        """The last published state, None when there is none or it cannot be read."""
        raise NotImplementedError

    def status_version(self, name=LIVE):
        raise NotImplementedError

    def writable(self):
        """None when the state can be saved, else why not (for logs and readiness)."""
        raise NotImplementedError

    def repair(self):
        """Remove what an interrupted save left (the caller holds the live net's lock): never
        what another process is saving now."""

    def close(self):
        """Let go of connections and threads (at shutdown)."""


def version_record(net, meta, version, cause):
    """What a store keeps about a version, beside its net."""
    return {**meta, 'version': version, 'created': now_iso(), 'cause': cause,
            'epochs': net.epochs, 'sizes': list(net.sizes), 'digest': weights_digest(net)}


def version_summary(record):
    return {k: record.get(k) for k in ('version', 'created', 'cause', 'epochs', 'sizes',
                                       'validation_accuracy', 'rolled_back_to',
                                       'promoted_from', 'promoted', 'gate')}


def _check_name(name):
    if not is_net_name(name):
        raise ValueError(f'not a net name: {str(name)[:40]!r}')


class FolderStore(Store):
    """State in a folder. The live net: live.npz and live.json (its current version, written
    atomically), train.lock (flock'ed, released by the kernel when its process dies),
    train-status.json, and its versions in versions/live/. A private net: the same files
    (net.npz, net.json, ...) and its versions in nets/<name>/, with about.json."""

    LIVE_FILE, META, LOCK, STATUS = 'live.npz', 'live.json', 'train.lock', 'train-status.json'
    ABOUT = 'about.json'

    def __init__(self, folder):
        self.folder = Path(folder)

    def __repr__(self):
        return f'FolderStore({str(self.folder)!r})'

    def prepare(self, legacy=None):
        """Create the folder; move a live net that an older version kept in ``legacy`` (the
        models folder) here, once."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.error('the state folder %s cannot be created (%s): the live net will not be '
                      'saved', self.folder, e)
            return
        if legacy is not None and not (self.folder / self.LIVE_FILE).exists():
            for name in (self.LIVE_FILE, self.META):
                old = Path(legacy) / name
                if old.is_file():
                    try:
                        shutil.move(old, self.folder / name)
                        log.warning('moved %s to the state folder %s', old, self.folder)
                    except OSError as e:
                        log.error('cannot move %s to %s: %s', old, self.folder, e)
        problem = self.writable()
        if problem:
            log.error('the live net cannot be saved: %s; it is kept in memory only', problem)

    # -- where a net's files are

    def _home(self, name):
        _check_name(name)
        return self.folder if name == LIVE else self.folder / 'nets' / name

    def _files(self, name):
        """(the current net's file, its metadata's file) of a net."""
        home = self._home(name)
        return (home / self.LIVE_FILE, home / self.META) if name == LIVE else \
            (home / 'net.npz', home / 'net.json')

    def _versions(self, name):
        home = self._home(name)
        return self.folder / 'versions' / LIVE if name == LIVE else home / 'versions'

    def _exists(self, name):
        return name == LIVE or self._home(name).is_dir()

    # -- the nets

    def load_net(self, name, repair=False):
        path, meta_path = self._files(name)
        if not path.exists():
            return None
        try:
            net = btf.Graph.from_file(path)
        except (ValueError, OSError, MemoryError) as e:
            if repair:
                self._set_aside(path, e)
            else:
                log.error('cannot read the net in %s (%s)', path, e)
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get('digest') != weights_digest(net):
                meta = {}
        except (OSError, ValueError):
            meta = {}
        meta.pop('digest', None)
        return net, meta

    def _set_aside(self, path, reason):
        now = time.time_ns()  # one instant: the names sort in the order they were made
        aside = path.with_name(time.strftime(f'{path.stem}.corrupt-%Y%m%d-%H%M%S-',
                                             time.localtime(now // 10 ** 9)) +
                               f'{now % 10 ** 9:09d}.npz')
        try:
            os.replace(path, aside)
            log.error('cannot restore the net from %s (%s); moved it to %s and starting anew',
                      path, reason, aside)
        except OSError as e:
            log.error('cannot restore the net from %s (%s), nor move it aside (%s); '
                      'starting anew', path, reason, e)

    def _numbers(self, name):
        """The kept versions' numbers, oldest first."""
        try:
            names = os.listdir(self._versions(name))
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith('.json') and n[:-5].isdigit())

    def save_net(self, name, net, meta, cause='save', keep=None, current=True):
        if not self._exists(name):
            raise StoreError(errno.ENOENT, f'there is no net {name!r}')
        path, meta_path = self._files(name)
        folder = self._versions(name)
        version = max([self._current(name) or 0, *self._numbers(name)]) + 1
        record = version_record(net, meta, version, cause)
        data = json.dumps(record).encode()
        kept = folder / f'{version:06d}.npz'
        tmp, meta_tmp = btf.temporary_path(path), btf.temporary_path(meta_path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # The metadata first (a full disk shows before anything changed), the version's
            # net, then the current net replaced atomically (a hard link to the version's
            # file), then its metadata renamed beside it.
            if current:
                with open(meta_tmp, 'xb') as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            net.save(kept)
            with btf.atomic_write(folder / f'{version:06d}.json') as f:
                f.write(data)
            if current:
                try:
                    os.link(kept, tmp)
                except OSError:  # a file system without hard links
                    shutil.copyfile(kept, tmp)
                os.replace(tmp, path)
                os.replace(meta_tmp, meta_path)
        except OSError as e:
            for leftover in (meta_tmp, tmp, kept, folder / f'{version:06d}.json'):
                leftover.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFull(e.errno, f'the disk holding {self.folder} is full') from e
            raise StoreError(e.errno, f'cannot write to {self.folder}: {e.strerror}') from e
        if keep is not None:
            live = version if current else self._current(name)
            for old in self._numbers(name)[:-keep]:
                if old != live:
                    for suffix in ('.json', '.npz'):
                        (folder / f'{old:06d}{suffix}').unlink(missing_ok=True)
        return version

    def _current(self, name):
        """The current version's number, None when there is none."""
        try:
            return json.loads(self._files(name)[1].read_text()).get('version')
        except (OSError, ValueError, AttributeError):
            return None

    def net_version(self, name):
        path, meta_path = self._files(name)
        return _file_version(path), _file_version(meta_path)

    def versions(self, name):
        folder, found = self._versions(name), []
        for number in self._numbers(name):
            try:
                found.append(version_summary(json.loads(
                    (folder / f'{number:06d}.json').read_text())))
            except (OSError, ValueError, AttributeError):
                continue
        return found, self._current(name)

    def load_version(self, name, version):
        folder = self._versions(name)
        try:
            record = json.loads((folder / f'{int(version):06d}.json').read_text())
            net = btf.Graph.from_file(folder / f'{int(version):06d}.npz')
        except FileNotFoundError:
            return None
        except (ValueError, OSError, MemoryError) as e:
            log.error('cannot read version %s of a net in %s (%s)', version, folder, e)
            return None
        record.pop('digest', None)
        return net, record

    def create_net(self, name, net, meta, about):
        if name == LIVE:
            raise ValueError('the live net is not created: it is always there')
        home = self._home(name)
        try:
            home.mkdir(parents=True)
        except FileExistsError:
            raise StoreError(errno.EEXIST, f'a net named {name!r} exists already') from None
        except OSError as e:
            raise StoreError(e.errno, f'cannot write to {self.folder}: {e.strerror}') from e
        try:
            with btf.atomic_write(home / self.ABOUT) as f:
                f.write(json.dumps({**about, 'created': now_iso(),
                                    'last_used': now_iso()}).encode())
        except OSError as e:
            shutil.rmtree(home, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFull(e.errno, f'the disk holding {self.folder} is full') from e
            raise StoreError(e.errno, f'cannot write to {self.folder}: {e.strerror}') from e
        try:
            self.save_net(name, net, meta, 'create')
        except StoreError:
            shutil.rmtree(home, ignore_errors=True)
            raise

    def about(self, name):
        if name == LIVE:
            return None
        try:
            found = json.loads((self._home(name) / self.ABOUT).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def list_nets(self):
        try:
            names = sorted(os.listdir(self.folder / 'nets'))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            about = self.about(name) if is_net_name(name) and name != LIVE else None
            if about is None:
                continue
            try:
                current = version_summary(json.loads(self._files(name)[1].read_text()))
            except (OSError, ValueError, AttributeError):
                current = {}
            found.append({'net': name, **about, 'version': current.get('version'),
                          'sizes': current.get('sizes')})
        return found

    def count_nets(self):
        try:
            return sum(name != LIVE and is_net_name(name)
                       for name in os.listdir(self.folder / 'nets'))
        except FileNotFoundError:
            return 0

    def delete_net(self, name):
        if name == LIVE:
            raise ValueError('the live net cannot be deleted')
        home = self._home(name)
        gone = home.with_name(f'.deleted-{name}-{uuid.uuid4().hex[:8]}')
        try:
            os.replace(home, gone)  # it disappears at once, whole
        except FileNotFoundError:
            return False
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def touch(self, name):
        about = self.about(name)
        if about is not None:
            self._replace_in_home(name, self.ABOUT,
                                  json.dumps({**about, 'last_used': now_iso()}).encode())

    def _replace_in_home(self, name, file, data):
        """Replace a small file of a net's folder, never making the folder: a private net
        deleted meanwhile (by another worker) stays deleted, not a folder without a net."""
        home = self._home(name)
        tmp = btf.temporary_path(home / file)
        try:
            with open(tmp, 'xb') as f:  # FileNotFoundError: the folder is gone
                f.write(data)
            os.replace(tmp, home / file)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            log.warning('cannot write %s of %s: %s', file,
                        'the live net' if name == LIVE else f'net {name[:6]}...', e)

    # -- a net's job lock

    def try_lock(self, name=LIVE):
        try:
            fd = os.open(self._home(name) / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(e.errno, f'cannot open the job lock in {self.folder}: '
                                      f'{e.strerror}') from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def release_lock(self, handle):
        os.close(handle)

    def locked(self, name=LIVE):
        try:
            fd = self.try_lock(name)
        except StoreError:
            return False
        if fd is not None:
            os.close(fd)
        return fd is None

    # -- a net's training status

    def write_status(self, state, name=LIVE):
        self._replace_in_home(name, self.STATUS, json.dumps(state).encode())

    def read_status(self, name=LIVE):
        try:
            state = json.loads((self._home(name) / self.STATUS).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get('status'), dict) \
            else None

    def status_version(self, name=LIVE):
        return _file_version(self._home(name) / self.STATUS)

    # -- upkeep

    def writable(self):
        if not self.folder.is_dir():
            return f'{self.folder} is not a folder'
        if not os.access(self.folder, os.W_OK):
            return f'{self.folder} is not writable'
        return None

    def repair(self):
        # The live net's lock guards the live net only: another worker or server may be
        # saving a private net (or its metadata) this very moment. Only what no process
        # still writes goes (btf.temporary_in_use).
        for pattern in ('.*.tmp', 'nets/*/.*.tmp', 'versions/live/.*.tmp',
                        'nets/*/versions/.*.tmp'):
            for tmp in self.folder.glob(pattern):
                if btf.temporary_in_use(tmp):
                    continue
                tmp.unlink(missing_ok=True)
                log.warning('removed %s, left by an interrupted save', tmp)
        for gone in (self.folder / 'nets').glob('.deleted-*'):
            shutil.rmtree(gone, ignore_errors=True)


def _file_version(path):
    """(inode, mtime, size) of a file, None when missing: changes whenever it is replaced."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size

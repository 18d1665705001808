"""Where the service's runtime state lives: the live net and its metadata, the one-job lock,
and the training status. ``Store`` is the seam: the service only talks to it, so a database
can stand behind the same methods (tests/test_store.py is the contract every implementation
passes). ``FolderStore`` keeps the state in one folder, shared by a machine's workers.

Saving is all or nothing: ``save_live`` either completes or raises and leaves the previous
net in place (``StoreFull`` when the disk is full), so callers make a net live only after
its save succeeded.
"""
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import better_tensorflow as btf

log = logging.getLogger(__name__)


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
    """The interface. ``meta`` is a JSON-able dict about the live net (its validation
    accuracy, ...); a version is any value that changes whenever the live net is replaced."""

    def prepare(self, legacy=None):
        """Make the store ready; never raises (a store that cannot save is logged, and the
        service answers from memory)."""

    def load_live(self, repair=False):
        """(net, meta) of the saved live net; None when there is none or it cannot be read
        (logged). With ``repair`` (the caller holds the lock) an unreadable one is also set
        aside, never overwritten."""
        raise NotImplementedError

    def save_live(self, net, meta):
        """Save atomically: readers see the old or the new net, whole. Raises StoreError
        (StoreFull when out of space) and then nothing changed."""
        raise NotImplementedError

    def live_version(self):
        raise NotImplementedError

    def try_lock(self):
        """A handle that holds the one-job lock (``release_lock`` it), or None when another
        job, in any process, holds it. Released by itself if its process dies."""
        raise NotImplementedError

    def release_lock(self, handle):
        raise NotImplementedError

    def locked(self):
        """Whether some job holds the lock now."""
        raise NotImplementedError

    def write_status(self, state):
        """Publish the current job's state (a JSON-able dict) for every worker."""
        raise NotImplementedError

    def read_status(self):
        """The last published state, None when there is none or it cannot be read."""
        raise NotImplementedError

    def status_version(self):
        raise NotImplementedError

    def writable(self):
        """None when the state can be saved, else why not (for logs and readiness)."""
        raise NotImplementedError

    def repair(self):
        """Remove what an interrupted save left (the caller holds the lock)."""

    def close(self):
        """Let go of connections and threads (at shutdown)."""


class FolderStore(Store):
    """State in a folder: live.npz and live.json (written atomically), train.lock (flock'ed,
    released by the kernel when its process dies) and train-status.json."""

    LIVE, META, LOCK, STATUS = 'live.npz', 'live.json', 'train.lock', 'train-status.json'

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
        if legacy is not None and not (self.folder / self.LIVE).exists():
            for name in (self.LIVE, self.META):
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

    # -- the live net

    def load_live(self, repair=False):
        path = self.folder / self.LIVE
        if not path.exists():
            return None
        try:
            net = btf.Graph.from_file(path)
        except (ValueError, OSError, MemoryError) as e:
            if repair:
                self._set_aside(path, e)
            else:
                log.error('cannot read the live net in %s (%s)', path, e)
            return None
        try:
            meta = json.loads((self.folder / self.META).read_text())
            if not isinstance(meta, dict) or meta.get('digest') != weights_digest(net):
                meta = {}
        except (OSError, ValueError):
            meta = {}
        meta.pop('digest', None)
        return net, meta

    def _set_aside(self, path, reason):
        aside = path.with_name(time.strftime('live.corrupt-%Y%m%d-%H%M%S-') +
                               f'{time.time_ns() % 10 ** 9:09d}.npz')
        try:
            os.replace(path, aside)
            log.error('cannot restore the live net from %s (%s); moved it to %s and '
                      'starting anew', path, reason, aside)
        except OSError as e:
            log.error('cannot restore the live net from %s (%s), nor move it aside (%s); '
                      'starting anew', path, reason, e)

    def save_live(self, net, meta):
        data = json.dumps({**meta, 'digest': weights_digest(net)}).encode()
        meta_tmp = self.folder / f'.{self.META}.{uuid.uuid4().hex[:12]}.tmp'
        try:
            # The metadata is written first (a full disk shows before anything changed), the
            # net replaced atomically, then the metadata renamed beside it.
            with open(meta_tmp, 'xb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            net.save(self.folder / self.LIVE)
            os.replace(meta_tmp, self.folder / self.META)
        except OSError as e:
            meta_tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFull(e.errno, f'the disk holding {self.folder} is full') from e
            raise StoreError(e.errno, f'cannot write to {self.folder}: {e.strerror}') from e

    def live_version(self):
        return _file_version(self.folder / self.LIVE), _file_version(self.folder / self.META)

    # -- the one-job lock

    def try_lock(self):
        try:
            fd = os.open(self.folder / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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

    def locked(self):
        try:
            fd = self.try_lock()
        except StoreError:
            return False
        if fd is not None:
            os.close(fd)
        return fd is None

    # -- the training status

    def write_status(self, state):
        try:
            with btf.atomic_write(self.folder / self.STATUS, durable=False) as f:
                f.write(json.dumps(state).encode())
        except OSError as e:
            log.warning('cannot publish the training status in %s: %s', self.folder, e)

    def read_status(self):
        try:
            state = json.loads((self.folder / self.STATUS).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get('status'), dict) \
            else None

    def status_version(self):
        return _file_version(self.folder / self.STATUS)

    # -- upkeep

    def writable(self):
        if not self.folder.is_dir():
            return f'{self.folder} is not a folder'
        if not os.access(self.folder, os.W_OK):
            return f'{self.folder} is not writable'
        return None

    def repair(self):
        for name in (self.LIVE, self.META, self.STATUS):
            for tmp in self.folder.glob(f'.{name}.*.tmp'):
                tmp.unlink(missing_ok=True)
                log.warning('removed %s, left by an interrupted save', tmp)


def _file_version(path):
    """(inode, mtime, size) of a file, None when missing: changes whenever it is replaced."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size

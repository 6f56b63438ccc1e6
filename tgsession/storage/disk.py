"""DiskStorage: sessions in a diskcache directory, locked across threads and processes.

Data lives in diskcache's SQLite database. Locks do not: a diskcache ``Lock`` costs two SQLite
writes per acquisition, spins, and frees a dead holder only by expiry, which would also free a
slow live one. Instead each session key maps to one byte of an empty lock file, locked with
POSIX ``lockf``: the kernel queues the waiters, costs no disk write, and releases the byte the
moment its holder's process dies, however it dies.

The directory is trusted only as far as it must be. Nothing in it is ever unpickled or read
from a file outside the database, its own files are never followed through a symbolic link,
and a lock file or database deleted under a running bot is noticed instead of silently
splitting the lock or swallowing saves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_PICKLE

from ..errors import SessionDecodeError, SessionLockLost, SessionStorageError, describe
from ._locking import Backoff, KeyedLocks, lock_timeout

logger = logging.getLogger("tgsession")

LOCK_FILE = "locks"
# The files of a store that SQLite and tgsession open by name: none may be a symbolic link.
_OWN_FILES = (DBNAME, f"{DBNAME}-wal", f"{DBNAME}-shm", LOCK_FILE)

# The diskcache settings of every session directory (benchmarks/ measures them).
CACHE_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",  # the default policy silently drops sessions past 1 GB
    "cull_limit": 0,  # nothing is evicted, so skip the cull query on every write
    # Keep every value inside the owner-only database file: no value is ever large enough to
    # go to a file of its own (SQLite refuses values over 1 GB before this size is reached),
    # so any row that names a file was put there by someone else.
    "disk_min_file_size": 2**62,
    # Memory must not grow with the number of sessions: no memory map (its pages count as
    # the process's), and a page cache of 512 pages (2 MiB per thread's connection) instead
    # of 32 MiB. A larger cache did not make updates at 1,000,000 sessions cheaper: their
    # cost is in writing back pages, not in reading them.
    "sqlite_mmap_size": 0,
    "sqlite_cache_size": 512,
    # Checkpoint the write-ahead log (and fsync) every 10,000 pages instead of 1,000: with
    # many sessions each checkpoint writes scattered pages, and doing it less often halved
    # the cost of a write at 1,000,000 sessions (60 to 31 us) with the same durability.
    "sqlite_wal_autocheckpoint": 10_000,
}
_OFFSET_MASK = (1 << 62) - 1

_FOREIGN = object()  # what _SafeDisk returns for a key or value that tgsession never writes


class _SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that loads only what tgsession writes: str keys, bytes in the database.

    Anything else in the directory was put there by someone else. A pickled key or value could
    run arbitrary code when loaded, and a row that names a file could point anywhere on the
    machine (diskcache joins an absolute name onto nothing), so neither is ever loaded, and no
    file is ever deleted: tgsession creates none.
    """

    def get(self, key: Any, raw: bool) -> Any:
        return super().get(key, raw) if raw else _FOREIGN  # raw=False: a pickled key

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if filename is not None or mode == MODE_PICKLE:
            return _FOREIGN
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        """Delete nothing: a row naming a file is foreign, and so is its file."""


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _make_directory(path: str) -> None:
    """Create ``path`` and any missing parents, each owner-only whatever the umask."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process
            os.mkdir(directory, 0o700)


def _check_directory(path: str) -> os.stat_result:
    """Refuse a store directory that other users could change; return its stat."""
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    if info.st_mode & 0o022:
        raise SessionStorageError(
            f"the session store {path} can be written by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}), who could replace its files with links to "
            f"other files: run 'chmod go-w {path}', or choose a directory only you can write"
        )
    if info.st_uid != os.geteuid():
        logger.warning(
            "the session store %s belongs to user %d, not to this process's user %d, who "
            "could replace its files",
            path,
            info.st_uid,
            os.geteuid(),
        )
    for name in _OWN_FILES:
        try:
            mode = os.lstat(os.path.join(path, name)).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise SessionStorageError(
                f"{os.path.join(path, name)} is {what}: tgsession never follows links for "
                "the files of its store; remove it (or use another directory)"
            )
    return info


def _create_database_file(path: str) -> None:
    """Create the database file owner-only, if it does not exist yet.

    SQLite gives its -wal and -shm files the mode of the database file, so this makes every
    file of the store owner-only. Only a file that did not exist is touched: closing any
    descriptor of a file drops all of this process's POSIX locks on it, including those that
    SQLite holds for a connection it has open (SQLite's "How To Corrupt An SQLite Database
    File", 2.2), after which another process may delete the write-ahead log under it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)  # a new inode: no connection of this process can hold a lock on it


class _LockFile:
    """One opened lock file."""

    __slots__ = ("fd",)

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def deleted(self) -> bool:
        """Whether the file was deleted (or replaced) since it was opened.

        One fstat (1.5 us here), a third cheaper than a stat of the path.
        """
        return os.fstat(self.fd).st_nlink == 0


# Linux's O_PATH descriptors can be closed without dropping the process's POSIX locks on the
# file (the kernel skips that step for them), unlike any other descriptor: they may watch the
# database file that SQLite locks. Elsewhere the database is watched by its path.
_O_PATH: int | None = getattr(os, "O_PATH", None)


class _DatabaseWatch:
    """Tells whether the database file this process opened is still the one at its path."""

    __slots__ = ("fd", "identity", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = _identity(os.stat(path))
        self.fd = None if _O_PATH is None else os.open(path, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)

    def gone(self) -> str | None:
        """What happened to the database, or None if it is in place."""
        if self.fd is not None:  # one fstat, 1.5 us here, against 2.4 us for a stat
            return "was deleted" if os.fstat(self.fd).st_nlink == 0 else None
        try:
            if _identity(os.stat(self.path)) == self.identity:
                return None
        except FileNotFoundError:
            return "was deleted"
        return "was replaced by another file"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


class _Directory:
    """What the threads of one process share for one store directory."""

    def __init__(self, path: str, info: os.stat_result) -> None:
        self.generation = _generation
        self.path = path
        self.identity = _identity(info)
        self.store = ("disk", *self.identity)  # what DiskStorage.identity gives
        self.db_path = os.path.join(path, DBNAME)
        self.lock_path = os.path.join(path, LOCK_FILE)
        _create_database_file(self.db_path)
        self.cache = diskcache.Cache(path, disk=_SafeDisk, **CACHE_SETTINGS)
        self.database = _DatabaseWatch(self.db_path)
        self.lock_file = _LockFile(self.lock_path)
        # Lock files replaced since: still locked by threads that took a byte before the
        # switch, so closing them (which would drop those locks) waits for close().
        self.retired: list[_LockFile] = []
        self.switching = threading.Lock()
        self.threads = KeyedLocks()
        self.holding: dict[str, _LockFile] = {}  # the lock file of each key held here
        self.users = 0  # DiskStorage objects of this process using it

    def check_intact(self, key: str, action: str) -> None:
        """Raise SessionStorageError if the database of this store is no longer in place."""
        problem = self.database.gone()
        if problem is not None:
            raise SessionStorageError(
                f"could not {action} session {key!r}: the session store {self.path} {problem} "
                "while this process had it open, so its saves would go nowhere. Restore the "
                "directory from a backup, or restart the bot to begin an empty store"
            )

    def switch_lock_file(self, stale: _LockFile, key: str) -> None:
        """The lock file at the path is no longer ``stale``: open the one there now."""
        with self.switching:
            if self.lock_file is not stale:  # another thread switched already
                return
            self.check_intact(key, "lock")  # a deleted directory: stop here, with an error
            self.lock_file = _LockFile(self.lock_path)
            self.retired.append(stale)
        logger.warning(
            "the lock file %s was deleted or replaced while the bot ran; this process now "
            "locks the new one. Never delete it while a bot uses the store",
            self.lock_path,
        )

    def close(self) -> None:
        # Closing a lock file drops every lockf lock this process holds on it, so callers must
        # only close a directory that no handler is using.
        self.cache.close()
        self.database.close()
        for lock_file in (self.lock_file, *self.retired):
            os.close(lock_file.fd)


_directories: dict[tuple[int, int], _Directory] = {}
_directories_guard = threading.RLock()
_generation = 0  # forks this process descends from: a _Directory serves one generation


def _after_fork_in_child() -> None:
    global _directories_guard, _generation
    _generation += 1
    # A fork while another thread held the guard would leave the child's copy held forever.
    _directories_guard = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _use_directory(path: str) -> _Directory:
    """Return this process's one _Directory for the directory at ``path``, opening it first.

    lockf locks belong to a process, not to a thread or a file descriptor: two objects of one
    process on one directory must share their thread locks, or both would get in at once. The
    directory is known by its device and inode, so that two paths to it (a bind mount, a
    link) share them too. A forked child starts afresh, since it inherits no lockf locks and
    its copies of the parent's thread locks may be held by threads that do not exist in it.
    """
    with _directories_guard:
        try:
            _make_directory(path)
            info = _check_directory(path)
            directory = _directories.get(_identity(info))
            if (
                directory is None
                or directory.generation != _generation
                or directory.database.gone()
            ):
                directory = _directories[_identity(info)] = _Directory(path, info)
        except SessionStorageError:
            raise
        except Exception as error:  # OSError, or sqlite3's errors from diskcache
            raise SessionStorageError(
                f"cannot use {path} as a session store: {describe(error)}; give DiskStorage "
                "(or $TGSESSION_DIR) a directory this process can create and write"
            ) from error
        directory.users += 1
        return directory


def _release_directory(directory: _Directory) -> None:
    """Stop using ``directory``; the last user of this process closes it."""
    with _directories_guard:
        directory.users -= 1
        if directory.users == 0 and directory.generation == _generation:
            if _directories.get(directory.identity) is directory:
                del _directories[directory.identity]
            directory.close()


def _lock_offset(key: str) -> int:
    # A stable 62-bit hash (Python's hash() differs between processes). Two keys in use at the
    # same moment share a byte with a probability of about n**2 / 2**63 for n keys; they are
    # then locked together, which keeps threads and processes apart (a handler stacking two
    # such keys would wait for itself, at odds of 2**-62).
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _OFFSET_MASK


def _lock_byte(fd: int, offset: int, deadline: float | None) -> bool:
    """Lock one byte of the lock file; return False if ``deadline`` passed first."""
    backoff = None  # made only when the byte is busy: most locks are taken at once
    while True:
        try:
            if deadline is None:  # wait in the kernel, which wakes us when the byte is free
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
            else:  # lockf has no timed wait: poll
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return True
        except OSError as error:
            # EDEADLK: the kernel judges deadlocks per process, so two processes whose threads
            # hold and wait for unrelated keys can look deadlocked when they are not; the
            # holder finishes on its own, so wait a little and try again.
            if error.errno not in (errno.EDEADLK, errno.EAGAIN, errno.EACCES):
                raise
        backoff = backoff or Backoff(deadline)
        if not backoff.sleep():
            return False


class _ByteLock:
    """The lock of one key: this process's thread lock, then the key's byte of the lock file."""

    __slots__ = ("directory", "key", "lock_file", "offset", "timeout")

    def __init__(self, directory: _Directory, key: str, timeout: float | None) -> None:
        self.directory, self.key, self.timeout = directory, key, timeout
        self.offset = _lock_offset(key)

    def __enter__(self) -> None:
        directory = self.directory
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        # Thread locks are keyed by the byte, not the key: two keys whose hashes collide
        # share a byte, and must then not both be held by threads of one process.
        directory.threads.acquire(self.offset, self.timeout, self.key)
        try:
            while True:
                lock_file = directory.lock_file
                if not _lock_byte(lock_file.fd, self.offset, deadline):
                    raise lock_timeout(self.key, self.timeout)
                # A lock file deleted or replaced meanwhile would split the lock: processes
                # started since lock the file now at the path. Move to it, and lock again.
                if not lock_file.deleted():
                    break
                fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, self.offset)
                directory.switch_lock_file(lock_file, self.key)
        except BaseException:
            directory.threads.release(self.offset)
            raise
        self.lock_file = lock_file
        directory.holding[self.key] = lock_file

    def __exit__(self, *exc_info: object) -> None:
        directory = self.directory
        directory.holding.pop(self.key, None)
        try:
            fcntl.lockf(self.lock_file.fd, fcntl.LOCK_UN, 1, self.offset)
        finally:
            directory.threads.release(self.offset)


class DiskStorage:
    """Sessions in a directory on this host, shared by every thread and process that opens it.

    Locks are per session key and exclude threads and processes alike; a process that dies
    while holding one releases it at once.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, lock_timeout: float | None = None
    ) -> None:
        """Open (creating, owner-only, if needed) the store in ``directory``.

        ``lock_timeout`` bounds the wait for a session that another handler holds; ``None``
        waits as long as the holder lives. A directory that other users can write is refused
        with SessionStorageError, as is one whose files are symbolic links.
        """
        self.directory = os.path.realpath(os.fspath(directory))
        self.lock_timeout = lock_timeout
        self._shared: _Directory | None = _use_directory(self.directory)

    @property
    def identity(self) -> tuple[object, ...]:
        """What this store is: equal for every DiskStorage of one directory, by any path."""
        return self._dir().store

    def _dir(self) -> _Directory:
        shared = self._shared
        if shared is None:
            raise ValueError(f"{self!r} is closed")
        if shared.generation != _generation:
            shared = self._shared = _use_directory(self.directory)
        return shared

    def _cache(self) -> diskcache.Cache:
        # diskcache reconnects by itself in a forked child: only the locks need _dir().
        shared = self._shared
        if shared is None:
            raise ValueError(f"{self!r} is closed")
        return shared.cache

    def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        value = self._cache().get(key)
        if value is None or isinstance(value, bytes):
            return value
        what = (
            "a pickled object or a file outside the database"
            if value is _FOREIGN
            else f"a {type(value).__name__}"
        )
        raise SessionDecodeError(
            f"session {key!r} in {self.directory} holds {what}, not session bytes: something "
            "other than tgsession wrote it; it is not loaded and left untouched, delete it to "
            "start afresh"
        )

    def _check_before_change(self, key: str, action: str) -> None:
        """Refuse a change that would be lost: the store is gone, or the lock was split."""
        directory = self._dir()
        directory.check_intact(key, action)
        held = directory.holding.get(key)
        if held is not None and held.deleted():
            raise SessionLockLost(
                f"the lock file {directory.lock_path} was deleted or replaced while session "
                f"{key!r} was held, so another process may have changed it since: this "
                "update's changes were not saved. Never delete the lock file of a running bot"
            )

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key``, for ``ttl`` seconds if given."""
        self._check_before_change(key, "save")
        self._cache().set(key, bytes(data), expire=ttl)

    def purge(self) -> int:
        """Remove the expired sessions that are still on disk; return how many.

        Expired sessions read as missing at once, but their rows stay until purged (or
        written again): call this now and then, from a script or a timer.
        """
        return int(self._cache().expire())

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is stored."""
        self._check_before_change(key, "delete")
        self._cache().delete(key)

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, a hundred rows at a time.

        Rows that tgsession did not write (pickled keys) are skipped without being loaded.
        """
        # diskcache walks its keys in sorted order, so those with the prefix come together.
        # Expired rows stay until purged: `in` skips them (an index lookup, no value read).
        cache = self._cache()
        for key in cache.iterkeys():
            if isinstance(key, str):
                if key.startswith(prefix):
                    if key in cache:
                        yield key
                elif key > prefix:
                    return

    def lock(self, key: str) -> _ByteLock:
        """Hold the lock of ``key`` against every thread and process using this directory."""
        return _ByteLock(self._dir(), key, self.lock_timeout)

    def close(self) -> None:
        """Stop using the directory; the last open DiskStorage of it in this process closes it.

        Call it only when none of this object's sessions is held.
        """
        shared, self._shared = self._shared, None
        if shared is not None:
            _release_directory(shared)

    def __repr__(self) -> str:
        return f"DiskStorage({self.directory!r})"


_default: DiskStorage | None = None


def default_storage() -> DiskStorage:
    """Return the process-wide DiskStorage in ``$TGSESSION_DIR``, or ``./.tgsession``.

    Its absolute path is logged at INFO when it is first opened: a relative one depends on
    the directory the bot was started from.
    """
    global _default
    with _directories_guard:
        if _default is None:
            _default = DiskStorage(os.environ.get("TGSESSION_DIR", ".tgsession"))
            logger.info("sessions are stored in %s", _default.directory)
        return _default

"""DiskStorage: sessions in a diskcache directory, locked across threads and processes.

Data lives in diskcache's SQLite database. Locks do not: a diskcache ``Lock`` costs two SQLite
writes per acquisition, spins, and frees a dead holder only by expiry, which would also free a
slow live one. Instead each session key maps to one byte of an empty lock file, locked with
POSIX ``lockf``: the kernel queues the waiters, costs no disk write, and releases the byte the
moment its holder's process dies, however it dies.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_PICKLE

from ..errors import SessionDecodeError
from ._locking import Backoff, KeyedLocks, lock_timeout

LOCK_FILE = "locks"

# The diskcache settings of every session directory (benchmarks/ measures them).
CACHE_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",  # the default policy silently drops sessions past 1 GB
    "cull_limit": 0,  # nothing is evicted, so skip the cull query on every write
    "disk_min_file_size": 2**30,  # keep values inside the owner-only database file
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


class _NoPickleDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that refuses to unpickle values found in the directory.

    tgsession only ever stores bytes, so a pickle there was put by someone else, and loading it
    from a shared directory could run arbitrary code.
    """

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            return _PICKLED
        return super().fetch(mode, filename, value, read)


_PICKLED = object()  # what _NoPickleDisk returns in place of an unpickled value


class _Directory:
    """What the threads of one process share for one directory."""

    def __init__(self, path: str) -> None:
        self.generation = _generation
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        # SQLite gives its -wal and -shm files the mode of the database file, so creating that
        # file owner-only first makes every file of the store owner-only.
        os.close(os.open(os.path.join(path, DBNAME), os.O_RDWR | os.O_CREAT, 0o600))
        self.cache = diskcache.Cache(path, disk=_NoPickleDisk, **CACHE_SETTINGS)
        self.lock_fd = os.open(
            os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        self.threads = KeyedLocks()
        self.users = 0  # DiskStorage objects of this process using it

    def close(self) -> None:
        # Closing the file drops every lockf lock this process holds on it, so callers must
        # only close a directory that no handler is using.
        self.cache.close()
        os.close(self.lock_fd)


_directories: dict[str, _Directory] = {}
_directories_guard = threading.RLock()
_generation = 0  # forks this process descends from: a _Directory serves one generation


def _after_fork_in_child() -> None:
    global _directories_guard, _generation
    _generation += 1
    # A fork while another thread held the guard would leave the child's copy held forever.
    _directories_guard = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _use_directory(path: str) -> _Directory:
    """Return this process's one _Directory for ``path``, opening it on first use.

    lockf locks belong to a process, not to a thread or a file descriptor: two objects of one
    process on one directory must share their thread locks, or both would get in at once.
    A forked child starts afresh, since it inherits no lockf locks and its copies of the
    parent's thread locks may be held by threads that do not exist in the child.
    """
    with _directories_guard:
        directory = _directories.get(path)
        if directory is None or directory.generation != _generation:
            directory = _directories[path] = _Directory(path)
        directory.users += 1
        return directory


def _release_directory(directory: _Directory) -> None:
    """Stop using ``directory``; the last user of this process closes it."""
    with _directories_guard:
        directory.users -= 1
        if directory.users == 0 and directory.generation == _generation:
            if _directories.get(directory.path) is directory:
                del _directories[directory.path]
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

    __slots__ = ("directory", "key", "offset", "timeout")

    def __init__(self, directory: _Directory, key: str, timeout: float | None) -> None:
        self.directory, self.key, self.timeout = directory, key, timeout
        self.offset = _lock_offset(key)

    def __enter__(self) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        # Thread locks are keyed by the byte, not the key: two keys whose hashes collide
        # share a byte, and must then not both be held by threads of one process.
        threads = self.directory.threads
        threads.acquire(self.offset, self.timeout, self.key)
        try:
            if not _lock_byte(self.directory.lock_fd, self.offset, deadline):
                raise lock_timeout(self.key, self.timeout)
        except BaseException:
            threads.release(self.offset)
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            fcntl.lockf(self.directory.lock_fd, fcntl.LOCK_UN, 1, self.offset)
        finally:
            self.directory.threads.release(self.offset)


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
        waits as long as the holder lives.
        """
        self.directory = os.path.realpath(os.fspath(directory))
        self.lock_timeout = lock_timeout
        self._shared: _Directory | None = _use_directory(self.directory)

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
        what = "a pickled Python object" if value is _PICKLED else f"a {type(value).__name__}"
        raise SessionDecodeError(
            f"session {key!r} in {self.directory} holds {what}, not session bytes: something "
            "other than tgsession wrote it; it is left untouched, delete it to start afresh"
        )

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key``, for ``ttl`` seconds if given."""
        self._cache().set(key, bytes(data), expire=ttl)

    def purge(self) -> int:
        """Remove the expired sessions that are still on disk; return how many.

        Expired sessions read as missing at once, but their rows stay until purged (or
        written again): call this now and then, from a script or a timer.
        """
        return int(self._cache().expire())

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is stored."""
        self._cache().delete(key)

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, a hundred rows at a time."""
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
    """Return the process-wide DiskStorage in ``$TGSESSION_DIR``, or ``./.tgsession``."""
    global _default
    with _directories_guard:
        if _default is None:
            _default = DiskStorage(os.environ.get("TGSESSION_DIR", ".tgsession"))
        return _default

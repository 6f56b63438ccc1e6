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
import functools
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_PICKLE, MODE_RAW, MODE_TEXT

from ..errors import (
    SessionDecodeError,
    SessionError,
    SessionLockLost,
    SessionStorageError,
    describe,
)
from ._locking import Backoff, KeyedLocks, lock_timeout
from .base import StoredEntry

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


class _Refusals(threading.local):
    error: Exception | None = None  # why tgsession_checked refused this thread's write


_refusals = _Refusals()

# Rows are read and written with these statements on diskcache's own table, rather than with
# Cache.get and Cache.set: a set is BEGIN, a SELECT, an UPDATE and COMMIT through layers of
# Python, a write here is one UPDATE. In a worker thread (where telebot runs handlers) its
# value passes through tgsession_checked(value, key) (see _Directory.connection): the checks
# that a save would not be lost run inside the statement, after SQLite granted it the write
# lock and before it commits, and an error there rolls it back. Measured in benchmarks/ ("disk
# changed" against "disk floor", 100,000 sessions, one run): 168 us with Cache.set and the
# checks in a transaction, 132 us with these statements in a transaction, 105 us with the
# checks inside the statement (the floor: 101), and 80 to 100 us once the write left the
# expiry index alone (see _Writes). diskcache's triggers keep its count and size as its own
# writes do; a str key is a row with raw = 1, and bytes are MODE_RAW values kept in the
# database (size 0, no file).
_SELECT = (
    "SELECT value, mode, filename FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
)


class _Writes:
    """The statements that store ``value``, an SQL expression, under a key."""

    def __init__(self, value: str) -> None:
        columns = (
            "store_time = ?, access_time = ?, access_count = 0, tag = NULL, size = 0,"
            f" mode = {MODE_RAW}, filename = NULL, value = {value}"
        )
        # For a row that has no expiry and keeps none (sessions without a ttl): expire_time
        # is left out of the SET, so SQLite leaves its index alone and the commit logs one
        # page instead of two. Measured with sqlite3 on a store of 100,000 sessions: 38-47 us
        # per UPDATE with expire_time in the SET, 19-24 us without.
        self.lasting = (
            f"UPDATE Cache SET {columns} WHERE key = ? AND raw = 1 AND expire_time IS NULL"
        )
        self.update = f"UPDATE Cache SET expire_time = ?, {columns} WHERE key = ? AND raw = 1"
        self.insert = (
            "INSERT INTO Cache(key, raw, expire_time, store_time, access_time, access_count,"
            f" tag, size, mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, NULL, 0, {MODE_RAW},"
            f" NULL, {value})"
        )

    def put(
        self,
        execute: Callable[..., sqlite3.Cursor],
        key: str,
        data: bytes,
        now: float,
        expire: float | None,
        checked: tuple[str, ...],
    ) -> None:
        """Store ``data`` under ``key`` until ``expire`` (None: no expiry), with the extra
        parameters ``checked`` of a statement's tgsession_checked."""
        values = (now, now, data, *checked)
        if expire is None and execute(self.lasting, (*values, key)).rowcount:
            return
        if execute(self.update, (expire, *values, key)).rowcount:
            return
        try:
            execute(self.insert, (key, expire, *values))
        except sqlite3.IntegrityError:  # inserted meanwhile by another program
            if not execute(self.update, (expire, *values, key)).rowcount:
                raise SessionStorageError(
                    f"could not save session {key!r}: another program changed its row "
                    "during the save; nothing was saved. Only tgsession should write the store"
                ) from None


_WRITES = _Writes("?")
_CHECKED_WRITES = _Writes("tgsession_checked(?, ?)")
_DELETE = "DELETE FROM Cache WHERE key = ? AND raw = 1"


class _SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that loads no pickled key and deletes no file, for diskcache's own
    walks over the store (listing keys, purging expired rows).

    Anything else in the directory was put there by someone else. A pickled key or value could
    run arbitrary code when loaded, and a row that names a file could point anywhere on the
    machine (diskcache joins an absolute name onto nothing), so neither is ever loaded (values
    are read by _SELECT, which takes bytes kept in the database only), and no file is ever
    deleted: tgsession creates none.
    """

    def get(self, key: Any, raw: bool) -> Any:
        return super().get(key, raw) if raw else _FOREIGN  # raw=False: a pickled key

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        # tgsession reads values with _SELECT; this keeps any other use of the Cache safe.
        if mode != MODE_RAW or filename is not None:  # pickled, or in a file, or malformed
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
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        fix = (
            f"use a directory of your own inside it (say {os.path.join(path, 'mybot')})"
            if mode & stat.S_ISVTX  # /tmp and the like: shared on purpose
            else f"run 'chmod o-w {path}', or choose a directory only you can write"
        )
        raise SessionStorageError(
            f"the session store {path} can be written by every user (mode {mode:o}), who "
            f"could replace its files with links to other files: {fix}"
        )
    if mode & stat.S_IWGRP:
        logger.warning(
            "the session store %s can be written by its group (mode %o): every member could "
            "replace its files; run 'chmod g-w %s' unless the group is yours alone",
            path,
            mode,
            path,
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
    """One lock file, opened once per process and shared by every store object on it.

    Closing any descriptor of a file drops every lockf lock the process holds on it, so the
    process has one descriptor per lock file, closed when its last user is done.
    """

    __slots__ = ("fd", "identity", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.identity = _identity(os.fstat(fd))
        self.users = 0  # _Directory objects of this process using it

    def deleted(self) -> bool:
        """Whether the file was deleted (or replaced) since it was opened.

        One fstat (1.5 us here), a third cheaper than a stat of the path.
        """
        return os.fstat(self.fd).st_nlink == 0


_lock_files: dict[tuple[int, int], _LockFile] = {}  # guarded by _directories_guard
# Descriptors that must stay open: a second one of a lock file this process uses (opened in
# a race with its replacement), whose closing would drop the locks held through the first.
_kept_open: list[int] = []


def _use_lock_file(path: str) -> _LockFile:
    """Return this process's _LockFile for the lock file at ``path``, opening it if needed."""
    with _directories_guard:
        try:
            lock_file = _lock_files.get(_identity(os.stat(path)))
        except FileNotFoundError:
            lock_file = None
        if lock_file is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            lock_file = _LockFile(fd)
            if lock_file.identity in _lock_files:  # replaced between the stat and the open
                _kept_open.append(fd)
                lock_file = _lock_files[lock_file.identity]
            else:
                _lock_files[lock_file.identity] = lock_file
        lock_file.users += 1
        return lock_file


def _release_lock_file(lock_file: _LockFile) -> None:
    """Stop using ``lock_file``; the last user of this process closes it."""
    with _directories_guard:
        lock_file.users -= 1
        if lock_file.users == 0:
            if _lock_files.get(lock_file.identity) is lock_file:
                del _lock_files[lock_file.identity]
            os.close(lock_file.fd)


class _Directory:
    """What the threads of one process share for one store directory.

    A forked child gets a _Directory of its own, with fresh thread locks (the parent's may be
    held by threads that do not exist in the child), but the same diskcache Cache: diskcache
    notices the fork and replaces the connection it inherited. A second Cache would connect
    while that inherited connection still tells SQLite, in the child's copy of its memory,
    that the process holds the database's shared lock: it would then hold none, and the next
    process to close the store would delete the write-ahead log under the child.
    """

    def __init__(self, path: str, info: os.stat_result, parent: _Directory | None) -> None:
        self.generation = _generation
        self.path = path
        self.identity = _identity(info)
        self.store = ("disk", *self.identity)  # what DiskStorage.identity gives
        self.db_path = os.path.join(path, DBNAME)
        self.lock_path = os.path.join(path, LOCK_FILE)
        if parent is None:
            _create_database_file(self.db_path)
            self.cache = diskcache.Cache(path, disk=_SafeDisk, **CACHE_SETTINGS)
            self.db_identity = _identity(os.stat(self.db_path))
        else:
            self.cache, self.db_identity = parent.cache, parent.db_identity
        self.lock_file = _use_lock_file(self.lock_path)
        # Every lock file used since opening: a replaced one stays open while this directory
        # is, since threads may still hold bytes of it (one descriptor per replacement).
        self.lock_files = [self.lock_file]
        self.switching = threading.Lock()
        self.threads = KeyedLocks()
        self.holding: dict[str, _LockFile] = {}  # the lock file of each key held here
        self.users = 0  # DiskStorage objects of this process using it
        self.closed = False
        self.local = threading.local()  # each thread's connection, once it has the function

    def connection(self) -> sqlite3.Connection:
        """This thread's SQLite connection (diskcache's), with ``tgsession_checked``, and in
        no transaction.

        diskcache makes a connection per thread, and a new one in a forked child.
        """
        cache = self.cache
        connection: sqlite3.Connection = cache._con
        if getattr(self.local, "connection", None) is not connection:
            # Through a weak reference: a connection of a thread that outlives this directory
            # (a worker of telebot's pool) would otherwise keep it, and so itself, open. It
            # costs 0.24 us per save (timeit), against about 45 us for the save itself.
            checked = weakref.WeakMethod(self._checked)

            def call_checked(value: bytes, key: str) -> bytes:
                method = checked()  # alive: a write holds its directory
                return value if method is None else method(value, key)

            connection.create_function("tgsession_checked", 2, call_checked)
            self.local.connection = connection
        if connection.in_transaction and not getattr(self.local, "saving", False):
            # Left open by an operation that an exception (a signal handler's, say) cut off
            # between BEGIN and the end: nothing of it was reported saved. Left open, every
            # later write would join it and never be committed.
            connection.execute("ROLLBACK")
            if cache._txn_id == threading.get_ident():  # diskcache's own, cut off likewise
                cache._txn_id = None
            logger.warning("rolled back a transaction that an interrupted operation left open")
        return connection

    def _checked(self, value: bytes, key: str) -> bytes:
        # Called by SQLite inside a write: an exception aborts it. SQLite reports only that
        # the function raised, so the error is kept for write() to raise instead.
        try:
            self.verify(key, "save")
        except Exception as error:
            _refusals.error = error
            raise
        return value

    def verify(self, key: str, action: str) -> None:
        """Raise unless a change of ``key`` now would last: the store is in place, and the
        lock file through which ``key`` is held (if it is) was not deleted or replaced."""
        self.check_intact(key, action)
        held = self.holding.get(key)
        if held is not None and held.deleted():
            raise SessionLockLost(
                f"the lock file {self.lock_path} was deleted or replaced while session "
                f"{key!r} was held, so another process may have changed it since: this "
                "update's changes were not saved. Never delete the lock file of a running bot"
            )

    def gone(self) -> str | None:
        """What happened to the database this process has open, or None if it is in place.

        A stat of its path (2.4 us here): it also tells a directory renamed away, which a
        descriptor would not.
        """
        try:
            if _identity(os.stat(self.db_path)) == self.db_identity:
                return None
        except FileNotFoundError:
            return "was deleted or moved"
        return "was replaced by another file"

    def check_intact(self, key: str, action: str) -> None:
        """Raise SessionStorageError if the database of this store is no longer in place."""
        problem = self.gone()
        if problem is not None:
            raise SessionStorageError(
                f"could not {action} session {key!r}: the session store {self.path} {problem} "
                "while this process had it open, so its saves would go nowhere. Restore the "
                "directory, or restart the bot to begin an empty store"
            )

    def switch_lock_file(self, stale: _LockFile, key: str) -> None:
        """The lock file at the path is no longer ``stale``: open the one there now.

        ``stale`` stays open while this directory is (see ``lock_files``).
        """
        with self.switching:
            if self.lock_file is not stale:  # another thread switched already
                return
            self.check_intact(key, "lock")  # a deleted directory: stop here, with an error
            self.lock_file = _use_lock_file(self.lock_path)
            self.lock_files.append(self.lock_file)
        logger.warning(
            "the lock file %s was deleted or replaced while the bot ran; this process now "
            "locks the new one. Never delete it while a bot uses the store",
            self.lock_path,
        )

    def close(self) -> None:
        """Close this thread's connection and release the lock files.

        Callers close only a directory that no handler is using.
        """
        self.cache.close()
        for lock_file in self.lock_files:
            _release_lock_file(lock_file)


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
    link) share them too.
    """
    with _directories_guard:
        try:
            _make_directory(path)
            info = _check_directory(path)
            directory = _directories.get(_identity(info))
            if directory is None or directory.gone():
                directory = _Directory(path, info, None)
            elif directory.generation != _generation:  # a forked child: see _Directory
                directory = _Directory(path, info, directory)
            else:
                directory.users += 1
                return directory
            _directories[directory.identity] = directory
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
    """Stop using ``directory``; the last user of this process closes it: at once, or, if a
    thread still holds one of its locks, when that thread releases the last of them."""
    with _directories_guard:
        directory.users -= 1
        _close_if_unused(directory)


def _close_if_unused(directory: _Directory) -> None:
    """Close ``directory`` if no DiskStorage of this process uses it and no thread is in one
    of its locks; later lock takers are refused (call with _directories_guard held)."""
    if directory.users or directory.closed or directory.generation != _generation:
        return
    if not directory.threads.close_if_idle():
        return  # closed by the release of its last lock
    if _directories.get(directory.identity) is directory:
        del _directories[directory.identity]
    directory.closed = True
    directory.close()


def _successor(prefix: str) -> str | None:
    """The first string after every string that starts with ``prefix``; None if none is."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1 if last + 1 not in range(0xD800, 0xE000) else 0xE000
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


@functools.lru_cache(maxsize=4096)  # a hash per lock took 1.3 us; a cache hit 0.1 us
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
        try:
            directory.threads.acquire(self.offset, self.timeout, self.key)
        except BaseException:
            self._close_if_closed()
            raise
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
            self._leave()
            raise
        self.lock_file = lock_file
        directory.holding[self.key] = lock_file

    def __exit__(self, *exc_info: object) -> None:
        self.directory.holding.pop(self.key, None)
        try:
            fcntl.lockf(self.lock_file.fd, fcntl.LOCK_UN, 1, self.offset)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Release the thread lock, then see to the directory (`_close_if_closed`)."""
        self.directory.threads.release(self.offset)
        self._close_if_closed()

    def _close_if_closed(self) -> None:
        """Close the directory if its last DiskStorage was closed while this thread was in
        the lock or waited for it."""
        directory = self.directory
        if not directory.users:
            with _directories_guard:
                _close_if_unused(directory)


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
        row = self._dir().connection().execute(_SELECT, (key, time.time())).fetchone()
        return None if row is None else self._session_bytes(key, *row)

    def _session_bytes(self, key: str, value: Any, mode: int, filename: str | None) -> bytes:
        """The bytes of a row that tgsession wrote; SessionDecodeError for any other row."""
        if mode == MODE_RAW and filename is None and isinstance(value, bytes):
            return value
        if filename is not None:
            what = "a file outside the database"
        elif mode == MODE_PICKLE:
            what = "a pickled object"
        elif mode == MODE_TEXT:
            what = "text"
        else:
            what = f"a {type(value).__name__}"
        raise SessionDecodeError(
            f"session {key!r} in {self.directory} holds {what}, not session bytes: something "
            "other than tgsession wrote it; it is not loaded and left untouched, delete it to "
            "start afresh"
        )

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key``, for ``ttl`` seconds if given."""
        now = time.time()
        expire = None if ttl is None else now + ttl
        data = bytes(data)
        directory = self._dir()
        connection = directory.connection()
        execute = connection.execute
        if threading.current_thread() is threading.main_thread():
            # Python runs signal handlers in the main thread, at its next Python code: in
            # tgsession_checked, sqlite3 would discard their KeyboardInterrupt or SystemExit.
            self._transaction(
                directory,
                connection,
                key,
                "save",
                lambda: _WRITES.put(execute, key, data, now, expire, ()),
            )
            return
        try:
            _CHECKED_WRITES.put(execute, key, data, now, expire, (key,))
        except sqlite3.OperationalError:
            error, _refusals.error = _refusals.error, None
            if error is not None:  # refused by tgsession_checked, and rolled back
                raise error from None
            raise

    @staticmethod
    def _transaction(
        directory: _Directory,
        connection: sqlite3.Connection,
        key: str,
        action: str,
        change: Callable[[], object],
    ) -> None:
        """Make ``change`` in a transaction of its own, checked before its commit."""
        # Marked, so that a read in a signal handler meanwhile does not take it for one
        # left open (see _Directory.connection).
        directory.local.saving = True
        try:
            connection.execute("BEGIN IMMEDIATE")
            change()
            directory.verify(key, action)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            directory.local.saving = False

    def purge(self) -> int:
        """Remove the expired sessions that are still on disk; return how many.

        Expired sessions read as missing at once, but their rows stay until purged (or
        written again): call this now and then, from a script or a timer.
        """
        return int(self._cache().expire())

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is stored."""
        directory = self._dir()
        connection = directory.connection()
        # In a transaction: a check inside the statement would not run for a row that is not
        # there, and a deleted store must be reported then too.
        self._transaction(
            directory, connection, key, "delete", lambda: connection.execute(_DELETE, (key,))
        )

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, in order, a page at a time.

        Rows that tgsession did not write (pickled keys) are skipped without being loaded.
        """
        for key, *_ in self._rows(prefix, ""):
            yield key

    def entries(
        self, prefix: str, on_error: Callable[[str, SessionError], object] | None = None
    ) -> Iterator[StoredEntry]:
        """Yield every stored session whose key starts with ``prefix``, with its bytes and
        expiry, in key order, a page at a time.

        A row that is not session bytes raises its SessionDecodeError, unless ``on_error`` is
        given: it is then called with the key and the error, and the listing goes on.
        """
        for key, value, mode, filename, expires in self._rows(
            prefix, ", value, mode, filename, expire_time"
        ):
            try:
                data = self._session_bytes(key, value, mode, filename)
            except SessionDecodeError as error:
                if on_error is None:
                    raise
                on_error(key, error)
                continue
            yield StoredEntry(key, data, expires)

    def _rows(self, prefix: str, columns: str) -> Iterator[tuple[Any, ...]]:
        """The key and ``columns`` of every unexpired row whose str key starts with
        ``prefix``, in key order.

        A page of 1,000 rows per query, each a short read of its own: a listing of any length
        never keeps SQLite from checkpointing the bot's writes, nor holds more than a page.
        """
        # Keys are compared as SQLite stores them, UTF-8 bytes, whose order is that of code
        # points, as Python's: the keys with the prefix lie between it and its successor.
        # Keys are read as bytes: another program may have stored one that is not UTF-8,
        # which sqlite3 would fail to decode, ending the listing. It is skipped and logged.
        end = _successor(prefix)
        select = (
            f"SELECT CAST(key AS BLOB){columns} FROM Cache WHERE key {{}} CAST(? AS TEXT)"
            + ("" if end is None else " AND key < ?")
            + " AND raw = 1 AND typeof(key) = 'text' AND (expire_time IS NULL OR expire_time > ?)"
            " ORDER BY key LIMIT 1000"
        )
        first, after = select.format(">="), select.format(">")
        bound = () if end is None else (end,)
        statement, start = first, prefix.encode()
        while True:
            connection = self._dir().connection()
            rows = connection.execute(statement, (start, *bound, time.time())).fetchall()
            for raw, *rest in rows:
                try:
                    key = raw.decode()
                except UnicodeDecodeError:
                    logger.warning(
                        "skipped the row %r in %s: its key is not UTF-8, so not tgsession's",
                        raw,
                        self.directory,
                    )
                    continue
                yield (key, *rest)
            if len(rows) < 1000:
                return
            statement, start = after, rows[-1][0]

    def expiry(self, key: str) -> float | None:
        """When ``key`` expires (a time.time() value); None if it never does or is absent."""
        row = (
            self._dir()
            .connection()
            .execute("SELECT expire_time FROM Cache WHERE key = ? AND raw = 1", (key,))
            .fetchone()
        )
        expires = None if row is None else row[0]
        return None if expires is None or expires <= time.time() else float(expires)

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
    default = _default
    if default is not None:  # without the lock: every session of a default manager asks
        return default
    with _directories_guard:
        if _default is None:
            _default = DiskStorage(os.environ.get("TGSESSION_DIR", ".tgsession"))
            logger.info("sessions are stored in %s", _default.directory)
        return _default


def forget_default_storage() -> None:
    """Let the next session of a manager without a storage open ``$TGSESSION_DIR`` afresh
    (for tests that run bots one after another). The default DiskStorage until now is
    closed, or, while this process holds a session of its directory, once it holds none."""
    global _default
    with _directories_guard:
        if _default is not None:
            _retired.append(_default)
            _default = None
        for storage in list(_retired):
            shared = storage._shared
            # Not while a thread is in one of the directory's locks: it may hold a session
            # through this object, and still have to save it. (A thread that takes one after
            # this check, through this object, looked it up before the forget: it is told
            # that its store was closed.)
            if shared is None or not len(shared.threads):
                _retired.remove(storage)
                storage.close()


def default_directory() -> str | None:
    """The directory of the default DiskStorage, if it is open."""
    default = _default
    return None if default is None else default.directory


# Default stores forgotten while a session of theirs was held: closed by a later forget.
_retired: list[DiskStorage] = []

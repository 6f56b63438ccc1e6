"""Pieces the storages' locks share: per-key thread locks, polling backoff, timeout errors.

Every storage puts a `KeyedLocks` in front of its own cross-process lock, so that the
worker threads of one bot queue on a plain ``threading.Lock`` (no polling, no round trip to the
store) and only one thread per key and process ever competes for the store's lock.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Hashable
from typing import Any, Callable, TypeVar

from ..errors import SessionLockTimeout

T = TypeVar("T")

# What each live owner of per-process lock state does in a forked child (see
# reset_in_children). Values are plain functions, so that they keep no owner alive.
_child_resets: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def reset_in_children(owner: T, reset: Callable[[T], None]) -> None:
    """Run ``reset(owner)`` in every child forked from this process while ``owner`` lives.

    A child inherits no lock of its parent (lockf locks and Redis tokens are the parent's),
    but it does inherit copies of the parent's thread locks, held by threads that do not
    exist in the child: ``reset`` gives the owner fresh ones. Holders from before the fork
    keep the old state, to release into it harmlessly.
    """
    _child_resets[owner] = reset


def _reset_in_child() -> None:
    for owner, reset in list(_child_resets.items()):
        reset(owner)


os.register_at_fork(after_in_child=_reset_in_child)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0  # threads holding or waiting for `lock`


class KeyedLocks:
    """A lock per key, created on first use and dropped when no thread holds or awaits it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._closed = False

    def acquire(self, key: Hashable, timeout: float | None = None, session: str = "") -> None:
        """Take the lock of ``key``; raise SessionLockTimeout after ``timeout`` seconds, and
        ValueError once `close_if_idle` succeeded.

        ``session`` names the session in those errors, if ``key`` is not its name.
        """
        with self._guard:
            if self._closed:
                raise ValueError(
                    f"session {session or str(key)!r}: its store was closed (a default store "
                    "forgotten by forget_default_storage, say): open it again"
                )
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.users += 1
        try:
            acquired = entry.lock.acquire(timeout=-1 if timeout is None else timeout)
        except BaseException:  # interrupted while waiting: no longer a user
            self._leave(key, entry)
            raise
        if not acquired:
            self._leave(key, entry)
            raise lock_timeout(session or str(key), timeout)

    def release(self, key: Hashable) -> None:
        """Release the lock of ``key``, which this thread holds."""
        entry = self._entries[key]
        entry.lock.release()
        self._leave(key, entry)

    def _leave(self, key: Hashable, entry: _Entry) -> None:
        with self._guard:
            entry.users -= 1
            if not entry.users:
                del self._entries[key]

    def close_if_idle(self) -> bool:
        """Refuse every later acquire, if no thread holds or awaits a key now; return whether
        it did. Whoever closes what the locks guard (a lock file) asks this first: a thread
        is then either counted here, or refused before it touches what was closed."""
        with self._guard:
            if not self._entries:
                self._closed = True
            return self._closed

    def hold(self, key: str, timeout: float | None = None) -> KeyHold:
        """Return a context manager holding the lock of ``key``."""
        return KeyHold(self, key, timeout)

    def __len__(self) -> int:
        """Return how many keys are held or awaited right now."""
        return len(self._entries)


class KeyHold:
    __slots__ = ("key", "locks", "timeout")

    def __init__(self, locks: KeyedLocks, key: str, timeout: float | None) -> None:
        self.locks, self.key, self.timeout = locks, key, timeout

    def __enter__(self) -> None:
        self.locks.acquire(self.key, self.timeout)

    def __exit__(self, *exc_info: object) -> None:
        self.locks.release(self.key)


def lock_timeout(key: str, timeout: float | None) -> SessionLockTimeout:
    """Return the error for a session ``key`` still locked after ``timeout`` seconds."""
    return SessionLockTimeout(
        f"session {key!r} is still locked by another handler after {timeout} s; "
        "raise the storage's lock_timeout if handlers of one user run that long, "
        "or check for handlers that open sessions in different orders"
    )


class Backoff:
    """Sleeps of growing length between polls of a busy lock, until an optional deadline."""

    FIRST, LONGEST = 0.001, 0.025

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline  # a time.monotonic() value, or None for no limit
        self.delay = self.FIRST

    def sleep(self, at_most: float | None = None) -> bool:
        """Sleep before the next poll (no longer than ``at_most``); False if past the deadline."""
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return False
        # Jitter keeps waiters that started together from polling in step.
        wait = self.delay * (0.5 + random.random())
        if at_most is not None:
            wait = min(wait, at_most)
        if self.deadline is not None:
            wait = min(wait, self.deadline - now)
        time.sleep(wait)
        self.delay = min(self.delay * 2, self.LONGEST)
        return True

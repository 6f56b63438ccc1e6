"""MemoryStorage: sessions in a dict, for tests and bots that may forget on restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ._locking import KeyedLocks, KeyHold, reset_in_children
from .base import StoredEntry

if TYPE_CHECKING:
    from ..errors import SessionError


class MemoryStorage:
    """Keeps sessions in this process's memory; they are gone when the process ends.

    Locks are per key and exclude the threads of this process, which is every user a memory
    store can have.
    """

    def __init__(self, *, lock_timeout: float | None = None) -> None:
        """Create an empty store; ``lock_timeout`` bounds the wait for a busy session."""
        self.lock_timeout = lock_timeout
        self._data: dict[str, bytes] = {}
        self._deadlines: dict[str, float] = {}  # time.monotonic() after which a key is gone
        # Guards an expiry check and its deletion against a write in between (purge and
        # keys() check keys that other threads may be saving).
        self._guard = threading.Lock()
        self._locks = KeyedLocks()
        reset_in_children(self, MemoryStorage._forked)

    def _forked(self) -> None:
        # A child forked while a handler held a session must be able to open it: its copy of
        # the store is its own, and the parent's threads hold nothing in it.
        self._guard = threading.Lock()
        self._locks = KeyedLocks()

    def _expired(self, key: str) -> bool:
        with self._guard:
            deadline = self._deadlines.get(key)
            if deadline is None or deadline > time.monotonic():
                return False
            self._data.pop(key, None)
            del self._deadlines[key]
            return True

    def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        if self._deadlines and self._expired(key):
            return None
        return self._data.get(key)

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key``, for ``ttl`` seconds if given."""
        with self._guard:
            self._data[key] = bytes(data)
            if ttl is None:
                self._deadlines.pop(key, None)
            else:
                self._deadlines[key] = time.monotonic() + ttl

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is stored."""
        with self._guard:
            self._data.pop(key, None)
            self._deadlines.pop(key, None)

    def purge(self) -> int:
        """Remove the expired sessions; return how many."""
        return sum(self._expired(key) for key in list(self._deadlines))

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``."""
        return (
            key for key in list(self._data) if key.startswith(prefix) and not self._expired(key)
        )

    def entries(
        self, prefix: str, on_error: Callable[[str, SessionError], object] | None = None
    ) -> Iterator[StoredEntry]:
        """Yield every stored session whose key starts with ``prefix``, with its bytes and
        expiry (every entry is session bytes here: ``on_error`` is never called)."""
        offset = time.time() - time.monotonic()
        for key in self.keys(prefix):
            with self._guard:
                data, deadline = self._data.get(key), self._deadlines.get(key)
            if data is not None:
                yield StoredEntry(key, data, None if deadline is None else deadline + offset)

    def expiry(self, key: str) -> float | None:
        """When ``key`` expires (a time.time() value); None if it never does or is absent."""
        deadline = self._deadlines.get(key)
        return None if deadline is None else deadline + time.time() - time.monotonic()

    def lock(self, key: str) -> KeyHold:
        """Hold the lock of ``key`` against the other threads of this process."""
        return self._locks.hold(key, self.lock_timeout)

    def __len__(self) -> int:
        """Return the number of stored sessions."""
        return len(self._data)

"""The storage protocol: the four operations every session store provides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable


@runtime_checkable
class Storage(Protocol):
    """Where sessions live, as bytes under string keys.

    No base class is needed: any object with these four methods is a storage. tgsession calls
    ``lock(key)`` first and keeps it held while it reads the entry, runs the handler and writes
    the result, so ``lock`` must exclude every other thread and process that uses the same
    store for as long as the context is open.
    """

    def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None`` when there are none."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there.

        Storages that can expire entries take ``ttl`` too: ``write(key, data, ttl=None)``,
        where ``ttl`` is the seconds after which the entry reads as missing; sessions with a
        ``ttl`` need such a storage.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def lock(self, key: str) -> AbstractContextManager[object]:
        """Return a context manager that holds the exclusive lock of ``key`` while open."""
        ...


@runtime_checkable
class ListableStorage(Storage, Protocol):
    """A storage that can also list its keys, which enumerating sessions needs."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, without loading them all."""
        ...

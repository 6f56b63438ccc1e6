"""The storage protocol: the four operations every session store provides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..errors import SessionError


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


class StoredEntry(NamedTuple):
    """A stored session as an export holds it."""

    key: str
    data: bytes
    expires: float | None  # when it expires, a time.time() value; None: never


@runtime_checkable
class ExportableStorage(ListableStorage, Protocol):
    """A storage that can also stream its sessions with their expiry, which the ``tgsession``
    command needs (DiskStorage, RedisStorage and MemoryStorage are)."""

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key``, for ``ttl`` seconds if given."""
        ...

    def entries(
        self, prefix: str, on_error: Callable[[str, SessionError], object] | None = None
    ) -> Iterator[StoredEntry]:
        """Yield every stored session whose key starts with ``prefix``, streaming.

        An entry that is not session bytes raises its SessionDecodeError, unless
        ``on_error`` is given: it is then called with the key and the error, and the listing
        goes on.
        """
        ...

    def expiry(self, key: str) -> float | None:
        """When ``key`` expires (a time.time() value); None if it never does or is absent."""
        ...

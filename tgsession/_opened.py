"""OpenSession: one session held under its storage's lock, from its load to its save.

It also keeps the record of which sessions each thread holds: a storage's lock is not
re-entrant, so a thread that opened the same session twice would wait for itself.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Union

from . import _abandoned
from .errors import SessionError, SessionStorageError, describe
from .session import holders
from .storage.base import Storage

if TYPE_CHECKING:
    from .manager import SessionManager

logger = logging.getLogger("tgsession")


class Delete:
    """The change that means: delete the stored entry."""


DELETE = Delete()

Change = Union[bytes, Delete, None]  # what saving means: bytes to write, DELETE, or nothing

# A session as its thread holds it: (what the store is, entry). Stores are told apart by what
# they are, not by the Python object, so that two objects for one store are one store.
HeldKey = tuple[object, str]


class _Threads(threading.local):
    """The sessions each thread holds."""

    def __init__(self) -> None:
        self.held: set[HeldKey] = set()


_threads = _Threads()
_forks = 0  # how many forks this process descends from: a session is held by one process


def forks() -> int:
    """How many forks this process descends from (cheaper than comparing os.getpid())."""
    return _forks


def _after_fork_in_child() -> None:
    # A child forked inside a handler holds no lock of its parent's sessions: it must be able
    # to open them (and wait for the parent, as any other process would).
    global _threads, _forks
    _threads = _Threads()
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def store_identity(storage: Storage) -> object:
    """What ``storage`` is: its ``identity`` if it has one, else the object's id."""
    identity = getattr(storage, "identity", None)
    return id(storage) if identity is None else identity


def held_key_of(storage: Storage, entry: str) -> HeldKey:
    """How a thread's record names the session ``entry`` of ``storage``."""
    try:
        return (store_identity(storage), entry)
    except Exception as error:  # a closed storage, say
        raise storage_failed(entry, "lock", error) from error


def storage_failed(entry: str, action: str, error: BaseException) -> SessionStorageError:
    """The error for a storage operation that failed: it names the session and the cause."""
    return SessionStorageError(f"could not {action} session {entry!r}: {describe(error)}")


class OpenSession:
    """One session held under its lock, between its load and its save."""

    __slots__ = (
        "baseline",
        "delete_if_unchanged",
        "entry",
        "forks",
        "held_key",
        "lock",
        "manager",
        "registry",
        "session",
        "storage",
        "stored",
    )

    def __init__(self, manager: SessionManager[Any], storage: Storage, entry: str) -> None:
        self.manager = manager
        self.storage = storage
        self.entry = entry
        self.held_key = held_key_of(storage, entry)
        self.forks = _forks  # the process that holds it
        # The sessions held by the thread that opens this one: a lazy session may be opened
        # by a thread the handler started and released by the handler's own.
        self.registry = _threads.held
        self.lock: AbstractContextManager[object] | None = None  # entered: held until release
        self.stored = False  # whether the entry exists in the storage
        self.baseline = b""  # what counts as unchanged: the bytes loaded, or as new or cleared
        self.delete_if_unchanged = False  # cleared: if still equal to baseline, delete it
        self.session: Any = None

    def take_lock(self) -> None:
        """Take the storage's lock of the entry, and record that this thread holds it.

        A session that this thread holds already is refused: its lock is not re-entrant.
        """
        entry = self.entry
        if self.held_key in self.registry:
            _abandoned.release()  # the holder may be an abandoned call of this thread
        if self.held_key in self.registry:
            raise SessionError(
                f"session {entry!r} is already open in this thread, by a handler or script "
                "that is still running: pass that session along instead of opening it again "
                "(e.g. call the undecorated function, or use the session you were given)"
            )
        try:
            lock = self.storage.lock(entry)
            lock.__enter__()
        except SessionError:
            raise
        except Exception as error:
            raise storage_failed(entry, "lock", error) from error
        self.lock = lock
        self.registry.add(self.held_key)

    def cleared(self, *, restart: bool) -> None:
        """The session was just cleared: delete its entry when saving, unless it changes again.

        With ``restart``, it first becomes a new session from ``initial()``.
        """
        manager = self.manager
        if restart:
            manager.model.reset(self.session, manager.new_session(self.entry)[0])
        self.baseline = manager.encode(self.entry, self.session)
        self.delete_if_unchanged = True

    def release(self, error: BaseException | None = None) -> None:
        """Release the lock (telling it of ``error``, if the holder raised one)."""
        self.registry.discard(self.held_key)
        if self.session is not None:
            holders.pop(id(self.session), None)
        if self.lock is not None:
            if error is None:
                self.lock.__exit__(None, None, None)
            else:
                self.lock.__exit__(type(error), error, error.__traceback__)

    def change(self) -> Change:
        """Return what saving means: bytes to write, DELETE, or None for nothing."""
        manager = self.manager
        data = manager.encode(self.entry, self.session)
        if data != self.baseline:
            manager.check_nesting(self.entry, self.session, data)
            data = manager.check_loads_back(self.entry, data, self.session)
        if data != self.baseline:
            return data
        return DELETE if self.delete_if_unchanged and self.stored else None

    def save(self, change: Change) -> None:
        """Apply a change computed by `change`."""
        if change is None:
            return
        action = "delete" if isinstance(change, Delete) else "write"
        ttl = self.manager.ttl
        try:
            if isinstance(change, Delete):
                self.storage.delete(self.entry)
            elif ttl is None:
                self.storage.write(self.entry, change)
            else:
                self.storage.write(self.entry, change, ttl=ttl)  # type: ignore[call-arg]
        except SessionError:
            raise
        except Exception as error:
            raise storage_failed(self.entry, action, error) from error
        # What is stored now counts as unchanged, should the session be saved again (by an
        # enclosing call that borrowed it out).
        if isinstance(change, Delete):
            self.stored = False
        else:
            self.baseline, self.stored, self.delete_if_unchanged = change, True, False
        logger.debug("%s session %r", "deleted" if action == "delete" else "saved", self.entry)

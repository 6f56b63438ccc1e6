"""SessionManager: one kind of session, and the steps that open and save it.

Opening a session takes the storage's lock of its entry (``f"{key}:{session_key}"``), then
reads and decodes the entry, or creates a session with ``initial()``. Saving encodes it and
writes it if its bytes changed, or deletes it if it was cleared and not changed since; then
the lock is released. When the holder raises, nothing is saved.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any, Callable, Generic, NoReturn, TypeVar

from . import _abandoned
from .codec import Codec
from .errors import (
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionKeyError,
    SessionStorageError,
)
from .keys import KeyStrategy, SessionKey
from .migrations import Migrations
from .models import Misfit, SessionModel, SessionValue, model_of
from .session import Loader, holders
from .storage.base import ListableStorage, Storage
from .storage.disk import default_storage

logger = logging.getLogger("tgsession")

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=SessionValue)


class _Delete:
    """The change that means: delete the stored entry."""


_DELETE = _Delete()

_Mine = tuple[int, str]  # (id of the storage, entry): a session as its thread holds it

# The entries each thread holds, to refuse opening one twice: its lock is not re-entrant, so
# a second open by the holder itself would wait for ever.
_this_thread = threading.local()


def _can_expire(storage: Storage) -> bool:
    """Whether ``storage`` takes a ttl when it writes (the optional part of the protocol)."""
    try:
        return "ttl" in inspect.signature(storage.write).parameters
    except (TypeError, ValueError):
        return False


def _storage_failed(entry: str, action: str, error: Exception) -> SessionStorageError:
    """The error for a storage operation that failed: it names the session."""
    return SessionStorageError(f"could not {action} session {entry!r}: {error!r}")


class OpenSession:
    """One session held under its lock, between its load and its save."""

    __slots__ = (
        "baseline",
        "delete_if_unchanged",
        "entry",
        "lock",
        "manager",
        "mine",
        "registry",
        "session",
        "storage",
        "stored",
    )

    def __init__(
        self, manager: SessionManager[Any], storage: Storage, entry: str, registry: set[_Mine]
    ) -> None:
        self.manager = manager
        self.storage = storage
        self.entry = entry
        self.mine: _Mine = (id(storage), entry)
        self.registry = registry  # the sessions held by the thread that opened this one
        self.lock: AbstractContextManager[object] | None = None  # entered: held until release
        self.stored = False  # whether the entry exists in the storage
        self.baseline = b""  # what counts as unchanged: the bytes loaded, or as new or cleared
        self.delete_if_unchanged = False  # cleared: if still equal to baseline, delete it
        self.session: Any = None

    def cleared(self, *, restart: bool) -> None:
        """The session was just cleared: delete its entry when saving, unless it changes again.

        With ``restart``, it first becomes a new session from ``initial()``.
        """
        manager = self.manager
        if restart:
            manager.model.reset(self.session, manager._new(self.entry))
        self.baseline = manager._encode(self.entry, self.session)
        self.delete_if_unchanged = True

    def release(self, error: BaseException | None = None) -> None:
        """Release the lock (telling it of ``error``, if the holder raised one)."""
        # The opening thread's registry, since a lazy session may be opened by a thread the
        # handler started and released by the handler's own.
        self.registry.discard(self.mine)
        if self.session is not None:
            holders.pop(id(self.session), None)
        if self.lock is not None:
            if error is None:
                self.lock.__exit__(None, None, None)
            else:
                self.lock.__exit__(type(error), error, error.__traceback__)

    def change(self) -> bytes | _Delete | None:
        """Return what saving means: bytes to write, _DELETE, or None for nothing."""
        manager = self.manager
        data = manager._encode(self.entry, self.session)
        if data != self.baseline:
            if manager.model.typed:
                manager._check_loads_back(self.entry, data, self.session)
            return data
        return _DELETE if self.delete_if_unchanged and self.stored else None

    def save(self, change: bytes | _Delete | None) -> None:
        """Apply a change computed by :meth:`change`."""
        if change is None:
            return
        deleting = isinstance(change, _Delete)
        ttl = self.manager.ttl
        try:
            if isinstance(change, _Delete):
                self.storage.delete(self.entry)
            elif ttl is None:
                self.storage.write(self.entry, change)
            else:
                self.storage.write(self.entry, change, ttl=ttl)  # type: ignore[call-arg]
        except SessionError:
            raise
        except Exception as error:
            raise _storage_failed(self.entry, "delete" if deleting else "write", error) from error
        logger.debug("%s session %r", "deleted" if deleting else "saved", self.entry)


class HeldSessions:
    """The sessions of one handler call (or script): opened, then finished together.

    A lazy session may be opened by a thread the handler started, even after the handler
    returned: once closed, the call refuses such a late session and releases it at once.
    """

    __slots__ = ("closed", "guard", "loaders", "opened")

    def __init__(self) -> None:
        self.opened: list[OpenSession] = []
        self.loaders: list[Loader] = []
        self.closed = False
        self.guard = threading.Lock()

    def lazy(self, manager: SessionManager[Any], update: Any) -> Any:
        """Return a stand-in for the session of ``manager`` for ``update`` that opens on first
        use (a LazySession, or a LazyTypedSession for dataclasses and models)."""
        loader = Loader(functools.partial(manager.acquire_lazily, update, self))
        self.loaders.append(loader)
        return manager.model.stand_in(loader)

    def open(
        self,
        update: Any,
        eager: tuple[SessionManager[Any], ...],
        lazy: tuple[SessionManager[Any], ...],
        into: dict[str, Any],
    ) -> None:
        """Open the sessions of ``eager`` for ``update`` now, and those of ``lazy`` on first
        use; put each into ``into`` under its key."""
        keyed: list[tuple[str, SessionManager[Any]]] = []
        for manager in eager:
            session_key = manager.get_session_key(update)
            if session_key is None:  # its session raises SessionKeyError when used
                into[manager.key] = self.lazy(manager, update)
            else:
                keyed.append((manager.entry_key(session_key), manager))
        # Every call takes its eager locks in one global order, so two handlers that stack
        # the same sessions in different orders cannot deadlock.
        if len(keyed) > 1:
            keyed.sort(key=lambda pair: pair[0])
        for entry, manager in keyed:
            into[manager.key] = manager.acquire(entry, self).session
        for manager in lazy:
            into[manager.key] = self.lazy(manager, update)

    def add(self, opened: OpenSession) -> None:
        """Hold ``opened`` until release(); release it now if the call is over."""
        with self.guard:
            if not self.closed:
                self.opened.append(opened)
                return
        opened.release()
        used_after_return()

    def close(self) -> None:
        """Accept no more sessions, and make the lazy ones refuse any later use."""
        with self.guard:
            self.closed = True
        for loader in self.loaders:
            loader.close(used_after_return)

    def finish(self, error: BaseException | None = None) -> None:
        """End the call: save the sessions unless the holder raised ``error``, then release."""
        self.close()
        if error is None:
            try:
                self.save()
            except BaseException as failure:
                self.release(failure)
                raise
        self.release(error)

    def save(self) -> None:
        """Save every held session; encode them all first, so that one that cannot be
        encoded leaves all of them as they were."""
        if len(self.opened) == 1:  # the common case, without the list
            self.opened[0].save(self.opened[0].change())
            return
        changes = [(held, held.change()) for held in self.opened]
        for held, change in changes:
            held.save(change)

    def release(self, error: BaseException | None = None) -> None:
        """Release every lock, last taken first, even if one release fails.

        A loop instead of contextlib.ExitStack: the stack cost 1.8 us per update against
        0.1 us for this (measured with timeit), a tenth of what a session adds to a disk
        update. The first failure is raised, any later ones are logged.
        """
        failure: BaseException | None = None
        for held in reversed(self.opened):
            try:
                held.release(error)
            except BaseException as problem:
                if failure is None:
                    failure = problem
                else:
                    logger.error("could not release session %r", held.entry, exc_info=problem)
        if failure is not None:
            raise failure


def used_after_return() -> NoReturn:
    raise SessionError(
        "a lazy session was used after its handler returned, when it is no longer locked and "
        "nothing would save it: use sessions only while their handler runs (join the threads "
        "that use it; for a next-step handler, decorate that handler too)"
    )


class SessionManager(Generic[S]):
    """One kind of session: how it is keyed, created and stored, and how handlers get it.

    ``with_session(...)`` returns one. Decorate handlers with it, or use :meth:`open` in scripts.
    ``S`` is the type of the sessions, the type that ``initial()`` returns.
    """

    def __init__(
        self,
        *,
        key: str,
        initial: Callable[[], S],
        storage: Storage | None,
        get_session_key: KeyStrategy,
        lazy: bool,
        codec: Codec,
        migrations: Migrations,
        ttl: float | timedelta | None = None,
    ) -> None:
        if not key.isidentifier():
            raise ValueError(f"key must be a parameter name, got {key!r}")
        if isinstance(ttl, timedelta):
            ttl = ttl.total_seconds()
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if ttl is not None and storage is not None and not _can_expire(storage):
            raise TypeError(
                f"{storage!r} cannot expire sessions: its write() takes no ttl; use "
                "DiskStorage, RedisStorage or MemoryStorage, or leave ttl out"
            )
        self.ttl: float | None = ttl
        self.key = key
        self.initial = initial
        self.get_session_key = get_session_key
        self.lazy = lazy
        self.codec = codec
        self.migrations = migrations
        self._storage = storage
        self._model: SessionModel | None = None  # known once initial() was called

    @property
    def model(self) -> SessionModel:
        """What these sessions are (dict, dataclass or pydantic model), as ``initial()`` says."""
        model = self._model
        if model is None:
            model = self._learn(self.key, self.initial())
        return model

    def _learn(self, entry: str, value: Any) -> SessionModel:
        """Remember what these sessions are, from ``value``, the first result of initial()."""
        model = self._model = model_of(entry, value)
        return model

    @property
    def storage(self) -> Storage:
        """The storage of these sessions (the process-wide default DiskStorage if none given)."""
        storage = self._storage
        if storage is None:
            storage = self._storage = default_storage()
        return storage

    def entry_key(self, session_key: SessionKey) -> str:
        """Return the storage key of the session with ``session_key``."""
        if isinstance(session_key, bool) or not isinstance(session_key, (str, int)):
            raise SessionKeyError(
                f"session keys are str or int, but the key of session {self.key!r} is "
                f"{session_key!r}; make get_session_key return an id"
            )
        return f"{self.key}:{session_key}"

    def __call__(self, handler: F) -> F:
        """Decorate ``handler`` so that it receives this session as the argument ``key``."""
        from ._handler import wrap  # _handler builds on this module

        stacked = getattr(handler, "__tgsession_stack__", None)
        # functools.wraps copies __dict__, so a foreign decorator around one of ours carries
        # our attribute too: only merge with a wrapper that is ours, wrapping what it says.
        if stacked is None or getattr(handler, "__wrapped__", None) is not stacked[0]:
            return wrap(handler, (self,))  # type: ignore[return-value]
        inner, managers = stacked
        if any(manager.key == self.key for manager in managers):
            raise TypeError(
                f"{inner.__qualname__}() has two sessions named {self.key!r}; "
                "give each stacked with_session(...) its own key"
            )
        return wrap(inner, (self, *managers))  # type: ignore[return-value]

    @contextmanager
    def open(self, session_key: SessionKey) -> Iterator[S]:
        """Hold the session with ``session_key`` for a script: ``with s.open(42) as session:``.

        Takes the same lock as the handlers, saves on a clean exit and discards on an exception.
        """
        held = HeldSessions()
        opened = self.acquire(self.entry_key(session_key), held)
        try:
            yield opened.session
        except BaseException as error:
            held.finish(error)
            raise
        held.finish()

    def delete(self, session_key: SessionKey) -> None:
        """Delete the stored session with ``session_key``, under its lock."""
        held = self.acquire(self.entry_key(session_key), load=False)
        try:
            held.save(_DELETE)
        finally:
            held.release()

    def delete_many(self, session_keys: Iterable[SessionKey]) -> int:
        """Delete the stored sessions with ``session_keys``, one lock at a time; count them."""
        deleted = 0
        for session_key in session_keys:
            self.delete(session_key)
            deleted += 1
        return deleted

    def keys(self) -> Iterator[str]:
        """Yield the key of every stored session of this kind, streaming from the storage.

        Keys come back as strings (``"42"`` for user 42); ``open``, ``delete`` and
        ``delete_many`` take them as they are. On Redis, SCAN may return a key twice while
        Redis resizes its tables: deduplicate if that matters.
        """
        storage = self.storage
        if not isinstance(storage, ListableStorage):
            raise SessionError(
                f"{storage!r} cannot list its sessions: it has no keys(prefix) method"
            )
        start = len(self.key) + 1
        for entry in storage.keys(f"{self.key}:"):
            yield entry[start:]

    def items(self) -> Iterator[tuple[str, S]]:
        """Yield ``(key, session)`` for every stored session of this kind, one at a time.

        Each session is a snapshot, read without its lock and not saved: to change sessions,
        ``open`` each key. A session deleted meanwhile is skipped.
        """
        for session_key in self.keys():
            entry = self.entry_key(session_key)
            data = self.storage.read(entry)
            if data is not None:
                yield session_key, self._decode(entry, data)

    def acquire(
        self, entry: str, into: HeldSessions | None = None, *, load: bool = True
    ) -> OpenSession:
        """Lock ``entry`` and load it (unless ``load`` is False), held ``into`` a call.

        Without ``into``, release() the result. If loading fails, the lock is released at once.
        """
        held_here: set[_Mine] | None = getattr(_this_thread, "held", None)
        if held_here is None:
            held_here = _this_thread.held = set()
        opened = OpenSession(self, self.storage, entry, held_here)
        if opened.mine in held_here:
            _abandoned.release()  # the holder may be an abandoned call of this thread
        if opened.mine in held_here:
            raise SessionError(
                f"session {entry!r} is already open in this thread, by a handler or script "
                "that is still running: pass that session along instead of opening it again "
                "(e.g. call the undecorated function, or use the session you were given)"
            )
        try:
            lock = opened.storage.lock(entry)
            lock.__enter__()
        except SessionError:
            raise
        except Exception as error:
            raise _storage_failed(entry, "lock", error) from error
        try:
            opened.lock = lock
            held_here.add(opened.mine)
            if load:
                self._load(opened)
        except BaseException:
            opened.release()
            raise
        if into is not None:
            into.add(opened)
        return opened

    def acquire_lazily(self, update: Any, held: HeldSessions) -> Any:
        """Open the session of ``update`` on first use; it is saved with those in ``held``."""
        session_key = self.get_session_key(update)
        if session_key is None:
            raise SessionKeyError(
                f"a {type(update).__name__} update has no key for the session {self.key!r}: "
                f"{getattr(self.get_session_key, '__name__', 'get_session_key')} found none. "
                "Pass with_session(get_session_key=...) a function that finds a key in such "
                "updates (by_chat, by_user_in_chat or your own), or leave the session unused "
                "for them"
            )
        return self.acquire(self.entry_key(session_key), held).session

    def _load(self, opened: OpenSession) -> None:
        """Read and decode the entry of ``opened``, or create its session with initial()."""
        entry = opened.entry
        try:
            data = opened.storage.read(entry)
        except SessionError:
            raise
        except Exception as error:
            raise _storage_failed(entry, "read", error) from error
        if data is None:
            session = self._new(entry)
            opened.baseline = self._encode(entry, session)
        else:
            session = self._decode(entry, data)
            opened.baseline, opened.stored = data, True
        opened.session = session
        holders[id(session)] = opened

    def _new(self, entry: str) -> Any:
        """Return a new session from initial(), checked to be of this manager's type."""
        value = self.initial()
        model = self._model or self._learn(entry, value)
        session = model.check(entry, value)
        if not model.typed:
            return session
        # Read back through the codec: a copy that shares nothing with what initial()
        # returned (which may be one shared instance), proven to load as it is saved.
        loaded, problem = self._read_back(entry, self._encode(entry, session), session)
        if problem is not None:
            raise SessionError(
                f"initial() of session {entry!r} returns a {type(value).__name__} that would "
                f"not load back as it is ({problem}); make each field hold what its "
                "annotation says"
            )
        return loaded

    def _read_back(self, entry: str, data: bytes, session: Any) -> tuple[Any, str | None]:
        """Load ``data``, the typed ``session`` as this manager encoded it; return the result
        and where it differs from ``session`` (None if nowhere)."""
        try:
            # read(), which refuses what the next load would refuse: comparing the objects
            # alone would pass a 1 saved for True, equal in Python but not to pydantic.
            loaded = self.model.read(self.migrations.migrate(entry, self.codec.decode(data)))
        except Misfit as misfit:
            return None, str(misfit)
        return loaded, self.model.difference(loaded, session)

    def _check_loads_back(self, entry: str, data: bytes, session: Any) -> None:
        """Raise SessionEncodeError unless ``data``, the typed ``session`` encoded, loads back
        as ``session``."""
        problem = self._read_back(entry, data, session)[1]
        if problem is not None:
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: it would not load back as it is "
                f"({problem}). JSON keeps no class names, so keep each field to what its "
                "annotation says (an instance of a subclass, a value of another type, or a "
                "__post_init__ that changes fields does not survive). The stored session is "
                "unchanged"
            )

    def _decode(self, entry: str, data: bytes) -> Any:
        try:
            value = self.codec.decode(data)
        except (ValueError, TypeError) as error:
            raise SessionDecodeError(
                f"session {entry!r} holds bytes that cannot be decoded ({error}); they are "
                "left untouched: inspect them, then fix or delete the entry"
            ) from error
        if not isinstance(value, dict):
            raise SessionDecodeError(
                f"session {entry!r} holds a {type(value).__name__}, not a dict; it is left "
                "untouched: inspect it, then fix or delete the entry"
            )
        return self.model.load(entry, self.migrations.migrate(entry, value))

    def _encode(self, entry: str, session: Any) -> bytes:
        try:
            return self.codec.encode(self.migrations.stamp(self.model.dump(session)))
        except (ValueError, TypeError, RecursionError) as error:  # (a value containing itself)
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: {error}. Sessions hold JSON values "
                "(dict, list, str, int, float, bool, None): convert the value before storing "
                "it. The stored session is unchanged"
            ) from error

    def __repr__(self) -> str:
        return f"<SessionManager key={self.key!r} storage={self._storage!r} lazy={self.lazy}>"

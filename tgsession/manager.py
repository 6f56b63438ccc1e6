"""SessionManager: one kind of session, and the steps that open and save it.

Opening a session takes the storage's lock of its entry (``f"{key}:{session_key}"``), then
reads and decodes the entry, or creates a session with ``initial()``. Saving encodes it and
writes it if its bytes changed, or deletes it if it was cleared and not changed since; then
the lock is released. When the holder raises, nothing is saved.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Generic, TypeVar

from . import _abandoned
from ._call import HeldSessions, active_calls, holder
from ._handler import wrap
from ._opened import DELETE, OpenSession, held_key_of, storage_failed
from .codec import Codec, JSONCodec
from .errors import (
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionKeyError,
    describe,
    key_step,
)
from .keys import KeyStrategy, SessionKey
from .migrations import Migrations
from .models import Misfit, SessionModel, SessionValue, model_of
from .session import holders
from .storage.base import ListableStorage, Storage
from .storage.disk import default_storage

logger = logging.getLogger("tgsession")

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=SessionValue)

# How deeply a session may nest lists and dicts: the session itself is level 1. Deeper data
# could be saved by a shallow caller and then fail to load in a handler called more deeply
# (Python's recursion limit counts the caller's frames too), so it is refused at save.
MAX_NESTING = 100

# The longest ttl: a century. A longer one is surely a slip (inf, a timestamp passed for a
# duration); ttl=None keeps a session for ever.
MAX_TTL = 100 * 365.25 * 24 * 3600


def _can_expire(storage: Storage) -> bool:
    """Whether ``storage`` takes a ttl when it writes (the optional part of the protocol)."""
    try:
        return "ttl" in inspect.signature(storage.write).parameters
    except (TypeError, ValueError):
        return False


class SessionManager(Generic[S]):
    """One kind of session: how it is keyed, created and stored, and how handlers get it.

    ``with_session(...)`` returns one. Decorate handlers with it, or use `open` in scripts.
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
        if ttl is not None and (isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL):
            raise ValueError(
                f"ttl must be a positive number of seconds up to {MAX_TTL:.0f} (a century), "
                f"got {ttl!r}; leave it out (ttl=None) for sessions that never expire"
            )
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
        # The default codec: typed sessions are then read and written by msgspec directly.
        self._json = type(codec) is JSONCodec
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
        model = self._model = model_of(entry, value, self.initial, self.migrations)
        return model

    @property
    def storage(self) -> Storage:
        """The storage of these sessions (the process-wide default DiskStorage if none given)."""
        # The default is looked up each time, not kept: a test that points $TGSESSION_DIR
        # elsewhere (forget_default_storage) moves every manager that uses it.
        storage = self._storage
        return default_storage() if storage is None else storage

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
        held.enter()
        try:
            opened = self.acquire(self.entry_key(session_key), held)
        except BaseException as error:
            held.finish(error)
            raise
        try:
            yield opened.session
        except BaseException as error:
            held.finish(error)
            raise
        held.finish()

    def delete(self, session_key: SessionKey) -> bool:
        """Delete the stored session with ``session_key``, under its lock; return whether
        there was one.

        Inside a handler that holds that session, it is cleared instead, and deleted when
        the handler ends (unless the handler changes it again).
        """
        entry = self.entry_key(session_key)
        found = holder(active_calls(), held_key_of(self.storage, entry))
        if found is not None:
            shared = found[1]
            existed = shared.stored
            shared.cleared(restart=True)
            return existed
        held = self.acquire(entry, load=False)
        try:
            try:
                existed = self._read(held.storage, held.entry) is not None
            except SessionDecodeError:  # something tgsession never writes: delete it too
                existed = True
            if existed:
                held.save(DELETE)
        finally:
            held.release()
        return existed

    def delete_many(self, session_keys: Iterable[SessionKey]) -> int:
        """Delete the stored sessions with ``session_keys``, one lock at a time; return how
        many were deleted (keys not stored, and a key given twice, count once or not at all)."""
        return sum(self.delete(session_key) for session_key in session_keys)

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

    def items(
        self, on_error: Callable[[str, SessionError], object] | None = None
    ) -> Iterator[tuple[str, S]]:
        """Yield ``(key, session)`` for every stored session of this kind, one at a time.

        Each session is a snapshot, read without its lock and not saved: to change sessions,
        ``open`` each key. A session deleted meanwhile is skipped. A session that cannot be
        loaded (undecodable, of a newer version, no longer fitting its type) raises its
        SessionError, unless ``on_error`` is given: it is then called with the key and the
        error, and the listing goes on.
        """
        for session_key in self.keys():
            entry = self.entry_key(session_key)
            try:
                data = self._read(self.storage, entry)
                if data is None:
                    continue
                session = self.decode(entry, data)
            except SessionError as error:
                if on_error is None:
                    raise
                on_error(session_key, error)
                continue
            yield session_key, session

    def key_of(self, update: Any) -> SessionKey | None:
        """Return the session key of ``update`` (None if it has none), as handlers get it.

        An exception raised by ``get_session_key`` becomes a SessionKeyError that names the
        update's type, with the original as its cause.
        """
        try:
            return self.get_session_key(update)
        except Exception as error:
            raise SessionKeyError(
                f"{self._key_function}() raised {describe(error)} on a "
                f"{type(update).__name__} update, for the session {self.key!r}: make it "
                "return None for updates that have no "
                "key (the session is then refused only if the handler uses it)"
            ) from error

    def current(self, update: Any = None, *, session_key: SessionKey | None = None) -> S:
        """Return this kind of session for ``update`` (by default, the update of the running
        handler; or the session with ``session_key``), as the running handler, its helpers
        and its filters share it.

        It is the session object that the handler holds, if it holds it; otherwise it is
        opened now and held until the outermost running call ends: an isolated update (see
        `tgsession.isolate`), so that its filters and its handler see one session,
        loaded once, under one lock. Outside a handler it raises SessionError.
        """
        calls = active_calls()
        if update is None and session_key is None:
            update = next((call.update for call in reversed(calls) if call.update), None)
        if not calls or (update is None and session_key is None):
            raise SessionError(
                f"{self.key}.current() works while a handler, an isolated update or open() "
                "runs in this thread, for its update (or pass the update)"
            )
        if session_key is None:
            session_key = self.key_of(update)
            if session_key is None:
                raise self._no_key(update)
        entry = self.entry_key(session_key)
        found = holder(calls, held_key_of(self.storage, entry))
        if found is None:
            found = 0, self.acquire(entry, calls[0])
        position, opened = found
        for call in calls[position + 1 :]:  # each running call puts it back if it raises
            call.borrow(opened)
        return opened.session  # type: ignore[no-any-return]

    def _no_key(self, update: Any) -> SessionKeyError:
        return SessionKeyError(
            f"a {type(update).__name__} update has no key for the session {self.key!r}: "
            f"{self._key_function} found none. Pass with_session(get_session_key=...) a "
            "function that finds a key in such updates (by_chat, by_user_in_chat or your "
            "own), or leave the session unused for them"
        )

    @property
    def _key_function(self) -> str:
        return getattr(self.get_session_key, "__name__", "get_session_key")

    def acquire(
        self, entry: str, into: HeldSessions | None = None, *, load: bool = True
    ) -> OpenSession:
        """Lock ``entry`` and load it (unless ``load`` is False), held ``into`` a call.

        Without ``into``, release() the result. If loading fails, the lock is released at once.
        """
        opened = OpenSession(self, self.storage, entry)
        if _abandoned.pending():  # sessions of updates telebot dropped: release them first
            _abandoned.release()
        if into is not None:
            found = holder(into.calls(), opened.held_key)
            if found is not None:  # held by a running call: share it
                into.borrow(found[1])
                return found[1]
        opened.take_lock()
        try:
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
        session_key = self.key_of(update)
        if session_key is None:
            raise self._no_key(update)
        return self.acquire(self.entry_key(session_key), held).session

    def _read(self, storage: Storage, entry: str) -> bytes | None:
        """The bytes stored under ``entry``, or None; a failure is a SessionStorageError."""
        try:
            return storage.read(entry)
        except SessionError:
            raise
        except Exception as error:
            raise storage_failed(entry, "read", error) from error

    def _load(self, opened: OpenSession) -> None:
        """Read and decode the entry of ``opened``, or create its session with initial()."""
        entry = opened.entry
        data = self._read(opened.storage, entry)
        if data is None:
            session, opened.baseline = self.new_session(entry)
        else:
            session = self.decode(entry, data)
            opened.baseline, opened.stored = data, True
        opened.session = session
        holders[id(session)] = opened

    def new_session(self, entry: str) -> tuple[Any, bytes]:
        """Return a new session from initial(), checked to be of this manager's type, and
        its bytes."""
        value = self.initial()
        model = self._model or self._learn(entry, value)
        session = model.check(entry, value)
        data = self.encode(entry, session)
        self.check_nesting(entry, session, data)
        # Read back from its bytes: a copy that shares nothing with what initial() returned
        # (which may be one shared object, nested lists included), proven to be what the
        # next load will give.
        loaded, problem = self._read_back(entry, data, session)
        if problem is not None:
            raise SessionError(
                f"initial() of session {entry!r} returns a {type(value).__name__} that would "
                f"not load back as it is ({problem}). {model.advice}"
            )
        return loaded, self._as_loaded(loaded, data)

    def _read_back(self, entry: str, data: bytes, session: Any) -> tuple[Any, str | None]:
        """Load ``data``, ``session`` as this manager encoded it; return the result and where
        it differs from ``session`` (None if nowhere)."""
        model = self.model
        try:
            # Loaded as the next load would (read() refuses what it would refuse): comparing
            # the objects alone would pass a 1 saved for True, equal in Python but not to
            # pydantic.
            if self._json:
                loaded = model.reread(data)
            else:
                loaded = model.read(self.migrations.migrate(entry, self.codec.decode(data)))
        except Misfit as misfit:
            return None, str(misfit)
        return loaded, model.difference(loaded, session)

    def check_loads_back(self, entry: str, data: bytes, session: Any) -> bytes:
        """Raise SessionEncodeError unless ``data``, ``session`` encoded, loads back as
        ``session``; return the bytes to store, which the next load reads unchanged."""
        loaded, problem = self._read_back(entry, data, session)
        if problem is not None:
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: it would not load back as it is "
                f"({problem}). {self.model.advice}. The stored session is unchanged"
            )
        return self._as_loaded(loaded, data)

    def _as_loaded(self, loaded: Any, data: bytes) -> bytes:
        # An int in a float field is written as 1 and loads as 1.0: store what the load
        # gives, so that the session is not rewritten at every later save.
        return self.model.to_json(loaded) if self._json and self.model.converts else data

    def decode(self, entry: str, data: bytes) -> Any:
        """Return the session that the stored ``data`` holds, or raise SessionDecodeError."""
        if self._json:  # bytes just as this code writes them need no other step
            try:
                session = self.model.from_json(data)
            except RecursionError:
                raise _too_deep_to_load(entry) from None
            if session is not None:
                return session
        try:
            value = self.codec.decode(data)
        except RecursionError:
            raise _too_deep_to_load(entry) from None
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
        try:
            return self.model.load(entry, self.migrations.migrate(entry, value))
        except RecursionError:
            raise _too_deep_to_load(entry) from None

    def encode(self, entry: str, session: Any) -> bytes:
        """Return the bytes that ``session`` is stored as, or raise SessionEncodeError."""
        model = self.model
        try:
            if self._json:
                return model.to_json(session)
            return self.codec.encode(self.migrations.stamp(model.dump(session)))
        except (ValueError, TypeError, RecursionError) as error:  # (a value containing itself)
            where = None if isinstance(error, RecursionError) else model.locate(session)
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: {where or error}. {model.advice}. The "
                "stored session is unchanged"
            ) from error

    def check_nesting(self, entry: str, session: Any, data: bytes) -> None:
        """Raise SessionEncodeError if ``session`` (encoded as ``data``) nests lists and dicts
        deeper than MAX_NESTING; called only for bytes about to be written."""
        # JSON nests no deeper than it has brackets: counting them (C code, well under a
        # microsecond) spares the walk for almost every session. Other codecs are walked.
        if isinstance(self.codec, JSONCodec) and data.count(b"[") + data.count(b"{") <= (
            MAX_NESTING
        ):
            return
        value = self.model.dump(session)
        if _depth(value) > MAX_NESTING:
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: {_too_deep_at(value)} lies deeper than "
                f"the {MAX_NESTING} levels of lists and dicts that sessions may nest, so that "
                "every handler can load them back. Flatten that part. The stored session is "
                "unchanged"
            )

    def __repr__(self) -> str:
        return f"<SessionManager key={self.key!r} storage={self._storage!r} lazy={self.lazy}>"


def _too_deep_to_load(entry: str) -> SessionDecodeError:
    return SessionDecodeError(
        f"session {entry!r} is nested too deeply to load here (sessions may nest lists and "
        f"dicts {MAX_NESTING} levels); it is left untouched: fix or delete the entry"
    )


def _children(value: Any) -> Any:
    """The values inside a list, tuple or dict."""
    return value.values() if isinstance(value, dict) else value


def _depth(value: Any) -> int:
    """How many levels of lists and dicts ``value`` nests (a value that is neither: 0)."""
    deepest, level = 0, [value]
    while level:  # one level at a time, without recursion: the value may be very deep
        deepest += 1
        level = [
            child
            for parent in level
            for child in _children(parent)
            if isinstance(child, (dict, list, tuple))
        ]
    return deepest


def _too_deep_at(value: Any) -> str:
    """The path to the first list or dict past MAX_NESTING in ``value`` (which has one)."""
    where = "session"
    for _ in range(MAX_NESTING):
        steps = value.items() if isinstance(value, dict) else enumerate(value)
        key, deeper = max(
            ((key, child) for key, child in steps if isinstance(child, (dict, list, tuple))),
            key=lambda step: _depth(step[1]),
        )
        where += key_step(key) if isinstance(value, dict) else f"[{key}]"
        value = deeper
    return where

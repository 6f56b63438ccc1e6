"""with_session: load a session before a handler and save it after, under the session's lock.

The steps, for every session a handler asks for:

1. compute the session key from the update (``get_session_key``);
2. take the storage's lock for the entry ``f"{key}:{session_key}"``;
3. read and decode the entry, or create a session with ``initial()``;
4. run the handler;
5. if it returned, encode the session and write it if the bytes changed (or delete it, if it was
   cleared); if it raised, write nothing;
6. release the lock.

Lazy sessions do steps 1 to 3 on first use instead of before the handler.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, TypeVar

from .codec import Codec, JSONCodec
from .errors import (
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionKeyError,
    SessionStorageError,
)
from .keys import KeyStrategy, SessionKey, by_user
from .session import LazySession, Session
from .storage.base import Storage
from .storage.disk import default_storage

logger = logging.getLogger("tgsession")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_DELETE = b""  # a change that means "delete the entry"; encoded sessions are never empty
_JSON = JSONCodec()


def _storage_call(entry: str, action: str, call: Callable[[], T]) -> T:
    """Run a storage operation, turning its failures into errors that name the session."""
    try:
        return call()
    except SessionError:
        raise
    except Exception as error:
        raise SessionStorageError(f"could not {action} session {entry!r}: {error!r}") from error


class _Opened:
    """One session held under its lock, between its load and its save."""

    __slots__ = ("baseline", "entry", "manager", "session", "stored")

    def __init__(
        self, manager: SessionManager, entry: str, stored: bool, baseline: bytes, session: Session
    ) -> None:
        self.manager = manager
        self.entry = entry
        self.stored = stored  # whether the entry exists in the storage
        self.baseline = baseline  # the encoded session as loaded or created
        self.session = session

    def change(self) -> bytes | None:
        """Return what saving means: bytes to write, _DELETE, or None for nothing."""
        if self.session.deleted:
            return _DELETE if self.stored else None
        data = self.manager._encode(self.entry, self.session)
        return None if data == self.baseline else data

    def save(self, change: bytes | None) -> None:
        """Apply a change computed by change()."""
        if change is None:
            return
        storage = self.manager.storage
        if change is _DELETE:
            _storage_call(self.entry, "delete", lambda: storage.delete(self.entry))
            logger.debug("deleted session %r", self.entry)
        else:
            _storage_call(self.entry, "write", lambda: storage.write(self.entry, change))
            logger.debug("saved session %r (%d bytes)", self.entry, len(change))


def _save_all(opened: list[_Opened]) -> None:
    # Encode every session before writing any, so that one that cannot be encoded leaves all
    # of them as they were.
    changes = [(held, held.change()) for held in opened]
    for held, change in changes:
        held.save(change)


class SessionManager:
    """One kind of session: how it is keyed, created and stored, and how handlers get it.

    ``with_session(...)`` returns one. Decorate handlers with it, or use :meth:`open` in scripts.
    """

    def __init__(
        self,
        *,
        key: str,
        initial: Callable[[], dict[str, Any]],
        storage: Storage | None,
        get_session_key: KeyStrategy,
        lazy: bool,
        codec: Codec,
    ) -> None:
        if not key.isidentifier():
            raise ValueError(f"key must be a parameter name, got {key!r}")
        self.key = key
        self.initial = initial
        self.get_session_key = get_session_key
        self.lazy = lazy
        self.codec = codec
        self._storage = storage

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
        stacked = getattr(handler, "__tgsession_stack__", None)
        if stacked is None:
            return _wrap(handler, (self,))  # type: ignore[no-any-return]
        inner, managers = stacked
        if any(manager.key == self.key for manager in managers):
            raise TypeError(
                f"{inner.__qualname__}() has two sessions named {self.key!r}; "
                "give each stacked with_session(...) its own key"
            )
        return _wrap(inner, (self, *managers))  # type: ignore[no-any-return]

    @contextmanager
    def open(self, session_key: SessionKey) -> Iterator[Session]:
        """Hold the session with ``session_key`` for a script: ``with s.open(42) as session:``.

        Takes the same lock as the handlers, saves on a clean exit and discards on an exception.
        """
        with ExitStack() as stack:
            held = self._acquire(stack, self.entry_key(session_key))
            yield held.session
            _save_all([held])

    def delete(self, session_key: SessionKey) -> None:
        """Delete the stored session with ``session_key``, under its lock."""
        entry = self.entry_key(session_key)
        storage = self.storage
        with ExitStack() as stack:
            _storage_call(entry, "lock", lambda: stack.enter_context(storage.lock(entry)))
            _storage_call(entry, "delete", lambda: storage.delete(entry))

    def _acquire(self, stack: ExitStack, entry: str) -> _Opened:
        """Lock ``entry`` until ``stack`` closes, then load it."""
        storage = self.storage
        _storage_call(entry, "lock", lambda: stack.enter_context(storage.lock(entry)))
        data = _storage_call(entry, "read", lambda: storage.read(entry))
        if data is None:
            session = self._new(entry)
            return _Opened(self, entry, False, self._encode(entry, session), session)
        return _Opened(self, entry, True, data, self._decode(entry, data))

    def _load_lazily(self, stack: ExitStack, update: Any, held: list[_Opened]) -> Session:
        """Load the session of ``update`` on first use; it is saved with the others."""
        session_key = self.get_session_key(update)
        if session_key is None:
            raise SessionKeyError(
                f"a {type(update).__name__} update has no key for the session {self.key!r}: "
                f"{getattr(self.get_session_key, '__name__', 'get_session_key')} found none. "
                "Pass with_session(get_session_key=...) a function that finds a key in such "
                "updates (by_chat, by_user_in_chat or your own), or leave the session unused "
                "for them"
            )
        opened = self._acquire(stack, self.entry_key(session_key))
        held.append(opened)
        return opened.session

    def _new(self, entry: str) -> Session:
        value = self.initial()
        if not isinstance(value, dict):
            raise SessionError(
                f"initial() of session {entry!r} returned a {type(value).__name__}; "
                "it must return a new dict"
            )
        return Session(value)

    def _decode(self, entry: str, data: bytes) -> Session:
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
        return Session(value)

    def _encode(self, entry: str, session: Session) -> bytes:
        try:
            return self.codec.encode(session)
        except (ValueError, TypeError) as error:
            raise SessionEncodeError(
                f"session {entry!r} cannot be saved: {error}. Sessions hold JSON values "
                "(dict, list, str, int, float, bool, None): convert the value before storing "
                "it. The stored session is unchanged"
            ) from error

    def __repr__(self) -> str:
        return f"<SessionManager key={self.key!r} storage={self._storage!r} lazy={self.lazy}>"


def _wrap(handler: Callable[..., Any], managers: tuple[SessionManager, ...]) -> Any:
    """Return ``handler`` wrapped to receive the sessions of ``managers`` by keyword."""
    signature = inspect.signature(handler)
    params = list(signature.parameters.values())
    names = {manager.key for manager in managers}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    for manager in managers:
        param = signature.parameters.get(manager.key)
        if param is None and not takes_kwargs:
            raise TypeError(
                f"{handler.__qualname__}() has no parameter {manager.key!r} to receive its "
                f"session: add one, or pass with_session(key=...) the name of the parameter "
                "that should receive it"
            )
        by_keyword = (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) if param else ()
        if param is not None and param.kind not in by_keyword:
            raise TypeError(
                f"{handler.__qualname__}() takes its session {manager.key!r} as a "
                f"{param.kind.description} parameter; it is passed by keyword"
            )
    kept = [p for p in params if p.name not in names]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Positional arguments after a session parameter would land in it: pass them by name.
    cut = next((i for i, name in enumerate(positional) if name in names), len(positional))
    shifted = [name for name in positional[cut:] if name not in names]
    if shifted and any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(
            f"{handler.__qualname__}() takes *args after its session parameter; "
            "make the session parameter keyword-only"
        )
    eager = tuple(manager for manager in managers if not manager.lazy)
    lazy = tuple(manager for manager in managers if manager.lazy)

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) > cut:
            kwargs.update(zip(shifted, args[cut:]))
            args = args[:cut]
        if not args:
            raise TypeError(f"{handler.__qualname__}() needs the update as its first argument")
        update = args[0]
        with ExitStack() as stack:
            held: list[_Opened] = []
            waiting = list(lazy)
            keyed: list[tuple[str, SessionManager]] = []
            for manager in eager:
                session_key = manager.get_session_key(update)
                if session_key is None:
                    waiting.append(manager)  # its session raises SessionKeyError when used
                else:
                    keyed.append((manager.entry_key(session_key), manager))
            # Every handler takes its eager locks in one global order, so two handlers that
            # stack the same sessions in different orders cannot deadlock.
            keyed.sort(key=lambda pair: pair[0])
            for entry, manager in keyed:
                opened = manager._acquire(stack, entry)
                held.append(opened)
                kwargs[manager.key] = opened.session
            for manager in waiting:
                load = functools.partial(manager._load_lazily, stack, update, held)
                kwargs[manager.key] = LazySession(load)
            result = handler(*args, **kwargs)
            _save_all(held)
        return result

    wrapper.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    wrapper.__tgsession_stack__ = (handler, managers)  # type: ignore[attr-defined]
    return wrapper


def with_session(
    *,
    key: str = "session",
    initial: Callable[[], dict[str, Any]] = dict,
    storage: Storage | None = None,
    get_session_key: KeyStrategy = by_user,
    lazy: bool = False,
    codec: Codec = _JSON,
) -> SessionManager:
    """Return a decorator that hands a blocking handler its session as the argument ``key``.

    - ``initial``: called for each new session; returns a fresh dict of JSON values.
    - ``storage``: where sessions live; a process-wide DiskStorage in ``$TGSESSION_DIR`` or
      ``./.tgsession`` by default.
    - ``get_session_key``: from update to session key; :func:`by_user` by default.
    - ``lazy``: load the session (and take its lock) only when the handler first uses it.
    - ``codec``: turns sessions into bytes; compact JSON by default.

    The returned :class:`SessionManager` also offers ``.open(session_key)`` for scripts.
    """
    return SessionManager(
        key=key,
        initial=initial,
        storage=storage,
        get_session_key=get_session_key,
        lazy=lazy,
        codec=codec,
    )

"""The session objects that handlers receive, and clearing them."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any, Callable, Protocol

from .errors import SessionError


class _Holder(Protocol):
    """What holds an open session under its lock; it hears when the session is cleared."""

    def cleared(self, *, restart: bool) -> None:
        """The session was cleared (and, if ``restart``, should become a new one)."""


# The holder of every open session, by the identity of the session object. A session is
# registered from its load to its release, and its holder keeps it alive meanwhile, so an
# identity cannot be reused while registered.
holders: dict[int, _Holder] = {}


class Session(dict[str, Any]):
    """A session that is a dict: a plain ``dict`` of JSON values.

    Any change, at any depth, is saved when the handler returns, because tgsession compares the
    encoded session with what it loaded rather than tracking assignments.
    """

    __slots__ = ()

    def clear(self) -> None:
        """Empty the session; if it is still empty when the handler ends, it is deleted.

        The next update then starts again from ``initial()``.
        """
        super().clear()
        holder = holders.get(id(self))
        if holder is not None:
            holder.cleared(restart=False)


def clear(session: object) -> None:
    """Start ``session`` over, whatever its type: it becomes what ``initial()`` returns, and its
    stored entry is deleted when the handler ends, unless the handler changes it again.

    Works on dicts, dataclasses, pydantic models and lazy sessions, while they are open.
    """
    holder = holders.get(id(_real(session)))
    if holder is None:
        raise SessionError(
            f"clear() got a {type(session).__name__} that is not an open session: pass the "
            "session a handler or open() gave you, while it runs; to delete a stored session "
            "from a script, call delete(session_key) on its with_session(...) object"
        )
    holder.cleared(restart=True)


def _real(session: object) -> object:
    """The session behind a lazy stand-in (loaded now), or ``session`` itself."""
    if isinstance(session, LazySession):
        return session.session
    if isinstance(session, LazyTypedSession):
        loader: Loader = object.__getattribute__(session, "_tgsession_loader")
        return loader.get()
    return session


_making_locks = threading.Lock()  # held for an instant, to make a loader's locks once


class Loader:
    """Loads the session behind a lazy stand-in on first use, taking its lock.

    Threads a handler starts may use its lazy session at once: the first loads it, the others
    wait for that and share it (a second load would wait for the first's lock for ever).
    """

    __slots__ = ("guard", "load", "state", "value")

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load
        self.value: Any = None
        # Made at the first use: most lazy sessions are never used. With the fast path of an
        # empty call, an untouched lazy session went from 4.4 to 2.6 us (timeit, this machine).
        self.guard: threading.Lock | None = None  # held through a load: users wait for it
        self.state: threading.Lock | None = None  # held only to change load and value

    def get(self) -> Any:
        """The session, loaded now if it was not yet."""
        value = self.value
        if value is None:
            if self.guard is None or self.state is None:
                with _making_locks:
                    if self.guard is None or self.state is None:
                        self.guard, self.state = threading.Lock(), threading.Lock()
            with self.guard:
                value = self.value
                if value is None:
                    load = self.load
                    value = load()
                    with self.state:
                        if self.load is load:  # not closed meanwhile: keep it for later uses
                            self.value = value
        return value

    def close(self, load: Callable[[], Any]) -> None:
        """Forget the session and use ``load`` on any later use (the handler has returned).

        It does not wait for a load in flight: that load ends by its call refusing it.
        """
        state = self.state
        if state is None:  # never used (a use starting now finds the new load)
            self.load, self.value = load, None
            return
        with state:
            self.load = load
            self.value = None


class LazySession(MutableMapping[str, Any]):
    """Stands in for a dict session and loads it, taking its lock, on first use.

    It supports everything a ``dict`` session does; a handler that never touches it makes no
    storage call at all.
    """

    __slots__ = ("_loader",)

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    @property
    def loaded(self) -> bool:
        """Whether the session has been loaded (and its lock taken)."""
        return self._loader.value is not None

    @property
    def session(self) -> Session:
        """The real session, loaded now if it was not yet."""
        return self._loader.get()  # type: ignore[no-any-return]

    def __getitem__(self, name: str) -> Any:
        return self.session[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.session[name] = value

    def __delitem__(self, name: str) -> None:
        del self.session[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.session)

    def __len__(self) -> int:
        return len(self.session)

    def __contains__(self, name: object) -> bool:
        return name in self.session

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazySession):
            other = other.session
        return self.session == other

    __hash__ = None  # type: ignore[assignment]

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value of ``name``, or ``default``."""
        return self.session.get(name, default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        """Return the value of ``name``, storing ``default`` first if it is missing."""
        return self.session.setdefault(name, default)

    def clear(self) -> None:
        """Empty the session; if it is still empty when the handler ends, it is deleted."""
        self.session.clear()

    def copy(self) -> dict[str, Any]:
        """Return a shallow copy of the session as a plain dict."""
        return dict(self.session)

    def __repr__(self) -> str:
        if self._loader.value is None:
            return "<LazySession, not loaded>"
        return f"<LazySession {self._loader.value!r}>"


class LazyTypedSession:
    """Stands in for a dataclass or pydantic session and loads it, taking its lock, on first
    use of an attribute or method.

    Reading, setting and deleting attributes, calling named methods and ``==`` work as on the
    session; ``copy.copy`` and ``copy.deepcopy`` copy the session. Other operators, ``len()``,
    iteration, ``isinstance`` and functions such as ``dataclasses.asdict`` see the stand-in:
    where they matter, use ``SessionMiddleware(..., lazy=False)`` or an eager decorator. Its
    only own attribute is ``_tgsession_loader``, so it hides none of the session's fields.
    """

    __slots__ = ("_tgsession_loader",)

    def __init__(self, loader: Loader) -> None:
        object.__setattr__(self, "_tgsession_loader", loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_real(self), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_real(self), name)

    def __eq__(self, other: object) -> bool:
        return _real(self) == _real(other)

    def __copy__(self) -> Any:
        return copy.copy(_real(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(_real(self), memo)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        value = object.__getattribute__(self, "_tgsession_loader").value
        return (
            "<LazyTypedSession, not loaded>" if value is None else f"<LazyTypedSession {value!r}>"
        )

"""The session objects that handlers receive."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Callable


class Session(dict[str, Any]):
    """A session: a plain ``dict`` of JSON values that remembers whether it was cleared.

    Any change, at any depth, is saved when the handler returns, because tgsession compares the
    encoded session with what it loaded rather than tracking assignments.
    """

    __slots__ = ("_cleared",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cleared = False

    def clear(self) -> None:
        """Empty the session; if it is still empty when the handler ends, it is deleted.

        The next update then starts again from ``initial()``.
        """
        super().clear()
        self._cleared = True

    @property
    def deleted(self) -> bool:
        """Whether saving this session means deleting its stored entry."""
        return self._cleared and not self


class LazySession(MutableMapping[str, Any]):
    """Stands in for a session and loads it, taking its lock, on first use.

    It supports everything a ``dict`` session does; a handler that never touches it makes no
    storage call at all.
    """

    __slots__ = ("_load", "_session")

    def __init__(self, load: Callable[[], Session]) -> None:
        self._load = load
        self._session: Session | None = None

    def close(self, load: Callable[[], Session]) -> None:
        """Forget the session and use ``load`` on any later use (the handler has returned)."""
        self._session = None
        self._load = load

    @property
    def loaded(self) -> bool:
        """Whether the session has been loaded (and its lock taken)."""
        return self._session is not None

    @property
    def session(self) -> Session:
        """The real session, loaded now if it was not yet."""
        session = self._session
        if session is None:
            session = self._session = self._load()
        return session

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
        if self._session is None:
            return "<LazySession, not loaded>"
        return f"<LazySession {self._session!r}>"

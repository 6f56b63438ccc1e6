"""with_session: the decorator that hands a blocking telebot handler its session."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Callable, TypeVar, overload

from .codec import Codec, JSONCodec
from .keys import KeyStrategy, by_user
from .manager import SessionManager
from .migrations import Migration, Migrations
from .models import SessionValue
from .storage.base import Storage

_JSON = JSONCodec()

S = TypeVar("S", bound=SessionValue)


# Overloads, so that type checkers infer the session type from `initial`, and take
# dict[str, Any] when it is left out or is `dict` (a default cannot bind a type variable).
@overload
def with_session(
    *,
    key: str = ...,
    initial: type[dict[Any, Any]] | None = ...,
    storage: Storage | None = ...,
    get_session_key: KeyStrategy | None = ...,
    lazy: bool = ...,
    codec: Codec = ...,
    version: int = ...,
    migrations: Mapping[int, Migration] | None = ...,
    ttl: float | timedelta | None = ...,
) -> SessionManager[dict[str, Any]]: ...


@overload
def with_session(
    *,
    key: str = ...,
    initial: Callable[[], S],
    storage: Storage | None = ...,
    get_session_key: KeyStrategy | None = ...,
    lazy: bool = ...,
    codec: Codec = ...,
    version: int = ...,
    migrations: Mapping[int, Migration] | None = ...,
    ttl: float | timedelta | None = ...,
) -> SessionManager[S]: ...


def with_session(
    *,
    key: str = "session",
    initial: Callable[[], Any] | None = None,
    storage: Storage | None = None,
    get_session_key: KeyStrategy | None = None,
    lazy: bool = False,
    codec: Codec = _JSON,
    version: int = 1,
    migrations: Mapping[int, Migration] | None = None,
    ttl: float | timedelta | None = None,
) -> SessionManager[Any]:
    """Return a decorator that hands a blocking handler its session as the argument ``key``.

    - ``initial``: called for each new session; returns a fresh session: a dict of JSON
      values (the default is ``dict``), a dataclass instance or a pydantic v2 model. The
      handler receives that type, and type checkers infer it from ``initial``.
    - ``storage``: where sessions live; a process-wide DiskStorage in ``$TGSESSION_DIR`` or
      ``./.tgsession`` by default.
    - ``get_session_key``: from update to session key; `tgsession.by_user` by default.
    - ``lazy``: open the session (take its lock and load it) only when the handler first
      uses it.
    - ``codec``: turns sessions into bytes; compact JSON by default.
    - ``version`` and ``migrations``: the schema version of these sessions, and for each
      version n > 1 the function that turns a version n-1 session into version n. Stored
      sessions are migrated as they load, and saved with the current version.
    - ``ttl``: seconds (or a timedelta) after its last write that a session is gone; the next
      update then starts from ``initial()``. Reading a session does not extend it.

    The returned `tgsession.SessionManager` also offers ``.open(session_key)`` and
    ``.delete(session_key)`` for scripts.
    """
    return SessionManager(
        key=key,
        initial=dict if initial is None else initial,
        storage=storage,
        get_session_key=by_user if get_session_key is None else get_session_key,
        lazy=lazy,
        codec=codec,
        migrations=Migrations(version, migrations),
        ttl=ttl,
    )

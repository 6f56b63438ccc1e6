"""SessionMiddleware: sessions for every handler of a bot, through telebot's class middlewares.

With ``TeleBot(..., use_class_middlewares=True)`` and ``bot.setup_middleware(...)``, telebot
passes a handler each value the middleware puts in ``data`` whose name the handler takes as a
parameter; handlers without such a parameter are untouched.
"""

from __future__ import annotations

import threading
from typing import Any

from telebot import util
from telebot.handler_backends import BaseMiddleware

from .manager import HeldSessions, SessionManager


class SessionMiddleware(BaseMiddleware):
    """Hand every handler the sessions of ``managers``, by their keys, under their locks.

    Sessions are lazy: a handler that does not use its session makes no storage call, even
    when the manager itself is eager. They are saved after a handler that returned, discarded
    after one that raised, and unlocked in both cases.

    Register it first: telebot runs every pre_process and then every post_process in the
    order of registration, and skips the rest when one cancels the update (``CancelUpdate``)
    or raises. A middleware after this one that uses a session and then cancels, or one
    before it whose post_process raises, would leave that session locked (on Redis, until
    ``lock_ttl``).
    """

    def __init__(self, *managers: SessionManager[Any], update_types: list[str] | None = None):
        """Provide the sessions of ``managers`` to handlers of ``update_types`` (all by default)."""
        super().__init__()  # type: ignore[no-untyped-call]
        if not managers:
            raise TypeError("SessionMiddleware needs at least one with_session(...) manager")
        keys = [manager.key for manager in managers]
        if len(set(keys)) != len(keys):
            raise TypeError(f"two sessions share a key in {keys}: give each its own")
        self.managers = managers
        self.update_sensitive = False
        self.update_types = list(update_types or util.update_types)
        # One call per update in flight, by the identity of telebot's `data` dict, which it
        # passes to pre_process and post_process of the same update.
        self._calls: dict[int, HeldSessions] = {}
        self._guard = threading.Lock()

    def pre_process(self, update: Any, data: dict[str, Any]) -> None:
        """Put a lazy session for each manager into ``data``."""
        held = HeldSessions()
        for manager in self.managers:
            data[manager.key] = held.lazy(manager, update)
        with self._guard:
            self._calls[id(data)] = held

    def post_process(self, update: Any, data: dict[str, Any], exception: Any) -> None:
        """Save the used sessions if no handler raised; release them in any case."""
        with self._guard:
            held = self._calls.pop(id(data))
        held.finish(exception)

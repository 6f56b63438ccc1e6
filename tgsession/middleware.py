"""SessionMiddleware: sessions for every handler of a bot, through telebot's class middlewares.

With ``TeleBot(..., use_class_middlewares=True)`` and ``bot.setup_middleware(...)``, telebot
passes a handler each value the middleware puts in ``data`` whose name the handler takes as a
parameter; handlers without such a parameter are untouched.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from telebot import util
from telebot.handler_backends import BaseMiddleware

from .manager import HeldSessions, SessionManager

logger = logging.getLogger("tgsession")


class SessionMiddleware(BaseMiddleware):
    """Hand every handler the sessions of ``managers``, by their keys, under their locks.

    Sessions are lazy by default: a handler that does not use its session makes no storage
    call, even when the manager itself is eager. With ``lazy=False``, each manager is eager
    or lazy as it was declared, so handlers get the session itself (a dataclass rather than a
    LazyTypedSession), at the cost of a lock and a read for every update. Sessions are saved
    after a handler that returned, discarded after one that raised, and unlocked in both cases.

    Register it first: telebot runs every pre_process and then every post_process in the
    order of registration, and skips the rest when one cancels the update (``CancelUpdate``)
    or raises. If telebot skips this post_process after a session was used, that session is
    discarded and released as soon as telebot drops the update's ``data``, with an error
    logged: it cannot be saved, since nothing tells whether its handler succeeded.
    """

    def __init__(
        self,
        *managers: SessionManager[Any],
        update_types: list[str] | None = None,
        lazy: bool = True,
    ):
        """Provide the sessions of ``managers`` to handlers of ``update_types`` (all by
        default), every one lazy unless ``lazy`` is False."""
        super().__init__()  # type: ignore[no-untyped-call]
        if not managers:
            raise TypeError("SessionMiddleware needs at least one with_session(...) manager")
        keys = [manager.key for manager in managers]
        if len(set(keys)) != len(keys):
            raise TypeError(f"two sessions share a key in {keys}: give each its own")
        self.managers = managers
        self.update_sensitive = False
        self.update_types = list(update_types or util.update_types)
        self.eager = () if lazy else tuple(m for m in managers if not m.lazy)
        self.lazy = tuple(m for m in managers if lazy or m.lazy)

    def pre_process(self, update: Any, data: dict[str, Any]) -> None:
        """Put the session of each manager into ``data``."""
        held = HeldSessions()
        try:
            held.open(update, self.eager, self.lazy, data)
        except BaseException as error:
            held.finish(error)
            raise
        # The update's sessions travel in `data`, which telebot passes to post_process.
        # Handlers do not see them (telebot passes a handler only the values it names).
        data[_CALL] = _Call(held)

    def post_process(self, update: Any, data: dict[str, Any], exception: Any) -> None:
        """Save the used sessions if no handler raised; release them in any case."""
        call: _Call = data.pop(_CALL)
        call.finalizer.detach()
        call.held.finish(exception)


_CALL = "_tgsession_call"  # the key of the update's call in telebot's `data`


class _Call:
    """The sessions of one update, from pre_process to post_process.

    Should telebot skip post_process, it drops `data`, and with it this object, while the
    sessions are still held: the finalizer then releases them rather than leave them locked.
    """

    __slots__ = ("__weakref__", "finalizer", "held")

    def __init__(self, held: HeldSessions) -> None:
        self.held = held
        self.finalizer = weakref.finalize(self, _abandon, held)


def _abandon(held: HeldSessions) -> None:
    """Discard and release the sessions of an update whose post_process telebot skipped."""
    if held.opened:
        logger.error(
            "telebot skipped SessionMiddleware.post_process (a middleware after it cancelled "
            "the update, or one before it failed in post_process): sessions %s are "
            "discarded and unlocked; register SessionMiddleware first",
            [opened.entry for opened in held.opened],
        )
    try:
        held.finish(_Abandoned())
    except Exception:  # a finalizer has no caller to raise to
        logger.exception("could not release the sessions of an abandoned update")


class _Abandoned(Exception):
    """Why an abandoned update's sessions are discarded: their handlers' outcome is unknown."""

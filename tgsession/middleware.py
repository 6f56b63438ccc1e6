"""SessionMiddleware: sessions for every handler of a bot, through telebot's class middlewares.

With ``TeleBot(..., use_class_middlewares=True)`` and ``bot.setup_middleware(...)``, telebot
passes a handler each value the middleware puts in ``data`` whose name the handler takes as a
parameter; handlers without such a parameter are untouched.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from telebot import util
from telebot.handler_backends import BaseMiddleware

from . import _abandoned
from ._call import HeldSessions
from .manager import SessionManager

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
    or raises. If telebot skips this post_process, the sessions used are discarded (nothing
    tells whether the handler succeeded) and released, with an error logged, when telebot
    drops the update. After an exception a threaded bot keeps the update in its worker's
    last exception until that worker starts another update, and the session stays locked
    until then: a safety net, not a way to run.
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
        # The update's call travels in telebot's `data`, which telebot passes to post_process
        # (and whole to handlers that take a `data` parameter: leave this key alone).
        self._key = f"_tgsession_call_{id(self)}"
        self._current = threading.local()  # each thread's call in flight, by a weak reference

    def pre_process(self, update: Any, data: dict[str, Any]) -> None:
        """Put the session of each manager into ``data``."""
        _abandoned.start()
        previous = getattr(self._current, "call", None)
        call = None if previous is None else previous()
        if call is not None:  # telebot skipped this thread's last post_process
            call.abandon()
        if _abandoned.pending():
            _abandoned.release()
        # Not made active (see HeldSessions.enter): telebot may skip post_process, and a
        # later handler of this thread must not borrow from a call nobody will finish.
        held = HeldSessions(update)
        try:
            held.open(update, self.eager, self.lazy, data)
        except BaseException as error:
            held.finish(error)
            raise
        call = _Call(held)
        data[self._key] = call
        self._current.call = weakref.ref(call)

    def post_process(self, update: Any, data: dict[str, Any], exception: Any) -> None:
        """Save the used sessions if no handler raised; release them in any case."""
        self._current.call = None
        call: _Call | None = data.pop(self._key, None)
        if call is None:
            logger.error(
                "SessionMiddleware found no sessions in telebot's data: a handler removed "
                "%r from it; its sessions were discarded and unlocked",
                self._key,
            )
            return
        call.finish(exception)


class _Call:
    """The sessions of one update, from pre_process to post_process.

    Should telebot skip post_process and drop `data`, ``__del__`` queues the sessions to be
    discarded and released (a weakref.finalize would do the same at four times the cost).
    Whichever of finish, abandon and ``__del__`` comes first claims the call; the others do
    nothing, even when two threads race.
    """

    __slots__ = ("__weakref__", "claim", "held")

    def __init__(self, held: HeldSessions) -> None:
        self.held = held
        self.claim = [True]  # list.pop is atomic: exactly one caller gets the item

    def _claimed(self) -> bool:
        try:
            self.claim.pop()
        except IndexError:
            return False
        return True

    def finish(self, exception: Any) -> None:
        """Save (unless ``exception``) and release the sessions, unless already abandoned."""
        if self._claimed():
            self.held.finish(exception)

    def abandon(self) -> None:
        """Discard and release the sessions, since post_process will not come."""
        if self._claimed():
            _abandoned.later(self.held)

    def __del__(self) -> None:
        # Not contextlib.suppress: at interpreter exit, modules may be gone before this runs.
        try:  # noqa: SIM105
            self.abandon()
        except Exception:  # at interpreter exit, with the queues gone: nothing to release
            pass

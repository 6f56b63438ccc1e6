"""isolate(bot): one key's updates one at a time, in arrival order, filters included.

telebot hands each update to its worker pool as a task (middlewares, filters and handler). The
pool's workers take tasks in order but then race, so two updates of one user run at once and
finish in any order, and a filter that reads the session decides before any lock. After
``isolate(bot)``, every task whose update has a key waits in that key's own queue until the
key's previous task has finished, and then joins the end of the pool's queue: keys run in
parallel, one key runs in order, and a user who floods the bot holds at most one place in the
pool's queue at a time.

The task of an update runs inside a call of its own (see ``SessionManager.current``): sessions
that its filters open stay locked until the update is over and are shared with its handlers.
With ``storage=``, the whole update is also exclusive across processes and hosts, through that
storage's lock of the key.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

from ._call import HeldSessions
from .keys import KeyStrategy, SessionKey, by_user
from .storage.base import Storage

logger = logging.getLogger("tgsession")

Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Failures:
    """The bot's exception handler, with an ear for the isolated update now running.

    With ``use_class_middlewares=True`` telebot catches a handler's exception itself and
    only tells its exception handler: without this, an isolated update whose handler raised
    would save what the handler changed through ``current()``.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner  # the bot's own exception handler, or None
        self.running = threading.local()  # per thread: the exception of the update, if any

    def handle(self, exception: Exception) -> bool:
        if getattr(self.running, "watching", False):
            self.running.failure = exception
        return bool(self.inner.handle(exception)) if self.inner is not None else False

    def watch(self) -> None:
        self.running.watching, self.running.failure = True, None

    def heard(self) -> BaseException | None:
        """Stop watching; return the exception a handler of the update raised, if any."""
        self.running.watching = False
        failure: BaseException | None = self.running.failure
        return failure


class _Batch(threading.local):
    """Per dispatching thread: the tasks of the updates being dispatched (None: not
    dispatching a batch), and the keys whose turn it holds (unthreaded bots)."""

    def __init__(self) -> None:
        self.tasks: list[Task] | None = None
        self.turns: set[SessionKey] = set()


class Isolation:
    """What ``isolate(bot)`` installed on one bot; `undo` removes it."""

    def __init__(self, bot: Any, get_session_key: KeyStrategy, storage: Storage | None) -> None:
        if getattr(bot, "_tgsession_isolation", None) is not None:
            raise ValueError(f"{bot!r} is isolated already: call isolate() once per bot")
        self.bot = bot
        self.get_session_key = get_session_key
        self.storage = storage
        self._exec_task = bot._exec_task  # telebot's own: the pool's put, or a direct call
        self._process_new_updates = bot.process_new_updates
        self._failures = _Failures(bot.exception_handler)
        self._guard = threading.Lock()
        # The keys whose update runs now, with the tasks waiting behind it (None: none yet).
        self._waiting: dict[SessionKey, collections.deque[Task] | None] = {}
        # Unthreaded bots: the keys a caller runs now, with the callers waiting for them.
        self._turns: dict[SessionKey, collections.deque[threading.Event] | None] = {}
        self._batch = _Batch()
        bot._exec_task = self._collect
        bot.process_new_updates = self.process_new_updates
        bot.exception_handler = self._failures
        bot._tgsession_isolation = self

    def undo(self) -> None:
        """Give the bot back its own dispatch."""
        if self.bot._tgsession_isolation is self:
            del self.bot._exec_task, self.bot.process_new_updates
            self.bot.exception_handler = self._failures.inner
            self.bot._tgsession_isolation = None

    def process_new_updates(self, updates: list[Any]) -> None:
        """Dispatch ``updates`` as telebot does, then start their tasks in update_id order.

        telebot dispatches a batch by update type (every message, then every callback query,
        ...), so a user's button press could overtake the message they sent before it.
        """
        # One update (a webhook's) is dispatched in order already; so is one dispatched from
        # inside a task, whose batch collects its tasks.
        if len(updates) < 2 or self._batch.tasks is not None:
            self._process_new_updates(updates)
            return
        # telebot hands each handler the update's one field that is set (the message, the
        # callback query, ...), the same object: known by its id, it gives the update_id.
        order = {}
        for update in updates:
            for name, value in vars(update).items():
                if value is not None and name != "update_id":
                    order[id(value)] = update.update_id
                    break
        tasks: list[Task] = []
        self._batch.tasks = tasks
        try:
            self._process_new_updates(updates)
        finally:
            self._batch.tasks = None
        unknown = float("inf")
        tasks.sort(key=lambda task: order.get(id(task[1][0]), unknown) if task[1] else unknown)
        for task in tasks:
            self._start(*task)

    def _collect(self, task: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """telebot's ``_exec_task``: collect the task if a batch is being dispatched."""
        tasks = self._batch.tasks
        if tasks is not None:
            tasks.append((task, args, kwargs))
        else:
            self._start(task, args, kwargs)

    def _start(
        self, task: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Run the task now (on the pool), or queue it behind its key's running task."""
        key = self._key(args[0]) if args else None
        if key is None:
            self._exec_task(task, *args, **kwargs)
        elif not self.bot.threaded:  # runs here: wait for the key's turn, as callers do
            self._exec_task(self._run_in_turn, key, task, args, kwargs)
        else:
            with self._guard:
                if key in self._waiting:
                    waiting = self._waiting[key]
                    if waiting is None:
                        waiting = self._waiting[key] = collections.deque()
                    waiting.append((task, args, kwargs))
                    return
                self._waiting[key] = None
            self._exec_task(self._run_then_next, key, task, args, kwargs)

    def _key(self, update: Any) -> SessionKey | None:
        try:
            return self.get_session_key(update)
        except Exception:  # the dispatching thread must go on: run the update unisolated
            logger.exception("isolate: get_session_key raised on a %s", type(update).__name__)
            return None

    def _run_in_turn(self, key: SessionKey, *task: Any) -> None:
        turns = self._batch.turns
        if key in turns:  # an update dispatched from inside this key's own: it runs within
            self._run(key, *task)
            return
        with self._guard:  # like _start's queue, but callers wait here for their turn
            if key in self._turns:
                turn = threading.Event()
                waiting = self._turns[key]
                if waiting is None:
                    waiting = self._turns[key] = collections.deque()
                waiting.append(turn)
            else:
                turn = None
                self._turns[key] = None
        if turn is not None:
            turn.wait()  # handed over by the caller before, in order
        turns.add(key)
        try:
            self._run(key, *task)
        finally:
            turns.discard(key)
            with self._guard:
                waiting = self._turns[key]
                following = waiting.popleft() if waiting else None
                if following is None:
                    del self._turns[key]
            if following is not None:
                following.set()

    def _run_then_next(self, key: SessionKey, *task: Any) -> None:
        try:
            self._run(key, *task)
        finally:
            with self._guard:
                waiting = self._waiting[key]
                following = waiting.popleft() if waiting else None
                if following is None:
                    del self._waiting[key]
            if following is not None:  # to the end of the pool's queue: fair to other keys
                self._exec_task(self._run_then_next, key, *following)

    def _run(
        self,
        key: SessionKey,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Run one update's task inside a call of its own (under the storage's lock)."""
        if self.storage is None:
            self._run_task(task, args, kwargs)
            return
        with self.storage.lock(f"$update:{key}"):
            self._run_task(task, args, kwargs)

    def _run_task(
        self, task: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        call = HeldSessions(args[0])
        call.enter()
        # Only with class middlewares does telebot catch a handler's exception itself.
        watching = self.bot.use_class_middlewares
        if watching:
            self._failures.watch()
        try:
            task(*args, **kwargs)
        except BaseException as error:
            if watching:
                self._failures.heard()
            call.finish(error)
            raise
        call.finish(self._failures.heard() if watching else None)


def isolate(
    bot: Any, get_session_key: KeyStrategy | None = None, storage: Storage | None = None
) -> Isolation:
    """Make ``bot`` run the updates of each key one at a time, in the order they arrived.

    - ``get_session_key``: what an update's key is; `tgsession.by_user` by default.
      Updates without a key run as before.
    - ``storage``: also make each update exclusive across processes and hosts (webhook
      workers), through this storage's lock of the key.
    """
    return Isolation(bot, by_user if get_session_key is None else get_session_key, storage)

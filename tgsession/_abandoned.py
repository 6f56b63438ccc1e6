"""Sessions whose holder was dropped unfinished, and their release.

Telebot skips SessionMiddleware.post_process when another middleware cancels an update or
raises. The update's sessions are then dropped with telebot's ``data`` while still locked.
What notices the drop (``__del__``, when telebot lets go of ``data``) may run anywhere, even
inside one of tgsession's own locks when the garbage collector runs it, so it only queues the
sessions (SimpleQueue.put is safe there; taking a lock is not). They are discarded, since
nothing tells whether the handler succeeded, and released by `release`: at once by a
thread of its own, and by any update or ``open()`` of this process that needs them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._call import HeldSessions

logger = logging.getLogger("tgsession")

_dropped: queue.SimpleQueue[HeldSessions] = queue.SimpleQueue()
_wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # one item per dropped call
_releasing = threading.Lock()  # _dropped is consumed only under it (see release)
_started = False  # whether this process runs the releasing thread


class _Abandoned(Exception):
    """Why abandoned sessions are discarded: whether their handler succeeded is unknown."""


def later(held: HeldSessions) -> None:
    """Queue ``held`` to be discarded and released; safe to call from ``__del__``."""
    _dropped.put(held)
    _wake.put(None)


def pending() -> bool:
    """Whether sessions wait to be released."""
    return not _dropped.empty()


def release() -> None:
    """Discard and release every queued call's sessions.

    The queue is consumed only under a lock, so a thread that returns from here knows that
    every call queued before it was released, even if another thread took it.
    """
    with _releasing:
        while True:
            try:
                held = _dropped.get_nowait()
            except queue.Empty:
                return
            try:
                if held.opened:
                    logger.error(
                        "telebot skipped SessionMiddleware.post_process (a middleware "
                        "cancelled the update or raised, or telebot refused a handler's "
                        "parameters): sessions %s are discarded and unlocked; register "
                        "SessionMiddleware first",
                        [opened.entry for opened in held.opened],
                    )
            finally:  # released even if logging fails
                try:
                    held.finish(_Abandoned())
                except Exception:  # no caller to raise to
                    logger.exception("could not release the sessions of an abandoned update")


def start() -> None:
    """Run the releasing thread in this process, unless it runs already."""
    global _started
    if _started:
        return
    with _releasing:
        if not _started:
            threading.Thread(target=_run, name="tgsession-release", daemon=True).start()
            _started = True


def _run() -> None:
    while True:
        _wake.get()
        try:
            release()
        except Exception:  # the thread must go on releasing
            logger.exception("could not release abandoned sessions")


def _after_fork_in_child() -> None:
    # The child has no copy of the thread, and may have copied the lock held or the parent's
    # queued sessions, which the parent releases: it starts afresh.
    global _dropped, _wake, _releasing, _started
    _dropped, _wake = queue.SimpleQueue(), queue.SimpleQueue()
    _releasing = threading.Lock()
    _started = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

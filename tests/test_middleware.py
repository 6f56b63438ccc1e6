"""Middleware mode: a telebot class middleware gives every handler its session by name."""

from __future__ import annotations

import dataclasses
import gc
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import telebot
from telebot.handler_backends import BaseMiddleware, CancelUpdate

from tgsession import DiskStorage, SessionDecodeError, SessionMiddleware, with_session
from tgsession.testing import FakeBotAPI

from conftest import RecordingStorage, polling


def bot_with(api: FakeBotAPI, *middlewares: BaseMiddleware, threads: int = 4) -> telebot.TeleBot:
    """A bot with class middlewares, registered in order; ``threads=0`` for an unthreaded one."""
    bot = telebot.TeleBot(
        api.token, threaded=threads > 0, num_threads=threads or 1, use_class_middlewares=True
    )
    for middleware in middlewares:
        bot.setup_middleware(middleware)
    return bot


def test_handlers_get_their_session_by_name_and_changes_are_saved(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)
    bot = bot_with(bot_api, SessionMiddleware(counter))

    @bot.message_handler(commands=["count"])
    def count(message: Any, session: Any) -> None:
        session["count"] += 1
        bot.reply_to(message, f"count: {session['count']}")

    for _ in range(20):
        bot_api.push_message(user_id=4, text="/count")
    with polling(bot):
        replies = bot_api.wait_for_calls(20)
    assert sorted(int(r["text"].split()[-1]) for r in replies) == list(range(1, 21))
    assert json.loads(storage.read("session:4")) == {"count": 20}


def test_handlers_that_ignore_the_session_make_no_storage_call(bot_api: FakeBotAPI) -> None:
    recording = RecordingStorage()
    bot = bot_with(bot_api, SessionMiddleware(with_session(storage=recording)))

    @bot.message_handler(commands=["help"])
    def help_(message: Any) -> None:
        bot.reply_to(message, "help")

    @bot.message_handler(commands=["peek"])
    def peek(message: Any, session: Any) -> None:  # takes it, never uses it
        bot.reply_to(message, "peek")

    bot_api.push_message(user_id=1, text="/help")
    bot_api.push_message(user_id=1, text="/peek")
    with polling(bot):
        bot_api.wait_for_calls(2)
    assert recording.calls == []


def test_a_handler_that_raises_saves_nothing_and_releases_the_lock(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)
    bot = bot_with(bot_api, SessionMiddleware(counter))

    @bot.message_handler(commands=["count"])
    def count(message: Any, session: Any) -> None:
        session["count"] += 1
        if "fail" in message.text:
            raise RuntimeError("handler failed")
        bot.reply_to(message, f"count: {session['count']}")

    for text in ("/count", "/count fail", "/count"):
        bot_api.push_message(user_id=2, text=text)
    with polling(bot):
        replies = sorted(call["text"] for call in bot_api.wait_for_calls(2))
    assert replies == ["count: 1", "count: 2"]
    with counter.open(2) as session:  # free again, and the failed +1 is not stored
        assert session == {"count": 2}


def test_several_sessions_and_other_middleware_values_reach_the_handler(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    from tgsession import by_chat

    user = with_session(key="user", initial=lambda: {"n": 0}, storage=storage)
    chat = with_session(
        key="chat", initial=lambda: {"n": 0}, storage=storage, get_session_key=by_chat
    )
    bot = bot_with(bot_api, SessionMiddleware(user, chat))

    @bot.message_handler(commands=["both"], pass_bot=True)
    def both(message: Any, bot: telebot.TeleBot, user: Any, chat: Any) -> None:
        user["n"] += 1
        chat["n"] += 10
        bot.reply_to(message, f"{user['n']} {chat['n']}")

    bot_api.push_message(user_id=3, text="/both", chat_id=-7)
    with polling(bot):
        assert bot_api.wait_for_calls(1)[0]["text"] == "1 10"
    assert json.loads(storage.read("chat:-7")) == {"n": 10}


def test_the_middleware_needs_distinct_sessions() -> None:
    with pytest.raises(TypeError):
        SessionMiddleware()
    with pytest.raises(TypeError, match="share a key"):
        SessionMiddleware(with_session(), with_session())


class Canceller(BaseMiddleware):
    """A middleware after SessionMiddleware that uses the session, then cancels the update."""

    def __init__(self) -> None:
        super().__init__()
        self.update_types = ["message"]

    def pre_process(self, message: Any, data: dict[str, Any]) -> Any:
        data["session"]["count"] += 100
        return CancelUpdate()

    def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
        pass


class FailsOnce(BaseMiddleware):
    """A middleware whose pre_process or post_process raises for a message saying "fail"."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.update_types = ["message"]
        self.stage = stage

    def pre_process(self, message: Any, data: dict[str, Any]) -> None:
        if self.stage == "pre_process" and "fail" in message.text:
            raise RuntimeError("pre_process failed")

    def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
        if self.stage == "post_process" and "fail" in message.text:
            raise RuntimeError("post_process failed")


@pytest.mark.parametrize(
    "order", ["cancelled by a later middleware", "an earlier post_process raised"]
)
def test_a_session_is_released_and_discarded_when_telebot_skips_post_process(
    bot_api: FakeBotAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture, order: str
) -> None:
    counter = with_session(
        initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path, lock_timeout=5)
    )
    if order == "cancelled by a later middleware":
        bot = bot_with(bot_api, SessionMiddleware(counter), Canceller(), threads=0)
    else:
        bot = bot_with(bot_api, FailsOnce("post_process"), SessionMiddleware(counter), threads=0)

    @bot.message_handler(commands=["count"])
    def count(message: Any, session: Any) -> None:
        session["count"] += 1
        bot.reply_to(message, "counted")

    bot_api.push_message(user_id=5, text="/count fail")
    updates = bot.get_updates()
    if order == "an earlier post_process raised":
        with pytest.raises(RuntimeError, match="post_process failed"):
            bot.process_new_updates(updates)
    else:
        bot.process_new_updates(updates)
    # Unlocked when telebot dropped the update (before lock_timeout), and nothing was saved.
    with counter.open(5) as session:
        assert session == {"count": 0}
    assert "sessions ['session:5'] are discarded and unlocked" in caplog.text


@dataclass
class Visits:
    count: int = 0


def test_with_lazy_false_handlers_get_the_session_itself(bot_api: FakeBotAPI, storage: Any) -> None:
    visits = with_session(initial=Visits, storage=storage)
    bot = bot_with(bot_api, SessionMiddleware(visits, lazy=False))
    seen: list[Any] = []

    @bot.message_handler(commands=["visit"])
    def visit(message: Any, session: Visits) -> None:
        seen.append(type(session))
        session.count += 1
        bot.reply_to(message, str(dataclasses.asdict(session)))

    for _ in range(5):
        bot_api.push_message(user_id=6, text="/visit")
    with polling(bot):
        bot_api.wait_for_calls(5)
    assert seen == [Visits] * 5
    assert json.loads(storage.read("session:6")) == {"count": 5}


def test_an_eager_middleware_session_that_fails_to_load_is_released_and_skips_the_update(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    storage = DiskStorage(tmp_path, lock_timeout=5)
    storage.write("session:7", b"not json")
    counter = with_session(storage=storage)
    bot = bot_with(bot_api, SessionMiddleware(counter, lazy=False), threads=0)
    ran: list[Any] = []
    bot.message_handler(commands=["count"])(ran.append)

    bot_api.push_message(user_id=7, text="/count")
    with pytest.raises(SessionDecodeError, match="'session:7'"):
        bot.process_new_updates(bot.get_updates())
    assert ran == []
    counter.delete(7)  # free: taking its lock does not wait
    assert storage.read("session:7") is None


@pytest.mark.parametrize("stage", ["post_process", "pre_process"])
def test_a_threaded_bot_releases_a_skipped_update_by_the_workers_next_update(
    bot_api: FakeBotAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    # A threaded bot keeps a worker's last exception, and with it the update's data, so the
    # finalizer does not run: the worker's next update releases the session instead.
    counter = with_session(
        initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path, lock_timeout=5)
    )
    if stage == "post_process":  # one registered before SessionMiddleware fails
        bot = bot_with(bot_api, FailsOnce(stage), SessionMiddleware(counter), threads=1)
    else:  # one registered after an eager SessionMiddleware fails
        bot = bot_with(bot_api, SessionMiddleware(counter, lazy=False), FailsOnce(stage), threads=1)

    @bot.message_handler(commands=["count"])
    def count(message: Any, session: Any) -> None:
        session["count"] += 1
        bot.reply_to(message, f"count: {session['count']}")

    bot_api.push_message(user_id=5, text="/count fail")
    bot_api.push_message(user_id=5, text="/count")
    with polling(bot):
        replies = bot_api.wait_for_calls(2 if stage == "post_process" else 1)
    assert replies[-1]["text"] == "count: 1"  # the failed update's change was discarded
    with counter.open(5) as session:
        assert session == {"count": 1}
    assert "sessions ['session:5'] are discarded and unlocked" in caplog.text


def test_two_session_middlewares_each_hand_out_their_sessions(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    user = with_session(key="user", initial=lambda: {"n": 0}, storage=storage)
    chat = with_session(key="chat", initial=lambda: {"n": 0}, storage=storage)
    bot = bot_with(bot_api, SessionMiddleware(user), SessionMiddleware(chat), threads=0)

    @bot.message_handler(commands=["count"])
    def count(message: Any, user: Any, chat: Any) -> None:
        user["n"] += 1
        chat["n"] += 10

    bot_api.push_message(user_id=5, text="/count")
    bot.process_new_updates(bot.get_updates())
    assert json.loads(storage.read("user:5")) == {"n": 1}
    assert json.loads(storage.read("chat:5")) == {"n": 10}


def test_a_skipped_update_collected_inside_a_storage_lock_is_released_without_deadlock(
    bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The garbage collector may run a finalizer anywhere, here while KeyedLocks holds its
    # own guard: the finalizer only queues the sessions, and they are released later.
    from tgsession.storage import _locking

    counter = with_session(
        initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path, lock_timeout=5)
    )
    bot = bot_with(bot_api, FailsOnce("post_process"), SessionMiddleware(counter), threads=0)

    @bot.message_handler(commands=["count"])
    def count(message: Any, session: Any) -> None:
        session["count"] += 1
        raise ValueError("the handler failed too, so telebot's frame is in a cycle")

    bot_api.push_message(user_id=5, text="/count fail")
    gc.disable()  # the abandoned update waits, as cyclic garbage, for the collection below
    try:
        with pytest.raises(RuntimeError, match="post_process failed"):
            bot.process_new_updates(bot.get_updates())
        entry_init = _locking._Entry.__init__

        def collect_then_init(self: Any) -> None:
            gc.collect()  # as if allocating the entry, inside KeyedLocks' guard, triggered it
            entry_init(self)

        monkeypatch.setattr(_locking._Entry, "__init__", collect_then_init)
        opener = threading.Thread(target=lambda: counter.delete(6), daemon=True)
        opener.start()  # a new entry for session 6: the collection runs inside the guard
        opener.join(10)
        assert not opener.is_alive(), "deadlocked"
    finally:
        gc.enable()
    with counter.open(5) as session:  # released by the reaper, its change discarded
        assert session == {"count": 0}


def test_an_update_dispatched_from_inside_a_handler_does_not_finish_the_outer_one_twice(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    # The inner update's pre_process takes the outer call, whose post_process has not come,
    # for abandoned, and discards it; the outer post_process must then do nothing.
    counter = with_session(
        initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path, lock_timeout=5)
    )
    bot = bot_with(bot_api, SessionMiddleware(counter), threads=0)

    @bot.message_handler(commands=["outer"])
    def outer(message: Any, session: Any) -> None:
        session["count"] += 1
        bot_api.push_message(user_id=9, text="/inner")
        bot.process_new_updates(bot.get_updates(offset=-1))

    @bot.message_handler(commands=["inner"])
    def inner(message: Any) -> None:
        pass

    bot_api.push_message(user_id=8, text="/outer")
    bot.process_new_updates(bot.get_updates())
    with counter.open(8) as session:  # released once; the discarded +1 was not written
        assert session == {"count": 0}

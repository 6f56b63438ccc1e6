"""One handler call's sessions as its helpers, nested handlers and replies see them.

A handler's helpers reach its session with ``current()``; a handler or ``open()`` nested in
it shares the session instead of waiting for itself; a nested call that raises puts the
session back as it found it; ``after_save`` runs the reply only once the save succeeded.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tgsession import (
    MemoryStorage,
    SessionError,
    SessionStorageError,
    after_save,
    with_session,
)

from conftest import RecordingStorage, Update, by_key


def counter(storage: Any = None, **options: Any) -> Any:
    options.setdefault("get_session_key", by_key)
    return with_session(
        initial=lambda: {"count": 0},
        storage=MemoryStorage() if storage is None else storage,
        **options,
    )


def test_a_helper_reaches_the_session_its_handler_holds(recording: RecordingStorage) -> None:
    manager = counter(recording)

    def remember(text: str) -> None:  # a helper: no session parameter
        manager.current().setdefault("notes", []).append(text)

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1
        remember("seen")
        assert manager.current() is session

    handler(Update(1))
    handler(Update(1))
    assert recording.of("lock") == ["session:1", "session:1"]  # one lock per update
    with manager.open(1) as session:
        assert session == {"count": 2, "notes": ["seen", "seen"]}


def test_current_outside_a_handler_is_a_clear_error() -> None:
    with pytest.raises(SessionError, match=r"session.current\(\) works while a handler"):
        counter().current()


def test_a_handler_calling_another_handler_of_its_session_shares_it() -> None:
    manager = counter()

    @manager
    def menu(update: Update, session: Any) -> None:
        session["count"] += 10

    @manager
    def start(update: Update, session: Any) -> None:
        session["count"] += 1
        menu(update)  # the same session object, not a second lock of it
        session["count"] += 100

    start(Update(1))
    with manager.open(1) as session:
        assert session == {"count": 111}


def test_a_nested_handler_that_raises_puts_the_session_back_as_it_found_it() -> None:
    manager = counter()

    @manager
    def risky(update: Update, session: Any) -> None:
        session["count"] += 10
        session["half-done"] = True
        raise ValueError("failed midway")

    @manager
    def start(update: Update, session: Any) -> None:
        session["count"] += 1
        with pytest.raises(ValueError):
            risky(update)
        assert session == {"count": 1}  # the nested call's changes are undone
        session["count"] += 1

    start(Update(1))
    with manager.open(1) as session:
        assert session == {"count": 2}


def test_open_of_a_session_the_handler_holds_shares_it_and_delete_clears_it() -> None:
    storage = MemoryStorage()
    manager = counter(storage)
    storage.write("session:1", b'{"count":5}')

    @manager
    def handler(update: Update, session: Any) -> None:
        with manager.open(1) as same:
            assert same is session
            same["count"] += 1
        assert session["count"] == 6
        assert manager.delete(1) is True  # cleared now, deleted when the handler ends
        assert session == {"count": 0}

    handler(Update(1))
    assert storage.read("session:1") is None


def test_after_save_runs_once_the_session_is_saved() -> None:
    recording = RecordingStorage()
    manager = counter(recording)
    replies: list[str] = []

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1
        after_save(lambda: replies.append(f"saved {recording.of('write')}"))
        replies.append("handler returned")

    handler(Update(1))
    assert replies == ["handler returned", "saved ['session:1']"]


class FailingWrites(RecordingStorage):
    def write(self, key: str, data: bytes) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("failure", ["the handler raises", "the save fails"])
def test_after_save_does_not_run_when_nothing_was_saved(failure: str) -> None:
    storage: Any = RecordingStorage() if failure == "the handler raises" else FailingWrites()
    manager = counter(storage)
    replies: list[str] = []

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1
        after_save(replies.append, "saved")
        if failure == "the handler raises":
            raise ValueError("no")

    with pytest.raises((ValueError, SessionStorageError)):
        handler(Update(1))
    assert replies == []


def test_after_save_outside_a_handler_is_a_clear_error() -> None:
    with pytest.raises(SessionError, match="after_save"):
        after_save(print)


def test_a_thread_started_by_a_handler_waits_for_the_session_instead_of_sharing_it() -> None:
    # current() belongs to the handler's thread: another thread holds nothing, and opening
    # the session there waits for the handler's save, as any other update would.
    manager = counter()
    seen: list[int] = []

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1

        def later() -> None:
            with manager.open(update.key) as mine:
                seen.append(mine["count"])

        thread = threading.Thread(target=later)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive()  # waiting for the handler's lock
        threading.Thread(target=thread.join).start()

    handler(Update(1))
    with manager.open(1) as session:
        pass
    assert session["count"] == 1


def test_a_handler_that_raises_after_a_nested_handler_returned_saves_nothing() -> None:
    # One unit of work: the nested handler's success does not save the outer's half-done
    # change, and its after_save callback waits for the outer save, which never comes.
    storage = MemoryStorage()
    manager = counter(storage)
    replies: list[str] = []

    @manager
    def log(update: Update, session: Any) -> None:
        session.setdefault("log", []).append("transfer")
        after_save(replies.append, "logged")

    @manager
    def transfer(update: Update, session: Any) -> None:
        session["count"] -= 30
        log(update)
        raise RuntimeError("the payment failed")

    with pytest.raises(RuntimeError):
        transfer(Update(1))
    assert storage.read("session:1") is None
    assert replies == []


def test_after_save_of_a_helper_waits_for_the_session_it_changed_through_current(
    bot_api: Any,
) -> None:
    # A filter of an isolated update opened the form; the handler, decorated with another
    # session, changes the form through current(): its reply waits for the form's save too,
    # and is not sent when that save fails.
    import telebot

    from tgsession import isolate

    bot = telebot.TeleBot(bot_api.token, threaded=False)
    isolate(bot)
    profile = counter(MemoryStorage(), key="profile", get_session_key=None)
    form = with_session(initial=lambda: {"step": "name"}, storage=FailingWrites())

    @bot.message_handler(func=lambda message: form.current(message)["step"] == "name")
    @profile
    def name(message: Any, profile: Any) -> None:
        profile["count"] += 1
        form.current()["step"] = "age"
        after_save(bot.reply_to, message, "How old are you?")

    bot_api.push_message(user_id=2, text="Ann")
    with pytest.raises(SessionStorageError):
        bot.process_new_updates(bot.get_updates())
    assert bot_api.calls() == []


def test_a_callback_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = counter()
    replies: list[str] = []

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1
        after_save(lambda: 1 / 0)
        after_save(replies.append, "second")

    handler(Update(1))  # the save happened: the handler did not fail
    assert replies == ["second"]
    assert "after_save() raised" in caplog.text


def test_a_thread_using_a_lazy_session_that_a_helper_opened_with_current_shares_it() -> None:
    manager = counter(lazy=True)

    @manager
    def handler(update: Update, session: Any) -> None:
        manager.current()["count"] += 1  # opened by the helper first

        def worker() -> None:
            session["count"] += 1  # the lazy stand-in: the same session, not a second lock

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "the thread waited for the handler's own lock"

    handler(Update(1))
    with manager.open(1) as session:
        assert session == {"count": 2}

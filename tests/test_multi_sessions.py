"""Several sessions on one handler, each with its own key (grammY's multi sessions)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tgsession import MemoryStorage, with_session

from conftest import RecordingStorage


class Update:
    def __init__(self, user: int, chat: int) -> None:
        self.user, self.chat = user, chat


def user_of(update: Update) -> int:
    return update.user


def chat_of(update: Update) -> int:
    return update.chat


def test_user_and_chat_sessions_on_one_handler(storage: Any) -> None:
    user = with_session(
        key="user", initial=lambda: {"sent": 0}, storage=storage, get_session_key=user_of
    )
    chat = with_session(
        key="chat", initial=lambda: {"sent": 0}, storage=storage, get_session_key=chat_of
    )

    @user
    @chat
    def handler(update: Update, user: dict[str, Any], chat: dict[str, Any]) -> tuple[int, int]:
        user["sent"] += 1
        chat["sent"] += 1
        return user["sent"], chat["sent"]

    assert handler(Update(1, 100)) == (1, 1)
    assert handler(Update(2, 100)) == (1, 2)
    assert handler(Update(1, 100)) == (2, 3)
    assert json.loads(storage.read("user:1")) == {"sent": 2}
    assert json.loads(storage.read("chat:100")) == {"sent": 3}


def test_equal_ids_in_different_sessions_never_collide() -> None:
    storage = MemoryStorage()
    user = with_session(
        key="user", initial=lambda: {"kind": "user"}, storage=storage, get_session_key=user_of
    )
    chat = with_session(
        key="chat", initial=lambda: {"kind": "chat"}, storage=storage, get_session_key=chat_of
    )

    @user
    @chat
    def handler(update: Update, user: dict[str, Any], chat: dict[str, Any]) -> None:
        user["id"] = chat["id"] = 5

    handler(Update(5, 5))
    assert json.loads(storage.read("user:5") or b"") == {"id": 5, "kind": "user"}
    assert json.loads(storage.read("chat:5") or b"") == {"id": 5, "kind": "chat"}


def test_stacked_sessions_hide_both_parameters() -> None:
    import inspect

    user = with_session(key="user", storage=MemoryStorage(), get_session_key=user_of)
    chat = with_session(key="chat", storage=MemoryStorage(), get_session_key=chat_of)

    @user
    @chat
    def handler(update: Update, user: Any, chat: Any, bot: Any = None) -> None:
        pass

    assert list(inspect.signature(handler).parameters) == ["update", "bot"]


def test_two_sessions_with_one_key_name_are_refused() -> None:
    first = with_session(storage=MemoryStorage())
    second = with_session(storage=MemoryStorage())
    with pytest.raises(TypeError, match="two sessions named 'session'"):

        @first
        @second
        def handler(update: Any, session: Any) -> None:
            pass


def test_locks_are_taken_in_one_global_order_whatever_the_stacking(
    recording: RecordingStorage,
) -> None:
    user = with_session(key="user", storage=recording, get_session_key=user_of)
    chat = with_session(key="chat", storage=recording, get_session_key=chat_of)

    @chat
    @user
    def one(update: Update, user: Any, chat: Any) -> None:
        pass

    @user
    @chat
    def other(update: Update, user: Any, chat: Any) -> None:
        pass

    one(Update(1, 2))
    first = recording.of("lock")
    recording.calls.clear()
    other(Update(1, 2))
    assert first == recording.of("lock") == ["chat:2", "user:1"]


def test_handlers_stacking_sessions_in_opposite_orders_do_not_deadlock(storage: Any) -> None:
    user = with_session(
        key="user", initial=lambda: {"n": 0}, storage=storage, get_session_key=user_of
    )
    chat = with_session(
        key="chat", initial=lambda: {"n": 0}, storage=storage, get_session_key=chat_of
    )

    @chat
    @user
    def one(update: Update, user: Any, chat: Any) -> None:
        user["n"] += 1
        chat["n"] += 1

    @user
    @chat
    def other(update: Update, user: Any, chat: Any) -> None:
        chat["n"] += 1
        user["n"] += 1

    def run(handler: Any) -> None:
        for _ in range(200):
            handler(Update(1, 2))

    threads = [threading.Thread(target=run, args=(h,)) for h in (one, other, one, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert json.loads(storage.read("user:1")) == {"n": 800}
    assert json.loads(storage.read("chat:2")) == {"n": 800}


def test_eager_and_lazy_sessions_stack(recording: RecordingStorage) -> None:
    user = with_session(
        key="user", initial=lambda: {"n": 0}, storage=recording, get_session_key=user_of
    )
    chat = with_session(key="chat", lazy=True, storage=recording, get_session_key=chat_of)

    @user
    @chat
    def handler(update: Update, user: Any, chat: Any) -> None:
        user["n"] += 1

    handler(Update(1, 2))
    assert recording.of("lock") == ["user:1"]
    assert recording.of("write") == ["user:1"]


def test_a_session_that_cannot_be_encoded_leaves_every_stacked_session_unsaved(
    storage: Any,
) -> None:
    from tgsession import SessionEncodeError

    user = with_session(
        key="user", initial=lambda: {"n": 0}, storage=storage, get_session_key=user_of
    )
    chat = with_session(
        key="chat", initial=lambda: {"n": 0}, storage=storage, get_session_key=chat_of
    )

    @user
    @chat
    def handler(update: Update, user: Any, chat: Any) -> None:
        user["n"] += 1
        chat["bad"] = {1, 2}

    with pytest.raises(SessionEncodeError, match=r"'chat:2'.*set"):
        handler(Update(1, 2))
    assert storage.read("user:1") is None and storage.read("chat:2") is None

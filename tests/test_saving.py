"""When sessions are written, and when they are not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tgsession import with_session

from conftest import RecordingStorage, Update, by_key


class Boom(Exception):
    pass


def test_changes_are_saved_after_the_handler_returns(storage: Any) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> int:
        session["count"] += 1
        return int(session["count"])

    assert [handler(Update(7)) for _ in range(3)] == [1, 2, 3]
    assert json.loads(storage.read("session:7")) == {"count": 3}


def test_mutations_at_any_depth_are_saved(storage: Any) -> None:
    @with_session(initial=lambda: {"cart": {"items": []}}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["cart"]["items"].append({"sku": update.key})

    handler(Update(1))
    handler(Update(1))
    assert json.loads(storage.read("session:1")) == {"cart": {"items": [{"sku": 1}, {"sku": 1}]}}


def test_unchanged_session_is_not_written(recording: RecordingStorage) -> None:
    manager = with_session(initial=lambda: {"count": 0}, storage=recording, get_session_key=by_key)

    @manager
    def bump(update: Update, session: dict[str, Any]) -> None:
        session["count"] += 1

    @manager
    def look(update: Update, session: dict[str, Any]) -> int:
        return int(session["count"])

    bump(Update(1))
    recording.calls.clear()
    assert look(Update(1)) == 1
    assert recording.of("write") == []
    assert recording.of("read") == ["session:1"]


def test_new_session_left_as_initial_is_not_written(recording: RecordingStorage) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        pass

    handler(Update(1))
    assert recording.of("write") == []
    assert recording.inner.read("session:1") is None


def test_handler_that_raises_saves_nothing_and_its_exception_propagates_unchanged(
    storage: Any,
) -> None:
    error = Boom("handler failed")

    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["count"] += 1
        if update.key == "fail":
            raise error

    handler(Update(1))
    with pytest.raises(Boom) as raised:
        handler(Update("fail"))
    assert raised.value is error
    assert storage.read("session:fail") is None
    assert json.loads(storage.read("session:1")) == {"count": 1}


def test_handler_that_raises_leaves_the_previous_state(storage: Any) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any], fail: bool = False) -> None:
        session["count"] += 100
        if fail:
            raise Boom

    handler(Update(1))
    with pytest.raises(Boom):
        handler(Update(1), fail=True)
    assert json.loads(storage.read("session:1")) == {"count": 100}


def test_entries_are_stored_under_key_colon_session_key(storage: Any) -> None:
    @with_session(key="profile", initial=lambda: {"n": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, profile: dict[str, Any]) -> None:
        profile["n"] = 1

    handler(Update("42"))
    assert storage.read("profile:42") == b'{"n":1}'


def test_clear_deletes_the_stored_entry_and_the_next_update_starts_from_initial(
    storage: Any,
) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any], reset: bool = False) -> Any:
        if reset:
            session.clear()
            return dict(session)
        session["count"] += 1
        return session["count"]

    handler(Update(1))
    handler(Update(1))
    assert handler(Update(1), reset=True) == {}
    assert storage.read("session:1") is None
    assert handler(Update(1)) == 1


def test_writing_after_clear_saves_the_new_content(storage: Any) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["count"] += 5
        session.clear()
        session["fresh"] = True

    handler(Update(1))
    assert json.loads(storage.read("session:1")) == {"fresh": True}


def test_clearing_a_session_that_was_never_stored_writes_nothing(
    recording: RecordingStorage,
) -> None:
    @with_session(storage=recording, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session.clear()

    handler(Update(1))
    assert recording.of("write") == [] and recording.of("delete") == []


def test_encoding_is_compact_deterministic_json(storage: Any) -> None:
    @with_session(storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["b"] = [1, 2.5, None, True]
        session["a"] = "é"

    handler(Update(1))
    assert storage.read("session:1") == '{"a":"é","b":[1,2.5,null,true]}'.encode()

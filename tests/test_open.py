"""SessionManager.open: sessions for scripts, under the handlers' lock."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tgsession import with_session

from conftest import Update, by_key


def test_open_saves_on_a_clean_exit(storage: Any) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)
    with counter.open(42) as session:
        session["count"] += 5
    with counter.open(42) as session:
        assert session == {"count": 5}
    assert json.loads(storage.read("session:42")) == {"count": 5}


def test_open_discards_changes_on_an_exception(storage: Any) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)
    with counter.open(42) as session:
        session["count"] = 1
    with pytest.raises(RuntimeError), counter.open(42) as session:
        session["count"] = 99
        raise RuntimeError
    assert json.loads(storage.read("session:42")) == {"count": 1}


def test_open_takes_the_same_lock_as_the_handlers(storage: Any) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    entered = threading.Event()

    @counter
    def handler(update: Update, session: dict[str, Any]) -> None:
        entered.set()
        session["count"] += 1

    with counter.open(7) as session:
        thread = threading.Thread(target=handler, args=(Update(7),))
        thread.start()
        assert not entered.wait(0.3), "the handler ran while a script held the session"
        session["count"] += 10
    thread.join(5)
    assert entered.is_set()
    assert json.loads(storage.read("session:7")) == {"count": 11}


def test_delete_removes_a_stored_session(storage: Any) -> None:
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)
    with counter.open("x") as session:
        session["count"] = 3
    counter.delete("x")
    assert storage.read("session:x") is None
    with counter.open("x") as session:
        assert session == {"count": 0}


def test_open_of_a_session_held_longer_than_lock_timeout_raises(tmp_path: Any) -> None:
    from tgsession import DiskStorage, MemoryStorage, SessionLockTimeout

    for storage in (MemoryStorage(lock_timeout=0.2), DiskStorage(tmp_path, lock_timeout=0.2)):
        counter = with_session(storage=storage)
        errors: list[BaseException] = []

        def contend(counter: Any = counter, errors: list[BaseException] = errors) -> None:
            try:
                with counter.open(1):
                    pass
            except SessionLockTimeout as error:
                errors.append(error)

        with counter.open(1):
            started = time.monotonic()
            thread = threading.Thread(target=contend)
            thread.start()
            thread.join(5)
        assert time.monotonic() - started >= 0.2
        assert len(errors) == 1 and "'session:1'" in str(errors[0])

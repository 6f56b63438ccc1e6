"""Lazy sessions: no storage call until the handler uses its session."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tgsession import LazySession, MemoryStorage, with_session

from conftest import RecordingStorage, Update, by_key


def test_untouched_lazy_session_makes_no_storage_call(recording: RecordingStorage) -> None:
    @with_session(lazy=True, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: Any) -> str:
        return "ran"

    assert handler(Update(1)) == "ran"
    assert recording.calls == []


def test_untouched_lazy_session_does_not_even_compute_the_key() -> None:
    def no_key_function(update: Any) -> Any:
        raise AssertionError("the key was computed")

    @with_session(lazy=True, storage=MemoryStorage(), get_session_key=no_key_function)
    def handler(update: Update, session: Any) -> None:
        pass

    handler(Update(1))


def test_lazy_session_locks_and_loads_on_first_use_and_saves_after(
    recording: RecordingStorage,
) -> None:
    seen: list[list[tuple[str, str]]] = []

    @with_session(lazy=True, initial=lambda: {"n": 0}, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: Any) -> None:
        seen.append(list(recording.calls))
        session["n"] += 1
        seen.append(list(recording.calls))

    handler(Update(1))
    assert seen[0] == []
    assert seen[1] == [("lock", "session:1"), ("read", "session:1")]
    assert recording.calls[2:] == [("write", "session:1"), ("unlock", "session:1")]
    assert json.loads(recording.inner.read("session:1") or b"") == {"n": 1}


def test_lazy_session_behaves_like_the_dict_session() -> None:
    storage = MemoryStorage()

    @with_session(lazy=True, initial=lambda: {"a": 1}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Any) -> Any:
        assert isinstance(session, LazySession)
        assert not session.loaded
        assert session == {"a": 1} and "a" in session and len(session) == 1
        assert session.get("missing", 5) == 5 and list(session) == ["a"]
        session.update(b=2)
        session.setdefault("c", []).append(3)
        assert session.pop("a") == 1
        assert dict(session.items()) == {"b": 2, "c": [3]} == session.copy()
        assert session.loaded
        return repr(session)

    assert handler(Update(1)) == "<LazySession {'b': 2, 'c': [3]}>"
    assert json.loads(storage.read("session:1") or b"") == {"b": 2, "c": [3]}


def test_lazy_clear_deletes_the_session() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"a":1}')

    @with_session(lazy=True, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Any) -> None:
        session.clear()

    handler(Update(1))
    assert storage.read("session:1") is None


def test_untouched_lazy_handler_runs_while_another_holds_the_lock() -> None:
    storage = MemoryStorage()
    manager = with_session(lazy=True, storage=storage, get_session_key=by_key)

    @manager
    def handler(update: Update, session: Any) -> str:
        return "ran"

    with manager.open(1):
        results: list[str] = []
        thread = threading.Thread(target=lambda: results.append(handler(Update(1))))
        thread.start()
        thread.join(5)
        assert results == ["ran"]


def test_repr_of_an_unloaded_lazy_session_does_not_load_it(recording: RecordingStorage) -> None:
    @with_session(lazy=True, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: Any) -> str:
        return repr(session)

    assert handler(Update(1)) == "<LazySession, not loaded>"
    assert recording.calls == []


class SlowReads(RecordingStorage):
    """Reads take 20 ms, so that threads racing to load a session meet inside the load."""

    def read(self, key: str) -> bytes | None:
        time.sleep(0.02)
        return super().read(key)


def test_a_lazy_session_first_used_by_two_threads_of_its_handler_is_loaded_once_and_shared() -> (
    None
):
    storage = SlowReads()

    @with_session(lazy=True, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Any) -> None:
        start = threading.Barrier(8)

        def use() -> None:
            start.wait()
            session.setdefault("seen", 0)
            session["seen"] += 1  # under the GIL: the shared dict counts every thread

        threads = [threading.Thread(target=use, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads), "a thread hung on the load"

    for _ in range(5):
        done = threading.Thread(target=handler, args=(Update(1),), daemon=True)
        done.start()
        done.join(15)
        assert not done.is_alive(), "the handler hung"
    assert storage.of("lock") == ["session:1"] * 5
    assert json.loads(storage.inner.read("session:1")) == {"seen": 40}

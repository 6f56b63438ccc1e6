"""Per-key locks between threads: one key runs one update at a time, different keys in parallel."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tgsession import DiskStorage, MemoryStorage, with_session

from conftest import Update, by_key

THREADS = 8


def run_threads(target: Any, count: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)


def test_threads_incrementing_one_counter_lose_no_update(storage: Any) -> None:
    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def increment(update: Update, session: dict[str, Any]) -> None:
        value = session["count"]
        time.sleep(0)  # let another thread run between the read and the write
        session["count"] = value + 1

    run_threads(lambda i: [increment(Update("shared")) for _ in range(250)])
    assert json.loads(storage.read("session:shared")) == {"count": THREADS * 250}


def test_lazy_sessions_lose_no_update_either(storage: Any) -> None:
    @with_session(lazy=True, initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def increment(update: Update, session: Any) -> None:
        session["count"] += 1

    run_threads(lambda i: [increment(Update("shared")) for _ in range(250)])
    assert json.loads(storage.read("session:shared")) == {"count": THREADS * 250}


def test_updates_of_one_key_run_one_at_a_time(storage: Any) -> None:
    inside = 0
    most = 0
    guard = threading.Lock()

    @with_session(storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.005)
        with guard:
            inside -= 1

    run_threads(lambda i: [handler(Update("one")) for _ in range(10)])
    assert most == 1


def test_updates_of_different_keys_run_in_parallel(storage: Any) -> None:
    # Every thread waits inside its handler for all the others: this only finishes if the
    # handlers of different keys are inside at the same time.
    barrier = threading.Barrier(THREADS, timeout=10)

    @with_session(storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        barrier.wait()
        session["done"] = True

    run_threads(lambda i: handler(Update(i)))
    assert all(storage.read(f"session:{i}") == b'{"done":true}' for i in range(THREADS))


def test_thread_locks_of_finished_keys_are_dropped() -> None:
    storage = MemoryStorage()

    @with_session(storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["x"] = 1

    run_threads(lambda i: [handler(Update(f"{i}-{n}")) for n in range(100)])
    assert len(storage._locks) == 0


def test_two_disk_storages_on_one_directory_share_their_locks(tmp_path: Any) -> None:
    # lockf locks belong to the process, so two objects must share their thread locks.
    first, second = DiskStorage(tmp_path), DiskStorage(tmp_path)
    handlers = [
        with_session(initial=lambda: {"count": 0}, storage=s, get_session_key=by_key)(
            lambda update, session: session.__setitem__("count", session["count"] + 1)
        )
        for s in (first, second)
    ]
    run_threads(lambda i: [handlers[i % 2](Update("k")) for _ in range(200)])
    assert json.loads(first.read("session:k") or b"") == {"count": THREADS * 200}

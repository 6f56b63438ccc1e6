"""Expiry: a session not written for ttl seconds is gone; reads do not extend it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, MemoryStorage, with_session

TTL = 1.0


def counter(storage: Any, **options: Any) -> Any:
    return with_session(initial=lambda: {"count": 0}, storage=storage, ttl=TTL, **options)


def bump(manager: Any, key: Any = 1) -> int:
    with manager.open(key) as session:
        session["count"] += 1
        return int(session["count"])


def peek(manager: Any, key: Any = 1) -> int:
    with manager.open(key) as session:
        return int(session["count"])


def test_a_session_not_written_for_ttl_is_gone_and_starts_again_from_initial(
    storage: Any,
) -> None:
    manager = counter(storage)
    assert [bump(manager), bump(manager)] == [1, 2]
    time.sleep(TTL + 0.3)
    assert storage.read("session:1") is None
    assert bump(manager) == 1


def test_a_write_extends_the_session(storage: Any) -> None:
    manager = counter(storage)
    bump(manager)
    time.sleep(TTL * 0.6)
    bump(manager)  # written again: lives until ttl after this write
    time.sleep(TTL * 0.6)
    assert peek(manager) == 2


def test_a_read_does_not_extend_the_session(storage: Any) -> None:
    manager = counter(storage)
    bump(manager)
    time.sleep(TTL * 0.6)
    assert peek(manager) == 1  # read only: nothing written, the expiry stays
    time.sleep(TTL * 0.6)
    assert peek(manager) == 0


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "worker thread"])
def test_a_session_saved_without_ttl_after_one_with_ttl_no_longer_expires(
    storage: Any, in_thread: bool
) -> None:
    def save_without_ttl() -> None:
        bump(with_session(initial=lambda: {"count": 0}, storage=storage))

    bump(counter(storage))
    if in_thread:  # DiskStorage writes through another statement there
        worker = threading.Thread(target=save_without_ttl)
        worker.start()
        worker.join()
    else:
        save_without_ttl()
    time.sleep(TTL + 0.3)
    assert storage.read("session:1") == b'{"count":2}'


def test_ttl_takes_a_timedelta() -> None:
    assert with_session(storage=MemoryStorage(), ttl=timedelta(minutes=2)).ttl == 120.0


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan"), 1e300, True])
def test_ttl_must_be_a_positive_number_of_seconds_up_to_a_century(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        with_session(storage=MemoryStorage(), ttl=ttl)


def test_a_storage_that_cannot_expire_is_refused_when_the_session_is_declared() -> None:
    inner = MemoryStorage()

    class NoExpiry:
        read, delete, lock = inner.read, inner.delete, inner.lock

        def write(self, key: str, data: bytes) -> None:
            inner.write(key, data)

    with pytest.raises(TypeError, match="cannot expire sessions"):
        with_session(storage=NoExpiry(), ttl=5)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_purge_removes_expired_sessions_that_are_still_stored(tmp_path: Path, kind: str) -> None:
    storage: Any = MemoryStorage() if kind == "memory" else DiskStorage(tmp_path)
    short = with_session(storage=storage, ttl=0.2)
    lasting = with_session(key="kept", storage=storage)
    for user in range(10):
        with short.open(user) as session:
            session["n"] = user
    with lasting.open(1) as session:
        session["n"] = 1
    time.sleep(0.4)
    assert storage.purge() == 10
    assert list(short.keys()) == []
    assert list(lasting.keys()) == ["1"]


def test_expired_sessions_are_skipped_when_listing(storage: Any) -> None:
    manager = with_session(storage=storage, ttl=0.2)
    with manager.open(1) as session:
        session["n"] = 1
    time.sleep(0.4)
    assert list(manager.keys()) == []
    assert dict(manager.items()) == {}


def test_a_purge_never_removes_a_session_written_meanwhile() -> None:
    import threading

    storage = MemoryStorage()
    for round_ in range(200):
        storage.write("k", b"old", ttl=0.001)
        time.sleep(0.002)
        writer = threading.Thread(target=storage.write, args=("k", b"fresh"), kwargs={"ttl": 60})
        writer.start()
        storage.purge()
        writer.join()
        # Whether the write came before or after the purge, it has 60 s to live.
        assert storage.read("k") == b"fresh", f"round {round_}: a fresh write was purged"

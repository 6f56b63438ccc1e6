"""Enumerating sessions for scripts and admins: keys, snapshots, deleting many."""

from __future__ import annotations

import threading
import time
import types
from contextlib import ExitStack
from typing import Any

import pytest

from tgsession import DiskStorage, MemoryStorage, SessionDecodeError, SessionError, with_session

from conftest import RecordingStorage, redis_storage


def fill(storage: Any, count: int) -> Any:
    manager = with_session(storage=storage)  # initial: {}, so every filled session is stored
    for user in range(count):
        with manager.open(user) as session:
            session["n"] = user
    return manager


def test_keys_lists_every_stored_session_of_its_kind_and_no_other(storage: Any) -> None:
    manager = fill(storage, 25)
    other = with_session(key="sessions", initial=lambda: {"x": 1}, storage=storage)
    with other.open(99) as session:
        session["x"] = 2
    storage.write("unrelated", b"{}")
    assert isinstance(manager.keys(), types.GeneratorType)
    assert sorted(manager.keys(), key=int) == [str(user) for user in range(25)]
    assert list(other.keys()) == ["99"]


def test_items_yields_snapshots_without_locking_or_saving(storage: Any) -> None:
    manager = fill(storage, 5)
    seen = dict(manager.items())
    assert {key: session["n"] for key, session in seen.items()} == {str(u): u for u in range(5)}
    recording = RecordingStorage()
    recording.inner = storage
    recorded = with_session(storage=recording)
    assert len(list(recorded.items())) == 5
    assert recording.of("lock") == [] and recording.of("write") == []


def test_items_holds_no_lock_while_the_caller_works_on_a_session(storage: Any) -> None:
    manager = fill(storage, 2)
    for key, _ in manager.items():
        done = threading.Event()

        def edit(key: str = key, done: threading.Event = done) -> None:
            with manager.open(key) as session:
                session["n"] += 100
            done.set()

        threading.Thread(target=edit).start()
        assert done.wait(5), "a session stayed locked while items() yielded it"
    assert sorted(s["n"] for _, s in manager.items()) == [100, 101]


def test_items_brings_old_sessions_up_to_date_without_saving_them(storage: Any) -> None:
    storage.write("session:1", b'{"count":3}')
    manager = with_session(storage=storage, version=2, migrations={2: lambda s: {**s, "v2": True}})
    assert dict(manager.items()) == {"1": {"count": 3, "v2": True}}
    assert storage.read("session:1") == b'{"count":3}'


def test_delete_many_deletes_each_under_its_lock_and_counts_them(storage: Any) -> None:
    manager = fill(storage, 10)
    odd = [key for key in list(manager.keys()) if int(key) % 2]
    assert manager.delete_many(odd) == 5
    assert sorted(manager.keys(), key=int) == ["0", "2", "4", "6", "8"]


class Unlisted:
    """A storage with the four required methods only."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.read, self.write, self.delete = self.inner.read, self.inner.write, self.inner.delete
        self.lock = self.inner.lock


def test_a_storage_that_cannot_list_keys_is_a_clear_error() -> None:
    with pytest.raises(SessionError, match="cannot list its sessions"):
        list(with_session(storage=Unlisted()).keys())


def test_redis_keys_of_a_prefix_with_glob_characters_match_only_that_prefix() -> None:
    with ExitStack() as stack:
        storage = stack.enter_context(redis_storage(prefix="tgsession-test:glob*[1]:"))
        other = stack.enter_context(redis_storage(prefix="tgsession-test:globX1:"))
        fill(other, 3)
        manager = fill(storage, 2)
        assert sorted(manager.keys()) == ["0", "1"]


def test_items_can_go_past_sessions_that_cannot_be_loaded_and_report_them(storage: Any) -> None:
    manager = fill(storage, 4)
    storage.write("session:1", b"corrupt")
    storage.write("session:2", b'{"$v": 9}')  # saved by newer code
    with pytest.raises(SessionError, match=r"'session:[12]'"):
        dict(manager.items())  # by default, the first bad one stops the listing
    bad: dict[str, SessionError] = {}
    good = dict(manager.items(on_error=lambda key, error: bad.setdefault(key, error)))
    assert good == {"0": {"n": 0}, "3": {"n": 3}}
    assert sorted(bad) == ["1", "2"]
    assert "'session:2'" in str(bad["2"]) and "newer code" in str(bad["2"])


def test_delete_and_delete_many_count_only_what_was_deleted(storage: Any) -> None:
    manager = fill(storage, 3)
    assert manager.delete(0) is True
    assert manager.delete(0) is False
    # Missing keys and a key given twice (as Redis' SCAN may return one) count once at most.
    assert manager.delete_many(["1", "1", "7", 2]) == 2
    assert list(manager.keys()) == []


def test_a_foreign_redis_value_is_reported_to_on_error_and_can_be_deleted() -> None:
    with redis_storage() as storage:
        manager = fill(storage, 2)
        storage.client.delete(storage.data_key("session:1"))
        storage.client.hset(storage.data_key("session:1"), "field", "value")
        bad: dict[str, SessionError] = {}
        good = dict(manager.items(on_error=lambda key, error: bad.setdefault(key, error)))
        assert good == {"0": {"n": 0}}
        assert isinstance(bad["1"], SessionDecodeError) and "a Redis hash" in str(bad["1"])
        errors: list[str] = []
        listed = list(storage.entries("session:", on_error=lambda key, _: errors.append(key)))
        assert [entry.key for entry in listed] == ["session:0"] and errors == ["session:1"]
        assert manager.delete(1) is True


def test_entries_stream_the_bytes_and_expiry_of_each_session(storage: Any) -> None:
    storage.write("session:1", b'{"a":1}')
    storage.write("session:2", b'{"b":2}', ttl=3600)
    storage.write("session:3", b"{}", ttl=0.05)
    storage.write("sessions:1", b"{}")  # another prefix
    time.sleep(0.2)
    found = {entry.key: entry for entry in storage.entries("session:")}
    assert sorted(found) == ["session:1", "session:2"]  # the expired one is left out
    assert found["session:1"].data == b'{"a":1}' and found["session:1"].expires is None
    expires = found["session:2"].expires
    assert expires is not None and abs(expires - (time.time() + 3600)) < 5
    assert storage.expiry("session:2") == pytest.approx(expires, abs=0.1)
    assert storage.expiry("session:1") is None and storage.expiry("session:404") is None


def test_disk_listings_page_through_any_number_of_keys_in_order(disk: DiskStorage) -> None:
    names = [f"session:{n:05}" for n in range(2_500)]
    edge = ["session", "session;", "session:\U0010ffff", "session\U0010ffff", "t"]
    for name in names + edge:
        disk.write(name, b"{}")
    assert list(disk.keys("session:")) == [*names, "session:\U0010ffff"]
    assert [entry.key for entry in disk.entries("session:")] == [*names, "session:\U0010ffff"]
    assert list(disk.keys("session\U0010ffff")) == ["session\U0010ffff"]
    assert len(list(disk.keys(""))) == len(names) + len(edge)


def test_entries_report_a_foreign_disk_row_to_on_error(disk: DiskStorage) -> None:
    import diskcache

    disk.write("session:1", b"{}")
    with diskcache.Cache(disk.directory) as cache:
        cache.set("session:2", {"pickled": True})
    errors: list[tuple[str, str]] = []
    listed = list(disk.entries("session:", on_error=lambda k, e: errors.append((k, str(e)))))
    assert [entry.key for entry in listed] == ["session:1"]
    assert errors[0][0] == "session:2" and "a pickled object" in errors[0][1]
    with pytest.raises(SessionDecodeError, match="'session:2'"):
        list(disk.entries("session:"))

"""Schema versions and migrations: old sessions are brought up to date as they load."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tgsession import (
    DiskStorage,
    MemoryStorage,
    SessionEncodeError,
    SessionMigrationError,
    SessionVersionError,
    with_session,
)

from conftest import RecordingStorage, finish_worker, redis_storage, redis_url, start_worker


def add_premium(session: dict[str, Any]) -> dict[str, Any]:
    return {**session, "premium": False}


def rename_count(session: dict[str, Any]) -> None:
    session["visits"] = session.pop("count")  # in place: returns None


def stored(storage: Any, key: str = "session:1") -> Any:
    return json.loads(storage.read(key))


def test_a_session_saved_before_versioning_runs_every_migration_and_is_saved_as_current(
    storage: Any,
) -> None:
    storage.write("session:1", b'{"count":3}')
    manager = with_session(storage=storage, version=3, migrations={2: add_premium, 3: rename_count})
    with manager.open(1) as session:
        assert session == {"premium": False, "visits": 3}
    assert stored(storage) == {"$v": 3, "premium": False, "visits": 3}


def test_only_migrations_newer_than_the_stored_version_run(storage: Any) -> None:
    storage.write("session:1", b'{"$v":2,"count":3,"premium":true}')
    manager = with_session(storage=storage, version=3, migrations={2: add_premium, 3: rename_count})
    with manager.open(1) as session:
        assert session == {"premium": True, "visits": 3}


def test_versions_without_a_migration_are_skipped(storage: Any) -> None:
    storage.write("session:1", b'{"count":3}')
    with with_session(storage=storage, version=4, migrations={3: add_premium}).open(1) as s:
        assert s == {"count": 3, "premium": False}
    assert stored(storage)["$v"] == 4


def test_new_sessions_are_saved_with_the_current_version(storage: Any) -> None:
    manager = with_session(initial=lambda: {"n": 0}, storage=storage, version=2)
    with manager.open(1) as session:
        session["n"] = 1
    assert stored(storage) == {"$v": 2, "n": 1}


def test_a_migrated_session_is_saved_even_if_the_handler_only_reads_it() -> None:
    storage = RecordingStorage()
    storage.inner.write("session:1", b'{"count":3}')

    @with_session(
        lazy=True,
        storage=storage,
        get_session_key=lambda u: u,
        version=2,
        migrations={2: add_premium},
    )
    def handler(update: int, session: Any) -> int:
        return int(session["count"])

    assert handler(1) == 3
    assert storage.of("write") == ["session:1"]
    storage.calls.clear()
    assert handler(1) == 3
    assert storage.of("write") == []  # already current: nothing to save


def test_a_failing_migration_names_key_and_version_and_leaves_the_store_untouched(
    storage: Any,
) -> None:
    storage.write("session:1", b'{"count":3}')
    ran: list[bool] = []

    def broken(session: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("plan")

    @with_session(
        storage=storage,
        get_session_key=lambda u: u,
        version=3,
        migrations={2: add_premium, 3: broken},
    )
    def handler(update: int, session: Any) -> None:
        ran.append(True)

    with pytest.raises(SessionMigrationError, match=r"'session:1' to version 3 raised KeyError"):
        handler(1)
    assert ran == []
    assert storage.read("session:1") == b'{"count":3}'


def test_a_migration_that_returns_no_dict_is_refused(storage: Any) -> None:
    storage.write("session:1", b'{"count":3}')
    opening = with_session(
        storage=storage,
        version=2,
        migrations={2: lambda s: [s]},  # type: ignore[dict-item]
    ).open(1)
    with pytest.raises(SessionMigrationError, match="returned a list"), opening:
        pass


def test_a_session_saved_by_newer_code_is_refused_not_overwritten(storage: Any) -> None:
    storage.write("session:1", b'{"$v":5,"count":3}')
    for manager in (with_session(storage=storage, version=3), with_session(storage=storage)):
        with pytest.raises(SessionVersionError, match=r"'session:1'.*version 5"), manager.open(1):
            pass
    assert storage.read("session:1") == b'{"$v":5,"count":3}'


def test_a_stored_version_that_is_not_a_version_is_refused(storage: Any) -> None:
    storage.write("session:1", b'{"$v":"two","count":3}')
    with pytest.raises(SessionVersionError, match="'two'"), with_session(storage=storage).open(1):
        pass


@pytest.mark.parametrize("version", [1, 2])
def test_the_reserved_version_key_is_refused_in_a_session_and_the_store_keeps_its_state(
    storage: Any, version: int
) -> None:
    manager = with_session(initial=lambda: {"n": 0}, storage=storage, version=version)
    with manager.open(1) as session:
        session["n"] = 1
    before = storage.read("session:1")
    opening = manager.open(1)
    with pytest.raises(SessionEncodeError, match=r"'session:1'.*'\$v' is reserved"), opening as s:
        s["$v"] = 7
    assert storage.read("session:1") == before
    with manager.open(1) as session:
        assert session == {"n": 1}


def test_a_migration_that_returns_the_reserved_key_is_refused(storage: Any) -> None:
    storage.write("session:1", b'{"count":3}')
    opening = with_session(
        storage=storage, version=2, migrations={2: lambda s: {**s, "$v": 9}}
    ).open(1)
    with pytest.raises(SessionMigrationError, match="reserved key"), opening:
        pass


@pytest.mark.parametrize(
    ("version", "migrations"), [(0, {}), (2, {1: add_premium}), (2, {3: add_premium})]
)
def test_versions_and_migrations_are_checked_when_the_session_is_declared(
    version: int, migrations: dict[int, Any]
) -> None:
    with pytest.raises(ValueError):
        with_session(storage=MemoryStorage(), version=version, migrations=migrations)


def test_a_migration_that_is_not_callable_is_a_type_error_when_the_session_is_declared() -> None:
    with pytest.raises(TypeError, match=r"migrations \[2\] are not callable"):
        with_session(storage=MemoryStorage(), version=2, migrations={2: "not callable"})  # type: ignore[dict-item]


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_processes_loading_one_old_session_migrate_it_once_and_lose_no_update(
    tmp_path: Path, backend: str
) -> None:
    with ExitStack() as stack:
        if backend == "disk":
            storage: Any = DiskStorage(tmp_path)
            stack.callback(storage.close)
            store = {"disk": str(tmp_path)}
        else:
            storage = stack.enter_context(redis_storage())
            store = {"redis": redis_url(), "prefix": storage.prefix}
        storage.write("session:old", b'{"count":0}')
        workers = [start_worker("migrate", store, "old", 100) for _ in range(3)]
        for worker in workers:
            finish_worker(worker)
        assert stored(storage, "session:old") == {"$v": 2, "count": 300, "migrations": 1}

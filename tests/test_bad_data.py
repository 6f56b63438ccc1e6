"""Bad input gets a clear error that names the session key, and loses nothing."""

from __future__ import annotations

import json
import math
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
import pytest

from tgsession import (
    DiskStorage,
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionStorageError,
    with_session,
)

from conftest import Update, by_key


def counter(storage: Any) -> Any:
    return with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)


@pytest.mark.parametrize(
    ("value", "named"),
    [({1, 2}, "set"), (object(), "object"), (b"raw", "bytes"), (math.nan, "float")],
)
def test_unserializable_session_names_key_and_type_and_keeps_stored_state(
    storage: Any, value: Any, named: str
) -> None:
    @counter(storage)
    def handler(update: Update, session: dict[str, Any], bad: Any = None) -> None:
        session["count"] += 1
        if bad is not None:
            session["bad"] = bad

    handler(Update(1))
    with pytest.raises(SessionEncodeError) as raised:
        handler(Update(1), bad=value)
    assert "'session:1'" in str(raised.value) and named in str(raised.value).lower()
    assert storage.read("session:1") == b'{"count":1}'


@pytest.mark.parametrize(
    "stored", [b"{not json", b"\xff\xfe", b'["a", "list"]', b"42", b'{"count": 1'], ids=repr
)
def test_undecodable_stored_bytes_raise_before_the_handler_and_stay_untouched(
    storage: Any, stored: bytes
) -> None:
    ran: list[bool] = []

    @counter(storage)
    def handler(update: Update, session: dict[str, Any]) -> None:
        ran.append(True)

    storage.write("session:9", stored)
    with pytest.raises(SessionDecodeError, match=r"'session:9'.*untouched"):
        handler(Update(9))
    assert ran == []
    assert storage.read("session:9") == stored


def test_pickled_value_in_the_directory_is_refused_not_unpickled(tmp_path: Path) -> None:
    class Trap:
        def __reduce__(self) -> Any:
            return (Path(tmp_path / "pwned").touch, ())

    cache = diskcache.Cache(tmp_path / "sessions")
    cache.set("session:1", Trap())
    cache.set("session:2", "a string")
    cache.close()
    storage = DiskStorage(tmp_path / "sessions")
    with pytest.raises(SessionDecodeError, match=r"'session:1'.*pickled"):
        counter(storage).open(1).__enter__()
    with pytest.raises(SessionDecodeError, match=r"'session:2'.*str"):
        storage.read("session:2")
    assert not (tmp_path / "pwned").exists()
    assert pickle.dumps(None)  # pickle itself still works; only the store refuses it
    storage.close()


class Trap:
    """Unpickling it leaves a file behind, as an attacker's code would run."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> Any:
        return (Path.touch, (self.mark,))


def test_listing_never_unpickles_a_key_that_another_program_stored(tmp_path: Path) -> None:
    cache = diskcache.Cache(tmp_path / "sessions")
    cache.set(("session", Trap(tmp_path / "pwned")), b"{}")  # a tuple key: diskcache pickles it
    cache.set("session:1", b'{"count":1}')
    cache.close()
    manager = counter(DiskStorage(tmp_path / "sessions"))
    assert list(manager.keys()) == ["1"]
    assert list(manager.items()) == [("1", {"count": 1})]
    assert not (tmp_path / "pwned").exists()


def test_a_row_naming_a_file_outside_the_store_is_never_read_nor_deleted(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "data.json"
    outside.parent.mkdir()
    outside.write_text('{"count": 99}')
    directory = tmp_path / "sessions"
    cache = diskcache.Cache(directory, disk_min_file_size=0)  # values in files of their own
    cache.set("session:1", b'{"count":1}')
    cache.close()
    with sqlite3.connect(directory / "cache.db") as db:  # the planted row
        db.execute("UPDATE Cache SET filename = ? WHERE key = 'session:1'", (str(outside),))
    db.close()
    storage = DiskStorage(directory)
    with pytest.raises(SessionDecodeError, match=r"'session:1'.*a file outside the database"):
        counter(storage).open(1).__enter__()
    assert counter(storage).delete(1) is True  # the row goes, as the error advises
    storage.purge()
    assert outside.read_text() == '{"count": 99}'
    assert storage.read("session:1") is None


def test_an_empty_stored_value_is_refused_on_every_storage_and_left_untouched(
    storage: Any,
) -> None:
    if hasattr(storage, "client"):  # Redis: put it there as another program would
        storage.client.set(storage.data_key("session:1"), b"")
    else:
        storage.write("session:1", b"")
    with pytest.raises(SessionDecodeError, match="'session:1'"):
        counter(storage).open(1).__enter__()
    assert storage.read("session:1") == b""


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def test_a_session_nested_too_deeply_to_load_everywhere_is_refused_at_save(storage: Any) -> None:
    manager = counter(storage)
    with manager.open(1) as session:
        session["deep"] = nested(98)  # the session is level 1: 99 levels of lists below it
    with (
        pytest.raises(SessionEncodeError, match=r"'session:1'.*session\['deep'\](\[0\]){99} lies"),
        manager.open(1) as session,
    ):
        session["deep"] = nested(100)
    assert json.loads(storage.read("session:1"))["deep"] == nested(98)

    def deep_handler(depth: int) -> Any:  # loads it with 600 frames below it
        if depth:
            return deep_handler(depth - 1)
        with manager.open(1) as session:
            return session["deep"]

    assert deep_handler(600) == nested(98)


def test_stored_json_nested_too_deeply_is_a_decode_error_naming_the_key(storage: Any) -> None:
    data = b'{"deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    storage.write("session:1", data)
    with pytest.raises(SessionDecodeError, match=r"'session:1'.*nested too deeply"):
        counter(storage).open(1).__enter__()
    assert storage.read("session:1") == data


def test_error_messages_name_fields_but_never_quote_session_values() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Account(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        api_token: str = ""
        age: int = 0

        @pydantic.model_validator(mode="after")  # type: ignore[misc]
        def adult(self) -> Any:
            if self.age < 0:
                raise ValueError("age must not be negative")
            return self

    from tgsession import MemoryStorage

    storage = MemoryStorage()
    manager = with_session(initial=Account, storage=storage)
    for stored in (
        {"api_token": "SECRET-TOKEN", "age": "SECRET-AGE"},
        {"api_token": "SECRET-TOKEN", "age": -1},
        {"api_token": "SECRET-TOKEN", "extra": "SECRET-EXTRA"},
    ):
        storage.write("session:1", json.dumps(stored).encode())
        with pytest.raises(SessionDecodeError) as caught:
            manager.open(1).__enter__()
        assert "'session:1'" in str(caught.value)
        assert "SECRET" not in str(caught.value), str(caught.value)


def test_every_error_is_a_session_error_and_exported() -> None:
    import inspect

    import tgsession
    import tgsession.errors

    errors = [e for _, e in inspect.getmembers(tgsession.errors, inspect.isclass)]
    assert len(errors) >= 8
    for error in errors:
        assert issubclass(error, SessionError)
        assert error.__name__ in tgsession.__all__


class BrokenStorage:
    """A storage whose backend is down: every call fails as a network client would."""

    def read(self, key: str) -> bytes | None:
        raise ConnectionError("backend unreachable")

    def write(self, key: str, data: bytes) -> None:
        raise ConnectionError("backend unreachable")

    def delete(self, key: str) -> None:
        raise ConnectionError("backend unreachable")

    def lock(self, key: str) -> Any:
        from contextlib import nullcontext

        return nullcontext()


def test_storage_failure_is_a_session_error_naming_the_key_and_the_handler_does_not_run() -> None:
    ran: list[bool] = []

    @counter(BrokenStorage())
    def handler(update: Update, session: dict[str, Any]) -> None:
        ran.append(True)

    with pytest.raises(SessionStorageError, match="could not read session 'session:3'") as raised:
        handler(Update(3))
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert ran == []


@pytest.mark.parametrize("mode", [2, 3], ids=["binary", "text"])
def test_a_malformed_row_without_its_file_is_refused_as_foreign(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "sessions"
    storage = DiskStorage(directory)
    storage.write("session:1", b'{"count":1}')
    with sqlite3.connect(directory / "cache.db") as db:  # file-backed modes, but no file name
        db.execute("UPDATE Cache SET mode = ? WHERE key = 'session:1'", (mode,))
    db.close()
    errors: list[SessionError] = []
    assert list(counter(storage).items(on_error=lambda key, error: errors.append(error))) == []
    assert len(errors) == 1 and isinstance(errors[0], SessionDecodeError)

"""Bad input gets a clear error that names the session key, and loses nothing."""

from __future__ import annotations

import math
import pickle
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

"""Shared fixtures: real storages, the loopback Bot API stand-in, a running telebot."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import telebot

from tgsession import DiskStorage, MemoryStorage
from tgsession.testing import FakeBotAPI

REDIS_URL = os.environ.get("TGSESSION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# .ci/run sets this, so that a missing Redis fails the run instead of skipping its tests.
REQUIRE_REDIS = os.environ.get("TGSESSION_REQUIRE_REDIS") == "1"


class RecordingStorage:
    """A real MemoryStorage that also records every call made to it, in order."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.calls: list[tuple[str, str]] = []

    def read(self, key: str) -> bytes | None:
        self.calls.append(("read", key))
        return self.inner.read(key)

    def write(self, key: str, data: bytes) -> None:
        self.calls.append(("write", key))
        self.inner.write(key, data)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.inner.delete(key)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.calls.append(("lock", key))
        with self.inner.lock(key):
            yield
        self.calls.append(("unlock", key))

    def of(self, kind: str) -> list[str]:
        return [key for call, key in self.calls if call == kind]


class Update:
    """The smallest update a key function can read: ``get_session_key=lambda u: u.key``."""

    def __init__(self, key: Any) -> None:
        self.key = key


def by_key(update: Update) -> Any:
    return update.key


@pytest.fixture
def recording() -> RecordingStorage:
    return RecordingStorage()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskStorage]:
    storage = DiskStorage(tmp_path / "sessions")
    yield storage
    storage.close()


@pytest.fixture(params=["memory", "disk"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each storage in turn, so that a behaviour is checked on every backend."""
    if request.param == "memory":
        yield MemoryStorage()
    else:
        disk = DiskStorage(tmp_path / "sessions")
        yield disk
        disk.close()


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        api.install()
        yield api


@contextmanager
def polling(bot: telebot.TeleBot) -> Iterator[None]:
    """Run ``bot.infinity_polling`` in a thread for the duration of the block.

    Replies can arrive before their handler has saved its session; leaving the block waits
    for the running handlers, so the storage can be checked after it.
    """
    thread = threading.Thread(
        target=bot.infinity_polling,
        kwargs={"timeout": 10, "long_polling_timeout": 1},
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        bot.stop_bot()  # stops polling and waits for the handlers that are running to finish
        thread.join(15)
        assert not thread.is_alive(), "telebot did not stop polling"

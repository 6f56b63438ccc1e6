"""Shared fixtures: real storages, the loopback Bot API stand-in, a running telebot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import telebot

from tgsession import DiskStorage, MemoryStorage

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TGSESSION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# .ci/run sets this, so that a missing Redis fails the run instead of skipping its tests.
REQUIRE_REDIS = os.environ.get("TGSESSION_REQUIRE_REDIS") == "1"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: it imports tgsession from this checkout."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


WORKERS = Path(__file__).with_name("workers.py")


def start_worker(command: str, store: dict[str, Any], *args: Any) -> subprocess.Popen[str]:
    """Start ``workers.py COMMAND STORE ARGS...`` in a process of its own (see workers.py)."""
    return subprocess.Popen(
        [sys.executable, str(WORKERS), command, json.dumps(store), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def finish_worker(process: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a worker to succeed; return what it printed."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def said(worker: subprocess.Popen[str]) -> str:
    """The next line a worker prints."""
    assert worker.stdout is not None
    return worker.stdout.readline().strip()


def cue(worker: subprocess.Popen[str]) -> None:
    """Tell a worker that waits for a line on its stdin to go on."""
    assert worker.stdin is not None
    worker.stdin.write("go\n")
    worker.stdin.flush()


def run_python(
    script: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that imports this checkout; it must succeed."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(**env),
        check=True,
    )


def rest_of(worker: subprocess.Popen[str]) -> str:
    """What a worker prints until it exits, after lines read with readline(); it must succeed."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.close()
    out = worker.stdout.read()
    assert worker.wait(120) == 0, worker.stderr.read() if worker.stderr else ""
    return out


class RecordingStorage:
    """A real storage (a MemoryStorage unless replaced) that records every call, in order."""

    def __init__(self) -> None:
        self.inner: Any = MemoryStorage()
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

    def keys(self, prefix: str) -> Any:
        self.calls.append(("keys", prefix))
        return self.inner.keys(prefix)

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


def redis_url() -> str:
    """The test Redis server's URL; skip the test (fail it under CI) if none answers."""
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as error:
        reason = f"no Redis server answers at {REDIS_URL}: {error!r}"
        if REQUIRE_REDIS:
            pytest.fail(f"TGSESSION_REQUIRE_REDIS=1 and {reason}")
        pytest.skip(f"{reason}; start redis-server or set TGSESSION_TEST_REDIS_URL")
    return REDIS_URL


@contextmanager
def redis_storage(**options: Any) -> Iterator[Any]:
    """A RedisStorage under a prefix of its own, whose keys are deleted afterwards."""
    from tgsession import RedisStorage

    options.setdefault("prefix", f"tgsession-test:{uuid.uuid4().hex}:")
    storage = RedisStorage.from_url(redis_url(), **options)
    try:
        yield storage
    finally:
        keys = list(storage.client.scan_iter(match=storage.prefix + "*"))
        if keys:
            storage.client.delete(*keys)
        storage.close()


@pytest.fixture(params=["memory", "disk", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each storage in turn, so that a behaviour is checked on every backend."""
    if request.param == "memory":
        yield MemoryStorage()
    elif request.param == "disk":
        disk = DiskStorage(tmp_path / "sessions")
        yield disk
        disk.close()
    else:
        with redis_storage() as redis:
            yield redis


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

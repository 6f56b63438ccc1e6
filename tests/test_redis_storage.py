"""RedisStorage: round trips, keys, and locks across processes, crashes, pauses and restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tgsession import (
    SessionDecodeError,
    SessionLockTimeout,
    SessionStorageError,
    Storage,
    with_session,
)

from conftest import (
    REQUIRE_REDIS,
    Update,
    by_key,
    finish_worker,
    redis_storage,
    redis_url,
    start_worker,
)

redis = pytest.importorskip("redis")


class CountingRedis(redis.Redis):  # type: ignore[misc,name-defined]
    """A real client that counts the commands it sends (each is one round trip here)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


@contextmanager
def counting_storage() -> Iterator[Any]:
    from tgsession import RedisStorage

    client = CountingRedis.from_url(redis_url())
    client.sent = []
    prefix = f"tgsession-test:{os.urandom(8).hex()}:"
    storage = RedisStorage(client, prefix=prefix)
    try:
        yield storage
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        storage.close()


def test_an_update_costs_one_round_trip_to_lock_and_load_and_one_to_save_and_unlock() -> None:
    with counting_storage() as storage:
        manager = with_session(initial=lambda: {"n": 0}, storage=storage, get_session_key=by_key)

        @manager
        def bump(update: Update, session: dict[str, Any]) -> None:
            session["n"] += 1

        @manager
        def look(update: Update, session: dict[str, Any]) -> int:
            return int(session["n"])

        @with_session(lazy=True, storage=storage, get_session_key=by_key)
        def untouched(update: Update, session: Any) -> None:
            pass

        bump(Update(1))  # the first run also loads the scripts into Redis
        for handler in (bump, look, untouched):
            storage.client.sent.clear()
            handler(Update(1))
            trips = len(storage.client.sent)
            expected = 0 if handler is untouched else 2
            assert trips == expected, (handler.__name__, storage.client.sent)
        assert look(Update(1)) == 2


def test_entries_and_locks_live_under_the_prefix_with_clear_names() -> None:
    with redis_storage(prefix="tgsession-test:names:") as storage:
        counter = with_session(initial=lambda: {"n": 0}, storage=storage)
        with counter.open(42) as session:
            session["n"] = 1
            assert storage.client.exists("tgsession-test:names:lock:{session:42}")
        assert storage.client.get("tgsession-test:names:data:{session:42}") == b'{"n":1}'
        # The `done` key lets a save retried by redis-py recognise its first run; it expires.
        assert sorted(storage.client.scan_iter(match="tgsession-test:names:*")) == [
            b"tgsession-test:names:data:{session:42}",
            b"tgsession-test:names:done:{session:42}",
        ]
        assert 0 < storage.client.pttl("tgsession-test:names:done:{session:42}") <= 120_000


def test_two_bots_with_different_prefixes_share_one_redis_without_colliding() -> None:
    with redis_storage() as first, redis_storage() as second:
        for storage, value in ((first, 1), (second, 2)):
            with with_session(storage=storage).open(7) as session:
                session["bot"] = value
        assert first.read("session:7") == b'{"bot":1}'
        assert second.read("session:7") == b'{"bot":2}'


def test_redis_storage_satisfies_the_storage_protocol_and_is_importable_from_the_top() -> None:
    from tgsession import RedisStorage

    with redis_storage() as storage:
        assert isinstance(storage, RedisStorage) and isinstance(storage, Storage)


def test_a_client_that_decodes_responses_is_refused() -> None:
    from tgsession import RedisStorage

    with pytest.raises(ValueError, match="decode_responses"):
        RedisStorage(redis.Redis.from_url(redis_url(), decode_responses=True))


def test_a_foreign_value_of_another_type_is_a_clear_error_and_left_untouched() -> None:
    with redis_storage() as storage:
        data_key = storage.data_key("session:5")
        storage.client.hset(data_key, "field", "value")
        opening = with_session(storage=storage).open(5)
        with pytest.raises(SessionDecodeError, match=r"'session:5' is a Redis hash"), opening:
            pass
        assert storage.client.hgetall(data_key) == {b"field": b"value"}
        assert not storage.client.exists(storage.lock_key("session:5"))


def spec(storage: Any, **options: Any) -> dict[str, Any]:
    return {"redis": redis_url(), "prefix": storage.prefix, **options}


def count_of(storage: Any, key: str) -> int:
    return int(json.loads(storage.read(f"session:{key}") or b'{"count": 0}')["count"])


def test_processes_with_their_own_clients_incrementing_one_counter_end_at_the_exact_sum() -> None:
    with redis_storage() as storage:
        processes = [start_worker("increment", spec(storage), "shared", 200) for _ in range(4)]
        processes += [start_worker("open", spec(storage), "shared", 200) for _ in range(2)]
        for process in processes:
            finish_worker(process)
        assert count_of(storage, "shared") == 6 * 200


def test_a_killed_holder_frees_its_session_within_lock_ttl() -> None:
    with redis_storage(lock_ttl=2.0) as storage:
        holder = start_worker("hold", spec(storage, lock_ttl=2.0), "victim")
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        with with_session(initial=lambda: {"count": 0}, storage=storage).open("victim") as s:
            freed_after = time.monotonic() - killed
            s["count"] += 1
        print(f"session free {freed_after:.2f} s after SIGKILL of its holder (lock_ttl 2 s)")
        assert freed_after <= 2.0 + 1.0  # lock_ttl, plus room for a loaded machine
        assert count_of(storage, "victim") == 1


def test_a_handler_running_several_times_lock_ttl_keeps_its_lock() -> None:
    with redis_storage(lock_ttl=1.0) as storage:
        slow = start_worker("increment", spec(storage, lock_ttl=1.0), "long", 1, 4.0)
        assert slow.stdout is not None and slow.stdout.readline().strip() == "locked"
        started = time.monotonic()  # the slow handler holds the lock for 4 s from now
        fast = start_worker("increment", spec(storage, lock_ttl=1.0), "long", 1)
        finish_worker(fast)
        waited = time.monotonic() - started
        finish_worker(slow)
        assert waited >= 3.0, f"the competitor got in after {waited:.1f} s, while the holder ran"
        assert count_of(storage, "long") == 2


def test_a_holder_paused_past_lock_ttl_cannot_overwrite_the_newer_state() -> None:
    with redis_storage(lock_ttl=1.0) as storage:
        paused = start_worker("hold-then-add", spec(storage, lock_ttl=1.0), "p", 3.0)
        assert paused.stdout is not None and paused.stdout.readline().strip() == "locked"
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            finish_worker(
                start_worker("increment", spec(storage, lock_ttl=1.0), "p", 3), timeout=30
            )
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        out, err = paused.communicate(timeout=30)
        assert paused.returncode == 3, (out, err)
        assert out.startswith("lost") and "'session:p'" in out and "lock_ttl" in out
        assert count_of(storage, "p") == 3  # the paused holder's +100 was refused


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free loopback port, with an append-only file."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if REQUIRE_REDIS:
                pytest.fail("TGSESSION_REQUIRE_REDIS=1 and redis-server is not on PATH")
            pytest.skip("redis-server is not on PATH")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def test_redis_restart_fails_the_update_cleanly_and_the_bot_goes_on(tmp_path: Path) -> None:
    from tgsession import RedisStorage

    server = RedisServer(tmp_path)
    server.start()
    storage = RedisStorage.from_url(server.url, lock_ttl=1.0)
    ran: list[int] = []

    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        ran.append(update.key)
        session["count"] += 1

    try:
        handler(Update(1))
        server.stop()
        with pytest.raises(SessionStorageError, match="'session:1'") as raised:
            handler(Update(1))
        assert isinstance(raised.value.__cause__, redis.ConnectionError)
        assert ran == [1], "the handler ran although its session could not be loaded"
        server.start()
        handler(Update(1))  # the same storage and client, no restart of the bot
        assert ran == [1, 1]
        assert json.loads(storage.read("session:1") or b"") == {"count": 2}
        assert not storage.client.exists(storage.lock_key("session:1"))  # nothing left held
    finally:
        storage.close()
        if server.process and server.process.poll() is None:
            server.stop()


def test_redis_down_at_the_save_fails_that_update_clearly_and_its_lock_frees_itself(
    tmp_path: Path,
) -> None:
    from tgsession import RedisStorage

    server = RedisServer(tmp_path)
    server.start()
    storage = RedisStorage.from_url(server.url, lock_ttl=1.0)

    @with_session(initial=lambda: {"count": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any], crash: bool = False) -> None:
        session["count"] += 1
        if crash:
            server.stop()  # Redis goes away while this handler holds the lock

    try:
        handler(Update(1))
        with pytest.raises(SessionStorageError, match=r"confirm the save of session 'session:1'"):
            handler(Update(1), crash=True)
        server.start()  # with its append-only file: the lock of the failed save is back too
        started = time.monotonic()
        handler(Update(1))
        waited = time.monotonic() - started
        assert waited < 1.0 + 1.0, f"the stale lock held the session for {waited:.1f} s"
        assert json.loads(storage.read("session:1") or b"") == {"count": 2}
    finally:
        storage.close()
        if server.process and server.process.poll() is None:
            server.stop()


BUSY = (
    "local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]; "
    "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > tonumber(ARGV[1]); "
    "return 1"
)


def stall(server: RedisServer, microseconds: int) -> None:
    """Keep the server busy with a Lua loop, as a slow command of another client would."""
    threading.Thread(
        target=lambda: redis.Redis(port=server.port).eval(BUSY, 0, microseconds), daemon=True
    ).start()
    time.sleep(0.05)


@pytest.mark.parametrize("phase", ["lock and load", "save and unlock"])
def test_a_script_retried_after_a_lost_reply_answers_as_its_first_run(
    tmp_path: Path, phase: str
) -> None:
    # The client gives up on a reply after 0.3 s and redis-py sends the script again; the
    # stalled first run still executes. The retry must see that run for what it was: not a
    # stranger's lock to wait for (lock), not a lost lock (save).
    from tgsession import RedisStorage

    server = RedisServer(tmp_path)
    server.start()
    storage = RedisStorage(redis.Redis(port=server.port, socket_timeout=0.3), lock_ttl=5.0)

    @with_session(initial=lambda: {"n": 0}, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any], stall_at_save: bool = False) -> None:
        session["n"] += 1
        if stall_at_save:
            stall(server, 800_000)

    try:
        handler(Update(1))
        started = time.monotonic()
        if phase == "lock and load":
            stall(server, 800_000)
            handler(Update(1))
        else:
            handler(Update(1), stall_at_save=True)
        took = time.monotonic() - started
        assert took < 4.0, f"the update took {took:.1f} s: it waited for its own lock"
        assert json.loads(storage.read("session:1") or b"") == {"n": 2}
        assert not storage.client.exists(storage.lock_key("session:1"))
    finally:
        storage.close()
        server.stop()


def test_a_lazy_session_first_used_in_another_thread_is_saved_under_its_lock() -> None:
    with redis_storage(lock_ttl=1.0) as storage:

        @with_session(lazy=True, initial=lambda: {"n": 0}, storage=storage, get_session_key=by_key)
        def handler(update: Update, session: Any) -> None:
            helper = threading.Thread(target=lambda: session.__setitem__("n", session["n"] + 1))
            helper.start()
            helper.join()

        for _ in range(3):
            handler(Update(1))
        assert json.loads(storage.read("session:1") or b"") == {"n": 3}
        assert not storage.client.exists(storage.lock_key("session:1"))


def test_close_waits_for_held_sessions_keeps_renewing_them_and_refuses_new_ones() -> None:
    with redis_storage(lock_ttl=0.6) as storage:
        counter = with_session(initial=lambda: {"n": 0}, storage=storage)
        inside = threading.Event()

        def slow() -> None:
            with counter.open(1) as session:
                inside.set()
                time.sleep(2.0)  # more than three times lock_ttl, while close() waits
                session["n"] += 1

        holder = threading.Thread(target=slow)
        holder.start()
        inside.wait(5)
        started = time.monotonic()
        storage.close()
        assert time.monotonic() - started >= 1.5
        holder.join(5)
        with pytest.raises(SessionStorageError, match="closed"), counter.open(1):
            pass
        stored = redis.Redis.from_url(redis_url()).get(storage.data_key("session:1"))
        assert json.loads(stored or b"") == {"n": 1}


def test_a_prefix_with_braces_is_refused() -> None:
    from tgsession import RedisStorage

    with pytest.raises(ValueError, match="braces"):
        RedisStorage(redis.Redis.from_url(redis_url()), prefix="bot{1}:")


def test_a_lock_key_without_expiry_is_a_clear_error_not_an_endless_wait() -> None:
    with redis_storage() as storage:
        storage.client.set(storage.lock_key("session:3"), b"not a tgsession token")
        opening = with_session(storage=storage).open(3)
        with pytest.raises(SessionStorageError, match="no expiry"), opening:
            pass


def test_lock_timeout_bounds_the_wait_for_a_busy_session() -> None:
    with redis_storage(lock_timeout=0.3) as storage:
        holder = start_worker("hold", spec(storage), "busy")
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            opening = with_session(storage=storage).open("busy")
            with pytest.raises(SessionLockTimeout, match="'session:busy'"), opening:
                pass
            assert 0.3 <= time.monotonic() - started < 2.0
        finally:
            holder.kill()
            holder.wait(10)


def test_a_connection_failure_names_the_session_the_server_and_the_cause() -> None:
    from tgsession import RedisStorage

    port = free_port()  # nothing listens there
    storage = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(SessionStorageError) as caught:
        with_session(storage=storage).open(1).__enter__()
    message = str(caught.value)
    assert "'session:1'" in message
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message


def test_a_refused_password_is_named_in_the_error() -> None:
    from tgsession import RedisStorage

    url = redis_url().replace("redis://", "redis://someone:wrong-password@")
    storage = RedisStorage.from_url(url)
    with pytest.raises(SessionStorageError) as caught:
        with_session(storage=storage).open(1).__enter__()
    message = str(caught.value)
    assert "'session:1'" in message and "password" in message
    assert "wrong-password" not in message


def test_a_save_that_fails_before_reaching_redis_releases_the_lock_at_once() -> None:
    with redis_storage(lock_ttl=30) as storage:
        manager = with_session(storage=storage)
        manager.ttl = float("inf")  # past the check at with_session: an impossible expiry
        with pytest.raises(SessionStorageError, match="nothing was stored"):  # noqa: SIM117
            with manager.open(1) as session:
                session["x"] = 1
        manager.ttl = None
        started = time.monotonic()
        with manager.open(1) as session:
            assert session == {}
        assert time.monotonic() - started < 5, "the lock was left held for lock_ttl"


def test_store_identity_tells_sentinel_services_apart_and_leaves_clients_without_address() -> None:
    from redis.sentinel import Sentinel

    from tgsession import RedisStorage

    sentinel = Sentinel([("127.0.0.1", free_port())])  # nothing is contacted to build clients
    first = RedisStorage(sentinel.master_for("bot-a"))
    second = RedisStorage(sentinel.master_for("bot-b"))
    again = RedisStorage(sentinel.master_for("bot-a"))
    assert first.identity != second.identity and first.identity == again.identity

    # A cluster client says no single address: such a storage object stands for itself.
    from tgsession.storage.redis import _identity

    assert _identity(types.SimpleNamespace(), "tgsession:") is None


def test_a_lock_taken_while_the_caller_was_interrupted_is_given_back() -> None:
    with redis_storage() as storage:
        run = storage._run

        def interrupted_after_redis_answered(script: Any, keys: Any, args: Any) -> Any:
            reply = run(script, keys, args)
            if script is storage._lock_and_load:
                raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while the reply was read
            return reply

        storage._run = interrupted_after_redis_answered
        with pytest.raises(KeyboardInterrupt), storage.lock("session:1"):
            pass
        storage._run = run
        assert storage.client.exists(storage.lock_key("session:1")) == 0
        with storage.lock("session:1"):  # and this process can take it again at once
            pass


def test_an_interrupt_anywhere_in_taking_a_lock_leaves_nothing_held() -> None:
    with redis_storage() as storage:

        def interrupted(state: Any) -> None:
            raise KeyboardInterrupt  # after the lock was taken and registered

        storage._ensure_renewer = interrupted
        with pytest.raises(KeyboardInterrupt), storage.lock("session:1"):
            pass
        del storage._ensure_renewer
        assert storage.client.exists(storage.lock_key("session:1")) == 0
        assert not storage._state.in_use and not storage._state.held
        with storage.lock("session:1"):  # the thread lock was given back too
            pass
    # and close() (in redis_storage) returned

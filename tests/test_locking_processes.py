"""DiskStorage locks across processes: exact totals, killed holders, long holders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, SessionLockTimeout, with_session

from conftest import finish_worker, redis_storage, start_worker


def start(command: str, directory: Path, *args: Any) -> subprocess.Popen[str]:
    return start_worker(command, {"disk": str(directory)}, *args)


def stored_count(directory: Path, key: str) -> int:
    storage = DiskStorage(directory)
    data = storage.read(f"session:{key}")
    return int(json.loads(data or b'{"count": 0}')["count"])


def test_processes_incrementing_one_counter_end_at_the_exact_sum(tmp_path: Path) -> None:
    processes = [start("increment", tmp_path, "shared", 200) for _ in range(4)]
    processes += [start("open", tmp_path, "shared", 200) for _ in range(2)]
    for process in processes:
        finish_worker(process)
    assert stored_count(tmp_path, "shared") == 6 * 200


def test_processes_and_threads_together_lose_no_update(tmp_path: Path) -> None:
    import threading

    counter = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path))

    def bump() -> None:
        for _ in range(200):
            with counter.open("shared") as session:
                session["count"] += 1

    processes = [start("increment", tmp_path, "shared", 200) for _ in range(2)]
    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for process in processes:
        finish_worker(process)
    assert stored_count(tmp_path, "shared") == 6 * 200


def test_killed_holder_frees_its_session_at_once(tmp_path: Path) -> None:
    holder = start("hold", tmp_path, "victim")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    waiting = with_session(storage=DiskStorage(tmp_path, lock_timeout=0.3))
    with pytest.raises(SessionLockTimeout), waiting.open("victim"):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    killed = time.monotonic()
    counter = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(tmp_path))
    with counter.open("victim") as session:
        freed_after = time.monotonic() - killed
        session["count"] += 1
    print(f"session free {freed_after * 1000:.1f} ms after SIGKILL of its holder")
    assert freed_after < 2.0
    assert stored_count(tmp_path, "victim") == 1


def test_a_live_holder_keeps_its_lock_however_long_its_handler_runs(tmp_path: Path) -> None:
    # Each of two handlers of the first process holds the lock for 3 s; a competitor that
    # starts meanwhile must wait, and the total stays exact.
    slow = start("increment", tmp_path, "long", 2, 3.0)
    assert slow.stdout is not None and slow.stdout.readline().strip() == "locked"
    started = time.monotonic()
    fast = start("increment", tmp_path, "long", 1)
    finish_worker(fast)
    waited = time.monotonic() - started
    finish_worker(slow)
    assert waited >= 2.5, f"the competitor got in after {waited:.1f} s, while the holder ran"
    assert stored_count(tmp_path, "long") == 3


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_a_forked_child_uses_the_store_safely(tmp_path: Path, backend: str) -> None:
    with ExitStack() as stack:
        if backend == "disk":
            storage: Any = DiskStorage(tmp_path)
        else:
            storage = stack.enter_context(redis_storage())
        counter = with_session(initial=lambda: {"count": 0}, storage=storage)
        with counter.open("f") as session:
            session["count"] += 1
        pid = os.fork()
        if pid == 0:  # the child: no pytest machinery, just the store
            code = 1
            try:
                for _ in range(100):
                    with counter.open("f") as session:
                        session["count"] += 1
                code = 0
            finally:
                os._exit(code)
        for _ in range(100):
            with counter.open("f") as session:
                session["count"] += 1
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with counter.open("f") as session:
            assert session["count"] == 201


def test_threads_of_two_processes_waiting_across_keys_are_not_taken_for_a_deadlock(
    tmp_path: Path,
) -> None:
    # Each process holds one key in a thread while another of its threads waits for the key
    # the other process holds. The kernel sees two processes waiting for each other and
    # answers EDEADLK, though each holder finishes on its own: both must complete.
    first = start("cross", tmp_path, "a", "b")
    second = start("cross", tmp_path, "b", "a")
    assert "done" in finish_worker(first, timeout=60)
    assert "done" in finish_worker(second, timeout=60)


def test_closing_one_disk_storage_leaves_the_others_on_its_directory_working(
    tmp_path: Path,
) -> None:
    import threading

    first, second = DiskStorage(tmp_path), DiskStorage(tmp_path)
    first.close()
    counter = with_session(initial=lambda: {"count": 0}, storage=second)

    def bump() -> None:
        for _ in range(100):
            with counter.open("c") as session:
                session["count"] += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert stored_count(tmp_path, "c") == 400
    second.close()
    with pytest.raises(ValueError, match="closed"):
        first.read("session:c")
    assert stored_count(tmp_path, "c") == 400  # a new object opens the directory afresh

"""Faults of a disk store under a running bot: nothing lost, nothing hung, a clear error.

Each test uses real directories and, where the fault involves them, real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, SessionError, SessionStorageError, with_session

from conftest import (
    child_env,
    cue,
    finish_worker,
    redis_storage,
    redis_url,
    rest_of,
    run_python,
    said,
    start_worker,
)


def disk(directory: Path) -> dict[str, str]:
    return {"disk": str(directory)}


def stored_count(directory: Path, key: str) -> int:
    storage = DiskStorage(directory)
    data = storage.read(f"session:{key}")
    storage.close()
    return int(json.loads(data or b'{"count": 0}')["count"])


def checked_lines(output: str) -> list[tuple[int, int]]:
    rows = [line.split() for line in output.splitlines() if line != "done"]
    return [(int(count), int(seen)) for count, seen in rows]


# -- The write-ahead log stays under a running process ---------------------------------------


def test_a_store_opened_again_while_a_thread_keeps_its_connection_loses_no_save(
    tmp_path: Path,
) -> None:
    # Opening the directory again must not touch the database file with a descriptor of its
    # own: closing it would drop the process's SQLite locks, and the next process to exit
    # would delete the write-ahead log that this process still writes to.
    out = finish_worker(start_worker("reopen-checked", disk(tmp_path), "k", 7))
    assert checked_lines(out) == [(n, n) for n in range(1, 8)]
    assert stored_count(tmp_path, "k") == 7


def test_a_forked_worker_that_lists_sessions_before_its_first_open_loses_no_save(
    tmp_path: Path,
) -> None:
    worker = start_worker("fork-checked", disk(tmp_path), "k", 7)
    out = finish_worker(worker)  # the forking parent exits at once: read the child's output
    assert out.splitlines()[-1] == "done"
    assert checked_lines(out) == [(n, n) for n in range(1, 8)]
    assert stored_count(tmp_path, "k") == 7


# -- The lock file and the directory deleted under a running bot -----------------------------


def test_deleting_the_lock_file_while_bots_run_loses_no_update(tmp_path: Path) -> None:
    # Processes that were running go on locking the deleted file, processes started after
    # lock a new one: each must notice, so that every update they report saved is stored.
    # Each update holds its session 2 ms, so that the first processes (about 1.2 s of
    # updates) still run when the later ones start.
    first = [start_worker("counted", disk(tmp_path), "k", 300, 0.002) for _ in range(2)]
    while stored_count(tmp_path, "k") < 20:  # running, with the old lock file open
        time.sleep(0.01)
    (tmp_path / "locks").unlink()
    later = [start_worker("counted", disk(tmp_path), "k", 150, 0.002) for _ in range(2)]
    lines = "".join(finish_worker(worker) for worker in first + later).splitlines()
    saved = sum(line.isdigit() for line in lines)
    failed = [line for line in lines if line.startswith("failed")]
    assert all("lock file" in line for line in failed), failed
    print(f"{saved} updates saved, {len(failed)} refused with SessionLockLost")
    assert stored_count(tmp_path, "k") == saved
    assert saved + len(failed) == 900


def test_deleting_the_store_directory_makes_every_later_save_fail_naming_it(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "sessions"
    counter = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(directory))
    with counter.open(1) as session:
        session["count"] += 1
    with pytest.raises(SessionStorageError, match=str(directory)) as caught:  # noqa: SIM117
        with counter.open(1) as session:
            shutil.rmtree(directory)  # while a handler holds the session
            session["count"] += 1
    assert "deleted" in str(caught.value) and "restart" in str(caught.value)
    for _ in range(2):  # and every later update, before its handler runs
        with pytest.raises(SessionStorageError, match=str(directory)), counter.open(1):
            raise AssertionError("the handler must not run on a deleted store")
    # A new storage for the path starts an empty store that works.
    fresh = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(directory))
    with fresh.open(1) as session:
        session["count"] += 5
    assert stored_count(directory, "1") == 5


# -- One store, however it is reached ---------------------------------------------------------


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory and a second path to it, a bind mount (root only)."""
    real, mirror = tmp_path / "real", tmp_path / "mirror"
    real.mkdir(mode=0o700)
    mirror.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "--bind", str(real), str(mirror)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"bind mounts need root: {mounted.stderr.decode().strip()}")
    try:
        yield real, mirror
    finally:
        subprocess.run(["umount", "--lazy", str(mirror)], check=True)


def test_two_paths_to_one_directory_share_one_set_of_locks(
    bind_mount: tuple[Path, Path],
) -> None:
    real, mirror = bind_mount
    counters = [
        with_session(initial=lambda: {"count": 0}, storage=DiskStorage(path))
        for path in (real, mirror)
    ]

    def bump(counter: Any) -> None:
        for _ in range(100):
            with counter.open("shared") as session:
                value = session["count"]
                session["count"] = value + 1

    threads = [threading.Thread(target=bump, args=(counters[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for counter in counters:
        counter.storage.close()  # type: ignore[attr-defined]
    assert stored_count(real, "shared") == 400


def opened_twice(first: Any, second: Any) -> tuple[Any, Any]:
    """Open session 1 through ``first``, and inside it through ``second``."""
    outer = with_session(storage=first)
    inner = with_session(storage=second)
    with outer.open(1) as one, inner.open(1) as two:
        return one, two


def test_two_disk_storages_for_one_directory_are_one_store_to_a_handler(tmp_path: Path) -> None:
    # The nested open shares the session its caller holds, as within one storage object,
    # instead of waiting for its own lock.
    (tmp_path / "link").symlink_to(tmp_path / "sessions", target_is_directory=True)
    first = DiskStorage(tmp_path / "sessions")
    second = DiskStorage(tmp_path / "link", lock_timeout=5)  # no hang, were it not seen
    one, two = opened_twice(first, second)
    assert one is two
    assert first.identity == second.identity


def test_two_redis_storages_for_one_server_and_prefix_are_one_store_to_a_handler() -> None:
    from tgsession import RedisStorage

    with redis_storage() as first:
        same = RedisStorage.from_url(redis_url(), prefix=first.prefix, lock_timeout=5)
        # Another name for the same server: recognised by the lock's token, a clear error.
        renamed = RedisStorage.from_url(
            "redis://localhost:6379/0", prefix=first.prefix, lock_timeout=5
        )
        try:
            one, two = opened_twice(first, same)
            assert one is two
            with pytest.raises(SessionError, match="already open in this thread"):
                opened_twice(first, renamed)
        finally:
            same.close()
            renamed.close()
        # The first holder released its lock: the session is free again.
        with with_session(storage=first).open(1):
            pass


# -- Permissions and links ---------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_directories_created_for_the_store_are_owner_only_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        storage = DiskStorage(tmp_path / "a" / "b" / "sessions")
    finally:
        os.umask(old)
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/sessions")] == [0o700] * 3
    assert mode(tmp_path / "a/b/sessions/cache.db") == 0o600
    storage.close()


@pytest.mark.parametrize("name", ["locks", "cache.db"])
def test_a_store_file_planted_as_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, name: str
) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir(mode=0o700)
    target = tmp_path / "another-application.db"
    target.write_bytes(b"not yours")
    (directory / name).symlink_to(target)
    with pytest.raises(SessionStorageError, match=f"{name} is a symbolic link"):
        DiskStorage(directory)
    assert target.read_bytes() == b"not yours"


def test_a_store_directory_that_every_user_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(SessionStorageError, match=r"every user.*chmod o-w"):
        DiskStorage(directory)
    directory.chmod(0o1777)  # shared on purpose, as /tmp is: no chmod advice
    with pytest.raises(SessionStorageError, match=r"every user.*a directory of your own"):
        DiskStorage(directory)
    directory.chmod(0o755)
    DiskStorage(directory).close()


def test_a_group_writable_store_directory_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "team"
    directory.mkdir()
    directory.chmod(0o775)  # mkdir under umask 002, where each user has a group of their own
    with caplog.at_level("WARNING", logger="tgsession"):
        DiskStorage(directory).close()
    assert "can be written by its group" in caplog.text


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_tgsession_dir_that_cannot_be_a_store_is_a_storage_error_naming_it(
    tmp_path: Path, where: str
) -> None:
    file = tmp_path / "not-a-directory"
    file.write_text("")
    path = file if where == "a file" else file / "sessions"
    script = (
        "from tgsession import with_session, SessionStorageError\n"
        "@with_session(get_session_key=lambda u: 1)\n"
        "def handler(update, session): pass\n"
        "try:\n"
        "    handler(None)\n"
        "except SessionStorageError as error:\n"
        "    print(error)\n"
    )
    result = run_python(script, TGSESSION_DIR=str(path))
    assert f"cannot use {path} as a session store" in result.stdout
    assert "TGSESSION_DIR" in result.stdout


def test_the_default_store_logs_its_absolute_path_once(tmp_path: Path) -> None:
    script = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from tgsession import with_session\n"
        "counter = with_session(get_session_key=lambda u: 1)\n"
        "for _ in range(3):\n"
        "    with counter.open(1): pass\n"
    )
    result = run_python(script, cwd=tmp_path)
    assert result.stderr.count(f"sessions are stored in {tmp_path / '.tgsession'}") == 1


def test_a_forked_worker_that_opens_a_session_first_loses_no_save(tmp_path: Path) -> None:
    # The daemon's child opens a session before anything else: the store it opens must take
    # the database's shared lock for real, though the connection it inherited says it has it.
    out = finish_worker(start_worker("fork-checked", disk(tmp_path), "k", 7, "open-first"))
    assert checked_lines(out) == [(n, n) for n in range(1, 8)]
    assert stored_count(tmp_path, "k") == 7


@pytest.mark.parametrize("thread", ["main", "thread"])
def test_a_save_waiting_for_sqlite_while_the_lock_file_is_deleted_is_refused(
    tmp_path: Path, thread: str
) -> None:
    # The save of A waits for SQLite's write lock (another writer holds it) while the lock
    # file is deleted and B, on the new file, reads the session. A must not then write over
    # what B goes on to save: A's save is refused, B's is kept. Saves in the main thread
    # and in worker threads take different paths (see DiskStorage.write).
    directory = tmp_path / "sessions"
    DiskStorage(directory).close()
    a = start_worker("counted-on-cue", disk(directory), "k", 1, thread)
    b = start_worker("counted-on-cue", disk(directory), "k", 1, thread)
    assert [said(a), said(b)] == ["ready", "ready"]
    writer = sqlite3.connect(directory / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a slow commit of another bot, a checkpoint, a purge
    cue(a)
    assert said(a) == "changed 1"  # A now saves, and waits for SQLite
    time.sleep(0.3)
    (directory / "locks").unlink()
    cue(b)
    assert said(b) == "changed 1"
    time.sleep(0.3)
    writer.execute("COMMIT")
    writer.close()
    outputs = [rest_of(worker) for worker in (a, b)]
    assert "failed" in outputs[0] and "lock file" in outputs[0]
    assert outputs[1].splitlines()[0] == "1"
    assert stored_count(directory, "k") == 1


def test_a_store_opened_again_after_its_database_was_replaced_keeps_its_locks(
    tmp_path: Path,
) -> None:
    # The old object fails (its database is gone); closing it must not drop the locks that
    # the new object holds on the same lock file.
    directory = tmp_path / "sessions"
    old = DiskStorage(directory)
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        (directory / name).unlink(missing_ok=True)
    new = DiskStorage(directory)
    with new.lock("session:k"):
        old.close()
        probe = start_worker("try-lock", disk(directory), "session:k")
        assert finish_worker(probe).splitlines()[0] == "busy"
    new.close()


@contextmanager
def waiting_for_sqlite(code: str, directory: Path, *args: str) -> Iterator[Any]:
    """Run the script ``code`` on a new store in ``directory``; once it says "ready", hold
    SQLite's write lock and cue it, so that its next write waits; commit on leaving."""
    DiskStorage(directory).close()
    script = subprocess.Popen(
        [sys.executable, "-c", code, str(directory), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert script.stdout is not None and script.stdin is not None
    assert script.stdout.readline().strip() == "ready"
    writer = sqlite3.connect(directory / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a slow commit of another bot, a checkpoint, a purge
    script.stdin.write("\n")
    script.stdin.flush()
    try:
        yield script
    finally:
        writer.execute("COMMIT")
        writer.close()


SAVE_ON_CUE = """
import signal, sys
from tgsession import DiskStorage, with_session

if sys.argv[2] == "SIGTERM":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # as under systemd or docker
counter = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(sys.argv[1]))
with counter.open(1) as session:  # stored: the save on cue updates it
    session["count"] += 1
print("ready", flush=True)
sys.stdin.readline()
with counter.open(1) as session:
    session["count"] += 1
print("saved; still running", flush=True)
"""


@pytest.mark.parametrize(("name", "code"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "")])
def test_a_signal_while_a_save_waits_for_sqlite_stops_the_script(
    tmp_path: Path, name: str, code: str
) -> None:
    directory = tmp_path / "sessions"
    with waiting_for_sqlite(SAVE_ON_CUE, directory, name) as script:
        time.sleep(0.5)
        script.send_signal(getattr(signal, name))
        time.sleep(0.3)
    out, err = script.communicate(timeout=30)
    assert "still running" not in out
    assert script.returncode != 0 and code in err
    assert stored_count(directory, "1") == 1  # the first save only


INTERRUPTED_DELETE = """
import signal, sys
from tgsession import DiskStorage, with_session

def too_long(*_):
    raise TimeoutError("the handler took too long")

signal.signal(signal.SIGALRM, too_long)
counter = with_session(initial=lambda: {"count": 0}, storage=DiskStorage(sys.argv[1]))
with counter.open(1) as session:
    session["count"] += 1
print("ready", flush=True)
sys.stdin.readline()
signal.alarm(1)
try:
    counter.delete(1)  # waits for SQLite; the alarm cuts it off
except Exception:  # TimeoutError, as the cause of a SessionStorageError
    print("delete cut off", flush=True)
signal.alarm(0)
for _ in range(3):
    with counter.open(2) as session:
        session["count"] += 1
print("saved", flush=True)
"""


def test_saves_after_an_interrupted_delete_are_committed(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    with waiting_for_sqlite(INTERRUPTED_DELETE, directory) as script:
        time.sleep(1.5)  # the alarm fires while the delete waits
    out, _ = script.communicate(timeout=60)
    assert out.splitlines() == ["delete cut off", "saved"]
    assert stored_count(directory, "2") == 3  # committed, seen by another process
    assert stored_count(directory, "1") == 1  # the cut-off delete was rolled back

"""DiskStorage: owner-only files, the default location, persistence across restarts."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import diskcache

from tgsession import DiskStorage, Storage, with_session

from conftest import child_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_directory_and_every_file_in_it_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    storage = DiskStorage(directory)
    counter = with_session(initial=lambda: {"big": ""}, storage=storage)
    with counter.open(1) as session:
        session["big"] = "x" * 200_000  # larger than diskcache's 32 KiB file threshold
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert mode(directory) == 0o700
    assert {p.name for p in files} >= {"cache.db", "cache.db-wal", "cache.db-shm", "locks"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    storage.close()


def test_diskcache_never_evicts_sessions(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    assert storage._dir().cache.eviction_policy == "none"
    storage.close()


def test_disk_storage_satisfies_the_storage_protocol(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    assert isinstance(storage, Storage)
    storage.close()


def test_sessions_survive_a_restart_of_the_process(tmp_path: Path) -> None:
    script = (
        "import sys; from tgsession import DiskStorage, with_session\n"
        "c = with_session(initial=lambda: {'n': 0}, storage=DiskStorage(sys.argv[1]))\n"
        "with c.open(1) as s: s['n'] += 1; print(s['n'])\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(3)
    ]
    assert outputs == ["1", "2", "3"]


def run_default(cwd: Path, env_dir: str | None = None) -> None:
    env = {k: v for k, v in child_env().items() if k != "TGSESSION_DIR"}
    if env_dir is not None:
        env["TGSESSION_DIR"] = env_dir
    script = (
        "from tgsession import with_session\n"
        "with with_session(initial=dict).open(5) as s: s['seen'] = True\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, check=True)


def test_default_storage_is_dot_tgsession_in_the_working_directory(tmp_path: Path) -> None:
    run_default(tmp_path)
    storage = DiskStorage(tmp_path / ".tgsession")
    assert json.loads(storage.read("session:5") or b"") == {"seen": True}
    storage.close()


def test_tgsession_dir_moves_the_default_storage(tmp_path: Path) -> None:
    run_default(tmp_path, str(tmp_path / "elsewhere"))
    assert not (tmp_path / ".tgsession").exists()
    storage = DiskStorage(tmp_path / "elsewhere")
    assert storage.read("session:5") == b'{"seen":true}'
    storage.close()


def test_values_are_stored_as_plain_bytes_readable_by_diskcache(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    with with_session(initial=lambda: {"n": 1}, storage=storage).open(3) as session:
        session["n"] = 2
    storage.close()
    with diskcache.Cache(tmp_path) as cache:
        assert cache.get("session:3") == b'{"n":2}'


def test_a_store_closed_while_a_thread_waits_for_a_lock_is_closed_when_the_wait_ends(
    tmp_path: Path,
) -> None:
    import contextlib
    import gc
    import os
    import threading

    from tgsession import SessionLockTimeout
    from tgsession.storage import disk

    directory = tmp_path / "sessions"
    holder = subprocess.Popen(  # another process holds session k
        [
            sys.executable,
            "-c",
            "import sys, time; from tgsession import DiskStorage\n"
            f"DiskStorage({str(directory)!r}).lock('k').__enter__()\n"
            "print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        store = DiskStorage(directory, lock_timeout=0.5)
        waited: list[type[BaseException]] = []

        def wait() -> None:
            try:
                store.lock("k").__enter__()
            except SessionLockTimeout as error:
                waited.append(type(error))

        waiter = threading.Thread(target=wait)
        waiter.start()
        store.close()  # while the thread waits
        waiter.join(30)
        assert len(waited) == 1
    finally:
        holder.kill()
        holder.wait()
    assert all(d.path != store.directory for d in disk._directories.values())
    gc.collect()  # this thread's connection is closed with the cache: only its own thread may
    open_files = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed since
            open_files.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    assert not [name for name in open_files if name.startswith(str(directory))]

"""The measurements: each function returns plain numbers for the report."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import stores
from benchmarks.timing import interleaved, median_of, on_main_thread, threaded
from tgsession import DiskStorage, MemoryStorage

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    sizes: tuple[int, ...]
    rounds: int
    updates: int  # per round, per case
    threads: int
    thread_updates: int  # per thread
    process_updates: int  # per process
    lost_increments: int  # per thread
    rss_updates: int
    redis_url: str | None


def random_users(size: int, count: int, seed: int) -> list[int]:
    generator = random.Random(seed)
    return [generator.randrange(size) for _ in range(count)]


def single_thread(config: Config, size: int, directory: Path) -> dict[str, float]:
    """Microseconds per update of each case with ``size`` sessions stored."""
    users = random_users(size, config.updates, seed=size)
    plain = directory.with_name(directory.name + "-diskcache-defaults")
    stores.fill_disk(directory, size)
    stores.fill_disk(plain, size, stores.DEFAULTS)
    disk = DiskStorage(directory)

    def write_back() -> None:
        stores.checkpoint(directory)
        stores.checkpoint(plain)

    ours = stores.tgsession_cases(disk)
    results = interleaved(
        {
            "disk floor": stores.disk_floor(directory),
            "diskcache defaults": stores.disk_floor(plain, stores.DEFAULTS),
            **_prefixed("disk", ours),
            "disk changed, main thread": on_main_thread(ours["changed"]),
        },
        users,
        config.rounds,
        write_back=write_back,
    )
    results["telebot memory"] = interleaved(
        {"t": stores.telebot_update(stores.telebot_memory(size))}, users, config.rounds
    )["t"]
    with tempfile.TemporaryDirectory() as scratch:
        pickled = stores.telebot_update(stores.telebot_pickle(Path(scratch) / "states.pkl", size))
        few = users[: max(1, min(200, 20_000 // size))]
        results["telebot pickle"] = interleaved({"t": pickled}, few, min(config.rounds, 3))["t"]
    if config.redis_url:
        results.update(_redis_single(config, size, users))
    return results


def _prefixed(prefix: str, cases: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix} {name}": update for name, update in cases.items()}


def _redis_storage(config: Config) -> Any:
    import uuid

    from tgsession import RedisStorage

    assert config.redis_url
    return RedisStorage.from_url(config.redis_url, prefix=f"tgsession-bench:{uuid.uuid4().hex}:")


def _data_key(storage: Any) -> Any:
    return lambda user: storage.data_key(stores.entry(user))


def _redis_single(config: Config, size: int, users: list[int]) -> dict[str, float]:
    assert config.redis_url
    storage = _redis_storage(config)
    telebot_prefix = storage.prefix + "telebot:"
    try:
        stores.fill_redis(storage.client, size, _data_key(storage))
        telebot_storage = stores.telebot_redis(config.redis_url, telebot_prefix, size)
        return interleaved(
            {
                "redis floor": stores.redis_floor(storage.client, _data_key(storage)),
                **_prefixed("redis", stores.tgsession_cases(storage)),
                "telebot redis": stores.telebot_update(telebot_storage),
            },
            users,
            config.rounds,
        )
    finally:
        stores.delete_prefix(storage.client, storage.prefix)
        storage.close()


def size_independent(config: Config) -> dict[str, float]:
    """Cases whose cost does not involve a store: a lazy session left untouched, memory."""
    users = random_users(1_000, config.updates, seed=1)
    dicts, dataclasses = stores.memory_cases(1_000), stores.memory_dataclass_cases(1_000)
    return interleaved(
        {
            "lazy untouched": stores.lazy_untouched(),
            "memory changed": dicts["changed"],
            "memory dataclass changed": dataclasses["changed"],
            "memory read_only": dicts["read_only"],
            "memory dataclass read_only": dataclasses["read_only"],
            **stores.codec_cases(),
        },
        users,
        config.rounds,
    )


@dataclass
class _Backend:
    """One store under load: its update functions here, and its worker specs for processes."""

    ours: Any
    floor: Any
    ours_spec: dict[str, Any]
    floor_spec: dict[str, Any]


def concurrency(config: Config, directory: Path) -> dict[str, float]:
    """Wall-time microseconds per update with 8 threads, and with 2 processes."""
    n, per = config.threads, config.thread_updates
    distinct = [list(range(t * per, (t + 1) * per)) for t in range(n)]
    one_key = [[0] * per for _ in range(n)]
    stores.fill_disk(directory, n * per)
    backends = {
        "disk": _Backend(
            stores.tgsession_cases(DiskStorage(directory))["changed"],
            stores.disk_floor(directory),
            {"disk": str(directory)},
            {"disk-floor": str(directory)},
        )
    }
    results: dict[str, float] = {}
    with ExitStack() as cleanup:
        if config.redis_url:
            storage = _redis_storage(config)
            cleanup.callback(_drop_redis, storage)
            stores.fill_redis(storage.client, n * per, _data_key(storage))
            where = {"prefix": storage.prefix}
            backends["redis"] = _Backend(
                stores.tgsession_cases(storage)["changed"],
                stores.redis_floor(storage.client, _data_key(storage)),
                {"redis": config.redis_url, **where},
                {"redis-floor": config.redis_url, **where},
            )
        for name, backend in backends.items():
            for label, keys in (("distinct keys", distinct), ("one key", one_key)):
                for who, update in (("tgsession", backend.ours), ("floor", backend.floor)):
                    results[f"{name} {n} threads {label} {who}"] = median_of(
                        config.rounds, lambda update=update, keys=keys: threaded(update, keys)
                    )
            for label, distinct_users in (("distinct keys", True), ("one key", False)):
                for who, spec in (("tgsession", backend.ours_spec), ("floor", backend.floor_spec)):
                    results[f"{name} 2 processes {label} {who}"] = median_of(
                        max(3, config.rounds // 2),
                        lambda spec=spec, distinct_users=distinct_users: _two_processes(
                            config, spec, distinct_users
                        ),
                    )
    return results


def _drop_redis(storage: Any) -> None:
    stores.delete_prefix(storage.client, storage.prefix)
    storage.close()


def _two_processes(config: Config, spec: dict[str, Any], distinct_users: bool) -> float:
    """Wall-time microseconds per update of two worker processes started together.

    Each worker sets up, says it is ready, and starts on the word; the wall time runs from
    the first start to the last end, on the monotonic clock that processes share.
    """
    count = config.process_updates
    span = count if distinct_users else 1
    with ExitStack() as stack:
        workers = []
        for i in range(2):
            first = i * count if distinct_users else 0
            arguments = ["updates", json.dumps(spec), str(count), str(first), str(span)]
            worker = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            stack.callback(worker.kill)
            workers.append(worker)
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a benchmark worker failed: {worker.communicate()}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        spans = [json.loads(worker.communicate(timeout=600)[0]) for worker in workers]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return wall / (2 * count) * 1e6


def lost_updates(config: Config) -> dict[str, int]:
    """Updates lost when 8 threads increment one counter ``lost_increments`` times each."""
    n, per = config.threads, config.lost_increments
    expected = n * per

    def hammer(update: Any) -> None:
        threads = [
            threading.Thread(target=lambda: [update(0) for _ in range(per)]) for _ in range(n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    lost: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as cleanup:
        ours: dict[str, Any] = {"memory": MemoryStorage(), "disk": DiskStorage(Path(scratch) / "d")}
        theirs = {
            "memory": stores.telebot_memory(1),
            "pickle": stores.telebot_pickle(Path(scratch) / "states.pkl", 1),
        }
        if config.redis_url:
            ours["redis"] = _redis_storage(config)
            cleanup.callback(_drop_redis, ours["redis"])
            theirs["redis"] = stores.telebot_redis(config.redis_url, ours["redis"].prefix + "t", 1)
        for name, storage in ours.items():
            hammer(stores.tgsession_cases(storage)["changed"])
            with stores.sessions_on(storage).open(0) as session:
                lost[f"tgsession {name}"] = expected - session["count"]
        for name, storage in theirs.items():
            hammer(stores.telebot_update(storage))
            data = storage.get_data(0, 0, bot_id=stores.BOT_ID)
            lost[f"telebot {name}"] = expected - data["count"]
    return lost


def peak_rss(config: Config, directories: dict[int, Path]) -> dict[int, int]:
    """Peak RSS in KiB (median of 3 processes) of a process making updates, by size."""
    return {
        size: int(
            median_of(3, lambda directory=directory, size=size: _rss(config, directory, size))
        )
        for size, directory in directories.items()
    }


def _rss(config: Config, directory: Path, size: int) -> float:
    command = ["rss", str(directory), str(size), str(config.rss_updates)]
    return float(
        subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", *command],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    )

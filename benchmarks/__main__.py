"""Run the benchmark suite: ``python -m benchmarks [--quick] [--json PATH] [--chart PATH]``.

Every figure is a median over rounds, and every comparison a ratio against a baseline measured
in the same run: the floor of each store (what any session layer on it must pay), and
telebot's own state storage. Prints a table and the targets, writes the results as JSON and,
with matplotlib (the ``dev`` extra), a chart. Needs a Redis server for the Redis cases
(``--redis-url``, default redis://127.0.0.1:6379/0); without one they are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import tgsession
from benchmarks import cases, command, imports, isolation
from benchmarks.report import chart, print_report, targets

FULL = dict(
    sizes=(1_000, 100_000, 1_000_000),
    rounds=9,
    updates=4_000,
    threads=8,
    thread_updates=500,
    process_updates=2_000,
    lost_increments=1_000,
    rss_updates=20_000,
)
QUICK = dict(
    sizes=(1_000, 20_000),
    rounds=5,
    updates=400,
    threads=8,
    thread_updates=100,
    process_updates=300,
    lost_increments=200,
    rss_updates=2_000,
)
HERE = Path(__file__).resolve().parent


def redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def run(config: cases.Config) -> dict[str, Any]:
    results: dict[str, Any] = {"single": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    scratch = Path(tempfile.mkdtemp(prefix="tgsession-bench-"))
    try:
        directories = {size: scratch / f"sessions-{size}" for size in config.sizes}
        for size, directory in directories.items():
            print(f"... {size:,} stored sessions", file=sys.stderr, flush=True)
            results["single"][size] = cases.single_thread(config, size, directory)
        print("... lazy and memory sessions", file=sys.stderr, flush=True)
        results["independent"] = cases.size_independent(config)
        results["import ms"] = imports.import_ms(
            {"tgsession": ("tgsession", HERE.parent), "msgspec": ("msgspec", HERE.parent)},
            max(9, config.rounds * 2),
        )
        print("... threads and processes", file=sys.stderr, flush=True)
        results["concurrency"] = cases.concurrency(config, scratch / "concurrency")
        print("... lost updates", file=sys.stderr, flush=True)
        results["lost"] = cases.lost_updates(config)
        print("... isolate(bot)", file=sys.stderr, flush=True)
        results["isolate"] = {
            **isolation.overhead(cases.random_users(1_000, config.updates, 3), config.rounds),
            "latency ms": isolation.latency(0, 40, config.threads),
            "latency flooded ms": isolation.latency(2_000, 40, config.threads),
            "update ms": isolation.HANDLER_SECONDS * 1000,
        }
        if (Path(tgsession.__file__).parent / "cli").is_dir():  # earlier releases had none
            sessions = config.sizes[1]
            print(f"... the tgsession command, {sessions:,} sessions", file=sys.stderr, flush=True)
            measured = command.measure(sessions, config.redis_url)
            results["command"] = {"sessions": sessions, **measured}
        print("... peak memory", file=sys.stderr, flush=True)
        results["rss_kib"] = cases.peak_rss(config, directories)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a run under a minute")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="results file")
    parser.add_argument(
        "--chart",
        type=Path,
        default=HERE.parent / "docs" / "assets" / "chart.png",
        help="chart file",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    redis_url = args.redis_url if redis_answers(args.redis_url) else None
    if redis_url is None:
        print(f"no Redis answers at {args.redis_url}: Redis cases left out", file=sys.stderr)
    config = cases.Config(**(QUICK if args.quick else FULL), redis_url=redis_url)
    started = time.perf_counter()
    results = run(config)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["mode"] = "quick" if args.quick else "full"
    results["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **{name: version(name) for name in ("diskcache", "pyTelegramBotAPI", "redis")},
    }
    results["targets"] = targets(results)
    print_report(results)
    args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nresults: {args.json}")
    if chart(results, args.chart):
        print(f"chart: {args.chart}")
    return 0 if all(target["met"] for target in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())

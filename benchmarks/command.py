"""The tgsession command on 100,000 sessions: export and import rates and peak memory, on
disk and Redis, each a real process (``python -m benchmarks.command``)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import stores

ROOT = Path(__file__).resolve().parent.parent


# Runs the command as its console script does, then reports the peak memory of this process
# image: ru_maxrss of a child would count the parent's pages that it shared before exec.
RUN_AND_REPORT = (
    "import atexit, runpy, sys\n"
    "def report():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('\\n' + line)\n"
    "atexit.register(report)\n"
    "sys.argv[0] = 'tgsession'\n"
    "runpy.run_module('tgsession', run_name='__main__')\n"
)


def run(*args: str, stdin: Any = subprocess.DEVNULL) -> tuple[float, int]:
    """Run the tgsession command with ``args``; return its seconds and peak RSS (KiB)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, *args],
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    errors, _, peak = result.stderr.decode().rpartition("\nVmHWM:")
    if result.returncode != 0:
        raise RuntimeError(errors)
    return seconds, int(peak.split()[0])


def measure(sessions: int, redis_url: str | None) -> dict[str, float]:
    """Sessions per second and peak MiB of export and import of ``sessions`` sessions."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "source", Path(scratch) / "target"
        stores.fill_disk(source, sessions)
        target.mkdir()
        export = Path(scratch) / "export.jsonl"
        stores_at = {"disk": (["--store", str(source)], ["--store", str(target)])}
        if redis_url:
            prefix = f"tgsession-bench:{uuid.uuid4().hex}:"
            stores_at["redis"] = (["--store", redis_url, "--prefix", prefix],) * 2
        try:
            seconds, peak = run(*stores_at["disk"][0], "export", "-o", str(export))
            results["disk export per s"] = sessions / seconds
            results["disk export MiB"] = peak / 1024
            for kind, (_, into) in stores_at.items():
                with open(export, "rb") as lines:
                    seconds, peak = run(*into, "import", stdin=lines)
                results[f"{kind} import per s"] = sessions / seconds
                results[f"{kind} import MiB"] = peak / 1024
            if redis_url:
                again = Path(scratch) / "again.jsonl"
                seconds, peak = run(*stores_at["redis"][1], "export", "-o", str(again))
                results["redis export per s"] = sessions / seconds
                results["redis export MiB"] = peak / 1024
        finally:
            if redis_url:
                import redis

                client = redis.Redis.from_url(redis_url)
                stores.delete_prefix(client, prefix)
                client.close()
    return results


if __name__ == "__main__":
    for count in (1_000, 100_000):
        figures = measure(count, "redis://127.0.0.1:6379/0")
        print(f"{count:,} sessions: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()))

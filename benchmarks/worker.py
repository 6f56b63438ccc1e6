"""A second process for the benchmarks: ``python -m benchmarks.worker MODE ...``.

updates STORE N FIRST SPAN  print "ready", wait for a line on stdin, then make N updates
                            to the users FIRST .. FIRST+SPAN-1 in turn; print [start, end]
                            in seconds of the monotonic clock
rss DIRECTORY SESSIONS N    make N updates to random users among SESSIONS stored in
                            DIRECTORY through a DiskStorage; print the peak RSS in KiB

STORE is JSON: {"disk": DIR}, {"disk-floor": DIR}, {"redis": URL, "prefix": P} or
{"redis-floor": URL, "prefix": P}.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import stores
from tgsession import DiskStorage


def update_for(spec: dict[str, Any]) -> Any:
    if "disk" in spec:
        return stores.tgsession_cases(DiskStorage(spec["disk"]))["changed"]
    if "disk-floor" in spec:
        return stores.disk_floor(Path(spec["disk-floor"]))
    from tgsession import RedisStorage

    if "redis" in spec:
        return stores.tgsession_cases(RedisStorage.from_url(spec["redis"], prefix=spec["prefix"]))[
            "changed"
        ]
    storage = RedisStorage.from_url(spec["redis-floor"], prefix=spec["prefix"])
    return stores.redis_floor(storage.client, lambda user: storage.data_key(stores.entry(user)))


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB.

    Linux carries ru_maxrss over fork and exec, so a worker started by a large parent would
    report the parent's peak: read the high-water mark of this process's own memory instead.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    mode = sys.argv[1]
    if mode == "updates":
        update = update_for(json.loads(sys.argv[2]))
        count, first, span = (int(arg) for arg in sys.argv[3:6])
        users = [first + i % span for i in range(count)]
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        for user in users:
            update(user)
        print(json.dumps([started, time.perf_counter()]), flush=True)
    elif mode == "rss":
        directory, sessions, count = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        update = stores.tgsession_cases(DiskStorage(directory))["changed"]
        for _ in range(count):
            update(random.randrange(sessions))
        print(peak_rss_kib(), flush=True)


if __name__ == "__main__":
    main()

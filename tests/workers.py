"""Worker processes for the multi-process tests: ``python workers.py COMMAND STORE KEY ...``.

STORE is JSON: {"disk": DIRECTORY} or {"redis": URL, "prefix": ..., "lock_ttl": ...}; each
process opens its own storage (and, for Redis, its own client), as separate hosts would.

increment STORE KEY N [HOLD]  apply N increments to session KEY through a decorated handler,
                              sleeping HOLD seconds inside each; print "done"
open STORE KEY N              the same through SessionManager.open, as a script would
hold STORE KEY                take the lock of KEY, print "locked", then sleep until killed
cross STORE MINE OTHER         hold MINE for 1 s in one thread while another thread waits for
                              OTHER (held by a twin process); exit 1 if a thread failed
migrate STORE KEY N           N increments of KEY by sessions of version 2, whose migration
                              from version 1 counts its runs in "migrations"
hold-then-add STORE KEY SECS  take the lock of KEY, print "locked", sleep SECS, add 100 and
                              save; print "saved", or "lost" (exit 3) if the lock was lost
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from tgsession import DiskStorage, SessionLockLost, with_session


def open_store(spec: dict[str, Any]) -> Any:
    if "disk" in spec:
        return DiskStorage(spec["disk"])
    from tgsession import RedisStorage

    url = spec.pop("redis")
    return RedisStorage.from_url(url, **spec)


def main() -> None:
    command, spec, key = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    counter = with_session(
        initial=lambda: {"count": 0},
        storage=open_store(spec),
        get_session_key=lambda update: update,
    )
    if command == "increment":
        times, hold = int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.0

        @counter
        def handler(update: str, session: dict[str, int]) -> None:
            value = session["count"]
            if hold:
                print("locked", flush=True)
            time.sleep(hold)
            session["count"] = value + 1

        for _ in range(times):
            handler(key)
    elif command == "open":
        for _ in range(int(sys.argv[4])):
            with counter.open(key) as session:
                session["count"] += 1
    elif command == "hold":
        with counter.open(key):
            print("locked", flush=True)
            time.sleep(3600)
    elif command == "cross":
        storage, failures = counter.storage, []

        def hold_mine() -> None:
            with storage.lock(key):
                time.sleep(1.0)

        def want_other() -> None:
            time.sleep(0.3)
            with storage.lock(sys.argv[4]):
                pass

        def run(target: Any) -> None:
            try:
                target()
            except Exception as error:
                failures.append(error)

        threads = [threading.Thread(target=run, args=(t,)) for t in (hold_mine, want_other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            print("failed", failures, flush=True)
            sys.exit(1)
    elif command == "migrate":
        migrated = with_session(
            initial=lambda: {"count": 0},
            storage=counter.storage,
            version=2,
            migrations={2: lambda old: {**old, "migrations": old.get("migrations", 0) + 1}},
        )
        for _ in range(int(sys.argv[4])):
            with migrated.open(key) as session:
                session["count"] += 1
    elif command == "hold-then-add":
        try:
            with counter.open(key) as session:
                print("locked", flush=True)
                time.sleep(float(sys.argv[4]))
                session["count"] += 100
        except SessionLockLost as error:
            print("lost", error, flush=True)
            sys.exit(3)
        print("saved", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()

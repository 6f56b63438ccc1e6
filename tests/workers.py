"""Worker processes for the multi-process tests: ``python workers.py COMMAND DIRECTORY ...``.

increment DIR KEY N [HOLD]  apply N increments to session KEY through a decorated handler,
                            sleeping HOLD seconds inside each; print "done"
open DIR KEY N              the same through SessionManager.open, as a script would
hold DIR KEY                take the lock of KEY, print "locked", then sleep until killed
"""

from __future__ import annotations

import sys
import time

from tgsession import DiskStorage, with_session


def main() -> None:
    command, directory, key = sys.argv[1:4]
    counter = with_session(
        initial=lambda: {"count": 0},
        storage=DiskStorage(directory),
        get_session_key=lambda update: update,
    )
    if command == "increment":
        times, hold = int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.0

        @counter
        def handler(update: str, session: dict[str, int]) -> None:
            value = session["count"]
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
    print("done", flush=True)


if __name__ == "__main__":
    main()

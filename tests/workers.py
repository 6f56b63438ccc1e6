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
reopen-checked STORE KEY N    (disk) while another thread keeps its connection to the store,
                              close the storage and open the directory again, then apply N
                              increments; after each, a fresh process reads the session:
                              print "<count> <count the fresh process saw>"
fork-checked STORE KEY N [open-first]
                              (disk) fork; the parent exits at once, as a daemon's does; the
                              child lists the sessions before its first open() (unless
                              open-first), then goes on as reopen-checked does
counted-on-cue STORE KEY N [thread]
                              N increments, each after a line on stdin ("ready" first,
                              "changed <count>" before each save, then as counted); before
                              each, the lock of another key is taken and released, as any
                              update of another user would (it notices a new lock file);
                              each in a thread of its own with "thread", else in the main one
try-lock STORE ENTRY          print "busy" if the lock of ENTRY is held elsewhere, else "free"
webhook STORE FILE N          an unthreaded bot, isolate(bot, storage=STORE), handles N
                              messages of user 42 given to process_new_updates one by one,
                              as a webhook worker would; each adds one to the number in FILE
                              (read, wait, write: no lock of its own) and to the user's
                              session["updates"]; prints "ready" and starts on a line on stdin
counted STORE KEY N [HOLD]    N increments, each holding the session HOLD seconds and
                              printing "<count>" once saved ("failed <error>" for one that
                              raised); for tests that count saves
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from tgsession import DiskStorage, SessionError, SessionLockLost, with_session

# A fresh process that prints the count stored under session KEY of the disk store DIRECTORY.
READ_COUNT = (
    "import json, sys; from tgsession import DiskStorage; "
    "data = DiskStorage(sys.argv[1]).read('session:' + sys.argv[2]); "
    "print(json.loads(data)['count'] if data else 0)"
)


def checked_increments(counter: Any, directory: str, key: str, times: int) -> None:
    """Apply ``times`` increments; after each, print it and what a fresh process reads."""
    for _ in range(times):
        with counter.open(key) as session:
            session["count"] += 1
            count = session["count"]
        seen = subprocess.run(
            [sys.executable, "-c", READ_COUNT, directory, key],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(count, seen, flush=True)


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
    elif command == "reopen-checked":
        directory, connected = spec["disk"], threading.Event()

        def keep_a_connection() -> None:
            counter.storage.read("session:" + key)  # this thread's own SQLite connection
            connected.set()
            threading.Event().wait()  # lives on, and so does its connection

        threading.Thread(target=keep_a_connection, daemon=True).start()
        connected.wait()
        counter.storage.close()  # type: ignore[attr-defined]
        reopened = with_session(
            initial=lambda: {"count": 0},
            storage=DiskStorage(directory),
            get_session_key=lambda update: update,
        )
        checked_increments(reopened, directory, key, int(sys.argv[4]))
    elif command == "fork-checked":
        with counter.open(key) as session:  # the parent has used the store
            pass
        if os.fork():
            os._exit(0)
        if sys.argv[5:] != ["open-first"]:
            list(counter.items())  # the child's first use of the store: a listing
        checked_increments(counter, spec["disk"], key, int(sys.argv[4]))
    elif command == "counted-on-cue":

        def update() -> None:
            with counter.storage.lock("session:another user"):
                pass
            try:
                with counter.open(key) as session:
                    session["count"] += 1
                    print("changed", session["count"], flush=True)
            except SessionError as error:
                print("failed", error, flush=True)
                return
            print(session["count"], flush=True)

        print("ready", flush=True)
        for _ in range(int(sys.argv[4])):
            sys.stdin.readline()
            if sys.argv[5:] == ["thread"]:  # as telebot runs handlers: in a worker thread
                worker = threading.Thread(target=update)
                worker.start()
                worker.join()
            else:
                update()
    elif command == "try-lock":
        try:
            with DiskStorage(spec["disk"], lock_timeout=0.2).lock(key):
                print("free", flush=True)
        except SessionError:
            print("busy", flush=True)
    elif command == "webhook":
        import telebot

        from tgsession import isolate

        bot = telebot.TeleBot("123:TEST", threaded=False)
        isolate(bot, storage=counter.storage)
        seen = with_session(storage=counter.storage)

        @bot.message_handler(func=lambda message: True)
        def handle(message: Any) -> None:
            with open(key) as file:  # work outside any session: only isolate's lock guards it
                value = int(file.read() or -1000)
            time.sleep(0.002)
            with open(key, "w") as file:
                file.write(str(value + 1))
            session = seen.current()  # opened inside the isolated update: no deadlock
            session["updates"] = session.get("updates", 0) + 1

        print("ready", flush=True)
        sys.stdin.readline()
        for update_id in range(int(sys.argv[4])):
            message = {
                "message_id": update_id,
                "date": 1,
                "chat": {"id": 42, "type": "private"},
                "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
                "text": "hi",
            }
            update = telebot.types.Update.de_json({"update_id": update_id, "message": message})
            bot.process_new_updates([update])
    elif command == "counted":
        hold = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        for _ in range(int(sys.argv[4])):
            try:
                with counter.open(key) as session:
                    session["count"] += 1
                    count = session["count"]
                    time.sleep(hold)
            except SessionError as error:
                print("failed", error, flush=True)
                continue
            print(count, flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()

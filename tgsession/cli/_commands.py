"""The subcommands of ``tgsession``: each takes the parsed arguments and returns an exit code.

Output that is the command's result goes to stdout; errors, which name the session and what
to do, go to stderr; progress is drawn on stderr only when it is a terminal.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from ..errors import SessionDecodeError, SessionError
from ..manager import SessionManager
from ..migrations import VERSION_KEY
from ..states import StateStorage
from ..storage.base import ExportableStorage, StoredEntry
from . import _dump
from ._edit import edit_session
from ._output import open_export
from ._progress import Progress
from ._stores import CommandError, load_manager, require_store
from ._text import described, indented_json, say, shown


class Failures:
    """Per-session failures of a command that goes on past them: each is reported at once,
    and the command exits 1 at the end."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        say(message)

    def on_entry(self, key: str, error: SessionError) -> None:
        """For ``entries(on_error=...)``: a stored entry that is not session bytes."""
        self(f"skipped {key!r}: {error}")

    @property
    def code(self) -> int:
        return 1 if self.count else 0


def _prefixes(kinds: list[str]) -> list[str]:
    """The key prefixes of ``kinds`` (every key if none)."""
    return [f"{kind}:" for kind in kinds] or [""]


def _entries(
    storage: ExportableStorage, kinds: list[str], failures: Failures
) -> Iterator[StoredEntry]:
    for prefix in _prefixes(kinds):
        yield from storage.entries(prefix, on_error=failures.on_entry)


def _when(expires: float | None) -> str:
    if expires is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))


# -- looking ---------------------------------------------------------------------------------


def ls(storage: ExportableStorage, args: Any) -> int:
    """List stored sessions (of the given kinds), one key per line; -l adds size and expiry."""
    failures = Failures()
    if args.long:
        listing: Iterator[str] = (
            f"{shown(entry.key)}\t{len(entry.data)}\t{_when(entry.expires)}"
            for entry in _entries(storage, args.kinds, failures)
        )
    else:
        listing = (shown(key) for prefix in _prefixes(args.kinds) for key in storage.keys(prefix))
    for printed, line in enumerate(listing):
        if args.limit is not None and printed >= args.limit:
            break
        print(line)
    return failures.code


def show(storage: ExportableStorage, args: Any) -> int:
    """Print one session as indented JSON (or its stored bytes, with --raw)."""
    data = storage.read(args.entry)
    if data is None:
        raise CommandError(f"no session {args.entry!r} in this store (see: tgsession ls)")
    if args.raw:
        if sys.stdout is None:
            raise CommandError("standard output is closed: nothing to show the session on")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    text = indented_json(data)
    if text is None:
        raise CommandError(
            f"session {args.entry!r} is not JSON that can be shown (another codec wrote it, "
            "or it is nested too deeply): use show --raw"
        )
    print(text)
    return 0


def stats(storage: ExportableStorage, args: Any) -> int:
    """Sessions, bytes and expiring sessions per kind, and the largest sessions."""
    failures = Failures()
    kinds: dict[str, list[int]] = {}  # kind: [sessions, bytes, expiring]
    largest: list[tuple[int, str]] = []  # a heap of the top sizes
    progress = Progress("read")
    for entry in _entries(storage, args.kinds, failures):
        figures = kinds.setdefault(entry.key.partition(":")[0], [0, 0, 0])
        size = len(entry.data)
        figures[0] += 1
        figures[1] += size
        figures[2] += entry.expires is not None
        if len(largest) < args.top:
            heapq.heappush(largest, (size, entry.key))
        elif largest and size > largest[0][0]:
            heapq.heapreplace(largest, (size, entry.key))
        progress.step()
    progress.done()
    top = sorted(largest, reverse=True)
    if args.json:
        report = {
            "kinds": {
                kind: {"sessions": n, "bytes": size, "expiring": expiring}
                for kind, (n, size, expiring) in sorted(kinds.items())
            },
            "largest": [{"key": key, "bytes": size} for size, key in top],
        }
        print(json.dumps(report, indent=2))
        return failures.code
    rows = [(shown(kind), figures) for kind, figures in sorted(kinds.items())]
    rows.append(("total", [sum(figures[i] for figures in kinds.values()) for i in range(3)]))
    width = max(len("kind"), *(len(kind) for kind, _ in rows))
    print(f"{'kind':<{width}}  {'sessions':>12}  {'bytes':>14}  {'expiring':>12}")
    for kind, (n, size, expiring) in rows:
        print(f"{kind:<{width}}  {n:>12,}  {size:>14,}  {expiring:>12,}")
    if top:
        print(f"\nlargest {len(top)}:")
        for size, key in top:
            print(f"  {size:>12,}  {shown(key)}")
    return failures.code


# -- changing --------------------------------------------------------------------------------


def rm(storage: ExportableStorage, args: Any) -> int:
    """Delete sessions, each under its lock; a missing one is an error unless -f."""
    failures = Failures()
    for entry in args.entries:
        try:
            with storage.lock(entry):
                if storage.read(entry) is None:
                    if not args.force:
                        failures(f"cannot remove {entry!r}: no such session")
                    continue
                storage.delete(entry)
        except SessionDecodeError:  # not session bytes: remove it all the same
            with storage.lock(entry):
                storage.delete(entry)
        except SessionError as error:
            failures(f"{entry!r} was not removed: {described(error)}")
    return failures.code


def edit(storage: ExportableStorage, args: Any) -> int:
    """Edit one session in $VISUAL or $EDITOR, under its lock."""
    manager = load_manager(args.manager) if args.manager else None
    return edit_session(storage, args.entry, manager)


def purge(storage: ExportableStorage, args: Any) -> int:
    """Remove expired sessions that are still stored."""
    remove = getattr(storage, "purge", None)
    if remove is None:
        print("Redis removes expired sessions by itself: nothing to purge")
        return 0
    count = remove()
    print(f"purged {count:,} expired session{'s' * (count != 1)}")
    return 0


# -- moving ----------------------------------------------------------------------------------


def export(storage: ExportableStorage, args: Any) -> int:
    """Write every session (of the given kinds) as JSON Lines, streaming."""
    failures = Failures()
    progress = Progress("exported")
    output_path = "-" if args.output is None else args.output
    with open_export(output_path, getattr(storage, "directory", None)) as output:
        for entry in _entries(storage, args.kinds, failures):
            output.write(_dump.encode(entry.key, entry.data, entry.expires))
            progress.step()
        output.flush()
    progress.done()
    return failures.code


def import_(storage: ExportableStorage, args: Any) -> int:
    """Store the sessions of an export, each under its lock; existing ones are kept unless
    --overwrite."""
    failures = Failures()
    progress = Progress("checked" if args.dry_run else "imported")
    imported = kept = expired = 0
    source: IO[bytes]
    source = sys.stdin.buffer if args.input in (None, "-") else open(args.input, "rb")  # noqa: SIM115
    try:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                key, data, expires = _dump.decode(line)
            except _dump.BadLine as error:
                failures(f"line {number}: {error}; it is skipped")
                continue
            ttl = None if expires is None else expires - time.time()
            if ttl is not None and ttl <= 0:
                expired += 1
                continue
            try:
                with storage.lock(key):
                    if not args.overwrite and _stored(storage, key):
                        kept += 1
                        continue
                    if not args.dry_run:
                        storage.write(key, data, ttl=ttl)
                imported += 1
            except SessionError as error:
                failures(f"line {number}: session {key!r} was not imported: {described(error)}")
            finally:
                progress.step()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    progress.done()
    verb = "would import" if args.dry_run else "imported"
    report = f"{verb} {imported:,} session{'s' * (imported != 1)}"
    if kept:
        report += f"; kept {kept:,} already stored (--overwrite replaces them)"
    if expired:
        report += f"; skipped {expired:,} expired"
    print(report)
    return failures.code


def _manager_store(manager: SessionManager[Any], args: Any) -> ExportableStorage:
    """The manager's own store, which must exist already, with --lock-timeout."""
    own = getattr(manager, "_storage", None)
    if own is None:  # the default store: a wrong directory must not make an empty one
        require_store(os.environ.get("TGSESSION_DIR", ".tgsession"))
    storage = manager.storage
    if not isinstance(storage, ExportableStorage):
        raise CommandError(
            f"{args.manager} keeps its sessions in {storage!r}, which the command cannot list"
        )
    if args.lock_timeout is not None and hasattr(storage, "lock_timeout"):
        storage.lock_timeout = args.lock_timeout  # this process's object: the bot's is its own
    return storage


def _stored(storage: ExportableStorage, key: str) -> bool:
    """Whether something is stored under ``key``, session bytes or not."""
    try:
        return storage.read(key) is not None
    except SessionDecodeError:  # another program's entry: there is one all the same
        return True


def migrate(storage: ExportableStorage | None, args: Any) -> int:
    """Bring every stored session of a manager up to its current version, each under its
    lock, ahead of a deploy."""
    manager = load_manager(args.manager)
    if storage is None:
        storage = _manager_store(manager, args)
    current = manager.migrations.version
    failures = Failures()
    progress = Progress("checked")
    moved: dict[int, int] = {}
    up_to_date = 0
    for key in storage.keys(f"{manager.key}:"):
        progress.step()
        try:
            version = _migrate(storage, manager, key, current, args.dry_run)
        except (SessionError, ValueError, TypeError) as error:
            failures(f"session {key!r} was not migrated: {described(error)}")
            continue
        if version == current:
            up_to_date += 1
        elif version is not None:
            moved[version] = moved.get(version, 0) + 1
    progress.done()
    verb = "would migrate" if args.dry_run else "migrated"
    total = sum(moved.values())
    parts = [f"{n:,} from version {version}" for version, n in sorted(moved.items())]
    print(
        f"{verb} {total:,} session{'s' * (total != 1)} to version {current}"
        + (f" ({', '.join(parts)})" if parts else "")
        + f"; {up_to_date:,} already at version {current}"
    )
    return failures.code


def _migrate(
    storage: ExportableStorage, manager: Any, key: str, current: int, dry_run: bool
) -> Any:
    """Migrate the session ``key`` under its lock (unless ``dry_run``); return the version it
    had, or None if it is gone."""
    with storage.lock(key):
        data = storage.read(key)
        if data is None:
            return None
        try:
            stored = manager.codec.decode(data)
        except RecursionError:  # too deep to look at: manager.decode() below says so
            stored = None
        version = stored.get(VERSION_KEY, 1) if isinstance(stored, dict) else None
        if version == current:
            return version
        session = manager.decode(key, data)  # runs the migrations, checks the type
        new = manager.check_loads_back(key, manager.encode(key, session), session)
        if not dry_run:
            expires = storage.expiry(key)  # a migration does not extend a session's life
            ttl = None if expires is None else max(expires - time.time(), 0.001)
            storage.write(key, new, ttl=ttl)
        return version


def import_states(storage: ExportableStorage, args: Any) -> int:
    """Copy telebot's own states (StateRedisStorage or StatePickleStorage) into the store;
    a state that cannot be copied is reported, and the others are."""
    failures = Failures()
    states = StateStorage(storage, key=args.key)

    def failed(name: str, error: Exception) -> None:
        failures(f"telebot's state {name!r} was not imported: {described(error)}")

    if args.from_pickle:
        copied = states.import_pickle(
            args.from_pickle,
            args.states_prefix,
            args.separator,
            overwrite=args.overwrite,
            on_error=failed,
        )
    else:
        import redis

        client = redis.Redis.from_url(args.from_redis)
        try:
            copied = states.import_redis(
                client,
                args.states_prefix,
                args.separator,
                overwrite=args.overwrite,
                on_error=failed,
            )
        finally:
            client.close()
    print(f"imported {copied:,} telebot state{'s' * (copied != 1)}")
    return failures.code

"""The ``tgsession`` command: look at, fix, move and migrate the sessions of a store.

    tgsession --store ./sessions ls -l
    tgsession --store redis://127.0.0.1:6379/0 --prefix mybot: export -o sessions.jsonl

The store is a DiskStorage directory or a ``redis://`` URL (``--store``, else
``$TGSESSION_STORE``, else the bot's default: ``$TGSESSION_DIR`` or ``.tgsession``). Exit
codes: 0 done, 1 failed (for some sessions, named on stderr), 2 wrong usage, 130 interrupted.
It needs nothing beyond tgsession's own dependencies (and redis-py for a Redis store).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from typing import Any, Callable

from ..errors import SessionError
from . import _commands
from ._stores import CommandError, UsageError, open_store
from ._text import Formatter, described, say

Command = Callable[[Any, argparse.Namespace], int]
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds to wait for a session that a handler holds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgsession",
        description="Look at, fix, move and migrate the sessions of a tgsession store.",
        epilog="Run 'tgsession COMMAND --help' for a command's options.",
    )
    # Accepted before or after the command: each subparser has them too, with SUPPRESS as
    # default, so that one given before the command is not reset by the subparser.
    common = argparse.ArgumentParser(add_help=False)
    _store_options(parser, {"store": None, "prefix": None, "lock_timeout": None})
    _store_options(common, dict.fromkeys(("store", "prefix", "lock_timeout"), argparse.SUPPRESS))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    sub = command("ls", _commands.ls, "list stored sessions, one key per line")
    sub.add_argument("kinds", nargs="*", metavar="KIND", help="only these kinds (session...)")
    sub.add_argument("-l", "--long", action="store_true", help="with bytes and expiry (UTC)")
    sub.add_argument("-n", "--limit", type=_count, metavar="N", help="at most N sessions")

    sub = command("show", _commands.show, "print a session as indented JSON")
    sub.add_argument("entry", metavar="ENTRY", help="its key, as ls prints it (session:42)")
    sub.add_argument("--raw", action="store_true", help="the stored bytes as they are")

    sub = command("rm", _commands.rm, "delete sessions, each under its lock")
    sub.add_argument("entries", nargs="+", metavar="ENTRY")
    sub.add_argument("-f", "--force", action="store_true", help="ignore missing sessions")

    sub = command("edit", _commands.edit, "edit a session in $EDITOR, under its lock")
    sub.add_argument("entry", metavar="ENTRY")
    sub.add_argument(
        "--manager", metavar="MODULE:ATTR", help="check that it loads as this manager's type"
    )

    sub = command("export", _commands.export, "write sessions as JSON Lines")
    sub.add_argument("kinds", nargs="*", metavar="KIND", help="only these kinds")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")

    sub = command("import", _commands.import_, "store the sessions of an export")
    sub.add_argument("input", nargs="?", metavar="FILE", help="an export (default: stdin)")
    sub.add_argument("--overwrite", action="store_true", help="replace stored sessions")
    sub.add_argument("--dry-run", action="store_true", help="check and count, store nothing")

    sub = command("stats", _commands.stats, "sessions and bytes per kind, largest sessions")
    sub.add_argument("kinds", nargs="*", metavar="KIND", help="only these kinds")
    sub.add_argument("--top", type=_count, default=5, metavar="N", help="largest N (default 5)")
    sub.add_argument("--json", action="store_true", help="as JSON")

    command("purge", _commands.purge, "remove expired sessions still on disk")

    sub = command("migrate", _commands.migrate, "migrate stored sessions to the current version")
    sub.add_argument(
        "--manager", metavar="MODULE:ATTR", required=True, help="the bot's manager (bot:sessions)"
    )
    sub.add_argument("--dry-run", action="store_true", help="migrate and check, store nothing")

    sub = command("import-states", _commands.import_states, "copy telebot's own states")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-redis", metavar="URL", help="a StateRedisStorage's Redis")
    source.add_argument("--from-pickle", metavar="FILE", help="a StatePickleStorage file")
    sub.add_argument("--states-prefix", default="telebot", help="telebot's prefix")
    sub.add_argument("--separator", default=":", help="telebot's separator")
    sub.add_argument("--key", default="state", help="the StateStorage key (default: state)")
    sub.add_argument("--overwrite", action="store_true", help="replace states already here")
    return parser


def _store_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    store = parser.add_argument_group("store")
    store.add_argument(
        "-s",
        "--store",
        metavar="DIR|URL",
        default=defaults["store"],
        help="a DiskStorage directory or a redis:// URL (default: $TGSESSION_STORE, else "
        "$TGSESSION_DIR, else .tgsession)",
    )
    store.add_argument(
        "--prefix", default=defaults["prefix"], help="the RedisStorage prefix (default: tgsession:)"
    )
    store.add_argument(
        "--lock-timeout",
        type=_seconds,
        metavar="SECONDS",
        default=defaults["lock_timeout"],
        help="how long to wait for a session that a handler holds (default: 10)",
    )


def _seconds(text: str) -> float:
    """A number of seconds, for argparse: finite and not negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (a number from 0 up), got {text!r}")
    return value


def _count(text: str) -> int:
    """A count, for argparse: a whole number from 0 up."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 up, got {text!r}")
    return value


def _failures() -> tuple[type[BaseException], ...]:
    """The errors reported in one line: tgsession's, the system's, and Redis's (redis-py is
    loaded only for a Redis store)."""
    expected: tuple[type[BaseException], ...] = (
        CommandError,
        SessionError,
        OSError,
        ValueError,
        sqlite3.Error,  # a store's database damaged by another program, say
    )
    redis = sys.modules.get("redis")
    return expected if redis is None else (*expected, redis.RedisError)


def _store_spec(args: argparse.Namespace) -> str:
    return (
        args.store
        or os.environ.get("TGSESSION_STORE")
        or os.environ.get("TGSESSION_DIR")
        or ".tgsession"
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); return its exit code."""
    args = _parser().parse_args(argv)
    # Killed politely (a service stopped, a terminal closed), it unwinds as for Ctrl-C: a held
    # session is released, a half-written export removed. A signal the caller ignores (nohup)
    # or handles stays so, and the caller's handlers are put back on return.
    replaced: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(number) == signal.SIG_DFL:
                replaced[number] = signal.signal(number, _exit_on_signal)
    try:
        return _run(args)
    finally:
        for replaced_number, handler in replaced.items():
            signal.signal(replaced_number, handler)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command in its store; its exit code."""
    handler = logging.StreamHandler()
    handler.setFormatter(Formatter("tgsession: %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
    storage = None
    try:
        # migrate uses the manager's own store unless one is named
        if args.command != "migrate" or args.store or "TGSESSION_STORE" in os.environ:
            # import may begin a store (a dry run stores nothing, so it needs one already)
            create = args.command == "import-states" or (
                args.command == "import" and not args.dry_run
            )
            timeout = DEFAULT_LOCK_TIMEOUT if args.lock_timeout is None else args.lock_timeout
            storage = open_store(_store_spec(args), args.prefix, timeout, create=create)
        code = int(args.run(storage, args))
        if sys.stdout is not None:  # None: closed by the shell (>&-)
            sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return code
    except KeyboardInterrupt:
        print("tgsession: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tgsession ls | head`: the reader has what it wanted
        # Python would flush stdout again at exit, and fail again: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as error:
        say(f"error: {error}")
        return 2
    except _failures() as error:
        say(described(error))
        return 1
    finally:
        close = getattr(storage, "close", None)
        if close is not None:
            close()

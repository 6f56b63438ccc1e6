"""``tgsession edit``: one session in the user's editor, held under its lock meanwhile.

The bot waits for that session (and only that one) while the editor is open. What comes back
is checked (a JSON object; with a manager, a session that loads as its type) and saved, or
the editor opens again with the error on top, as ``kubectl edit`` does. Leaving the text as
it was saves nothing; emptying it, quitting the editor with an error, or making the same
mistake twice aborts, leaving the session untouched.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgspec

from ..codec import JSONCodec
from ..errors import SessionError
from ..manager import SessionManager
from ..storage.base import ExportableStorage
from ._stores import CommandError
from ._text import described, indented_json, say

# Lines the editor shows above the session: never JSON (a JSON text has no line starting with
# "//"), so they are dropped from what comes back.
_COMMENT = "//"


def editor_command() -> list[str]:
    """The editor to run: $VISUAL, else $EDITOR, else vi on a terminal (as git and crontab
    choose)."""
    chosen = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not chosen:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            # vi without a terminal would wait forever, holding the session's lock
            raise CommandError("set $EDITOR to edit a session without a terminal")
        chosen = "vi"
    try:
        command = shlex.split(chosen)
    except ValueError as error:
        raise CommandError(f"cannot read the editor command {chosen!r}: {error}") from None
    if not command:
        raise CommandError("$EDITOR is blank: set it to an editor")
    return command


def edit_session(
    storage: ExportableStorage, entry: str, manager: SessionManager[Any] | None
) -> int:
    """Edit ``entry`` of ``storage`` under its lock; return the exit code."""
    if manager is not None and not entry.startswith(f"{manager.key}:"):
        raise CommandError(
            f"{entry!r} is not a session of the given manager, whose keys start with "
            f"{manager.key + ':'!r}"
        )
    command = editor_command()  # before the lock: a wrong $EDITOR holds up nobody
    with storage.lock(entry):
        saved = _edit_locked(storage, entry, manager, command)
    # Printed once the lock is released: a storage that writes then (RedisStorage) may still
    # have refused the save, with an error instead.
    if saved:
        print(f"saved session {entry!r}")
    return 0 if saved is not None else 1


def _edit_locked(
    storage: ExportableStorage,
    entry: str,
    manager: SessionManager[Any] | None,
    command: list[str],
) -> bool | None:
    """Edit ``entry``, whose lock is held; True if saved, False if unchanged, None if aborted
    (said on stderr)."""
    data = storage.read(entry)
    if data is None:
        raise CommandError(f"no session {entry!r} in this store (see: tgsession ls)")
    original = indented_json(data)
    if original is None:
        raise CommandError(
            f"session {entry!r} is not JSON that can be edited as text (another codec wrote "
            "it, or it is nested too deeply)"
        )
    text, problem, refused = original, "", None
    while True:
        returned = _run_editor(command, entry, text, problem)
        if returned is None:
            return None
        if returned == refused:
            _aborted(f"the same error again; session {entry!r} is unchanged")
            return None
        edited = returned.decode("utf-8", "replace")
        if not edited.strip():
            _aborted(f"the text was emptied; session {entry!r} is unchanged")
            return None
        if edited.strip() == original.strip():
            print(f"session {entry!r} is unchanged")
            return False
        try:
            if edited.encode() != returned:
                raise ValueError("the text is not UTF-8")
            new = _checked(entry, edited, manager)
        except ValueError as error:
            text, problem, refused = edited, str(error), returned
            continue
        storage.write(entry, new, ttl=_ttl(storage, entry, manager))
        return True


def _ttl(storage: ExportableStorage, entry: str, manager: SessionManager[Any] | None) -> Any:
    """The time to live of the edited session: the manager's ttl, as a handler's save would
    give it, else what it had left."""
    if manager is not None and manager.ttl is not None:
        return manager.ttl
    expires = storage.expiry(entry)
    if expires is None:
        return None
    left = expires - time.time()
    if left <= 0:
        raise CommandError(
            f"session {entry!r} expired while it was being edited: nothing was saved"
        )
    return left


def _aborted(why: str) -> None:
    say(f"aborted: {why}")


def _checked(entry: str, text: str, manager: SessionManager[Any] | None) -> bytes:
    """The bytes to store for the edited ``text``; ValueError says what is wrong with it."""
    try:
        value = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    except RecursionError:
        raise ValueError("nested too deeply for a session") from None
    if not isinstance(value, dict):
        raise ValueError(f"a session is a JSON object ({{...}}), not a {type(value).__name__}")
    data = JSONCodec().encode(value)
    if manager is None:
        return data
    try:
        session = manager.decode(entry, data)
        return manager.check_loads_back(entry, manager.encode(entry, session), session)
    except SessionError as error:
        raise ValueError(described(error)) from None


def _run_editor(command: list[str], entry: str, text: str, problem: str) -> bytes | None:
    """Let the user edit ``text`` (with ``problem`` shown above it); return what they saved
    without the comment lines, or None if the editor failed."""
    header = [
        f"{_COMMENT} Session {entry!r}, locked while this editor is open: the bot waits for it.",
        f"{_COMMENT} Save and quit to store it; empty the text to abort. Lines starting with",
        f"{_COMMENT} {_COMMENT} are left out.",
    ]
    if problem:
        header.append(f"{_COMMENT}")
        header += [f"{_COMMENT} ERROR: {line}" for line in problem.splitlines()]
    descriptor, path = tempfile.mkstemp(prefix="tgsession-", suffix=".json")  # owner-only
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(header) + "\n" + text.rstrip("\n") + "\n")
        try:
            status = _call_ignoring_interrupts([*command, path])
        except OSError as error:
            raise CommandError(
                f"cannot run the editor {command[0]!r} ({error.strerror}): set $EDITOR; "
                f"session {entry!r} is unchanged"
            ) from None
        if status != 0:
            _aborted(f"the editor exited with status {status}; session {entry!r} is unchanged")
            return None
        with open(path, "rb") as file:
            lines = file.read().splitlines(keepends=True)
    finally:
        os.unlink(path)
    return b"".join(line for line in lines if not line.startswith(_COMMENT.encode()))


def _call_ignoring_interrupts(command: list[str]) -> int:
    """Run the editor and wait for it. A Ctrl-C meanwhile reaches the editor too, and is the
    editor's to handle (as with git): the command goes on waiting, the session still locked.
    Told to stop (SIGTERM, SIGHUP: SystemExit), the command stops the editor first, so that
    no editor goes on writing the session's file after it is removed."""
    editor = subprocess.Popen(command)
    while True:
        try:
            return editor.wait()
        except KeyboardInterrupt:
            continue
        except SystemExit:
            try:
                editor.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    editor.wait(5)
            finally:  # even if another signal comes meanwhile
                if editor.poll() is None:
                    editor.kill()
                    editor.wait()
            raise

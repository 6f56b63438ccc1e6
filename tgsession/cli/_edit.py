"""``tgsession edit``: one session in the user's editor, held under its lock meanwhile.

The bot waits for that session (and only that one) while the editor is open. What comes back
is checked (a JSON object; with a manager, a session that loads as its type) and saved, or
the editor opens again with the error on top, as ``kubectl edit`` does. Leaving the text as
it was saves nothing; emptying it, quitting the editor with an error, or making the same
mistake twice aborts, leaving the session untouched.
"""

from __future__ import annotations

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

# Lines the editor shows above the session: never JSON (a JSON text has no line starting with
# "//"), so they are dropped from what comes back.
_COMMENT = "//"


def editor_command() -> list[str]:
    """The editor to run: $VISUAL, else $EDITOR, else vi (as git and crontab choose)."""
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


def edit_session(
    storage: ExportableStorage, entry: str, manager: SessionManager[Any] | None
) -> int:
    """Edit ``entry`` of ``storage`` under its lock; return the exit code."""
    if manager is not None and not entry.startswith(f"{manager.key}:"):
        raise CommandError(
            f"{entry!r} is not a session of the given manager, whose keys start with "
            f"{manager.key + ':'!r}"
        )
    with storage.lock(entry):
        data = storage.read(entry)
        if data is None:
            raise CommandError(f"no session {entry!r} in this store (see: tgsession ls)")
        try:
            original = msgspec.json.format(data, indent=2).decode()
            msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise CommandError(
                f"session {entry!r} is not JSON (another codec wrote it): it cannot be edited "
                "as text"
            ) from None
        text, problem, refused = original, "", None
        while True:
            returned = _run_editor(entry, text, problem)
            if returned is None:
                return 1
            if returned == refused:
                print(
                    f"aborted: the same error again; session {entry!r} is unchanged",
                    file=sys.stderr,
                )
                return 1
            edited = returned.decode("utf-8", "replace")
            if not edited.strip():
                print(f"aborted: the text was emptied; session {entry!r} is unchanged")
                return 1
            if edited.strip() == original.strip():
                print(f"session {entry!r} is unchanged")
                return 0
            try:
                if "\ufffd" in edited and edited.encode() != returned:
                    raise ValueError("the text is not UTF-8")
                new = _checked(entry, edited, manager)
            except ValueError as error:
                text, problem, refused = edited, str(error), returned
                continue
            expires = storage.expiry(entry)
            if manager is not None and manager.ttl is not None:
                ttl: float | None = manager.ttl  # saved as a handler would save it
            elif expires is not None:
                ttl = expires - time.time()  # keep the expiry it had
                if ttl <= 0:
                    raise CommandError(
                        f"session {entry!r} expired while it was being edited: nothing was saved"
                    )
            else:
                ttl = None
            storage.write(entry, new, ttl=ttl)
            print(f"saved session {entry!r}")
            return 0


def _checked(entry: str, text: str, manager: SessionManager[Any] | None) -> bytes:
    """The bytes to store for the edited ``text``; ValueError says what is wrong with it."""
    try:
        value = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"a session is a JSON object ({{...}}), not a {type(value).__name__}")
    data = JSONCodec().encode(value)
    if manager is None:
        return data
    try:
        session = manager.decode(entry, data)
        return manager.check_loads_back(entry, manager.encode(entry, session), session)
    except SessionError as error:
        raise ValueError(str(error)) from None


def _run_editor(entry: str, text: str, problem: str) -> bytes | None:
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
        command = editor_command()
        try:
            status = subprocess.call([*command, path])
        except OSError as error:
            raise CommandError(
                f"cannot run the editor {command[0]!r} ({error.strerror}): set $EDITOR; "
                f"session {entry!r} is unchanged"
            ) from None
        if status != 0:
            print(
                f"tgsession: the editor exited with status {status}; session {entry!r} is "
                "unchanged",
                file=sys.stderr,
            )
            return None
        with open(path, "rb") as file:
            lines = file.read().splitlines(keepends=True)
    finally:
        os.unlink(path)
    return b"".join(line for line in lines if not line.startswith(_COMMENT.encode()))

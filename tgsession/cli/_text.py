"""What the command prints: keys and JSON that cannot drive a terminal, and errors that
quote no session values.

A store shared with other programs, or keys made from what users send, may hold characters
that a terminal acts on (an escape sequence that retitles it or rewrites the screen) or that
reorder or break what it shows. Printed keys and JSON never carry them raw.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback

import msgspec

from ..errors import SessionLockTimeout, SessionMigrationError

# What JSON leaves unescaped and a terminal may act on, as UTF-8: DEL, the C1 controls
# (U+0080-U+009F: U+009B starts an escape sequence where 8-bit controls are taken), the
# Arabic letter mark, the left-to-right and right-to-left marks, the line and paragraph
# separators, and the bidirectional embeddings, overrides and isolates.
_ACTIVE = re.compile(
    rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
)


def has_active(data: bytes) -> bool:
    """Whether UTF-8 ``data`` holds a character that JSON leaves raw and a terminal may act on."""
    return _ACTIVE.search(data) is not None


def escaped_json(data: bytes) -> bytes:
    """UTF-8 JSON ``data`` with those characters written as ``\\u`` escapes: the same JSON."""
    return _ACTIVE.sub(lambda found: b"\\u%04x" % ord(found.group().decode()), data)


def indented_json(data: bytes) -> str | None:
    """Stored JSON ``data``, indented for reading, with what a terminal acts on escaped; None
    for bytes that a JSON parser does not take (another codec's, or nested too deeply)."""
    try:
        msgspec.json.decode(data)
        return escaped_json(msgspec.json.format(data, indent=2)).decode()
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def shown(key: str) -> str:
    """``key`` as a line of output: as it is, or as a Python string literal ('a\\nb') if it
    holds a character that is not printable (a control character, say), is empty, begins or
    ends with a space, or begins with a quote, so that no key drives the terminal or reads
    as another."""
    if key.isprintable() and key and key == key.strip() and not key.startswith(("'", '"')):
        return key
    return repr(key)


def described(error: BaseException) -> str:
    """The message of ``error``, with what to do about a busy session, and for a migration
    that raised, where it did."""
    if isinstance(error, SessionLockTimeout):
        return f"{error} (wait longer with --lock-timeout SECONDS)"
    if isinstance(error, SessionMigrationError) and error.__cause__ is not None:
        return f"{error}; {_raised_where(error.__cause__)}"
    return str(error)


def _raised_where(cause: BaseException) -> str:
    """Where a migration's exception was raised: the place only, since its message may
    quote the session's values."""
    # The first frame is the migration runner's, which caught it; the next, the step's.
    frames = traceback.extract_tb(cause.__traceback__)[1:]
    kind = type(cause).__name__
    hidden = "its message is not shown, as it may quote the session's values"
    if not frames:
        return f"the {kind} came from the migration itself, which is not Python code ({hidden})"
    step, raised = frames[0], frames[-1]
    where = f"in {raised.name}(), {raised.filename}:{raised.lineno}"
    if raised is not step:
        where += f", called from the migration {step.name}(), {step.filename}:{step.lineno}"
    return f"the {kind} was raised {where} ({hidden})"


def printable(text: str) -> str:
    """``text`` with each character that is not printable (a control character, a
    bidirectional override) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def say(message: str) -> None:
    """Print ``message`` on stderr as the command's own, with nothing a terminal acts on:
    an error may quote a key, a file name or a parser's view of a line it was given."""
    print(f"tgsession: {printable(message)}", file=sys.stderr)


class Formatter(logging.Formatter):
    """The command's log lines, like its messages (see `say`)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))

"""The export format: JSON Lines, one stored session per line, its bytes kept exactly.

    {"key":"session:42","value":{"count":3}}
    {"key":"session:43","expires":"2026-12-01T10:00:00.5Z","value":{"count":1}}
    {"key":"chat:-100","base64":"gqVjb3VudAM="}

``value`` is the stored JSON itself, written and read back byte for byte (msgspec.Raw), so an
export imported into an empty store stores the same bytes. Bytes that are not one line of
JSON (another codec's, say), or that hold characters a terminal acts on (see _text), are kept
as ``base64``. ``expires`` is when the session expires,
in UTC; a session without it never does.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from datetime import datetime, timezone
from typing import Optional

import msgspec

from ._text import escaped_json, has_active


class Line(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """One exported session."""

    # Optional, not X | None: msgspec evaluates these annotations, on Python 3.9 too.
    key: str
    expires: Optional[datetime] = None  # noqa: UP045
    value: msgspec.Raw = msgspec.Raw()  # empty: not given (msgspec takes no Optional[Raw])
    base64: Optional[str] = None  # noqa: UP045


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Line)
_JSON = msgspec.json.Decoder()


class BadLine(ValueError):
    """A line of an export that cannot be imported; the message says why."""


def encode(key: str, data: bytes, expires: float | None) -> bytes:
    """The export line (with its newline) of the session ``key`` stored as ``data``."""
    when = None if expires is None else datetime.fromtimestamp(expires, timezone.utc)
    if _is_json_line(data):
        line = Line(key, when, value=msgspec.Raw(data))
    else:
        line = Line(key, when, base64=b64encode(data).decode("ascii"))
    return escaped_json(_ENCODER.encode(line)) + b"\n"  # the key's characters, if any


def _is_json_line(data: bytes) -> bool:
    if b"\n" in data or b"\r" in data:  # legal JSON whitespace, but it would split the line
        return False
    if data != data.strip(b" \t"):  # msgspec.Raw keeps no whitespace around a value
        return False
    if has_active(data):  # escaping them would change the bytes
        return False
    try:
        _JSON.decode(data)
    except (msgspec.DecodeError, RecursionError):  # nested too deeply to parse as a value
        return False
    return True


def decode(line: bytes) -> tuple[str, bytes, float | None]:
    """The key, the bytes and the expiry (a time.time() value, or None) of an export line."""
    try:
        parsed = _DECODER.decode(line)
    except msgspec.DecodeError as error:
        raise BadLine(f"not an export line ({error})") from None
    except RecursionError:
        raise BadLine(
            "its value is nested too deeply to import (an export has it as base64)"
        ) from None
    if (len(parsed.value) == 0) == (parsed.base64 is None):
        raise BadLine(f"session {parsed.key!r} needs exactly one of 'value' and 'base64'")
    if parsed.value:
        data = bytes(parsed.value)
    else:
        try:
            data = b64decode(parsed.base64 or "", validate=True)
        except binascii.Error:
            raise BadLine(f"session {parsed.key!r} has a 'base64' that is not base64") from None
    expires = parsed.expires
    if expires is not None and expires.tzinfo is None:
        raise BadLine(f"session {parsed.key!r} has an 'expires' without a time zone")
    return parsed.key, data, None if expires is None else expires.timestamp()

"""Codecs turn sessions into the bytes that storages keep, and back.

The default is JSON: readable with any tool, safe to load from a shared store (unlike pickle,
decoding it can never run code), and compact and deterministic, so that two equal sessions
always give equal bytes. Change detection relies on that last property.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import key_step


@runtime_checkable
class Codec(Protocol):
    """Anything with ``encode(value) -> bytes`` and ``decode(data) -> value`` is a codec.

    ``encode`` raises ``TypeError`` or ``ValueError`` for a value it cannot represent, and
    ``decode`` raises ``ValueError`` for bytes it cannot read; tgsession turns both into
    errors that name the session key.
    """

    def encode(self, value: Any) -> bytes:
        """Return the bytes that represent ``value``."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the value that ``data`` represents."""
        ...


# One encoder and decoder for the process: msgspec's, in C. Measured in benchmarks/ (the
# "codec" cases): a small session took 4.5 us to encode and 2.5 us to decode with the
# standard library's json, and 0.5 us and 0.9 us with msgspec.
ENCODER = msgspec.json.Encoder(order="sorted")
DECODER = msgspec.json.Decoder()


class JSONCodec:
    """Compact, deterministic UTF-8 JSON: sorted keys, no spaces.

    It writes what the standard library's ``json.dumps(value, ensure_ascii=False,
    sort_keys=True, separators=(",", ":"))`` writes, except for floats in exponent notation
    (``1e20``, not ``1e+20``), and reads everything that json wrote. Dict keys that are ints,
    floats, bools or None are written as json writes them (``"1"``, ``"true"``). Session
    managers check that each session they save loads back as it is, so a value that JSON cannot
    hold (a set, a datetime in a dict session, NaN) is refused there, naming where it is.
    """

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as compact, key-sorted UTF-8 JSON."""
        try:
            return ENCODER.encode(value)
        except TypeError:
            # msgspec sorts str keys only, and refuses subclasses of str, int and float
            # (numpy.float64 among them): write them as json does. Any other TypeError comes
            # back from the second try.
            return ENCODER.encode(json_values(value, "the value"))

    def decode(self, data: bytes) -> Any:
        """Return the value that the UTF-8 JSON ``data`` holds; refuse NaN and Infinity."""
        try:
            return DECODER.decode(data)
        except msgspec.DecodeError as error:  # a ValidationError too: a number out of range
            raise ValueError(f"{error}{_hint(data)}") from None


def _hint(data: bytes) -> str:
    # Python's json module writes NaN and Infinity when allowed to: say why they are refused.
    if re.search(rb"(?<![\w\"])(NaN|Infinity)(?![\w\"])", data):
        return "; NaN and Infinity are not JSON values"
    return ""


def json_values(value: Any, where: str) -> Any:
    """``value`` as `json` writes it: every dict key a string, and subclasses of str, int
    and float as those types; raise TypeError or ValueError, naming the path from ``where``,
    for a key json would refuse or two keys that would become one."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            text = json_key(key, where)
            if text in result:
                raise ValueError(
                    f"{where} has two keys that are both stored as the string {key_step(text)}"
                )
            result[text] = json_values(item, f"{where}{key_step(key)}")
        return result
    if isinstance(value, (list, tuple)):
        return [json_values(item, f"{where}[{i}]") for i, item in enumerate(value)]
    kind = type(value)
    if kind is bool or kind is str or kind is int or kind is float:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def json_key(key: Any, where: str = "the value") -> str:
    """The string that `json` writes for the dict key ``key``."""
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, bool) or key is None:
        return "null" if key is None else ("true" if key else "false")
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float) and math.isfinite(key):
        return float.__repr__(key)
    raise TypeError(
        f"{where} has a key that is a {type(key).__name__}; JSON object keys are strings, "
        "and ints, finite floats, bools and None are written as strings"
    )

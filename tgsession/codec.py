"""Codecs turn sessions into the bytes that storages keep, and back.

The default is JSON: readable with any tool, safe to load from a shared store (unlike pickle,
decoding it can never run code), and compact and deterministic, so that two equal sessions
always give equal bytes. Change detection relies on that last property.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol, runtime_checkable


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


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON; the encoder refuses them, so
    # accepting them here would load a session that can never be saved.
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    # For the same reason: json reads a number too large for a float, such as 1e999, as inf.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a float")
    return value


class JSONCodec:
    """Compact, deterministic UTF-8 JSON: sorted keys, no spaces, no NaN or Infinity.

    JSON has no sets, tuples or non-string keys: a set or a NaN is refused, while tuples come
    back as lists and integer dict keys come back as strings, exactly as :mod:`json` does.
    """

    # Built once: json.dumps and json.loads build a new coder on every call given options.
    _encoder = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
    )
    _decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as compact, key-sorted UTF-8 JSON."""
        return self._encoder.encode(value).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        """Return the value that the UTF-8 JSON ``data`` holds; refuse NaN and Infinity."""
        return self._decoder.decode(data.decode("utf-8"))

"""Schema versions of stored sessions, and the migrations that bring old ones up to date.

A session of a manager with ``version=N`` (N > 1) is stored with its version under the reserved
key ``"$v"``: ``{"$v": 2, "count": 3}``. A stored session without it is version 1, so sessions
saved before versioning was turned on load as version 1, and an unversioned manager (the
default, version 1) stores exactly what the handler left in the session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional

from .errors import SessionMigrationError, SessionVersionError

VERSION_KEY = "$v"

Migration = Callable[[dict[str, Any]], Optional[dict[str, Any]]]


class Migrations:
    """The current schema version of a kind of session, and the steps up to it."""

    def __init__(self, version: int, steps: Mapping[int, Migration] | None) -> None:
        """``steps[n]`` turns a version n-1 session into a version n one (see migrate)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be a whole number from 1 up, got {version!r}")
        steps = dict(steps or {})
        wrong = sorted(n for n in steps if not isinstance(n, int) or not 2 <= n <= version)
        if wrong:
            raise ValueError(
                f"migrations {wrong} are outside 2..{version}: migrations[n] turns a version "
                "n-1 session into version n, up to the current version"
            )
        uncallable = sorted(n for n, step in steps.items() if not callable(step))
        if uncallable:
            raise TypeError(
                f"migrations {uncallable} are not callable: each must be a function that "
                "takes the older session (a dict) and returns the newer one"
            )
        self.version = version
        self.steps = steps

    def migrate(self, entry: str, value: dict[str, Any]) -> dict[str, Any]:
        """Return the stored ``value`` brought up to the current version, without "$v".

        Each step gets the session as a dict and returns the new one, or changes the dict in
        place and returns None. Nothing is written here: a failure leaves the store as it was.
        """
        stored = value.pop(VERSION_KEY, 1)
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
            raise SessionVersionError(
                f"session {entry!r} has the version {stored!r} under {VERSION_KEY!r}; it is "
                "left untouched: fix or delete the entry"
            )
        if stored > self.version:
            raise SessionVersionError(
                f"session {entry!r} was saved as version {stored} by newer code, and this "
                f"code knows versions up to {self.version}: it refuses to load it, so as not "
                "to overwrite it with an older schema. Deploy the newer code"
            )
        for version in range(stored + 1, self.version + 1):
            step = self.steps.get(version)
            if step is None:
                continue
            try:
                result = step(value)
            except Exception as error:
                raise SessionMigrationError(
                    f"the migration of session {entry!r} to version {version} raised "
                    f"{type(error).__name__} (the cause of this error); the stored session "
                    f"(version {stored}) is left untouched"
                ) from error
            value = value if result is None else result
            if not isinstance(value, dict) or VERSION_KEY in value:
                raise SessionMigrationError(
                    f"the migration of session {entry!r} to version {version} returned "
                    f"{_what(value)}; it must return a dict without {VERSION_KEY!r} (or None "
                    "after changing the one it was given)"
                )
        return value

    def stamp(self, value: dict[str, Any]) -> dict[str, Any]:
        """Return ``value`` as it is stored: with its version, if sessions are versioned.

        Raises ValueError if the session itself uses the reserved key.
        """
        if VERSION_KEY in value:
            raise ValueError(
                f"the key {VERSION_KEY!r} is reserved for the session's schema version; "
                "store that value under another name"
            )
        return value if self.version == 1 else {VERSION_KEY: self.version, **value}


def _what(value: Any) -> str:
    if not isinstance(value, dict):
        return f"a {type(value).__name__}"
    return f"a dict with the reserved key {VERSION_KEY!r}"

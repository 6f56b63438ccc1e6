"""Errors that tgsession raises on purpose.

Every one of them derives from `SessionError`, so ``except SessionError`` catches
anything the library itself decided to refuse, and nothing else.
"""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error tgsession raises on purpose."""


class SessionKeyError(SessionError):
    """The update has no session key, so its session cannot be used."""


class SessionEncodeError(SessionError):
    """A session could not be turned into bytes; the stored state is unchanged."""


class SessionDecodeError(SessionError):
    """Stored bytes could not be turned back into a session; they are left untouched."""


class SessionMigrationError(SessionError):
    """A migration of a stored session failed; the stored session is unchanged."""


class SessionVersionError(SessionError):
    """A stored session has a version this code cannot load (newer, or not a version)."""


class SessionLockTimeout(SessionError):
    """A session stayed locked by another handler for longer than the storage's lock_timeout."""


class SessionLockLost(SessionError):
    """A session's lock expired before its save, so the save was refused.

    It happens when the holder was paused, or cut off from the store, for longer than the
    lock's time to live; another update may have changed the session since.
    """


class SessionStorageError(SessionError):
    """The storage failed to read, write or lock a session."""


def describe(error: BaseException) -> str:
    """``error`` as a message can quote it: its type and its own text.

    Not ``repr``: redis-py 8 gives its errors a repr without their text (no host, no port, no
    "Connection refused"), which is what a reader needs.
    """
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def key_step(key: object) -> str:
    """How a message names the dict key ``key`` on a path: ``['name']`` for a name-like
    string, ``[<a str>]`` for any other key, which may be data (an email, a user id)."""
    if isinstance(key, str) and key.isidentifier() and len(key) <= 40:
        return f"[{key!r}]"
    return f"[<a {type(key).__name__}>]"

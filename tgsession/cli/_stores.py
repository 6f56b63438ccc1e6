"""What the command works on: a store named on the command line, and a bot's manager."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from diskcache.core import DBNAME

from ..manager import SessionManager
from ..storage.base import ExportableStorage
from ..storage.disk import DiskStorage


class CommandError(Exception):
    """A failure the command reports in one line (without a traceback) and exits 1 on."""


class UsageError(CommandError):
    """Wrong usage that the argument parser cannot see: exit 2, as for its own."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(
    spec: str, prefix: str | None, lock_timeout: float | None, *, create: bool = False
) -> ExportableStorage:
    """The store ``spec`` names: a ``redis://`` (or ``rediss://``, ``unix://``) URL, or the
    directory of a DiskStorage. A directory must hold a store already (a mistyped path
    would be an empty one), unless ``create``."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            from ..storage.redis import RedisStorage
        except ImportError:
            raise CommandError(
                "a redis:// store needs redis-py: pip install 'tgsession[redis]'"
            ) from None
        options: dict[str, Any] = {"lock_timeout": lock_timeout}
        if prefix is not None:
            options["prefix"] = prefix
        try:
            storage = RedisStorage.from_url(spec, **options)
        except ValueError as error:
            raise UsageError(str(error)) from None
        try:
            storage.client.ping()
        except Exception as error:
            storage.close()
            raise CommandError(f"cannot reach Redis at {redacted(spec)}: {error}") from None
        return storage
    if prefix is not None:
        raise UsageError("--prefix is for a redis:// store; a directory has no prefix")
    if not create:
        require_store(spec)
    return DiskStorage(spec, lock_timeout=lock_timeout)


def require_store(directory: str) -> None:
    """Raise CommandError unless ``directory`` holds a DiskStorage."""
    if not os.path.isfile(os.path.join(directory, DBNAME)):
        raise CommandError(
            f"no session store at {directory}: give the directory of a DiskStorage (the "
            "bot's $TGSESSION_DIR, .tgsession by default) or a redis:// URL"
        )


def load_manager(target: str) -> SessionManager[Any]:
    """The SessionManager at ``module:attribute`` (importing the module from the current
    directory, as ``python -m`` would)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--manager takes module:attribute (bot:sessions), got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # whatever the module raises when imported
        raise CommandError(
            f"importing {module_name!r} for --manager raised {type(error).__name__}: {error}"
        ) from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CommandError(f"{module_name!r} has no {attribute!r} for --manager") from None
    if not isinstance(value, SessionManager):
        raise CommandError(
            f"{target} is a {type(value).__name__}, not a SessionManager: give the object "
            "that with_session(...) returned"
        )
    return value

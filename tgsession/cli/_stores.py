"""What the command works on: a store named on the command line, and a bot's manager."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ..manager import SessionManager
from ..storage.base import ExportableStorage
from ..storage.disk import DiskStorage


class CommandError(Exception):
    """A failure the command reports in one line (without a traceback) and exits 1 on."""


def open_store(spec: str, prefix: str | None, lock_timeout: float | None) -> ExportableStorage:
    """The store ``spec`` names: a ``redis://`` (or ``rediss://``, ``unix://``) URL, or the
    directory of a DiskStorage, which must exist (a mistyped path would be an empty store)."""
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
        storage = RedisStorage.from_url(spec, **options)
        try:
            storage.client.ping()
        except Exception as error:
            storage.close()
            raise CommandError(f"cannot reach Redis at {spec}: {error}") from None
        return storage
    if prefix is not None:
        raise CommandError("--prefix is for a redis:// store; a directory has no prefix")
    if not os.path.isdir(spec):
        raise CommandError(
            f"no session store at {spec}: give the directory of a DiskStorage (the bot's "
            "$TGSESSION_DIR, .tgsession by default) or a redis:// URL"
        )
    return DiskStorage(spec, lock_timeout=lock_timeout)


def load_manager(target: str) -> SessionManager[Any]:
    """The SessionManager at ``module:attribute`` (importing the module from the current
    directory, as ``python -m`` would)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"--manager takes module:attribute (bot:sessions), got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name!r} for --manager: {error}") from None
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


def store_name(storage: ExportableStorage) -> str:
    """How messages name ``storage``: its directory, or its Redis address and prefix."""
    if isinstance(storage, DiskStorage):
        return storage.directory
    return repr(storage)

"""The stores under test, filled with N sessions, and one update function per case.

Every update function takes a user id and does the same work on the same kind of session: read
it, add one to its counter (or only read it), and store it back.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache
import telebot
from diskcache.core import DBNAME
from telebot.storage import StateMemoryStorage, StatePickleStorage

from tgsession import MemoryStorage, SessionManager, with_session
from tgsession.codec import JSONCodec
from tgsession.storage.disk import CACHE_SETTINGS

SESSION = {"count": 0, "name": "Ann", "lang": "en", "cart": [1, 2, 3], "flags": {"beta": True}}
SESSION_BYTES = JSONCodec().encode(SESSION)
TOKEN = "123456789:benchmark"
BOT_ID = 123456789


def entry(user: int) -> str:
    return f"session:{user}"


def by_id(user: int) -> int:
    return user


# -- disk --------------------------------------------------------------------------------


# A bare diskcache as the benchmark issue defines it: its defaults, with eviction off.
DEFAULTS = {"eviction_policy": "none"}


def fill_disk(directory: Path, sessions: int, settings: dict[str, Any] = CACHE_SETTINGS) -> None:
    """Store ``sessions`` sessions in a diskcache directory (with tgsession's settings)."""
    with diskcache.Cache(directory, **settings) as cache, cache.transact():
        for user in range(sessions):
            cache.set(entry(user), SESSION_BYTES)


def checkpoint(directory: Path) -> None:
    """Write SQLite's write-ahead log of ``directory`` back into its database, now."""
    with closing(sqlite3.connect(directory / DBNAME, timeout=60)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def disk_floor(directory: Path, settings: dict[str, Any] = CACHE_SETTINGS) -> Any:
    """The disk floor: a bare diskcache.Cache doing get, decode, change, encode and set.

    With tgsession's own settings (the default) it isolates what the session layer adds;
    with DEFAULTS it is what a plain diskcache session store costs.
    """
    cache = diskcache.Cache(directory, **settings)

    def update(user: int) -> None:
        key = entry(user)
        session = json.loads(cache.get(key))
        session["count"] += 1
        cache.set(key, json.dumps(session).encode())

    return update


def sessions_on(storage: Any, lazy: bool = False) -> SessionManager[dict[str, Any]]:
    return with_session(
        initial=lambda: dict(SESSION), storage=storage, get_session_key=by_id, lazy=lazy
    )


def tgsession_cases(storage: Any) -> dict[str, Any]:
    """Handlers of one session on ``storage``: one that changes it, one that only reads it."""
    manager = sessions_on(storage)

    @manager
    def changed(user: int, session: dict[str, Any]) -> None:
        session["count"] += 1

    @manager
    def read_only(user: int, session: dict[str, Any]) -> int:
        return int(session["count"])

    return {"changed": changed, "read_only": read_only}


def lazy_untouched() -> Any:
    @sessions_on(MemoryStorage(), lazy=True)
    def handler(user: int, session: Any) -> None:
        pass

    return handler


def memory_cases(sessions: int) -> dict[str, Any]:
    """tgsession_cases on a MemoryStorage holding ``sessions`` sessions."""
    storage = MemoryStorage()
    for user in range(sessions):
        storage.write(entry(user), SESSION_BYTES)
    return tgsession_cases(storage)


@dataclass
class Flags:
    beta: bool = False


@dataclass
class TypedSession:
    """SESSION as a dataclass: the same stored bytes, rebuilt and checked field by field."""

    count: int = 0
    name: str = ""
    lang: str = "en"
    cart: list[int] = field(default_factory=list)
    flags: Flags = field(default_factory=Flags)


def memory_dataclass_cases(sessions: int) -> dict[str, Any]:
    """memory_cases with a dataclass session: what typed sessions add (conversion, checks)."""
    storage = MemoryStorage()
    for user in range(sessions):
        storage.write(entry(user), SESSION_BYTES)
    manager = with_session(initial=TypedSession, storage=storage, get_session_key=by_id)

    @manager
    def changed(user: int, session: TypedSession) -> None:
        session.count += 1

    @manager
    def read_only(user: int, session: TypedSession) -> int:
        return session.count

    return {"changed": changed, "read_only": read_only}


# -- codecs ------------------------------------------------------------------------------


def codec_cases() -> dict[str, Any]:
    """Encoding and decoding SESSION: the standard library's json as earlier releases used
    it, and JSONCodec (msgspec) now."""
    old = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
    )
    old_decoder = json.JSONDecoder()
    codec = JSONCodec()
    text = SESSION_BYTES.decode()
    return {
        "codec json encode": lambda user: old.encode(SESSION).encode(),
        "codec json decode": lambda user: old_decoder.decode(text),
        "codec tgsession encode": lambda user: codec.encode(SESSION),
        "codec tgsession decode": lambda user: codec.decode(SESSION_BYTES),
    }


# -- redis -------------------------------------------------------------------------------


def fill_redis(client: Any, sessions: int, data_key: Any) -> None:
    """Store ``sessions`` sessions under ``data_key(user)``, 10,000 per pipeline."""
    for start in range(0, sessions, 10_000):
        client.mset(
            {data_key(u): SESSION_BYTES for u in range(start, min(sessions, start + 10_000))}
        )


def redis_floor(client: Any, data_key: Any) -> Any:
    """The Redis floor: a bare GET, decode, change, encode and SET of the same bytes."""

    def update(user: int) -> None:
        key = data_key(user)
        session = json.loads(client.get(key))
        session["count"] += 1
        client.set(key, json.dumps(session).encode())

    return update


def delete_prefix(client: Any, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# -- telebot's state storage -------------------------------------------------------------


def telebot_update(storage: Any) -> Any:
    """The same update through ``bot.retrieve_data``, telebot's way to edit a user's data."""
    bot = telebot.TeleBot(TOKEN, state_storage=storage)

    def update(user: int) -> None:
        with bot.retrieve_data(user, user) as data:
            data["count"] += 1

    return update


def telebot_key(storage: Any, user: int) -> str:
    """The key under which telebot's state storages keep ``user``'s state and data."""
    return str(storage._get_key(user, user, storage.prefix, storage.separator, None, None, BOT_ID))


def telebot_memory(sessions: int) -> Any:
    storage = StateMemoryStorage()
    for user in range(sessions):
        storage.data[telebot_key(storage, user)] = {"state": "state", "data": dict(SESSION)}
    return storage


def telebot_pickle(path: Path, sessions: int) -> Any:
    """A StatePickleStorage whose file holds ``sessions`` users, written in one go."""
    storage = StatePickleStorage(file_path=str(path))
    data = {
        telebot_key(storage, user): {"state": "state", "data": dict(SESSION)}
        for user in range(sessions)
    }
    with open(path, "wb") as file:
        pickle.dump(data, file)
    return storage


def telebot_redis(url: str, prefix: str, sessions: int) -> Any:
    from telebot.storage import StateRedisStorage

    storage = StateRedisStorage(redis_url=url, prefix=prefix.rstrip(":"))
    pipe = storage.redis.pipeline(transaction=False)
    value = json.dumps(SESSION)
    for user in range(sessions):
        pipe.hset(telebot_key(storage, user), mapping={"state": "state", "data": value})
        if user % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    return storage

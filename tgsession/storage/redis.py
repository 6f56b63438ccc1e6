"""RedisStorage: sessions shared by bot processes on several hosts, with expiring locks.

Round trips per update: one to lock and load (a script that takes the lock and returns the
entry), one to save and unlock (a script that checks the lock's token, writes and unlocks).
While a lock is held, a background thread renews it every ``lock_ttl / 3`` seconds, so a live
holder keeps it however long its handler runs, and a dead one frees it within ``lock_ttl``.

redis-py retries a command whose reply was lost, so both scripts may run twice: each
recognises its own earlier run by the lock's token and answers as it did the first time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from ..errors import (
    SessionDecodeError,
    SessionError,
    SessionLockLost,
    SessionStorageError,
    describe,
)
from ._locking import Backoff, KeyedLocks, lock_timeout, reset_in_children
from .base import StoredEntry

logger = logging.getLogger("tgsession")

# KEYS: lock, data. ARGV: token, ttl in ms. Replies, flat where it matters:
# locked (now, or by an earlier run of this call): the entry's bytes, or nil if there is none
# (an empty entry is bytes too, and refused as undecodable like on every other store), or
# {-1, type} for an entry of another Redis type, which a read refuses and a delete removes;
# busy: the milliseconds the holder's lock has left, and the holder's token.
_LOCK_AND_LOAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
        or redis.call('GET', KEYS[1]) == ARGV[1] then
    local entry = redis.pcall('GET', KEYS[2])
    if type(entry) == 'table' and entry['err'] then  -- WRONGTYPE: not a string
        return {-1, redis.call('TYPE', KEYS[2])['ok']}
    end
    return entry
end
local left = redis.call('PTTL', KEYS[1])
if left == -1 then
    return redis.error_reply('TGSESSION_FOREIGN_LOCK')
end
return {math.max(left, 0), redis.call('GET', KEYS[1]) or ''}
"""

# KEYS: lock, data, done. ARGV: token, action ('keep', 'write' or 'delete'), data, done ttl,
# the entry's time to live in ms ('0': none).
# 1 when the change is applied (now, or by an earlier run of this call, which left the
# token in `done`), 0 when the lock was no longer the caller's and nothing was changed.
_SAVE_AND_UNLOCK = """
if ARGV[2] ~= 'keep' and redis.call('GET', KEYS[3]) == ARGV[1] then
    return 1
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[2] == 'write' and ARGV[5] ~= '0' then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[5])
elseif ARGV[2] == 'write' then
    redis.call('SET', KEYS[2], ARGV[3])
elseif ARGV[2] == 'delete' then
    redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= 'keep' then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
end
return 1
"""

# KEYS: lock. ARGV: token, ttl in ms. 1 when renewed, 0 when the lock is no longer ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_NOTHING = object()  # no value prefetched / no change requested


class _Foreign:
    """An entry of another Redis type than a string, found when its lock was taken."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _milliseconds(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(seconds * 1000))


def glob_escape(text: str) -> str:
    """``text`` as a SCAN pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Longer than redis-py can spend retrying a save, so that a retry finds its earlier run.
_DONE_TTL_MS = 120_000


class _Held:
    """A lock this process holds, with what the session layer read and wrote under it."""

    __slots__ = ("change", "key", "prefetched", "token", "ttl")

    def __init__(self, key: str, token: bytes) -> None:
        self.key = key
        self.token = token
        self.prefetched: Any = _NOTHING  # the entry, as loaded with the lock
        self.change: Any = _NOTHING  # bytes to write, None to delete, or _NOTHING
        self.ttl: float | None = None  # seconds the written entry lives


class _ProcessState:
    """What belongs to one process: thread locks, the locks it holds, its renewing thread."""

    def __init__(self) -> None:
        self.threads = KeyedLocks()
        self.held: dict[str, _Held] = {}  # the locks to renew
        self.in_use: set[_RedisLock] = set()  # locks from enter until fully released
        self.renewer: threading.Thread | None = None


class _RedisLock:
    """The lock of one key: this process's thread lock, then the lock key in Redis."""

    __slots__ = ("held", "key", "state", "storage")

    def __init__(self, storage: RedisStorage, key: str) -> None:
        self.storage, self.key = storage, key
        self.state = storage._state  # kept: a fork in between gives the storage a new one

    def __enter__(self) -> None:
        storage, key, state = self.storage, self.key, self.state
        timeout = storage.lock_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        state.threads.acquire(key, timeout)
        held = _Held(key, os.urandom(16).hex().encode())
        try:  # one block to the end: an interrupt anywhere in it gives everything back
            state.in_use.add(self)
            held.prefetched = storage._lock_and_load_entry(held, deadline)
            state.held[key] = self.held = held
            _takers[held.token] = threading.get_ident()
            storage._ensure_renewer(state)  # failing: no thread would renew it, give it up
        except BaseException:
            if state.held.get(key) is held:
                del state.held[key]
            _takers.pop(held.token, None)
            # The script may have taken the lock with its reply lost (a dropped connection,
            # an interrupt while it was read): a no-op unless the lock has this token.
            storage._unlock_quietly(held)
            state.in_use.discard(self)
            state.threads.release(key)
            raise

    def __exit__(self, *exc_info: object) -> None:
        # Unregistered first, so that the renewer never mistakes the release for a loss.
        del self.state.held[self.key]
        _takers.pop(self.held.token, None)
        try:
            self.storage._save_and_unlock(self.held)
        finally:
            self.state.in_use.discard(self)
            self.state.threads.release(self.key)


# The thread that took each lock this process holds, by token, across RedisStorage objects:
# a thread that finds a lock busy with a token of its own would wait for itself.
_takers: dict[bytes, int] = {}

# A forked child holds none of its parent's locks.
os.register_at_fork(after_in_child=_takers.clear)


def _identity(client: Any, prefix: str) -> tuple[object, ...] | None:
    """What a store is, for telling a session held through another storage object of the
    same store: the server's address (or Sentinel service), the database and the prefix.

    None where the client says no address (a cluster client): the storage object stands for
    itself then. A server reached by two names is recognised anyway, by the lock's token
    (see _lock_and_load_entry).
    """
    pool = getattr(client, "connection_pool", None)
    where = getattr(pool, "connection_kwargs", None) or {}
    address = (
        where.get("path")
        or getattr(pool, "service_name", None)  # Sentinel: one service is one server
        or (where.get("host") and (where["host"], where.get("port")))
    )
    if not address:
        return None
    return ("redis", address, where.get("db", 0), prefix)


class RedisStorage:
    """Sessions in Redis, shared by any number of processes on any number of hosts.

    Locks carry an owner token: only their owner renews or releases them, and a save is
    refused (`tgsession.SessionLockLost`) if the lock expired and another holder may
    have written since.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "tgsession:",
        lock_ttl: float = 10.0,
        lock_timeout: float | None = None,
    ) -> None:
        """Use ``client`` (a ``redis.Redis`` without ``decode_responses``).

        - ``prefix``: put before every key, so several bots can share one Redis. A session
          lives under ``{prefix}data:{<entry>}`` and its lock under ``{prefix}lock:{<entry>}``
          (the braces keep both in one Redis Cluster slot, so the prefix may not have any).
        - ``lock_ttl``: seconds after which the lock of a dead holder frees itself.
        - ``lock_timeout``: seconds to wait for a busy session; ``None`` waits for as long
          as its holder lives.
        """
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStorage needs a client without decode_responses=True")
        if lock_ttl <= 0:
            raise ValueError(f"lock_ttl must be positive, got {lock_ttl}")
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the prefix {prefix!r} may not contain braces: tgsession uses them")
        self.client = client
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        self._ttl_ms = max(1, int(lock_ttl * 1000))
        self._lock_and_load = client.register_script(_LOCK_AND_LOAD)
        self._save_and_unlock_script = client.register_script(_SAVE_AND_UNLOCK)
        self._renew = client.register_script(_RENEW)
        self._closing = False
        self._stop = threading.Event()
        self._state = _ProcessState()
        reset_in_children(self, RedisStorage._forked)
        self.identity = _identity(client, prefix)

    def _forked(self) -> None:
        # A forked child inherits no Redis locks of its parent, no renewing thread, and
        # copies of thread locks that threads of the parent may hold: it starts afresh.
        self._state = _ProcessState()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorage:
        """Connect to ``url`` (``redis://127.0.0.1:6379/0``); ``options`` go to the constructor."""
        return cls(redis.Redis.from_url(url), **options)

    def data_key(self, key: str) -> str:
        """The Redis key of the session entry ``key``."""
        return f"{self.prefix}data:{{{key}}}"

    def lock_key(self, key: str) -> str:
        """The Redis key of the lock of ``key``."""
        return f"{self.prefix}lock:{{{key}}}"

    def _done_key(self, key: str) -> str:
        return f"{self.prefix}done:{{{key}}}"

    def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        held = self._state.held.get(key)
        if held is not None and held.change is not _NOTHING:
            return held.change  # type: ignore[no-any-return]
        if held is not None and held.prefetched is not _NOTHING:
            value, held.prefetched = held.prefetched, _NOTHING
            if isinstance(value, _Foreign):
                raise self._refusal(key, f"TGSESSION_NOT_BYTES {value.kind}")
            return value  # type: ignore[no-any-return]
        try:
            value = self.client.get(self.data_key(key))
        except redis.ResponseError as error:
            if str(error).startswith("WRONGTYPE"):  # a hash or list put there by another program
                kind = self.client.type(self.data_key(key))
                raise self._refusal(key, f"TGSESSION_NOT_BYTES {kind.decode()}") from None  # type: ignore[union-attr]
            raise
        return value  # type: ignore[return-value]  # bytes: the client does not decode

    def write(self, key: str, data: bytes, ttl: float | None = None) -> None:
        """Store ``data`` under ``key`` (for ``ttl`` seconds); under its lock, as it is released."""
        held = self._state.held.get(key)
        if held is None:
            self.client.set(self.data_key(key), data, px=_milliseconds(ttl))
        else:
            held.change, held.ttl = bytes(data), ttl

    def delete(self, key: str) -> None:
        """Remove ``key``; under its lock, as the lock is released."""
        held = self._state.held.get(key)
        if held is None:
            self.client.delete(self.data_key(key))
        else:
            held.change = None

    def keys(self, prefix: str) -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, with SCAN (no blocking)."""
        for found in self._scan(prefix):
            key = self._entry_of(found)
            if key is not None:
                yield key

    def _entry_of(self, name: bytes) -> str | None:
        """The entry key of the Redis key ``name``; None (logged) for one that tgsession
        cannot have written: not UTF-8."""
        try:
            return name.decode()[len(self.data_key("")) - 1 : -1]
        except UnicodeDecodeError:
            logger.warning("skipped the Redis key %r: not UTF-8, so not tgsession's", name)
            return None

    def _scan(self, prefix: str) -> Iterator[bytes]:
        """The Redis keys of the entries whose key starts with ``prefix``."""
        pattern = glob_escape(self.data_key("")[:-1] + prefix) + "*"
        return self.client.scan_iter(match=pattern, count=1000)

    def entries(
        self, prefix: str, on_error: Callable[[str, SessionError], object] | None = None
    ) -> Iterator[StoredEntry]:
        """Yield every stored session whose key starts with ``prefix``, with its bytes and
        expiry, 1,000 at a time (one round trip per page).

        An entry of another Redis type raises its SessionDecodeError, unless ``on_error`` is
        given: it is then called with the key and the error, and the listing goes on. As with
        keys(), SCAN may yield an entry twice while Redis resizes its tables.
        """
        page: list[bytes] = []
        for found in self._scan(prefix):
            page.append(found)
            if len(page) == 1000:
                yield from self._fetch(page, on_error)
                page = []
        yield from self._fetch(page, on_error)

    def _fetch(
        self, names: list[bytes], on_error: Callable[[str, SessionError], object] | None
    ) -> Iterator[StoredEntry]:
        if not names:
            return
        pipeline = self.client.pipeline(transaction=True)  # each value with its own expiry
        for name in names:
            pipeline.get(name)
            pipeline.pttl(name)
        replies = pipeline.execute(raise_on_error=False)
        now = time.time()
        for index, name in enumerate(names):
            key = self._entry_of(name)
            if key is None:
                continue
            value, left = replies[2 * index], replies[2 * index + 1]
            if isinstance(value, redis.ResponseError):  # WRONGTYPE: a hash or list
                kind = self.client.type(name).decode()  # type: ignore[union-attr]
                error = self._refusal(key, f"TGSESSION_NOT_BYTES {kind}")
                if on_error is None:
                    raise error
                on_error(key, error)  # type: ignore[arg-type]
            elif value is not None:  # None: deleted meanwhile
                yield StoredEntry(key, value, None if left < 0 else now + left / 1000)

    def expiry(self, key: str) -> float | None:
        """When ``key`` expires (a time.time() value); None if it never does or is absent."""
        left = self.client.pttl(self.data_key(key))
        return None if left < 0 else time.time() + left / 1000

    def lock(self, key: str) -> _RedisLock:
        """Hold the lock of ``key`` against every process using this Redis and prefix."""
        if self._closing:
            raise ValueError(f"{self!r} is closed")
        return _RedisLock(self, key)

    def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` as redis-py's Script does: by its hash, loading it if Redis lacks it.

        Calling Script itself cost 5 us more client CPU per call (it imports and copies on
        every call; measured with time.process_time): a tenth of what tgsession adds to an
        update on Redis, where redis-py's own CPU time dominates.
        """
        try:
            return self.client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted, or another server behind the client
            script.sha = self.client.script_load(script.script)
            return self.client.evalsha(script.sha, len(keys), *keys, *args)

    def _lock_and_load_entry(self, held: _Held, deadline: float | None) -> bytes | _Foreign | None:
        """Take the Redis lock of ``held.key``; return the entry, loaded in the same trip."""
        keys = [self.lock_key(held.key), self.data_key(held.key)]
        backoff = Backoff(deadline)
        while True:
            try:
                reply = self._run(self._lock_and_load, keys, [held.token, self._ttl_ms])
            except redis.ResponseError as error:
                raise self._refusal(held.key, str(error)) from None
            if reply is None or isinstance(reply, bytes):
                return reply
            left, holder = reply
            if left < 0:  # locked, and the entry is of another Redis type: `holder` names it
                return _Foreign(holder.decode())
            if _takers.get(holder) == threading.get_ident():
                raise SessionError(
                    f"session {held.key!r} is already open in this thread, through another "
                    f"RedisStorage on the same server and prefix ({self.prefix!r}): it would "
                    "wait for itself. Use one storage object per store, and pass the session "
                    "along instead of opening it again"
                )
            # Busy: poll again, never sleeping past the holder's expiry.
            if not backoff.sleep(at_most=max(left, 1) / 1000):
                raise lock_timeout(held.key, self.lock_timeout)

    def _refusal(self, key: str, reply: str) -> Exception:
        if reply.startswith("TGSESSION_NOT_BYTES"):
            return SessionDecodeError(
                f"session {key!r} is a Redis {reply.split()[-1]} at {self.data_key(key)!r}, "
                "not session bytes: something other than tgsession wrote it; it is left "
                "untouched, delete it to start afresh"
            )
        if reply.startswith("TGSESSION_FOREIGN_LOCK"):
            return SessionStorageError(
                f"the lock key {self.lock_key(key)!r} of session {key!r} has no expiry, so "
                "tgsession did not set it and it would never free itself: delete it"
            )
        return SessionStorageError(f"Redis refused to lock session {key!r}: {reply}")

    def _unlock_quietly(self, held: _Held) -> None:
        try:
            self._run_save_and_unlock(held, "keep", b"", None)
        except redis.RedisError as error:
            logger.warning("could not unlock session %r: %s", held.key, describe(error))

    def _run_save_and_unlock(self, held: _Held, action: str, data: bytes, ttl: float | None) -> Any:
        keys = [self.lock_key(held.key), self.data_key(held.key), self._done_key(held.key)]
        args = [held.token, action, data, _DONE_TTL_MS, _milliseconds(ttl) or 0]
        return self._run(self._save_and_unlock_script, keys, args)

    def _save_and_unlock(self, held: _Held) -> None:
        """Apply the pending change and unlock, if the lock is still ours."""
        if held.change is _NOTHING:
            self._unlock_quietly(held)  # nothing to save: the lock frees itself if this fails
            return
        action, data = ("delete", b"") if held.change is None else ("write", held.change)
        try:
            applied = self._run_save_and_unlock(held, action, data, held.ttl)
        except redis.RedisError as error:
            raise SessionStorageError(
                f"could not confirm the save of session {held.key!r}: {describe(error)}; this "
                f"update's changes may or may not be stored, and its lock frees itself within "
                f"{self.lock_ttl} s"
            ) from error
        except Exception as error:  # failed before anything was sent
            self._unlock_quietly(held)
            raise SessionStorageError(
                f"could not save session {held.key!r}: {describe(error)}; nothing was stored"
            ) from error
        if not applied:
            raise SessionLockLost(
                f"the lock of session {held.key!r} expired before its save (the process was "
                f"paused or cut off from Redis for more than lock_ttl={self.lock_ttl} s) and "
                "another update may have changed it since: this update's changes were not "
                "saved. Raise lock_ttl if that can happen"
            )

    def _ensure_renewer(self, state: _ProcessState) -> None:
        if state.renewer is None:
            renewer = threading.Thread(
                target=self._renew_held,
                args=(state,),
                name="tgsession-redis-renewer",
                daemon=True,
            )
            renewer.start()
            state.renewer = renewer

    def _renew_held(self, state: _ProcessState) -> None:
        """Renew every lock of ``state``, every lock_ttl / 3 seconds, until close()."""
        while not self._stop.wait(self.lock_ttl / 3):
            for held in tuple(state.held.values()):
                try:
                    renewed = self._run(
                        self._renew, [self.lock_key(held.key)], [held.token, self._ttl_ms]
                    )
                except Exception as error:  # the thread must live on: log and retry later
                    logger.warning(
                        "could not renew the lock of session %r: %s", held.key, describe(error)
                    )
                    continue
                if not renewed and state.held.get(held.key) is held:
                    logger.warning("the lock of session %r was lost before its release", held.key)

    def close(self) -> None:
        """Refuse new locks, wait for the held ones to be released, then disconnect."""
        self._closing = True
        while self._state.in_use:  # their renewal goes on meanwhile
            time.sleep(0.01)
        self._stop.set()
        renewer = self._state.renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisStorage({self.client!r}, prefix={self.prefix!r})"

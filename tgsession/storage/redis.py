"""RedisStorage: sessions shared by bot processes on several hosts, with expiring locks.

Round trips per update: one to lock and load (a script that takes the lock and returns the
entry), one to save and unlock (a script that checks the lock's token, writes and unlocks).
While a lock is held, a background thread renews it every ``lock_ttl / 3`` seconds, so a live
holder keeps it however long its handler runs, and a dead one frees it within ``lock_ttl``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis

from ..errors import SessionDecodeError, SessionLockLost, SessionStorageError
from ._locking import Backoff, KeyedLocks, lock_timeout

logger = logging.getLogger("tgsession")

# KEYS: lock, data. ARGV: token, ttl in ms.
# Locked: {1, data or nothing}. Busy: {0, milliseconds the holder's lock has left}.
# Not a string: {2, its Redis type}, and no lock is taken.
_LOCK_AND_LOAD = """
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'string' and kind ~= 'none' then
    return {2, kind}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1, redis.call('GET', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock, data. ARGV: token, action ('keep', 'write' or 'delete'), data.
# 1 when the caller still held the lock (its change is applied), 0 when it had lost it.
_SAVE_AND_UNLOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[2] == 'write' then
    redis.call('SET', KEYS[2], ARGV[3])
elseif ARGV[2] == 'delete' then
    redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1])
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


class _Held:
    """A lock this process holds, with what the session layer read and wrote under it."""

    __slots__ = ("change", "key", "lost", "prefetched", "thread", "token")

    def __init__(self, key: str, token: bytes) -> None:
        self.key = key
        self.token = token
        self.thread = threading.get_ident()
        self.prefetched: Any = _NOTHING  # the entry, as loaded with the lock
        self.change: Any = _NOTHING  # bytes to write, None to delete, or _NOTHING
        self.lost = False  # a renewal found the lock taken by someone else


class _RedisLock:
    """The lock of one key: this process's thread lock, then the lock key in Redis."""

    __slots__ = ("held", "key", "storage")

    def __init__(self, storage: RedisStorage, key: str) -> None:
        self.storage, self.key = storage, key

    def __enter__(self) -> None:
        storage, key = self.storage, self.key
        timeout = storage.lock_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        storage._threads.acquire(key, timeout)
        try:
            self.held = held = _Held(key, os.urandom(16).hex().encode())
            held.prefetched = storage._acquire(held, deadline)
        except BaseException:
            storage._threads.release(key)
            raise
        storage._held[key] = held
        storage._ensure_renewer()

    def __exit__(self, *exc_info: object) -> None:
        storage = self.storage
        del storage._held[self.key]
        try:
            storage._release(self.held)
        finally:
            storage._threads.release(self.key)


class RedisStorage:
    """Sessions in Redis, shared by any number of processes on any number of hosts.

    Locks carry an owner token: only their owner renews or releases them, and a save is
    refused (:class:`~tgsession.SessionLockLost`) if the lock expired and another holder may
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
          (the braces keep both in one Redis Cluster slot).
        - ``lock_ttl``: seconds after which the lock of a dead holder frees itself.
        - ``lock_timeout``: seconds to wait for a busy session; ``None`` waits for as long
          as its holder lives.
        """
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStorage needs a client without decode_responses=True")
        if lock_ttl <= 0:
            raise ValueError(f"lock_ttl must be positive, got {lock_ttl}")
        self.client = client
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        self._ttl_ms = max(1, int(lock_ttl * 1000))
        self._lock_and_load = client.register_script(_LOCK_AND_LOAD)
        self._save_and_unlock = client.register_script(_SAVE_AND_UNLOCK)
        self._renew = client.register_script(_RENEW)
        self._closed = threading.Event()
        self._start_process_state()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorage:
        """Connect to ``url`` (``redis://127.0.0.1:6379/0``); ``options`` go to the constructor."""
        return cls(redis.Redis.from_url(url), **options)

    def _start_process_state(self) -> None:
        # Thread locks, held locks and the renewing thread belong to one process; a forked
        # child starts its own (redis-py gives it new connections by itself).
        self._pid = os.getpid()
        self._threads = KeyedLocks()
        self._held: dict[str, _Held] = {}
        self._renewer: threading.Thread | None = None

    def data_key(self, key: str) -> str:
        """The Redis key of the session entry ``key``."""
        return f"{self.prefix}data:{{{key}}}"

    def lock_key(self, key: str) -> str:
        """The Redis key of the lock of ``key``."""
        return f"{self.prefix}lock:{{{key}}}"

    def _mine(self, key: str) -> _Held | None:
        held = self._held.get(key)
        return held if held is not None and held.thread == threading.get_ident() else None

    def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        held = self._mine(key)
        if held is not None and held.change is not _NOTHING:
            return held.change  # type: ignore[no-any-return]
        if held is not None and held.prefetched is not _NOTHING:
            value, held.prefetched = held.prefetched, _NOTHING
            return value  # type: ignore[no-any-return]
        value = self.client.get(self.data_key(key))
        return value  # type: ignore[return-value]  # bytes: the client does not decode

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; under its lock, as the lock is released."""
        held = self._mine(key)
        if held is None:
            self.client.set(self.data_key(key), data)
        else:
            held.change = bytes(data)

    def delete(self, key: str) -> None:
        """Remove ``key``; under its lock, as the lock is released."""
        held = self._mine(key)
        if held is None:
            self.client.delete(self.data_key(key))
        else:
            held.change = None

    def lock(self, key: str) -> _RedisLock:
        """Hold the lock of ``key`` against every process using this Redis and prefix."""
        if self._pid != os.getpid():
            self._start_process_state()
        return _RedisLock(self, key)

    def _acquire(self, held: _Held, deadline: float | None) -> bytes | None:
        """Take the Redis lock of ``held.key``; return the entry, loaded in the same trip."""
        keys = [self.lock_key(held.key), self.data_key(held.key)]
        backoff = Backoff(deadline)
        while True:
            reply = self._lock_and_load(keys=keys, args=[held.token, self._ttl_ms])
            if reply[0] == 1:
                return reply[1] if len(reply) > 1 else None
            if reply[0] == 2:
                raise SessionDecodeError(
                    f"session {held.key!r} is a Redis {reply[1].decode()} at "
                    f"{keys[1]!r}, not session bytes: something other than tgsession wrote "
                    "it; it is left untouched, delete it to start afresh"
                )
            # Busy: poll again, never sleeping past the holder's expiry.
            if not backoff.sleep(at_most=max(reply[1], 1) / 1000):
                raise lock_timeout(held.key, self.lock_timeout)

    def _release(self, held: _Held) -> None:
        """Apply the pending change and unlock, if the lock is still ours."""
        if held.change is _NOTHING:
            action, data = "keep", b""
        elif held.change is None:
            action, data = "delete", b""
        else:
            action, data = "write", held.change
        keys = [self.lock_key(held.key), self.data_key(held.key)]
        try:
            still_ours = self._save_and_unlock(keys=keys, args=[held.token, action, data])
        except redis.RedisError as error:
            if action == "keep":  # nothing is lost: the lock frees itself
                logger.warning("could not unlock session %r: %r", held.key, error)
                return
            raise SessionStorageError(
                f"could not save session {held.key!r}: {error!r}; its changes in this update "
                f"are lost, and its lock frees itself within {self.lock_ttl} s"
            ) from error
        if still_ours:
            return
        if action == "keep":
            logger.warning("the lock of session %r had expired before its release", held.key)
            return
        raise SessionLockLost(
            f"the lock of session {held.key!r} expired before its save (the process was "
            f"paused or cut off from Redis for more than lock_ttl={self.lock_ttl} s) and "
            "another update may have changed it since: this update's changes were not "
            "saved. Raise lock_ttl if that can happen"
        )

    def _ensure_renewer(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew_held, name="tgsession-redis-renewer", daemon=True
            )
            self._renewer.start()

    def _renew_held(self) -> None:
        """Renew every lock held by this process, every lock_ttl / 3 seconds, until close()."""
        while not self._closed.wait(self.lock_ttl / 3):
            for held in tuple(self._held.values()):
                try:
                    renewed = self._renew(
                        keys=[self.lock_key(held.key)], args=[held.token, self._ttl_ms]
                    )
                except redis.RedisError as error:
                    logger.warning("could not renew the lock of session %r: %r", held.key, error)
                    continue
                if not renewed and not held.lost:
                    held.lost = True
                    logger.warning("the lock of session %r was lost before its release", held.key)

    def close(self) -> None:
        """Stop renewing locks and close the client's connections."""
        self._closed.set()
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisStorage({self.client!r}, prefix={self.prefix!r})"

"""StateStorage: telebot's own states (StatesGroup, state= filters, StateContext) on tgsession.

``TeleBot(token, state_storage=StateStorage())`` keeps each user's state and data as a JSON
session, on disk by default or in Redis, and every operation holds that session's lock.
Inside an isolated update (see `tgsession.isolate`) the state is opened once, by the
first operation (typically a ``state=`` filter), and held until the update ends: the filter's
``get_state``, the handler's ``set_state`` and ``retrieve_data`` and the save are one atomic
update. Elsewhere each operation is one locked read or change.

Existing telebot states can be brought over once, explicitly: `StateStorage.import_redis`
from a ``StateRedisStorage`` prefix, `StateStorage.import_pickle` from a
``StatePickleStorage`` file (which has to be unpickled: only for a file you trust).
"""

from __future__ import annotations

import json
import logging
import pickle
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, TypeVar

from telebot.storage import StateStorageBase

from ._call import HeldSessions, active_calls, after_save, holder
from ._opened import held_key_of
from .decorator import with_session
from .errors import SessionError, describe
from .keys import SessionKey, by_user
from .storage.base import Storage

logger = logging.getLogger("tgsession")

Record = dict[str, Any]  # {"state": "Group:name" or None, "data": {...}}
T = TypeVar("T")


def state_key(
    chat_id: int,
    user_id: int,
    business_connection_id: str | None = None,
    message_thread_id: int | None = None,
    bot_id: int | None = None,
) -> str:
    """The session key of one user's state, as telebot's storages key it (without prefix)."""
    context = [str(part) for part in (bot_id, business_connection_id, message_thread_id) if part]
    return ":".join([*context, str(chat_id), str(user_id)])


def _belongs_to(update: Any, where: tuple[Any, ...]) -> bool:
    """Whether the state of ``where`` (chat id, user id, ...) is of the user who sent
    ``update``: all updates of that user run in turn, so holding it cannot deadlock."""
    return bool(by_user(update) == where[1])


class StateStorage(StateStorageBase):
    """A telebot state storage whose states are tgsession sessions, locked and JSON."""

    def __init__(self, storage: Storage | None = None, *, key: str = "state") -> None:
        """Keep states as the sessions ``key`` of ``storage`` (the default DiskStorage)."""
        super().__init__()
        self.states = with_session(key=key, storage=storage, get_session_key=lambda u: u)
        # Per running update: other users' states as this update sees them (see _change).
        self._pending: weakref.WeakKeyDictionary[HeldSessions, dict[str, Record]] = (
            weakref.WeakKeyDictionary()
        )

    def _change(self, where: tuple[Any, ...], change: Callable[[Record], T], writes: bool) -> T:
        """Apply ``change`` to the state record of ``where`` (telebot's chat, user, business
        connection, topic and bot id) and return what it returns.

        In an update, the state of its sender is held to the update's end (one atomic
        update with its filters), as is any state the running calls hold already. Another
        user's state is not: held too, two users' updates that touch each other's state
        would wait for each other for ever. It is read as stored (with this update's own
        changes to it), and the changes are applied after the update's save, each under
        that state's lock.
        """
        session_key = state_key(*where)
        calls = active_calls()
        if not calls:
            with self.states.open(session_key) as record:
                return change(record)
        held = holder(calls, held_key_of(self.states.storage, self.states.entry_key(session_key)))
        if held is not None or _belongs_to(calls[0].update, where):
            return change(self.states.current(session_key=session_key))
        pending = self._pending.setdefault(calls[0], {})
        if session_key not in pending:
            pending[session_key] = self._snapshot(session_key)
        if writes:
            after_save(self._change, where, change, True)  # after the update: no call then
        return change(pending[session_key])

    def _snapshot(self, session_key: SessionKey) -> Record:
        """The state stored under ``session_key``, read without its lock."""
        entry = self.states.entry_key(session_key)
        data = self.states.storage.read(entry)
        return {} if data is None else dict(self.states.decode(entry, data))

    def set_state(
        self,
        chat_id: int,
        user_id: int,
        state: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set the state (a telebot ``State`` is stored by its name)."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, partial(_set_state, getattr(state, "name", state)), True)

    def get_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> str | None:
        """Return the state's name, or None."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, _state_of, writes=False)

    def delete_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Delete the state and its data; return whether there was one."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, _delete, writes=True)

    def set_data(
        self,
        chat_id: int,
        user_id: int,
        key: str,
        value: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set one value of the state's data."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, partial(_set_data, key, value), writes=True)

    def get_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> dict[str, Any]:
        """Return a copy of the state's data."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, _data_copy, writes=False)

    def reset_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Empty the state's data; return whether there was a state."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, _reset_data, writes=True)

    @contextmanager
    def get_interactive_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> Iterator[Any]:
        """``with bot.retrieve_data(...) as data:``: the state's data, under its lock for the
        block (or the update's), saved if the block ends well, left as it was if it raises.
        ``set_state`` inside the block works. Another user's data, in an update, is
        changed key by key after the update's save."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        if active_calls():
            before = self.get_data(*where)
            data = json.loads(json.dumps(before))
            yield data
            self._change(where, partial(_merge, before, data), writes=True)
            return
        with self.states.open(state_key(*where)) as record:  # the block holds the lock
            data = _data_copy(record)
            yield data
            record["data"] = data

    def save(
        self,
        chat_id: int,
        user_id: int,
        data: dict[str, Any],
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Replace the state's data (what telebot's own data context calls on exit)."""
        where = (chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return self._change(where, partial(_replace_data, data), writes=True)

    def import_redis(
        self,
        client: Any,
        prefix: str = "telebot",
        separator: str = ":",
        *,
        overwrite: bool = False,
        on_error: OnImportError | None = None,
    ) -> int:
        """Copy the states that a ``StateRedisStorage(prefix=..., separator=...)`` keeps;
        return how many.

        States already here are kept unless ``overwrite``. The Redis keys are left as they
        are, and keys under the prefix that are not hashes are skipped. A state that cannot
        be copied stops the import (see `import_pickle`), unless ``on_error`` is given.
        """
        from .storage.redis import glob_escape  # redis-py is there: the client is one

        start = prefix + separator
        importing = _Importing(f"Redis keys {start}*", overwrite, on_error)
        for raw in client.scan_iter(match=glob_escape(start) + "*", count=1000):
            label = raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else raw
            with importing.state(label):
                name = _text(raw)  # not UTF-8: another program's key, skipped and reported
                if _text(client.type(raw)) != "hash":
                    continue
                fields = {_text(field): value for field, value in client.hgetall(raw).items()}
                state = fields.get("state")
                record = {
                    "state": None if state is None else _text(state),
                    "data": json.loads(fields.get("data") or "{}"),
                }
                importing.copy(self, name[len(start) :].split(separator), record)
        return importing.copied

    def import_pickle(
        self,
        path: str,
        prefix: str = "telebot",
        separator: str = ":",
        *,
        overwrite: bool = False,
        on_error: OnImportError | None = None,
    ) -> int:
        """Copy the states of a ``StatePickleStorage(file_path=path, prefix=..., separator=...)``
        file; return how many.

        The file has to be unpickled, which runs whatever code it holds: call this only on a
        file you trust (it is logged as a warning). Both its layouts are read: StatesV2's
        (``{"<prefix>:...:<chat>:<user>": record}``) and the earlier one
        (``{chat: {user: record}}``). States already here are kept unless ``overwrite``; the
        file is left as it is. A file that does not load as telebot's raises ValueError, and
        nothing is imported.

        A state that cannot be copied (a record that is not telebot's, a key outside
        ``prefix``, a session busy beyond the storage's lock timeout) stops the import with
        SessionError, which names it and says how many states were imported before it,
        unless ``on_error`` is given: it is then called with the state's name and the error,
        and the import goes on.
        """
        with open(path, "rb") as file:
            logger.warning(
                "unpickling %s to import telebot states: only for a file you trust", path
            )
            try:
                states = pickle.load(file)
            except Exception as error:  # a corrupt pickle can raise anything while it loads
                raise ValueError(
                    f"{path} is not a telebot StatePickleStorage file that loads here "
                    f"({describe(error)}); nothing was imported"
                ) from None
        if not isinstance(states, dict):
            raise ValueError(
                f"{path} holds a value of type {type(states).__name__}, not the dict of a "
                "telebot StatePickleStorage; nothing was imported"
            )
        start = prefix + separator
        importing = _Importing(path, overwrite, on_error)
        for name, value in states.items():
            if isinstance(name, str):  # StatesV2
                with importing.state(name):
                    if not name.startswith(start):
                        raise ValueError(
                            f"it is not under the prefix {start!r}: give the prefix and "
                            "separator that the StatePickleStorage was made with"
                        )
                    importing.copy(self, name[len(start) :].split(separator), value)
            elif isinstance(value, dict):  # before StatesV2: chat id, then user id
                for user_id, record in value.items():
                    with importing.state(f"chat {name}, user {user_id}"):
                        importing.copy(self, [str(name), str(user_id)], record)
            else:
                with importing.state(repr(name)):
                    raise ValueError(
                        f"its value is of type {type(value).__name__}, not a chat's states"
                    )
        return importing.copied

    def _copy(self, parts: list[str], record: Any, overwrite: bool) -> int:
        """Store a telebot state record under the key made of ``parts``; 1 if stored."""
        if not isinstance(record, dict):
            raise ValueError(
                f"its record is of type {type(record).__name__}, not a telebot state record (a "
                "dict with 'state' and 'data')"
            )
        state = record.get("state")
        name = getattr(state, "name", state)  # telebot may have pickled the State itself
        data = record.get("data")
        data = {} if data is None else data
        if not (name is None or isinstance(name, str)) or not isinstance(data, dict):
            raise ValueError(
                "its 'state' is not a name or its 'data' is not a dict: it is not a telebot "
                "state record"
            )
        with self.states.open(":".join(parts)) as stored:
            if stored and not overwrite:
                return 0
            stored.clear()
            stored.update(state=name, data=data)
        return 1


OnImportError = Callable[[str, Exception], object]


class _Importing:
    """An import of telebot's states: how many it has copied, and what it does when one of
    them fails (stop, saying how far it got, or tell ``on_error`` and go on)."""

    def __init__(self, source: str, overwrite: bool, on_error: OnImportError | None) -> None:
        self.source, self.overwrite, self.on_error = source, overwrite, on_error
        self.copied = 0

    def copy(self, states: StateStorage, parts: list[str], record: Any) -> None:
        self.copied += states._copy(parts, record, self.overwrite)

    @contextmanager
    def state(self, name: str) -> Iterator[None]:
        """Around the copy of telebot's state ``name``."""
        try:
            yield
        except Exception as error:
            if self.on_error is not None:
                self.on_error(name, error)
                return
            kept = "copied again" if self.overwrite else "kept"
            raise SessionError(
                f"the import from {self.source} stopped at telebot's state {name!r}: "
                f"{describe(error)}; {self.copied:,} "
                f"{'state was' if self.copied == 1 else 'states were'} imported before it. "
                f"Import again once it is fixed or removed: the states already copied are {kept}"
            ) from error


# What each operation does to a state record, under whatever lock _change holds.


def _set_state(name: str | None, record: Record) -> bool:
    record["state"] = name
    record.setdefault("data", {})
    return True


def _state_of(record: Record) -> str | None:
    return record.get("state")


def _delete(record: Record) -> bool:
    existed = bool(record)
    record.clear()
    return existed


def _set_data(key: str, value: Any, record: Record) -> bool:
    record.setdefault("data", {})[key] = value
    return True


def _reset_data(record: Record) -> bool:
    if record:
        record["data"] = {}
    return bool(record)


def _replace_data(data: dict[str, Any], record: Record) -> bool:
    record["data"] = data
    return True


def _merge(before: dict[str, Any], after: dict[str, Any], record: Record) -> bool:
    """Make ``record``'s data change as ``before`` changed into ``after``, key by key."""
    data = record.setdefault("data", {})
    for key in before.keys() - after.keys():
        data.pop(key, None)
    for key, value in after.items():
        if key not in before or before[key] != value:
            data[key] = value
    return True


def _data_copy(record: Record) -> dict[str, Any]:
    """A deep copy of a record's data: changing it changes nothing stored."""
    return json.loads(json.dumps(record.get("data", {})))  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    """A Redis reply as text, from a client that decodes replies or one that does not."""
    return value.decode() if isinstance(value, bytes) else str(value)

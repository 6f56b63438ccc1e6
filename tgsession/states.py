"""StateStorage: telebot's own states (StatesGroup, state= filters, StateContext) on tgsession.

``TeleBot(token, state_storage=StateStorage())`` keeps each user's state and data as a JSON
session, on disk by default or in Redis, and every operation holds that session's lock.
Inside an isolated update (see :func:`~tgsession.isolate`) the state is opened once, by the
first operation (typically a ``state=`` filter), and held until the update ends: the filter's
``get_state``, the handler's ``set_state`` and ``retrieve_data`` and the save are one atomic
update. Elsewhere each operation is one locked read or change.

Existing telebot states can be brought over once, explicitly: :meth:`StateStorage.import_redis`
from a ``StateRedisStorage`` prefix, :meth:`StateStorage.import_pickle` from a
``StatePickleStorage`` file (which has to be unpickled: only for a file you trust).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from telebot.storage import StateStorageBase

from ._call import active_calls
from .decorator import with_session
from .storage.base import Storage

logger = logging.getLogger("tgsession")

Record = dict[str, Any]  # {"state": "Group:name" or None, "data": {...}}


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


class StateStorage(StateStorageBase):
    """A telebot state storage whose states are tgsession sessions, locked and JSON."""

    def __init__(self, storage: Storage | None = None, *, key: str = "state") -> None:
        """Keep states as the sessions ``key`` of ``storage`` (the default DiskStorage)."""
        super().__init__()
        self.states = with_session(key=key, storage=storage, get_session_key=lambda u: u)

    @contextmanager
    def _holding(self, *where: Any) -> Iterator[Record]:
        """The state record of ``where`` (telebot's chat, user, ... arguments), held by the
        running update if there is one, else locked for the block and saved after it."""
        session_key = state_key(*where)
        if active_calls():
            yield self.states.current(session_key=session_key)
        else:
            with self.states.open(session_key) as record:
                yield record

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
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            record["state"] = getattr(state, "name", state)
            record.setdefault("data", {})
        return True

    def get_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> str | None:
        """Return the state's name, or None."""
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            return record.get("state")

    def delete_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Delete the state and its data; return whether there was one."""
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            existed = bool(record)
            record.clear()
        return existed

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
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            record.setdefault("data", {})[key] = value
        return True

    def get_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> dict[str, Any]:
        """Return a copy of the state's data."""
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            return dict(record.get("data", {}))

    def reset_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Empty the state's data; return whether there was a state."""
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            existed = bool(record)
            if existed:
                record["data"] = {}
        return existed

    @contextmanager
    def get_interactive_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> Iterator[Any]:
        """``with bot.retrieve_data(...) as data:``: the state's data itself, under its lock
        for the block; saved if the block ends well, left as it was if it raises.
        ``set_state`` inside the block works."""
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            before = json.dumps(record.get("data", {}))
            try:
                yield record.setdefault("data", {})
            except BaseException:
                record["data"] = json.loads(before)
                raise

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
        with self._holding(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        ) as record:
            record["data"] = data
        return True

    def import_redis(self, client: Any, prefix: str = "telebot", *, overwrite: bool = False) -> int:
        """Copy the states a ``StateRedisStorage`` keeps under ``prefix``; return how many.

        States already here are kept unless ``overwrite``. The Redis keys are left as they
        are.
        """
        copied = 0
        for raw in client.scan_iter(match=prefix.replace("*", "\\*") + ":*", count=1000):
            name = raw.decode()
            fields = client.hgetall(raw)
            state = fields.get(b"state")
            data = json.loads(fields.get(b"data") or b"{}")
            copied += self._copy(
                name[len(prefix) + 1 :], state.decode() if state else None, data, overwrite
            )
        return copied

    def import_pickle(self, path: str, *, overwrite: bool = False) -> int:
        """Copy the states of a ``StatePickleStorage`` file; return how many.

        The file has to be unpickled, which runs whatever code it holds: call this only on
        a file you trust (it is logged as a warning). States already here are kept unless
        ``overwrite``; the file is left as it is.
        """
        logger.warning(
            "unpickling %s to import telebot states: do so only for a file you trust", path
        )
        with open(path, "rb") as file:
            states = pickle.load(file)
        copied = 0
        for name, record in states.items():
            session_key = name.partition(":")[2]  # without telebot's prefix
            state = record.get("state")
            copied += self._copy(
                session_key, getattr(state, "name", state), record.get("data") or {}, overwrite
            )
        return copied

    def _copy(self, session_key: str, state: str | None, data: Any, overwrite: bool) -> int:
        with self.states.open(session_key) as record:
            if record and not overwrite:
                return 0
            record.clear()
            record.update(state=state, data=data)
        return 1

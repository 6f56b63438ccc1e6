"""tgsession: persistent, locked sessions for synchronous pyTelegramBotAPI (telebot) bots.

@bot.message_handler(commands=["count"])
@with_session(initial=lambda: {"count": 0})
def count(message, session):
    session["count"] += 1
"""

import importlib.util

from ._call import after_save
from .codec import Codec, JSONCodec
from .decorator import with_session
from .errors import (
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionKeyError,
    SessionLockLost,
    SessionLockTimeout,
    SessionMigrationError,
    SessionStorageError,
    SessionVersionError,
)
from .isolation import Isolation, isolate
from .keys import (
    SessionKey,
    by_business_chat,
    by_business_connection,
    by_chat,
    by_chat_thread,
    by_user,
    by_user_in_chat,
    by_user_in_thread,
)
from .manager import SessionManager
from .middleware import SessionMiddleware
from .session import LazySession, LazyTypedSession, Session, clear
from .states import StateStorage
from .steps import Step, Steps
from .storage import DiskStorage, ListableStorage, MemoryStorage, Storage

__all__ = [
    "Codec",
    "DiskStorage",
    "Isolation",
    "JSONCodec",
    "LazySession",
    "LazyTypedSession",
    "ListableStorage",
    "MemoryStorage",
    "Session",
    "SessionDecodeError",
    "SessionEncodeError",
    "SessionError",
    "SessionKey",
    "SessionKeyError",
    "SessionLockLost",
    "SessionLockTimeout",
    "SessionManager",
    "SessionMiddleware",
    "SessionMigrationError",
    "SessionStorageError",
    "SessionVersionError",
    "StateStorage",
    "Step",
    "Steps",
    "Storage",
    "after_save",
    "by_business_chat",
    "by_business_connection",
    "by_chat",
    "by_chat_thread",
    "by_user",
    "by_user_in_chat",
    "by_user_in_thread",
    "clear",
    "isolate",
    "with_session",
]

if importlib.util.find_spec("redis") is not None:  # the optional extra tgsession[redis]
    __all__ += ["RedisStorage"]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RedisStorage needs the optional redis package: import it only when asked for.
    if name == "RedisStorage":
        try:
            from .storage.redis import RedisStorage
        except ImportError as error:
            raise ImportError(
                "RedisStorage needs redis-py: pip install 'tgsession[redis]'"
            ) from error
        return RedisStorage
    raise AttributeError(f"module 'tgsession' has no attribute {name!r}")

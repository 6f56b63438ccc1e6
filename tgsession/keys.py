"""Key strategies: functions from an update to the key of its session.

A key strategy returns a ``str`` or ``int``, or ``None`` when the update has nothing to key on
(a ``poll`` has no sender). Any function of that shape can be passed as ``get_session_key``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

SessionKey = Union[str, int]
KeyStrategy = Callable[[Any], Optional[SessionKey]]

# Fields that name the sender, in order of preference. `sender_chat` comes first: when a
# message is sent on behalf of a chat (a channel, an anonymous group admin), Telegram fills
# `from` with a placeholder user shared by everyone who does so.
_SENDER_FIELDS = ("sender_chat", "from_user", "user", "actor_chat", "voter_chat")


def _id(entity: Any) -> int | None:
    return None if entity is None else int(entity.id)


def by_user(update: Any) -> int | None:
    """Return the id of whoever sent ``update``: a user, or the chat that sent on its own.

    Covers every update type telebot dispatches: messages of every kind (``from_user``, or
    ``sender_chat`` when sent on behalf of a chat), callback, inline, shipping and
    pre-checkout queries, chosen inline results, chat member updates, join requests, paid
    media purchases (``from_user``), poll answers (``user`` or ``voter_chat``), reactions
    (``user`` or ``actor_chat``), business connections, managed bots and subscriptions
    (``user``), chat boosts (the boosting user), and updates that carry only a private chat
    (whose id is its user's). Returns ``None`` for updates without a sender, such as a
    ``poll`` or the anonymous reaction counts of a channel.
    """
    for field in _SENDER_FIELDS:
        sender = getattr(update, field, None)
        if sender is not None:
            return _id(sender)
    # chat_boost carries the boost, removed_chat_boost its source, directly.
    source = getattr(getattr(update, "boost", update), "source", None)
    user = getattr(source, "user", None)
    if user is not None:
        return _id(user)
    # A private chat's id is its user's id (stopped_message_generation, deleted business
    # messages carry only the chat).
    chat = getattr(update, "chat", None)
    return _id(chat) if getattr(chat, "type", None) == "private" else None


def by_chat(update: Any) -> int | None:
    """Return the id of the chat ``update`` belongs to, or ``None`` (e.g. inline queries).

    For callback queries this is the chat of the message whose button was pressed.
    """
    chat = getattr(update, "chat", None)
    if chat is None:
        chat = getattr(getattr(update, "message", None), "chat", None)
    return _id(chat)


def by_user_in_chat(update: Any) -> str | None:
    """Return ``"<user id>:<chat id>"``: one session per user in each chat, or ``None``."""
    user, chat = by_user(update), by_chat(update)
    if user is None or chat is None:
        return None
    return f"{user}:{chat}"

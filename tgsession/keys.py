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


def _message_of(update: Any) -> Any:
    """The message an update is about: itself, or a callback query's message (None if that
    message is too old for Telegram to send, which it marks with the date 0)."""
    message = getattr(update, "message", None)
    if message is None:
        return update
    return None if message.date == 0 else message


def by_chat_thread(update: Any) -> int | str | None:
    """Return one key per forum topic: ``"<chat id>:<topic id>"``, or the chat id alone for
    a message outside a topic (the General topic, a chat without topics), or ``None``.

    A callback query is keyed by the topic of the message whose button was pressed.
    """
    chat = by_chat(update)
    if chat is None:
        return None
    message = _message_of(update)
    if getattr(message, "is_topic_message", None):
        return f"{chat}:{message.message_thread_id}"
    return chat


def by_user_in_thread(update: Any) -> str | None:
    """Return ``"<user id>:<chat thread key>"``: one session per user in each forum topic (in
    each chat, outside topics), or ``None``."""
    user, thread = by_user(update), by_chat_thread(update)
    if user is None or thread is None:
        return None
    return f"{user}:{thread}"


def by_business_chat(update: Any) -> str | None:
    """Return ``"<business connection id>:<chat id>"`` for updates of a business account's
    chats (business messages, their edits and deletions, and callback queries on them), so
    that each customer's chat with each connected account has its own session; ``None`` for
    other updates.
    """
    connection = getattr(_message_of(update), "business_connection_id", None)
    if connection is None:
        connection = getattr(update, "business_connection_id", None)
    chat = by_chat(update)
    if connection is None or chat is None:
        return None
    return f"{connection}:{chat}"


def by_business_connection(update: Any) -> str | None:
    """Return the business connection id: one session per connected business account
    (the ``business_connection`` update itself included), or ``None``."""
    if getattr(update, "user_chat_id", None) is not None:  # a BusinessConnection: its own id
        return str(update.id)
    connection = getattr(_message_of(update), "business_connection_id", None)
    if connection is None:
        connection = getattr(update, "business_connection_id", None)
    return connection if connection is None else str(connection)

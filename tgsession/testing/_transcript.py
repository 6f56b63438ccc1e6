"""Transcripts: what happened in a chat, an event each, rendered one line per event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    """One thing that happened in a chat: a user's message or press, or a bot's call."""

    chat_id: int
    user_id: int | None  # who: a user's id, or None for the bot
    kind: str  # message, press; or the bot's: send, photo, document..., edit, delete, answer
    text: str  # the text, caption or button data ("" if none)
    message_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the call's parameters, as sent
    buttons: list[list[str]] = field(default_factory=list)  # inline keyboard, row by row


def render(event: Event) -> str:
    """The transcript line of ``event``."""
    text = event.text
    if event.user_id is not None:
        if event.kind == "press":
            return f"user {event.user_id} pressed {text!r}"
        return f"user {event.user_id}: {text}"
    keyboard = "".join(" [" + " | ".join(row) + "]" for row in event.buttons)
    kind = event.kind
    if kind == "send":
        return f"bot: {text}{keyboard}"
    if kind == "edit":
        return f"bot edited #{event.message_id}: {text}{keyboard}"
    if kind == "markup":
        return f"bot edited the buttons of #{event.message_id}:{keyboard or ' none'}"
    if kind == "delete":
        return f"bot deleted #{event.message_id}"
    if kind == "answer":
        return f"bot answered user {event.params.get('user_id')}: {text!r}"
    if kind == "action":
        return f"bot is {text}"
    return f"bot sent {kind}" + (f": {text}" if text else "") + keyboard

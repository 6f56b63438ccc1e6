"""The Bot API methods FakeBotAPI performs for a bot, answered as Telegram answers them.

Each records the call (``FakeBotAPI.calls``) and what it did in the chat's transcript, and
refuses what Telegram refuses, with its error: editing or deleting a message that is not
there, an edit that changes nothing, answering a callback query twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl

from ._transcript import Event

if TYPE_CHECKING:
    from ._api import FakeBotAPI

Action = Callable[["FakeBotAPI", dict[str, Any]], Any]


class APIError(Exception):
    """A Bot API error reply: what Telegram answers a call it refuses."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters

    def payload(self) -> dict[str, Any]:
        """The JSON reply."""
        reply: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            reply["parameters"] = self.parameters
        return reply


_file_ids = itertools.count(1)


def parameters(request: BaseHTTPRequestHandler, query: str) -> dict[str, Any]:
    """A call's parameters, from its query string and body (JSON, a form, or multipart with
    uploaded files, which become ``{"filename": ..., "size": ...}``)."""
    params: dict[str, Any] = dict(parse_qsl(query))
    length = int(request.headers.get("Content-Length") or 0)
    body = request.rfile.read(length) if length else b""
    content_type = request.headers.get("Content-Type", "")
    if not body:
        return params
    if content_type.startswith("application/json"):
        params.update(json.loads(body))
    elif content_type.startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(body.decode()))
    elif content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            if filename is not None:
                params[str(name)] = {"filename": filename, "size": len(payload)}
            else:
                params[str(name)] = payload.decode()
    return params


def _int(params: dict[str, Any], name: str) -> int:
    try:
        return int(params[name])
    except (KeyError, TypeError, ValueError):
        raise APIError(400, f"Bad Request: {name} is missing or not a number") from None


def _chat_id(api: FakeBotAPI, params: dict[str, Any]) -> int:
    """The chat a call names: its id, or a channel's @username (given an id of its own)."""
    value = params.get("chat_id")
    if isinstance(value, str) and value.startswith("@"):
        with api._changed:
            known = api._usernames.setdefault(value, -1_000_000_000_000 - len(api._usernames))
            api._chats.setdefault(
                known, {"id": known, "type": "channel", "title": value[1:], "username": value[1:]}
            )
        return known
    return _int(params, "chat_id")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _buttons(params: dict[str, Any]) -> list[list[str]]:
    markup = _json(params.get("reply_markup")) or {}
    rows = markup.get("inline_keyboard") or markup.get("keyboard") or []
    return [[str(b.get("text", b) if isinstance(b, dict) else b) for b in row] for row in rows]


def _chat(api: FakeBotAPI, chat_id: int) -> dict[str, Any]:
    with api._changed:
        return api._chats.setdefault(
            chat_id, {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        )


def _sent(
    api: FakeBotAPI,
    method: str,
    kind: str,
    params: dict[str, Any],
    *,
    shown: str | None = None,
    **content: Any,
) -> Any:
    """Perform a send: a new bot message in the chat with ``content``, recorded and in the
    transcript (as ``shown``, else its text or caption)."""
    # Every parameter is read before anything is recorded or kept: a malformed one is a 400
    # for a call that did not happen.
    chat_id = _chat_id(api, params)
    markup = _json(params.get("reply_markup"))
    if markup is not None and not isinstance(markup, dict):
        raise APIError(400, "Bad Request: reply_markup must be a JSON object")
    replied = _replied(api, chat_id, params)
    buttons = _buttons(params)
    message: dict[str, Any] = {
        "message_id": next(api._message_ids),
        "from": api.bot_user,
        "chat": _chat(api, chat_id),
        "date": int(time.time()),
        **content,
    }
    if markup and "inline_keyboard" in markup:
        message["reply_markup"] = markup
    if replied is not None:
        message["reply_to_message"] = replied
    api.record(method, params)
    with api._changed:
        api._messages[(chat_id, message["message_id"])] = message
    text = shown if shown is not None else content.get("text") or content.get("caption") or ""
    api._log(Event(chat_id, None, kind, text, message["message_id"], params, buttons))
    return message


def _replied(api: FakeBotAPI, chat_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
    """The message a send replies to (reply_to_message_id, or reply_parameters)."""
    reply = _json(params.get("reply_parameters")) or {}
    message_id = params.get("reply_to_message_id") or reply.get("message_id")
    if message_id is None:
        return None
    with api._changed:
        return api._messages.get((chat_id, int(message_id)))


def _send_message(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    return _sent(api, "sendMessage", "send", params, text=str(params.get("text", "")))


def _file(params: dict[str, Any], name: str) -> str:
    """The file_id of what was sent as ``name``: the one given, or a new one for an upload."""
    value = params.get(name)
    if isinstance(value, str) and value:
        return value
    return f"{name}-{next(_file_ids)}"


def _media(method: str, field: str, extra: dict[str, Any]) -> Action:
    """The action of a method sending one file (sendPhoto, sendDocument...)."""

    def send(api: FakeBotAPI, params: dict[str, Any]) -> Any:
        file_id = _file(params, field)
        described = {"file_id": file_id, "file_unique_id": file_id, **extra}
        content: dict[str, Any] = {field: [described] if field == "photo" else described}
        if params.get("caption"):
            content["caption"] = str(params["caption"])
        return _sent(api, method, field, params, **content)

    return send


def _send_media_group(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    media = _json(params.get("media")) or []
    if not 2 <= len(media) <= 10:
        raise APIError(400, "Bad Request: a media group has 2 to 10 items")
    chat_id = _chat_id(api, params)
    api.record("sendMediaGroup", params)
    messages = []
    group = str(next(_file_ids))
    for item in media:
        kind = str(item.get("type", "photo"))
        file_id = str(item.get("media", "")) or f"{kind}-{next(_file_ids)}"
        if file_id.startswith("attach://"):
            file_id = f"{kind}-{next(_file_ids)}"
        described = {"file_id": file_id, "file_unique_id": file_id, **_EXTRA.get(kind, {})}
        message: dict[str, Any] = {
            "message_id": next(api._message_ids),
            "from": api.bot_user,
            "chat": _chat(api, chat_id),
            "date": int(time.time()),
            "media_group_id": group,
            kind: [described] if kind == "photo" else described,
        }
        if item.get("caption"):
            message["caption"] = str(item["caption"])
        with api._changed:
            api._messages[(chat_id, message["message_id"])] = message
        messages.append(message)
    captions = ", ".join(m.get("caption", "") for m in messages if m.get("caption"))
    kinds = "+".join(str(item.get("type", "photo")) for item in media)
    api._log(Event(chat_id, None, f"media group ({kinds})", captions, None, params))
    return messages


def _send_location(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    where = {"latitude": float(params["latitude"]), "longitude": float(params["longitude"])}
    shown = f"{where['latitude']}, {where['longitude']}"
    return _sent(api, "sendLocation", "location", params, shown=shown, location=where)


def _send_contact(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    contact = {"phone_number": str(params["phone_number"]), "first_name": str(params["first_name"])}
    shown = f"{contact['first_name']} {contact['phone_number']}"
    return _sent(api, "sendContact", "contact", params, shown=shown, contact=contact)


def _existing(api: FakeBotAPI, params: dict[str, Any], verb: str) -> dict[str, Any]:
    key = (_chat_id(api, params), _int(params, "message_id"))
    with api._changed:
        message = api._messages.get(key)
    if message is None:
        raise APIError(400, f"Bad Request: message to {verb} not found")
    return message


def _edit(field: str, method: str, kind: str) -> Action:
    """The action of editMessageText, editMessageCaption or editMessageReplyMarkup."""

    def edit(api: FakeBotAPI, params: dict[str, Any]) -> Any:
        if "inline_message_id" in params:
            api.record(method, params)
            return True
        message = _existing(api, params, "edit")
        if message.get("from", {}).get("id") != api.bot_user["id"]:
            raise APIError(400, "Bad Request: message can't be edited")
        if field == "text" and "text" not in message:
            raise APIError(400, "Bad Request: there is no text in the message to edit")
        changed = dict(message)
        if field:
            changed[field] = str(params.get(field, ""))
        markup = _json(params.get("reply_markup"))
        if markup:
            changed["reply_markup"] = markup
        else:
            changed.pop("reply_markup", None)
        if changed == message:
            raise APIError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message",
            )
        api.record(method, params)
        changed["edit_date"] = int(time.time())
        with api._changed:
            api._messages[(message["chat"]["id"], message["message_id"])] = changed
        text = str(changed.get(field, "")) if field else ""
        chat_id = int(message["chat"]["id"])
        api._log(Event(chat_id, None, kind, text, message["message_id"], params, _buttons(params)))
        return changed

    return edit


def _delete_message(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    message = _existing(api, params, "delete")
    api.record("deleteMessage", params)
    chat_id = int(message["chat"]["id"])
    with api._changed:
        del api._messages[(chat_id, message["message_id"])]
    api._log(Event(chat_id, None, "delete", "", message["message_id"], params))
    return True


def _answer(kind: str, method: str) -> Action:
    """The action of answerCallbackQuery or answerInlineQuery: one answer per query."""
    id_name = f"{kind}_query_id"

    def answer(api: FakeBotAPI, params: dict[str, Any]) -> Any:
        query_id = str(params.get(id_name, ""))
        with api._changed:
            query = api._queries.get(query_id)
            if query is None or query.kind != kind or query.answer is not None:
                raise APIError(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID "
                    "is invalid",
                )
            query.answer = params
        api.record(method, params)
        if query.chat_id is not None:
            logged = {**params, "user_id": query.user_id}
            text = str(params.get("text", ""))
            api._log(Event(query.chat_id, None, "answer", text, None, logged))
        return True

    return answer


def _send_chat_action(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    chat_id = _chat_id(api, params)
    api.record("sendChatAction", params)
    action = str(params.get("action", "")).replace("_", " ")
    api._log(Event(chat_id, None, "action", action, None, params))
    return True


def _get_chat(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    chat_id = _chat_id(api, params)
    api.record("getChat", params)
    with api._changed:
        chat = api._chats.get(chat_id)
    if chat is None:
        raise APIError(400, "Bad Request: chat not found")
    return {**chat, "accent_color_id": 0, "max_reaction_count": 11}


def _get_chat_member(api: FakeBotAPI, params: dict[str, Any]) -> Any:
    chat_id, user_id = _chat_id(api, params), _int(params, "user_id")
    api.record("getChatMember", params)
    with api._changed:
        user = api.bot_user if user_id == api.bot_user["id"] else api._users.get(user_id)
        status = api.member_status.get((chat_id, user_id), "member")
    if user is None:
        raise APIError(400, "Bad Request: user not found")
    return {"status": status, "user": user, **_MEMBER_FIELDS.get(status, {})}


def _acknowledged(method: str) -> Action:
    """An action that records a call of ``method`` and answers ``true``."""

    def action(api: FakeBotAPI, params: dict[str, Any]) -> Any:
        api.record(method, params)
        return True

    return action


# What getChatMember answers for each status, besides the status and the user: telebot
# requires every field of the status's type.
_ADMIN_RIGHTS = [
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
]
_MEMBER_RIGHTS = [
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
]
_MEMBER_FIELDS: dict[str, dict[str, Any]] = {
    "creator": {"is_anonymous": False},
    "administrator": {
        "can_be_edited": False,
        "is_anonymous": False,
        "can_manage_chat": True,
        **dict.fromkeys(_ADMIN_RIGHTS, False),
    },
    "restricted": {"is_member": True, "until_date": 0, **dict.fromkeys(_MEMBER_RIGHTS, False)},
    "kicked": {"until_date": 0},
}

_EXTRA: dict[str, dict[str, Any]] = {
    "photo": {"width": 90, "height": 90},
    "document": {},
    "video": {"width": 640, "height": 360, "duration": 1},
    "audio": {"duration": 1},
    "voice": {"duration": 1},
    "animation": {"width": 320, "height": 240, "duration": 1},
    "sticker": {
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    },
    "video_note": {"length": 240, "duration": 1},
}

# Bot API method names are case-insensitive.
ACTIONS: dict[str, Action] = {
    "sendmessage": _send_message,
    **{
        f"send{field.replace('_', '')}": _media(
            "send" + field.title().replace("_", ""), field, extra
        )
        for field, extra in _EXTRA.items()
    },
    "sendmediagroup": _send_media_group,
    "sendlocation": _send_location,
    "sendcontact": _send_contact,
    "editmessagetext": _edit("text", "editMessageText", "edit"),
    "editmessagecaption": _edit("caption", "editMessageCaption", "edit"),
    "editmessagereplymarkup": _edit("", "editMessageReplyMarkup", "markup"),
    "deletemessage": _delete_message,
    "answercallbackquery": _answer("callback", "answerCallbackQuery"),
    "answerinlinequery": _answer("inline", "answerInlineQuery"),
    "sendchataction": _send_chat_action,
    "getchat": _get_chat,
    "getchatmember": _get_chat_member,
    **{
        method.lower(): _acknowledged(method)
        for method in (
            "setMyCommands",
            "deleteMyCommands",
            "setChatMenuButton",
            "pinChatMessage",
            "unpinChatMessage",
            "setMessageReaction",
        )
    },
}

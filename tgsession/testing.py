"""A loopback stand-in of the Telegram Bot API, for testing telebot bots offline.

It serves ``getMe``, ``getUpdates`` (long polling with ``offset``), ``sendMessage``,
``editMessageText``, ``answerCallbackQuery``, ``sendChatAction``, ``deleteWebhook`` and
``getWebhookInfo`` on 127.0.0.1, records every call the bot makes, and lets a test push
updates as if users had sent them::

    with FakeBotAPI() as api:
        bot = telebot.TeleBot(api.token, threaded=True, num_threads=4)
        ...  # register handlers
        api.install()  # point telebot.apihelper.API_URL at the stand-in
        threading.Thread(target=bot.infinity_polling, kwargs={"long_polling_timeout": 1}).start()
        api.push_message(user_id=1, text="/count")
        print(api.wait_for_calls(1)[0]["text"])
        bot.stop_polling()

A local ``telegram-bot-api`` server is the real thing; this is for tests that must not depend on
the network or on any server but the test's own.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import telebot.apihelper

__all__ = ["FakeBotAPI"]

_LONG_POLL_CAP = 5.0  # longest getUpdates wait, so that tests never block for long


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A bot that stops or is killed drops its connections, often in a long poll: normal.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeBotAPI:
    """A Bot API stand-in on 127.0.0.1 that queues updates and records what the bot sends."""

    token = "123456789:TEST-token-for-the-loopback-stand-in"

    def __init__(self, *, bot_id: int = 123456789, bot_username: str = "tgsession_test_bot"):
        """Prepare the stand-in; :meth:`start` (or ``with``) serves it on a free port."""
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Test bot",
            "username": bot_username,
        }
        self._updates: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._saved_api_url: str | None = None
        self._installed = False
        self._closing = False

    # -- serving --------------------------------------------------------------------------

    def start(self) -> FakeBotAPI:
        """Serve on 127.0.0.1 on a free port, in a background thread."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as telebot's requests session expects

            def do_GET(self) -> None:
                api._handle(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the stand-in records calls; the default logs every request to stderr

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="FakeBotAPI", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving, wake every pending getUpdates, and undo :meth:`install`."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._installed:
            telebot.apihelper.API_URL = self._saved_api_url  # type: ignore[assignment]
            self._installed = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The stand-in's address, as for a local Bot API server: ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        """The value for ``telebot.apihelper.API_URL`` that points telebot here."""
        return self.base_url + "/bot{0}/{1}"

    def install(self) -> None:
        """Point telebot at the stand-in (``telebot.apihelper.API_URL``) until :meth:`stop`."""
        if not self._installed:
            self._saved_api_url = telebot.apihelper.API_URL
            self._installed = True
        telebot.apihelper.API_URL = self.api_url  # type: ignore[assignment]

    # -- updates in -----------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (an ``update_id`` is added) for the bot's next getUpdates."""
        with self._changed:
            update = {"update_id": next(self._update_ids), **update}
            self._updates.append(update)
            self._changed.notify_all()
        return update

    def push_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "User",
    ) -> dict[str, Any]:
        """Queue a text message from ``user_id``, in its private chat unless ``chat_id`` is set."""
        return self.push_update(
            {"message": self.message(user_id, text, chat_id, chat_type, first_name)}
        )

    def push_callback(
        self,
        user_id: int,
        data: str,
        *,
        chat_id: int | None = None,
        message_text: str = "buttons",
        first_name: str = "User",
    ) -> dict[str, Any]:
        """Queue a button press by ``user_id`` on a bot message in its chat."""
        message = self.message(self.bot_user["id"], message_text, chat_id or user_id, None, "Bot")
        message["from"] = self.bot_user
        callback = {
            "id": str(next(self._message_ids)),
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
            "chat_instance": str(chat_id or user_id),
            "data": data,
            "message": message,
        }
        return self.push_update({"callback_query": callback})

    def message(
        self,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "User",
    ) -> dict[str, Any]:
        """Return the JSON of a text message from ``user_id`` (not queued)."""
        chat_id = user_id if chat_id is None else chat_id
        chat_type = chat_type or ("private" if chat_id == user_id else "group")
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type != "private":
            chat["title"] = f"Chat {chat_id}"
        return {
            "message_id": next(self._message_ids),
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }

    @property
    def pending_updates(self) -> int:
        """How many queued updates the bot has not confirmed (by a later offset) yet."""
        with self._changed:
            return len(self._updates)

    # -- calls out ------------------------------------------------------------------------

    def calls(self, method: str | None = "sendMessage") -> list[dict[str, Any]]:
        """Return the parameters of every call of ``method`` so far (of all calls if None)."""
        with self._changed:
            return [c for c in self._calls if method is None or c["method"] == method]

    def wait_for_calls(
        self, count: int, method: str | None = "sendMessage", timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Wait for ``count`` calls of ``method``; return them, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self._calls if method is None or c["method"] == method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} {method or 'API'} calls after {timeout} s"
                    )
                self._changed.wait(left)

    # -- the HTTP side --------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        params: dict[str, Any] = dict(parse_qsl(url.query))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        content_type = request.headers.get("Content-Type", "")
        if body and content_type.startswith("application/json"):
            params.update(json.loads(body))
        elif body and content_type.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode()))
        if len(parts) != 2 or parts[0] != "bot" + self.token:
            self._reply(
                request, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            )
            return
        method = parts[1]
        action = _METHODS.get(method.lower())
        if action is None:
            description = f"Not Found: method {method} is not served by the stand-in"
            self._reply(request, 404, {"ok": False, "error_code": 404, "description": description})
            return
        self._reply(request, 200, {"ok": True, "result": action(self, params)})

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _record(self, method: str, params: dict[str, Any]) -> None:
        with self._changed:
            self._calls.append({"method": method, **params})
            self._changed.notify_all()

    def _get_me(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    def _get_updates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", 100))
        deadline = time.monotonic() + min(float(params.get("timeout", 0)), _LONG_POLL_CAP)
        with self._changed:
            # An offset confirms every update before it, as on the real Bot API; a negative
            # one keeps the last -offset updates and forgets the others.
            if offset < 0:
                self._updates = self._updates[offset:]
            else:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._updates[:limit]

    def _sent_message(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._record(method, params)
        chat_id = int(params["chat_id"])
        return {
            "message_id": int(params.get("message_id") or next(self._message_ids)),
            "from": self.bot_user,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
            "text": params.get("text", ""),
        }

    def _send_message(self, params: dict[str, Any]) -> Any:
        return self._sent_message("sendMessage", params)

    def _edit_message_text(self, params: dict[str, Any]) -> Any:
        if "inline_message_id" in params:
            self._record("editMessageText", params)
            return True
        return self._sent_message("editMessageText", params)


def _acknowledged(method: str) -> Callable[[FakeBotAPI, dict[str, Any]], Any]:
    """An action that records a call of ``method`` and answers ``true``."""

    def action(api: FakeBotAPI, params: dict[str, Any]) -> Any:
        api._record(method, params)
        return True

    return action


# Bot API method names are case-insensitive.
_METHODS: dict[str, Callable[[FakeBotAPI, dict[str, Any]], Any]] = {
    "getme": FakeBotAPI._get_me,
    "getupdates": FakeBotAPI._get_updates,
    "sendmessage": FakeBotAPI._send_message,
    "editmessagetext": FakeBotAPI._edit_message_text,
    "answercallbackquery": _acknowledged("answerCallbackQuery"),
    "sendchataction": _acknowledged("sendChatAction"),
    "deletewebhook": _acknowledged("deleteWebhook"),
    "getwebhookinfo": lambda api, params: {"url": "", "pending_update_count": api.pending_updates},
}

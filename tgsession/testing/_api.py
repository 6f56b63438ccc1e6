"""FakeBotAPI: a Bot API stand-in on 127.0.0.1 that telebot talks to as if it were Telegram.

It queues the updates a test pushes (served by ``getUpdates``, or posted to the bot's webhook
once it set one), answers the methods bots commonly call as Telegram would (see
``_methods.py``), records every call with its parameters, keeps a transcript per chat, and
serves the faults a test injects: ``429 Too Many Requests`` with ``retry_after``, a 5xx, a
slow reply.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any, Callable
from urllib.parse import urlsplit

import telebot.apihelper

from . import _methods
from ._methods import APIError
from ._transcript import Event, render

_LONG_POLL_CAP = 5.0  # longest getUpdates wait, so that tests never block for long
_DELIVERY_ATTEMPTS = 5  # posts of one update to a webhook that fails, before it is dropped

# Any well-formed token is accepted, so that a bot built with its own token constant runs
# against the stand-in unchanged (and never reaches Telegram: the stand-in is all it talks to).
_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


logger = logging.getLogger("tgsession")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A bot that stops or is killed drops its connections, often in a long poll: normal.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class _Fault:
    method: str | None  # lower-case method name; None: any method but getUpdates
    status: int | None
    retry_after: int | None
    delay: float
    times: int


@dataclass
class Query:
    """A callback query (a button press) or an inline query that a test pushed, and the
    bot's answer to it: the parameters of its answerCallbackQuery or answerInlineQuery, None
    until it answers."""

    query_id: str
    kind: str  # "callback" or "inline"
    user_id: int
    chat_id: int | None  # the chat of the pressed message; None for an inline query
    data: str  # the button's data, or the inline query's text
    answer: dict[str, Any] | None = None


class FakeBotAPI:
    """A Bot API stand-in on 127.0.0.1 that queues updates and records what the bot does.

        with FakeBotAPI() as api:
            api.install()  # point telebot at it
            with run_bot(api, bot) as runner:
                api.push_message(user_id=1, text="/count")
                runner.wait_idle()  # raises HandlerError if a handler raised
                assert api.transcript(1) == ["user 1: /count", "bot: count: 1"]

    A bot polled by other means than run_bot is waited for by silence (see wait_idle).
    """

    token = "123456789:TEST-token-for-the-loopback-stand-in"  # any id:secret token is served

    def __init__(self, *, bot_id: int = 123456789, bot_username: str = "tgsession_test_bot"):
        """Prepare the stand-in; `start` (or ``with``) serves it on a free port."""
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Test bot",
            "username": bot_username,
        }
        self._updates: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._events: list[Event] = []
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, id): message
        self._chats: dict[int, dict[str, Any]] = {}
        self._usernames: dict[str, int] = {}  # a channel's @username: the id it was given
        self._users: dict[int, dict[str, Any]] = {}
        self._queries: dict[str, Query] = {}
        self.member_status: dict[tuple[int, int], str] = {}  # (chat, user): getChatMember's
        self._faults: list[_Fault] = []
        self.faults_served: list[tuple[str, int | None, float]] = []  # method, status, delay
        self._changed = threading.Condition()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._busy = 0  # requests being answered, long polls aside
        self._wakes = 0  # how many times wake_pollers() ended the long polls under way
        self._polling = 0  # getUpdates calls under way: Telegram serves one at a time
        self.polling_errors: list[Exception] = []  # what run_bot's polling was refused
        self.dropped_updates: list[dict[str, Any]] = []  # a webhook failed them every time
        self._last_activity = time.monotonic()
        self._probes: list[Callable[[], int]] = []  # work a runner sees the bot doing
        self._webhook: dict[str, Any] | None = None
        self._delivering = 0  # webhook posts under way
        self._delivery: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None
        self._saved_api_url: str | None = None
        self._installed = False
        self._closing = False

    # -- serving ----------------------------------------------------------------------------

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
        """Stop serving, wake every pending getUpdates, and undo `install`."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._delivery is not None:
            self._delivery.join(10)
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
        """Point telebot at the stand-in (``telebot.apihelper.API_URL``) until `stop`."""
        if not self._installed:
            self._saved_api_url = telebot.apihelper.API_URL
            self._installed = True
        telebot.apihelper.API_URL = self.api_url  # type: ignore[assignment]

    # -- updates in -------------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (an ``update_id`` is added) for the bot: served by its next
        getUpdates, or posted to its webhook if it set one."""
        with self._changed:
            update = {"update_id": next(self._update_ids), **update}
            self._updates.append(update)
            self._last_activity = time.monotonic()
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
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """Queue a text message from ``user_id``, in its private chat unless ``chat_id`` is set
        (a negative id is a group); ``reply_to`` is the id of the message it replies to."""
        message = self.message(user_id, text, chat_id, chat_type, first_name)
        if reply_to is not None:
            replied = self._messages.get((message["chat"]["id"], reply_to))
            if replied is None:
                raise ValueError(f"no message {reply_to} in chat {message['chat']['id']}")
            message["reply_to_message"] = replied
        self._log(Event(message["chat"]["id"], user_id, "message", text, message["message_id"]))
        return self.push_update({"message": message})

    def push_callback(
        self,
        user_id: int,
        data: str,
        *,
        chat_id: int | None = None,
        message_id: int | None = None,
        message_text: str = "buttons",
        first_name: str = "User",
    ) -> dict[str, Any]:
        """Queue a press by ``user_id`` of the button with ``data``, on the bot message
        ``message_id`` of the chat (a new one saying ``message_text`` if not given)."""
        chat = user_id if chat_id is None else chat_id
        message = None if message_id is None else self._messages.get((chat, message_id))
        if message_id is not None and message is None:
            raise ValueError(f"no message {message_id} in chat {chat}")
        if message is None:
            message = self.message(self.bot_user["id"], message_text, chat, None, "Bot")
            message["from"] = self.bot_user
        query_id = str(next(self._query_ids))
        callback = {
            "id": query_id,
            "from": self._user(user_id, first_name),
            "chat_instance": str(chat),
            "data": data,
            "message": message,
        }
        with self._changed:
            self._queries[query_id] = Query(query_id, "callback", user_id, chat, data)
        self._log(Event(chat, user_id, "press", data, message["message_id"]))
        return self.push_update({"callback_query": callback})

    def push_inline_query(
        self, user_id: int, query: str, *, first_name: str = "User"
    ) -> dict[str, Any]:
        """Queue an inline query (``@bot query``) typed by ``user_id``."""
        query_id = str(next(self._query_ids))
        inline = {"id": query_id, "from": self._user(user_id, first_name), "query": query}
        inline["offset"] = ""
        with self._changed:
            self._queries[query_id] = Query(query_id, "inline", user_id, None, query)
        return self.push_update({"inline_query": inline})

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
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = f"Chat {chat_id}"
        sender = (
            self.bot_user if user_id == self.bot_user["id"] else self._user(user_id, first_name)
        )
        message_id = next(self._message_ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": sender,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        entity = _command_entity(text)
        if entity:
            message["entities"] = [entity]
        with self._changed:
            self._chats.setdefault(chat_id, chat)
            self._messages[(chat_id, message_id)] = message
        return message

    def _user(self, user_id: int, first_name: str) -> dict[str, Any]:
        with self._changed:
            return self._users.setdefault(
                user_id, {"id": user_id, "is_bot": False, "first_name": first_name}
            )

    @property
    def pending_updates(self) -> int:
        """How many queued updates the bot has not confirmed (by a later offset, or by
        answering the webhook post) yet."""
        with self._changed:
            return len(self._updates)

    # -- calls out --------------------------------------------------------------------------

    def calls(self, method: str | None = "sendMessage") -> list[dict[str, Any]]:
        """Return the parameters of every call of ``method`` so far (of all calls if None),
        as the bot sent them, with ``"method"`` added."""
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

    def transcript(self, chat_id: int) -> list[str]:
        """What happened in the chat, in order, a line each: what users sent (``user 1:
        /count``), pressed (``user 1 pressed 'yes'``) and what the bot did (``bot: count: 1``,
        ``bot edited #3: ...``, ``bot deleted #3``, ``bot answered user 1: 'Saved'``...)."""
        with self._changed:
            return [render(event) for event in self._events if event.chat_id == chat_id]

    def events(self, chat_id: int | None = None) -> list[Event]:
        """The transcript's events (of one chat, or all), with their parameters."""
        with self._changed:
            return [e for e in self._events if chat_id is None or e.chat_id == chat_id]

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The messages of the chat as they stand now (edits applied, deleted ones gone)."""
        with self._changed:
            return [m for (chat, _), m in sorted(self._messages.items()) if chat == chat_id]

    def query(self, update_or_id: dict[str, Any] | str) -> Query:
        """The query that `push_callback` or `push_inline_query` queued (give what
        it returned, or the query id), with the bot's answer to that query and no other."""
        if isinstance(update_or_id, dict):
            pushed = update_or_id.get("callback_query") or update_or_id.get("inline_query")
            update_or_id = str((pushed or {}).get("id"))
        with self._changed:
            return self._queries[update_or_id]

    # -- faults -----------------------------------------------------------------------------

    def inject_fault(
        self,
        method: str | None = None,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (any but getUpdates if None) as
        Telegram does under load: ``status=429`` with ``retry_after`` seconds ("Too Many
        Requests"), another error status (502: "Bad Gateway"), and/or only after ``delay``
        seconds. A refused call is not performed, recorded, nor in the transcript."""
        if status is None and not delay:
            raise ValueError("give a status, a delay, or both")
        known = {**_ACTIONS, **_methods.ACTIONS}
        if method is not None and method.lower() not in known:
            raise ValueError(
                f"the stand-in serves no method {method!r}: give a Bot API method name "
                "(sendMessage, getUpdates...), or None for any method but getUpdates"
            )
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        with self._changed:
            self._faults.append(
                _Fault(method and method.lower(), status, retry_after, delay, times)
            )

    def _fault_for(self, method: str) -> _Fault | None:
        with self._changed:
            for fault in self._faults:
                if fault.method == method or (fault.method is None and method != "getupdates"):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- idleness ---------------------------------------------------------------------------

    def add_probe(self, probe: Callable[[], int]) -> None:
        """Count ``probe()`` (how much work a runner sees the bot doing) in `wait_idle`."""
        self._probes.append(probe)

    def remove_probe(self, probe: Callable[[], int]) -> None:
        self._probes.remove(probe)

    def _quiet(self) -> bool:
        return (
            not self._updates
            and not self._busy
            and not self._delivering
            and not any(probe() for probe in self._probes)
        )

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> None:
        """Wait until the bot has taken every pushed update and is doing nothing: no update
        pending, no call under way, no handler running (as far as a runner can see: with
        `run_bot`, handlers exactly; a bot polled by other means, by ``settle`` seconds
        of silence). Raise TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                if self._quiet() and now - self._last_activity >= settle:
                    return
                if now >= deadline:
                    working = sum(probe() for probe in self._probes)
                    raise TimeoutError(
                        f"the bot was not idle after {timeout} s: {len(self._updates)} updates "
                        f"pending, {self._busy} calls under way, {working} handlers running"
                    )
                self._changed.wait(min(settle, deadline - now))

    def note_polling_error(self, error: Exception) -> None:
        """Keep an error that a runner's getUpdates met (a fault, a conflict)."""
        with self._changed:
            self.polling_errors.append(error)

    def wake_pollers(self) -> None:
        """End the getUpdates long polls under way now, with no updates (a bot that is
        stopping then stops at once, rather than at the end of its poll)."""
        with self._changed:
            self._wakes += 1
            self._changed.notify_all()

    # -- webhook ----------------------------------------------------------------------------

    def _set_webhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return self._delete_webhook(params)
        host = urlsplit(url).hostname or ""
        try:
            loopback = ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise APIError(400, "Bad Request: the stand-in posts updates to loopback URLs only")
        with self._changed:
            self._webhook = {"url": url, "secret_token": params.get("secret_token")}
            if self._delivery is None:
                self._delivery = threading.Thread(
                    target=self._deliver, name="FakeBotAPI-webhook", daemon=True
                )
                self._delivery.start()
            self._changed.notify_all()
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> Any:
        with self._changed:
            self._webhook = None
            if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
                self._updates.clear()
            self._changed.notify_all()
        return True

    def _webhook_info(self, params: dict[str, Any]) -> Any:
        with self._changed:
            url = "" if self._webhook is None else self._webhook["url"]
            return {
                "url": url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }

    def _deliver(self) -> None:
        """Post queued updates to the webhook, one at a time and in order, as Telegram does;
        a post that fails is retried, up to _DELIVERY_ATTEMPTS times."""
        attempts: dict[int, int] = {}
        while True:
            with self._changed:
                while not self._closing and (self._webhook is None or not self._updates):
                    self._changed.wait()
                if self._closing:
                    return
                update, hook = self._updates[0], dict(self._webhook)  # type: ignore[arg-type]
                self._delivering += 1
            delivered = False
            try:
                delivered = _post(hook, update)
            finally:
                with self._changed:
                    self._delivering -= 1
                    attempts[update["update_id"]] = attempts.get(update["update_id"], 0) + 1
                    if self._updates and self._updates[0] is update:
                        if delivered:
                            self._updates.pop(0)
                        elif attempts[update["update_id"]] >= _DELIVERY_ATTEMPTS:
                            self.dropped_updates.append(self._updates.pop(0))
                            logger.warning(
                                "the webhook failed update %s %d times: it is dropped",
                                update["update_id"],
                                _DELIVERY_ATTEMPTS,
                            )
                    self._last_activity = time.monotonic()
                    self._changed.notify_all()
            if not delivered:
                time.sleep(0.1)

    # -- the HTTP side ----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        params = _methods.parameters(request, url.query)
        if len(parts) != 2 or not _TOKEN.fullmatch(parts[0]):
            self._reply(request, 401, APIError(401, "Unauthorized").payload())
            return
        method = parts[1]
        action = _ACTIONS.get(method.lower()) or _methods.ACTIONS.get(method.lower())
        if action is None:
            description = f"Not Found: method {method} is not served by the stand-in"
            self._reply(request, 404, APIError(404, description).payload())
            return
        polling = method.lower() == "getupdates"
        if not polling:
            with self._changed:
                self._busy += 1
        try:
            fault = self._fault_for(method.lower())
            if fault is not None:
                self.faults_served.append((method, fault.status, fault.delay))
                time.sleep(fault.delay)
                if fault.status is not None:
                    error = _fault_error(fault)
                    self._reply(request, fault.status, error.payload())
                    return
            try:
                result = action(self, params)
            except APIError as error:
                self._reply(request, error.status, error.payload())
                return
            except (KeyError, ValueError, TypeError, AttributeError) as error:
                # A parameter missing or malformed: Telegram says so, it does not hang up.
                what = f"Bad Request: parameters of {method} are missing or malformed ({error!r})"
                self._reply(request, 400, APIError(400, what).payload())
                return
            self._reply(request, 200, {"ok": True, "result": result})
        finally:
            if not polling:
                with self._changed:
                    self._busy -= 1
                    self._last_activity = time.monotonic()
                    self._changed.notify_all()

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def record(self, method: str, params: dict[str, Any]) -> None:
        """Record a call of ``method`` that was performed (for `calls`)."""
        with self._changed:
            self._calls.append({"method": method, **params})
            self._changed.notify_all()

    def _log(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def _get_me(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    def _get_updates(self, params: dict[str, Any]) -> Any:
        with self._changed:
            if self._webhook is not None:
                raise APIError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use "
                    "deleteWebhook to delete the webhook first",
                )
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", 100))
        deadline = time.monotonic() + min(float(params.get("timeout", 0)), _LONG_POLL_CAP)
        with self._changed:
            if self._polling:
                raise APIError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            self._polling += 1
        try:
            return self._updates_after(offset, limit, deadline)
        finally:
            with self._changed:
                self._polling -= 1

    def confirm(self, offset: int) -> None:
        """Forget the queued updates before ``offset``, as a ``getUpdates`` with that offset
        does on the real Bot API (a negative one keeps the last ``-offset`` updates)."""
        with self._changed:
            if offset < 0:
                self._updates = self._updates[offset:]
            else:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._changed.notify_all()

    def _updates_after(self, offset: int, limit: int, deadline: float) -> list[dict[str, Any]]:
        self.confirm(offset)
        with self._changed:
            woken = self._wakes
            while not self._updates and not self._closing and self._wakes == woken:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._updates[:limit]


def _post(hook: dict[str, Any], update: dict[str, Any]) -> bool:
    """Post ``update`` to the webhook; True if it answered 2xx."""
    headers = {"Content-Type": "application/json"}
    if hook.get("secret_token"):
        headers["X-Telegram-Bot-Api-Secret-Token"] = str(hook["secret_token"])
    request = urllib.request.Request(
        hook["url"], data=json.dumps(update).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def _fault_error(fault: _Fault) -> APIError:
    status = fault.status or 500
    if status == 429:
        retry_after = fault.retry_after or 1
        return APIError(
            429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
        )
    names = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    return APIError(status, names.get(status, "Internal Server Error"))


def _command_entity(text: str) -> dict[str, Any] | None:
    """The bot_command entity of a text that starts with a command, as Telegram adds it."""
    if not text.startswith("/"):
        return None
    return {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}


# Methods about the stand-in itself; those of a bot's work are in _methods.ACTIONS.
_ACTIONS: dict[str, Callable[[FakeBotAPI, dict[str, Any]], Any]] = {
    "getme": FakeBotAPI._get_me,
    "getupdates": FakeBotAPI._get_updates,
    "setwebhook": FakeBotAPI._set_webhook,
    "deletewebhook": FakeBotAPI._delete_webhook,
    "getwebhookinfo": FakeBotAPI._webhook_info,
}

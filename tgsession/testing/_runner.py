"""Running a telebot bot against FakeBotAPI: by polling, or through a webhook server of its own.

The runner counts the bot's work as it happens (each dispatch of updates, each handler task
given to telebot's worker threads), so that ``FakeBotAPI.wait_idle`` knows when handlers are
done rather than guessing from silence, and it raises a handler's exception in the test.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import telebot

from ._api import FakeBotAPI


class HandlerError(AssertionError):
    """A handler of the bot under test raised: its exception is the cause."""


class BotRunner:
    """A bot running against a stand-in until :meth:`stop`; see :func:`run_bot`."""

    def __init__(self, api: FakeBotAPI, bot: telebot.TeleBot, *, webhook: bool = False) -> None:
        self.api, self.bot, self.webhook = api, bot, webhook
        self.errors: list[BaseException] = []
        self._reported = 0
        self._work = 0
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None
        self._restore: list[Callable[[], None]] = []

    # -- counting the bot's work ------------------------------------------------------------

    def _tracked(self, task: Callable[..., Any]) -> Callable[..., Any]:
        """``task``, counted as work from now until it returns, its exception kept."""
        with self._guard:
            self._work += 1

        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return task(*args, **kwargs)
            except BaseException as error:
                self.errors.append(error)
                raise
            finally:
                with self._guard:
                    self._work -= 1

        return run

    def _busy(self) -> int:
        with self._guard:
            return self._work

    def _wrap(self, owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, wrapper(original))
        self._restore.append(lambda: setattr(owner, name, original))

    def start(self) -> BotRunner:
        """Start the bot: poll, or serve its webhook and tell the stand-in about it."""
        bot = self.bot
        self._wrap(
            bot,
            "process_new_updates",
            lambda original: lambda updates: self._tracked(original)(updates),
        )
        if bot.threaded:
            self._wrap(
                bot.worker_pool,
                "put",
                lambda original: (
                    lambda task, *args, **kwargs: original(self._tracked(task), *args, **kwargs)
                ),
            )
        self.api.add_probe(self._busy)
        if self.webhook:
            self._serve_webhook()
        else:
            self._thread = threading.Thread(
                target=bot.infinity_polling,
                kwargs={"timeout": 10, "long_polling_timeout": 1, "logger_level": None},
                name="run_bot polling",
                daemon=True,
            )
            self._thread.start()
        return self

    def _serve_webhook(self) -> None:
        bot, secret = self.bot, secrets.token_urlsafe(16)

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                # What a bot's webhook route does: check the secret, hand the update to
                # telebot, answer 200 at once (the handlers run in telebot's threads).
                if self.headers.get("X-Telegram-Bot-Api-Secret-Token") != secret:
                    self.send_response(403)
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                update = telebot.types.Update.de_json(json.loads(body))  # type: ignore[no-untyped-call]
                bot.process_new_updates([update])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="run_bot webhook", daemon=True
        ).start()
        port = self._server.server_address[1]
        bot.set_webhook(f"http://127.0.0.1:{port}/webhook", secret_token=secret)

    # -- using it ---------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the bot is idle (see FakeBotAPI.wait_idle); raise HandlerError if a
        handler raised since the last wait."""
        self.api.wait_idle(timeout)
        if len(self.errors) > self._reported:
            error = self.errors[self._reported]
            self._reported = len(self.errors)
            raise HandlerError(f"a handler raised {type(error).__name__}: {error}") from error

    def stop(self) -> None:
        """Stop polling (or serving the webhook), wait for running handlers, undo the
        wrapping. Stopping a stopped runner does nothing."""
        if not self._restore:
            return
        if self._server is not None:
            self.bot.remove_webhook()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self.bot.stop_polling()  # type: ignore[no-untyped-call]
            self.api.wake_pollers()
            self.bot.stop_bot()  # type: ignore[no-untyped-call]  # waits for running handlers
            self._thread.join(15)
            self._thread = None
        elif self.bot.threaded:
            self.bot.worker_pool.close()  # type: ignore[no-untyped-call]
        self.api.remove_probe(self._busy)
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()


def load_bot(path: str | os.PathLike[str], api: FakeBotAPI) -> telebot.TeleBot:
    """Run the bot file at ``path`` as a module (not as ``__main__``, so that its
    ``if __name__ == "__main__": bot.infinity_polling()`` does not run) with ``BOT_TOKEN``,
    ``TELEGRAM_TOKEN`` and ``TELEGRAM_API_URL`` pointing at ``api``; return its TeleBot."""
    saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
    os.environ.update(BOT_TOKEN=api.token, TELEGRAM_TOKEN=api.token, TELEGRAM_API_URL=api.base_url)
    try:
        names = runpy.run_path(str(path), run_name="__tgsession_bot__")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    api.install()  # a file that set telebot.apihelper.API_URL itself is pointed back here
    bots = [value for value in names.values() if isinstance(value, telebot.TeleBot)]
    if len(bots) != 1:
        raise ValueError(
            f"{path} defines {len(bots)} TeleBot objects at module level; run_bot needs "
            "exactly one (pass the TeleBot itself instead)"
        )
    return bots[0]


_ENVIRONMENT = ("BOT_TOKEN", "TELEGRAM_TOKEN", "TELEGRAM_API_URL")


@contextmanager
def run_bot(
    api: FakeBotAPI, bot: telebot.TeleBot | str | os.PathLike[str], *, webhook: bool = False
) -> Iterator[BotRunner]:
    """Run ``bot`` (a TeleBot, or the path of a bot file) against ``api`` for the block:
    polling, or with ``webhook=True`` through a webhook server on 127.0.0.1 that the stand-in
    posts updates to. Leaving the block stops it and waits for its running handlers."""
    api.install()
    if isinstance(bot, (str, Path)):
        bot = load_bot(bot, api)
    runner = BotRunner(api, bot, webhook=webhook).start()  # type: ignore[arg-type]
    try:
        yield runner
    finally:
        runner.stop()

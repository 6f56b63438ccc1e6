"""Running a telebot bot against FakeBotAPI: by polling, or through a webhook server of its own.

The runner counts the bot's work as it happens (each dispatch of updates, each handler task
given to telebot's worker threads), so that ``wait_idle`` knows when handlers are done rather
than guessing from silence, and raises in the test what a handler raised. It polls as telebot's
own polling does (``getUpdates``, then ``process_new_updates``), without the pause that
``infinity_polling`` takes after an error, and leaves the bot as it found it, ready to run
again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import telebot

from ..storage.disk import default_directory, forget_default_storage
from ._api import FakeBotAPI


class HandlerError(AssertionError):
    """The bot under test failed: a handler raised (its exception is the cause), or its
    polling met another bot polling the same stand-in (409 Conflict)."""


def _conflict(error: BaseException) -> bool:
    return getattr(error, "error_code", None) == 409


class BotRunner:
    """A bot running against a stand-in until `stop`; see `run_bot`."""

    def __init__(self, api: FakeBotAPI, bot: telebot.TeleBot, *, webhook: bool = False) -> None:
        self.api, self.bot, self.webhook = api, bot, webhook
        self.errors: list[BaseException] = []  # what handlers raised and nothing handled
        self.reported = 0  # how many of them wait_idle() has raised
        self._work = 0
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0  # the next update to poll: confirmed to the stand-in at stop()
        self._server: ThreadingHTTPServer | None = None
        self._restore: list[Callable[[], None]] = []

    # -- counting the bot's work ------------------------------------------------------------

    def _tracked(self, task: Callable[..., Any]) -> Callable[..., Any]:
        """``task``, counted as work from now until it returns; what it raises is handled
        as telebot would (its exception_handler), else kept for wait_idle()."""
        with self._guard:
            self._work += 1

        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return task(*args, **kwargs)
            except Exception as error:
                handler = self.bot.exception_handler
                if handler is not None and handler.handle(error):  # type: ignore[no-untyped-call]
                    return None  # handled by the bot, as telebot would have had it
                self.errors.append(error)
                return None  # reported by wait_idle(); telebot's own reaction would stall
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
        with _running_guard:
            if id(bot) in _running:
                raise ValueError(
                    "this TeleBot is running already, in another run_bot: stop that one first "
                    "(one bot polls once, as on Telegram)"
                )
            _running.add(id(bot))
        self._restore.append(lambda: _running.discard(id(bot)))
        try:
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
            self._restore.append(lambda: self.api.remove_probe(self._busy))
            if self.webhook:
                self._serve_webhook()
            else:
                self._thread = threading.Thread(
                    target=self._poll, name="run_bot polling", daemon=True
                )
                self._thread.start()
        except BaseException:
            self.stop()  # what was set up is undone: the bot can be run again
            raise
        return self

    def _poll(self) -> None:
        """Fetch updates and dispatch them, as telebot's polling does, until stop()."""
        bot = self.bot
        # The offset is this run's own (bot.last_update_id may come from another stand-in,
        # whose update ids began at 1 too): it starts at the first update the stand-in holds,
        # since every run confirms what it handled when it stops.
        if getattr(bot, "skip_pending", False):
            # As telebot's getUpdates with offset -1 (a long poll when nothing is queued, which
            # the stand-in is spared): all but the newest queued update are dropped, per start.
            self.api.confirm(-1)
        while not self._stopping.is_set():
            try:
                updates = bot.get_updates(offset=self._offset, timeout=1, long_polling_timeout=1)
            except Exception as error:  # the stand-in refused (an injected fault, a 409)
                self.api.note_polling_error(error)
                if _conflict(error) and not any(_conflict(e) for e in self.errors):
                    self.errors.append(error)  # another bot polls too: say so, once
                self._stopping.wait(0.05)
                continue
            if updates and not self._stopping.is_set():
                bot.process_new_updates(updates)
                self._offset = updates[-1].update_id + 1

    def _serve_webhook(self) -> None:
        runner, secret = self, next(_secrets)

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                # What a bot's webhook route does: check the secret, hand the update to
                # telebot, answer. A handler that raised is reported by wait_idle().
                if self.headers.get("X-Telegram-Bot-Api-Secret-Token") != secret:
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                update = telebot.types.Update.de_json(json.loads(body))  # type: ignore[no-untyped-call]
                runner.bot.process_new_updates([update])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Hook)
        threading.Thread(
            target=self._server.serve_forever, name="run_bot webhook", daemon=True
        ).start()
        port = self._server.server_address[1]
        self.bot.set_webhook(f"http://127.0.0.1:{port}/webhook", secret_token=secret)

    # -- using it ---------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the bot is idle (see FakeBotAPI.wait_idle); raise HandlerError if a
        handler raised since the last wait."""
        self.api.wait_idle(timeout)
        self.raise_errors()

    def raise_errors(self) -> None:
        """Raise HandlerError for what handlers raised since the last report, if anything."""
        new = self.errors[self.reported :]
        self.reported += len(new)
        if new:
            more = f" (and {len(new) - 1} more, in runner.errors)" if len(new) > 1 else ""
            what = "the bot's polling was refused" if _conflict(new[0]) else "a handler raised"
            raise HandlerError(f"{what}: {type(new[0]).__name__}: {new[0]}{more}") from new[0]

    def stop(self) -> None:
        """Stop polling (or serving the webhook) and wait for the running handlers; the bot
        can be run again. Stopping a stopped runner does nothing."""
        if not self._restore:
            return
        self._stopping.set()
        if self._server is not None:
            with contextlib.suppress(Exception):  # best effort: the stand-in may refuse it
                self.bot.remove_webhook()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self.api.wake_pollers()
            self._thread.join(15)
            self._thread = None
            # The updates handled are done, as a poller that stops well tells Telegram (with
            # one more getUpdates, which telebot cannot send without a long poll): a restart
            # does not get them again.
            self.api.confirm(self._offset)
        deadline = time.monotonic() + 30
        while self._busy() and time.monotonic() < deadline:  # the handlers still running
            time.sleep(0.01)
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the library never prints; a failed post is retried by the stand-in


_secrets = (f"secret-{n}" for n in itertools.count(1))
_running: set[int] = set()  # the TeleBots that a runner runs now, by id
_running_guard = threading.Lock()
_loads = itertools.count(1)


def load_bot(path: str | os.PathLike[str], api: FakeBotAPI) -> telebot.TeleBot:
    """Import the bot file at ``path`` as a module (not as ``__main__``, so that its
    ``if __name__ == "__main__": bot.infinity_polling()`` does not run), with its directory
    on ``sys.path`` and ``BOT_TOKEN``, ``TELEGRAM_TOKEN`` and ``TELEGRAM_API_URL`` pointing at
    ``api``; return its TeleBot."""
    path = Path(os.fspath(path)).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no bot file at {path}")
    if str(path.parent) not in sys.path:  # as `python bot.py` would: its modules import
        sys.path.insert(0, str(path.parent))
    name = f"tgsession_bot_{next(_loads)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # kept: annotations and pickles find their module by name
    saved = {variable: os.environ.get(variable) for variable in _ENVIRONMENT}
    os.environ.update(BOT_TOKEN=api.token, TELEGRAM_TOKEN=api.token, TELEGRAM_API_URL=api.base_url)
    try:
        with _no_polling(path):
            spec.loader.exec_module(module)
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    api.install()  # a file that set telebot.apihelper.API_URL itself is pointed back here
    bots = [value for value in vars(module).values() if isinstance(value, telebot.TeleBot)]
    if len(bots) != 1:
        raise ValueError(
            f"{path} defines {len(bots)} TeleBot objects at module level; a bot file for "
            "run_bot defines exactly one (or pass the TeleBot itself)"
        )
    return bots[0]


_ENVIRONMENT = ("BOT_TOKEN", "TELEGRAM_TOKEN", "TELEGRAM_API_URL")


@contextmanager
def _no_polling(path: Path) -> Iterator[None]:
    """While the file loads, polling raises instead of blocking forever."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"{path.name} starts polling when it is imported: put bot.infinity_polling() "
            'under if __name__ == "__main__": so that tests can import it'
        )

    methods = ("infinity_polling", "polling")
    saved = {method: getattr(telebot.TeleBot, method) for method in methods}
    for method in methods:
        setattr(telebot.TeleBot, method, refuse)
    try:
        yield
    finally:
        for method, original in saved.items():
            setattr(telebot.TeleBot, method, original)


@contextmanager
def sessions_in(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Point the default session store (``$TGSESSION_DIR``) at ``directory`` for the block."""
    saved = os.environ.get("TGSESSION_DIR")
    there = default_directory()
    if saved == os.fspath(directory) and there in (None, os.path.realpath(directory)):
        yield  # there already (the pytest fixture's): nothing to move
        return
    os.environ["TGSESSION_DIR"] = os.fspath(directory)
    forget_default_storage()
    try:
        yield
    finally:
        forget_default_storage()
        if saved is None:
            os.environ.pop("TGSESSION_DIR", None)
        else:
            os.environ["TGSESSION_DIR"] = saved


@contextmanager
def run_bot(
    api: FakeBotAPI,
    bot: telebot.TeleBot | str | os.PathLike[str],
    *,
    webhook: bool = False,
    sessions: str | os.PathLike[str] | None = None,
) -> Iterator[BotRunner]:
    """Run ``bot`` (a TeleBot, or the path of a bot file) against ``api`` for the block:
    polling, or with ``webhook=True`` through a webhook server on 127.0.0.1 that the stand-in
    posts updates to. Sessions of managers without a storage go to ``sessions`` (default: a
    fresh directory, removed afterwards). Leaving the block stops the bot, waits for its
    running handlers, and raises HandlerError for what they raised and no wait reported."""
    api.install()
    with ExitStack() as stack:
        if sessions is None:
            sessions = stack.enter_context(tempfile.TemporaryDirectory(prefix="tgsession-test-"))
        stack.enter_context(sessions_in(sessions))
        if not isinstance(bot, telebot.TeleBot):
            bot = load_bot(bot, api)
        runner = BotRunner(api, bot, webhook=webhook).start()
        try:
            yield runner
        finally:
            runner.stop()
        runner.raise_errors()

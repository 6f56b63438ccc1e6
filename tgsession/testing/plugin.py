"""The pytest plugin of tgsession (registered by the package): fixtures for testing a bot.

- ``bot_api``: a running FakeBotAPI, with telebot pointed at it.
- ``run_bot``: ``run_bot(bot_or_path, webhook=False)`` runs a TeleBot (or a bot file) against
  ``bot_api`` until the test ends, with its default sessions in a fresh directory; it returns
  a BotRunner, whose ``wait_idle()`` raises if a handler raised.

    def test_count(bot_api, run_bot):
        bot = run_bot("examples/counter_bot.py")
        bot_api.push_message(user_id=1, text="/count")
        bot.wait_idle()
        assert bot_api.transcript(1) == ["user 1: /count", "bot: count: 1"]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import pytest
import telebot

from ..storage.disk import forget_default_storage
from ._api import FakeBotAPI
from ._runner import BotRunner
from ._runner import run_bot as running


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    """A Bot API stand-in on 127.0.0.1, with telebot pointed at it for the test."""
    with FakeBotAPI() as api:
        api.install()
        yield api


@pytest.fixture(name="run_bot")
def run_bot_fixture(
    bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., BotRunner]]:
    """Run a TeleBot or a bot file against ``bot_api`` until the test ends. The test's
    default sessions (its own, and every bot's) are in one fresh directory, from the start of
    the test: a session seeded before the bot runs, or left by a bot that restarts, is found."""
    sessions = tmp_path / "tgsession-sessions"
    # Through monkeypatch, so that it is undone in order with the test's own changes.
    monkeypatch.setenv("TGSESSION_DIR", str(sessions))
    forget_default_storage()
    with ExitStack() as stack:
        # Last out, even when a runner's stop raises: no later test finds this test's store.
        stack.callback(forget_default_storage)

        def run(bot: telebot.TeleBot | str | os.PathLike[str], **options: Any) -> BotRunner:
            options.setdefault("sessions", sessions)
            return stack.enter_context(running(bot_api, bot, **options))

        yield run

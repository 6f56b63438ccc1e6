"""Testing telebot bots offline: a loopback stand-in of the Bot API, and a runner for bots.

    from tgsession.testing import FakeBotAPI, run_bot

    def test_count():  # or take the pytest fixtures bot_api and run_bot
        with FakeBotAPI() as api, run_bot(api, "examples/counter_bot.py") as bot:
            api.push_message(user_id=1, text="/count")
            bot.wait_idle()
            assert api.transcript(1) == ["user 1: /count", "bot: count: 1"]

A local ``telegram-bot-api`` server is the real thing; this is for tests that must not depend on
the network or on any server but the test's own.
"""

from ._api import FakeBotAPI, Query
from ._methods import APIError
from ._runner import BotRunner, HandlerError, load_bot, run_bot
from ._transcript import Event

__all__ = [
    "APIError",
    "BotRunner",
    "Event",
    "FakeBotAPI",
    "HandlerError",
    "Query",
    "load_bot",
    "run_bot",
]

"""Tests of counter_bot.py, written the way a bot author tests their own bot offline.

    pip install tgsession pytest
    pytest examples/test_counter_bot.py

The fixtures come with tgsession (a pytest plugin): ``bot_api`` is a Bot API stand-in on
127.0.0.1, ``run_bot`` runs a bot file against it with its sessions in a fresh directory. No
token, no network.
"""

from pathlib import Path

import pytest

from tgsession.testing import HandlerError

BOT = Path(__file__).with_name("counter_bot.py")


def test_count_goes_up_for_each_user_on_their_own(bot_api, run_bot):
    bot = run_bot(BOT)
    for user in (1, 1, 2):
        bot_api.push_message(user_id=user, text="/count")
        bot.wait_idle()
    assert bot_api.transcript(1) == [
        "user 1: /count",
        "bot: count: 1",
        "user 1: /count",
        "bot: count: 2",
    ]
    assert bot_api.transcript(2) == ["user 2: /count", "bot: count: 1"]


def test_reset_starts_the_count_again(bot_api, run_bot):
    bot = run_bot(BOT)
    for text in ("/count", "/count", "/reset", "/count"):
        bot_api.push_message(user_id=1, text=text)
        bot.wait_idle()
    assert bot_api.transcript(1)[-3:] == ["bot: count reset", "user 1: /count", "bot: count: 1"]


def test_the_count_survives_a_restart(bot_api, run_bot):
    first = run_bot(BOT)
    bot_api.push_message(user_id=1, text="/count")
    first.wait_idle()
    first.stop()
    again = run_bot(BOT)  # a new process of the bot would read the same directory
    bot_api.push_message(user_id=1, text="/count")
    again.wait_idle()
    assert bot_api.transcript(1)[-1] == "bot: count: 2"


def test_a_reply_refused_by_telegram_leaves_the_count_unchanged(bot_api, run_bot):
    bot = run_bot(BOT)
    bot_api.inject_fault("sendMessage", status=429, retry_after=5)
    bot_api.push_message(user_id=1, text="/count")
    with pytest.raises(HandlerError, match="429"):
        bot.wait_idle()  # the handler raised: its session was not saved
    bot_api.push_message(user_id=1, text="/count")
    bot.wait_idle()
    assert bot_api.transcript(1)[-1] == "bot: count: 1"

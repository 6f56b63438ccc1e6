"""The loopback Bot API stand-in behaves like the Bot API where telebot can tell."""

from __future__ import annotations

import pytest
import telebot
from telebot.apihelper import ApiTelegramException

from tgsession.testing import FakeBotAPI


def test_get_me_and_send_message_through_telebot(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    assert bot.get_me().username == "tgsession_test_bot"
    sent = bot.send_message(42, "hello")
    assert sent.text == "hello" and sent.chat.id == 42
    assert bot_api.calls() == [{"method": "sendMessage", "chat_id": "42", "text": "hello"}]


def test_get_updates_confirms_by_offset(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    first = bot_api.push_message(user_id=1, text="a")
    bot_api.push_message(user_id=1, text="b")
    assert [u.message.text for u in bot.get_updates()] == ["a", "b"]
    assert [u.message.text for u in bot.get_updates(offset=first["update_id"] + 1)] == ["b"]
    assert bot_api.pending_updates == 1


def test_unknown_method_is_a_clear_api_error(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    with pytest.raises(ApiTelegramException, match="not served by the stand-in"):
        bot.send_dice(1)


def test_wrong_token_is_unauthorized(bot_api: FakeBotAPI) -> None:
    with pytest.raises(ApiTelegramException, match="Unauthorized"):
        telebot.TeleBot("1:wrong").get_me()


def test_wait_for_calls_times_out_clearly(bot_api: FakeBotAPI) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 sendMessage"):
        bot_api.wait_for_calls(1, timeout=0.1)


def test_stop_restores_telebots_api_url() -> None:
    before = telebot.apihelper.API_URL
    with FakeBotAPI() as api:
        api.install()
        assert telebot.apihelper.API_URL == api.api_url
    assert telebot.apihelper.API_URL == before

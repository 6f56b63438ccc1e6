"""End to end: a real threaded telebot polling the loopback stand-in of the Bot API."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
import telebot
from telebot.handler_backends import BaseMiddleware

from tgsession import with_session
from tgsession.testing import FakeBotAPI

from conftest import polling

USERS, COMMANDS = 20, 10


def test_many_users_sending_many_commands_at_once_get_every_count_once(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=4)

    @bot.message_handler(commands=["count"])
    @with_session(initial=lambda: {"count": 0}, storage=storage)
    def count(message: Any, session: dict[str, Any]) -> None:
        session["count"] += 1
        bot.reply_to(message, f"count: {session['count']}")

    for _ in range(COMMANDS):
        for user in range(1, USERS + 1):
            bot_api.push_message(user_id=user, text="/count")
    with polling(bot):
        replies = bot_api.wait_for_calls(USERS * COMMANDS, timeout=120)
    by_user: dict[int, list[str]] = defaultdict(list)
    for reply in replies:
        by_user[int(reply["chat_id"])].append(reply["text"])
    expected = sorted(f"count: {n}" for n in range(1, COMMANDS + 1))
    assert {user: sorted(texts) for user, texts in by_user.items()} == {
        user: expected for user in range(1, USERS + 1)
    }
    assert len(replies) == USERS * COMMANDS
    for user in range(1, USERS + 1):
        assert json.loads(storage.read(f"session:{user}")) == {"count": COMMANDS}


class Greeter(BaseMiddleware):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.update_types = ["message"]
        self.errors: list[Any] = []

    def pre_process(self, message: Any, data: dict[str, Any]) -> None:
        data["greeting"] = "hello"

    def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
        self.errors.append(exception)


def test_class_middlewares_and_pass_bot_reach_a_decorated_handler(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=4, use_class_middlewares=True)
    greeter = Greeter()
    bot.setup_middleware(greeter)
    visits = with_session(initial=lambda: {"visits": 0}, storage=storage)

    @bot.message_handler(commands=["hi"], pass_bot=True)
    @visits
    def hi(message: Any, greeting: str, bot: telebot.TeleBot, session: dict[str, Any]) -> None:
        session["visits"] += 1
        bot.send_message(message.chat.id, f"{greeting} #{session['visits']}")

    @bot.message_handler(commands=["data"])
    @visits
    def with_data(message: Any, data: dict[str, Any], session: dict[str, Any]) -> None:
        session["visits"] += 1
        bot.send_message(message.chat.id, f"{data['greeting']} via data #{session['visits']}")

    bot_api.push_message(user_id=5, text="/hi")
    with polling(bot):
        bot_api.wait_for_calls(1)
        bot_api.push_message(user_id=5, text="/data")
        bot_api.wait_for_calls(2)
        bot_api.push_message(user_id=5, text="/hi")
        replies = [call["text"] for call in bot_api.wait_for_calls(3)]
    assert replies == ["hello #1", "hello via data #2", "hello #3"]
    assert greeter.errors == [None, None, None]


def test_callback_and_message_handlers_of_one_user_share_a_session(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=4)
    cart = with_session(key="cart", initial=lambda: {"items": []}, storage=storage)

    @bot.callback_query_handler(func=lambda call: call.data.startswith("add:"))
    @cart
    def add(call: Any, cart: dict[str, Any]) -> None:
        cart["items"].append(call.data[4:])
        bot.answer_callback_query(call.id, f"{len(cart['items'])} items")

    @bot.message_handler(commands=["cart"])
    @cart
    def show(message: Any, cart: dict[str, Any]) -> None:
        bot.reply_to(message, ", ".join(cart["items"]) or "empty")

    for item in ("apple", "pear", "plum"):
        bot_api.push_callback(user_id=9, data=f"add:{item}")
    with polling(bot):
        answers = bot_api.wait_for_calls(3, method="answerCallbackQuery")
        bot_api.push_message(user_id=9, text="/cart")
        reply = bot_api.wait_for_calls(1)[0]
    assert sorted(answer["text"] for answer in answers) == ["1 items", "2 items", "3 items"]
    assert sorted(reply["text"].split(", ")) == ["apple", "pear", "plum"]


def test_a_handler_that_raises_under_telebot_saves_nothing_and_the_bot_goes_on(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=4)
    counter = with_session(initial=lambda: {"count": 0}, storage=storage)

    @bot.message_handler(commands=["count"])
    @counter
    def count(message: Any, session: dict[str, Any]) -> None:
        session["count"] += 1
        if message.text == "/count fail":
            raise RuntimeError("handler failed")
        bot.reply_to(message, f"count: {session['count']}")

    bot_api.push_message(user_id=3, text="/count")
    bot_api.push_message(user_id=3, text="/count fail")
    bot_api.push_message(user_id=3, text="/count")
    with polling(bot):
        replies = [call["text"] for call in bot_api.wait_for_calls(2)]
    assert sorted(replies) == ["count: 1", "count: 2"]
    assert json.loads(storage.read("session:3")) == {"count": 2}


@pytest.mark.parametrize("lazy", [False, True])
def test_poll_updates_run_their_handler_without_a_session(bot_api: FakeBotAPI, lazy: bool) -> None:
    bot = telebot.TeleBot(bot_api.token, threaded=False)
    seen: list[str] = []

    @bot.poll_handler(func=lambda poll: True)
    @with_session(lazy=lazy, storage=None)
    def on_poll(poll: Any, session: Any) -> None:
        seen.append(poll.id)
        bot.send_message(1, "poll seen")

    bot_api.push_update(
        {
            "poll": {
                "id": "p1",
                "question": "q",
                "options": [{"text": "a", "voter_count": 0, "persistent_id": "a"}],
                "total_voter_count": 0,
                "is_closed": False,
                "is_anonymous": True,
                "type": "regular",
                "allows_multiple_answers": False,
            }
        }
    )
    with polling(bot):
        bot_api.wait_for_calls(1)
    assert seen == ["p1"]

"""Steps: a conversation whose step lives in a session, routed under its lock, in order."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import telebot

from tgsession import MemoryStorage, Steps, after_save
from tgsession.testing import FakeBotAPI

from conftest import polling


def signup_bot(
    api: FakeBotAPI, storage: Any = None, threaded: bool = False, timeout: float | None = None
) -> Any:
    """The form of examples/form_bot.py, its /cancel declared last."""
    bot = telebot.TeleBot(api.token, threaded=threaded, num_threads=8)
    signup = Steps(bot, "signup", storage=MemoryStorage() if storage is None else storage)

    @signup.entry(commands=["signup"])
    def start(message: Any, step: Any) -> None:
        step.goto("name")
        after_save(bot.send_message, message.chat.id, "name?")

    @signup.step("name")
    def name(message: Any, step: Any) -> None:
        step.goto("age", name=message.text)
        after_save(bot.send_message, message.chat.id, "age?")

    @signup.step("age", timeout=timeout)
    def age(message: Any, step: Any) -> None:
        if message.text == "boom":
            step.goto("city")
            raise RuntimeError("the database is down")
        step.goto(city, age=message.text)  # by the handler, as next-step code would
        after_save(bot.send_message, message.chat.id, "city?")

    @signup.step()
    def city(message: Any, step: Any) -> None:
        done = f"{step.data['name']}, {step.data['age']}, {message.text}"
        step.end()
        after_save(bot.send_message, message.chat.id, done)

    @signup.command(commands=["cancel"])
    def cancel(message: Any, step: Any) -> None:
        was = step.name
        step.end()
        after_save(bot.send_message, message.chat.id, f"cancelled {was}")

    @bot.message_handler(commands=["skip"])  # next-step code, ported: names a step
    def skip(message: Any) -> None:
        signup.next_step_handler(message, city)

    @bot.message_handler(func=lambda message: True)
    def outside(message: Any) -> None:
        bot.send_message(message.chat.id, f"outside: {message.text}")

    return bot, signup


def say(api: FakeBotAPI, bot: Any, user: int, *texts: str) -> list[str]:
    """Send ``texts`` one by one to an unthreaded bot; return its replies to them."""
    before = len(api.calls())
    for text in texts:
        api.push_message(user_id=user, text=text)
        with contextlib.suppress(RuntimeError):  # a handler's, logged by telebot too
            bot.process_new_updates(bot.get_updates(offset=-1))
    return [call["text"] for call in api.calls()[before:]]


def test_a_form_goes_from_step_to_step_and_its_data_is_gone_at_the_end(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    bot, signup = signup_bot(bot_api, storage)
    texts = say(bot_api, bot, 1, "/signup", "Ann", "30", "Paris", "hello")
    assert texts == ["name?", "age?", "city?", "Ann, 30, Paris", "outside: hello"]
    assert signup.session.storage.read("signup:1") is None


def test_cancel_works_in_every_step_and_the_entry_starts_over(bot_api: FakeBotAPI) -> None:
    bot, _ = signup_bot(bot_api)
    assert say(bot_api, bot, 2, "/signup", "Bob", "/cancel", "/cancel") == [
        "name?",
        "age?",
        "cancelled age",
        "cancelled None",
    ]
    assert say(bot_api, bot, 2, "/signup", "Bo", "/signup", "Bob", "41", "Rome") == [
        "name?",
        "age?",
        "name?",
        "age?",
        "city?",
        "Bob, 41, Rome",
    ]


def test_a_step_past_its_timeout_has_left_the_conversation(bot_api: FakeBotAPI) -> None:
    bot, _ = signup_bot(bot_api, timeout=0.3)
    assert say(bot_api, bot, 3, "/signup", "Cy") == ["name?", "age?"]
    time.sleep(0.4)
    assert say(bot_api, bot, 3, "30") == ["outside: 30"]


def test_a_handler_raising_mid_step_leaves_the_step_where_it_was(bot_api: FakeBotAPI) -> None:
    bot, signup = signup_bot(bot_api)
    say(bot_api, bot, 4, "/signup", "Di", "boom")
    with signup.session.open(4) as state:
        assert state == {"step": "age", "data": {"name": "Di"}}


def test_next_step_code_names_a_declared_step_and_nothing_else(bot_api: FakeBotAPI) -> None:
    bot, signup = signup_bot(bot_api)
    assert say(bot_api, bot, 5, "/skip") == []
    with signup.session.open(5) as state:
        assert state == {"step": "city"}  # a name, never a pickled function
    with pytest.raises(ValueError, match="no step of 'signup'"):
        signup.name_of(print)


def test_bursts_of_whole_forms_are_routed_in_order(bot_api: FakeBotAPI, storage: Any) -> None:
    bot, _ = signup_bot(bot_api, storage, threaded=True)
    users = range(1, 61)
    for user in users:  # a user who types fast: the whole form at once
        for text in ("/signup", f"n{user}", f"a{user}", f"c{user}"):
            bot_api.push_message(user_id=user, text=text)
    with polling(bot):
        calls = bot_api.wait_for_calls(4 * len(users))
    done = sorted(call["text"] for call in calls if call["text"].count(",") == 2)
    assert done == sorted(f"n{user}, a{user}, c{user}" for user in users)


def test_a_new_entry_starts_with_no_data_of_the_last_attempt(bot_api: FakeBotAPI) -> None:
    bot, signup = signup_bot(bot_api)
    say(bot_api, bot, 6, "/signup", "Ann", "30", "/signup")
    with signup.session.open(6) as state:
        assert state == {"step": "name"}


def test_commands_of_other_handlers_are_never_taken_as_answers(bot_api: FakeBotAPI) -> None:
    # Two conversations, each with its /cancel, and a /help declared after every step.
    bot = telebot.TeleBot(bot_api.token, threaded=False)

    def conversation(name: str) -> Steps:
        steps = Steps(bot, name, storage=MemoryStorage())

        @steps.entry(commands=name)  # one command as a str, as telebot takes it
        def start(message: Any, step: Any) -> None:
            step.goto("q")
            after_save(bot.send_message, message.chat.id, f"{name}?")

        @steps.step("q")
        def q(message: Any, step: Any) -> None:
            step.end()
            after_save(bot.send_message, message.chat.id, f"{name} got {message.text}")

        @steps.command(commands=["cancel"])
        def cancel(message: Any, step: Any) -> None:
            was = step.name
            step.end()
            after_save(bot.send_message, message.chat.id, f"{name} cancelled {was}")

        return steps

    conversation("a")
    conversation("b")

    @bot.message_handler(commands=["help"])
    def help_(message: Any) -> None:
        bot.send_message(message.chat.id, "help")

    assert say(bot_api, bot, 7, "/b", "/help", "/a", "x") == ["b?", "help", "a?", "a got x"]
    # /cancel is a command: neither conversation takes it as an answer; the first declared
    # cancel handler runs (telebot picks the first that matches).
    assert say(bot_api, bot, 7, "/cancel") == ["a cancelled None"]


def test_a_step_handler_receives_what_telebot_passes_handlers_by_name(
    bot_api: FakeBotAPI,
) -> None:
    from tgsession import SessionMiddleware, with_session

    bot = telebot.TeleBot(bot_api.token, threaded=False, use_class_middlewares=True)
    prefs = with_session(key="prefs", initial=lambda: {"lang": "en"}, storage=MemoryStorage())
    bot.setup_middleware(SessionMiddleware(prefs))
    ask = Steps(bot, "ask", storage=MemoryStorage())

    @ask.entry(commands=["ask"])
    def start(message: Any, step: Any, prefs: Any) -> None:
        step.goto("answer")
        after_save(bot.send_message, message.chat.id, f"question in {prefs['lang']}")

    @ask.step("answer")
    def answer(message: Any, step: Any, prefs: Any) -> None:
        prefs["lang"] = message.text
        step.end()

    assert say(bot_api, bot, 8, "/ask", "de", "/ask") == ["question in en", "question in de"]

"""The testing kit: the Bot API stand-in, running a bot against it, the pytest plugin, chat."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import telebot
from telebot.apihelper import ApiTelegramException

from tgsession import DiskStorage
from tgsession.testing import FakeBotAPI, HandlerError, run_bot

from conftest import REPO, child_env


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


def test_any_well_formed_token_is_served_and_a_malformed_one_is_unauthorized(
    bot_api: FakeBotAPI,
) -> None:
    assert telebot.TeleBot("42:a-real-looking_token").send_message(1, "hi").text == "hi"
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"{bot_api.base_url}/botnonsense/getMe")


def test_wait_for_calls_times_out_clearly(bot_api: FakeBotAPI) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 sendMessage"):
        bot_api.wait_for_calls(1, timeout=0.1)


def test_stop_restores_telebots_api_url() -> None:
    before = telebot.apihelper.API_URL
    with FakeBotAPI() as api:
        api.install()
        assert telebot.apihelper.API_URL == api.api_url
    assert telebot.apihelper.API_URL == before


# -- running a bot, waiting for it, reading what it did ---------------------------------------


def slow_echo_bot(delay: float = 0.3) -> telebot.TeleBot:
    bot = telebot.TeleBot(FakeBotAPI.token, threaded=True, num_threads=4)

    @bot.message_handler(func=lambda message: True)
    def echo(message: Any) -> None:
        time.sleep(delay)  # longer than any silence wait_idle would take for the end
        if message.text == "boom":
            raise RuntimeError("the handler failed")
        bot.send_message(message.chat.id, f"echo: {message.text}")

    return bot


def test_wait_idle_waits_for_handlers_still_running(bot_api: FakeBotAPI, run_bot: Any) -> None:
    bot = run_bot(slow_echo_bot())
    bot_api.push_message(user_id=1, text="a")
    bot_api.push_message(user_id=2, text="b")
    bot.wait_idle()
    assert bot_api.transcript(1) == ["user 1: a", "bot: echo: a"]
    assert bot_api.transcript(2) == ["user 2: b", "bot: echo: b"]


def test_wait_idle_raises_what_a_handler_raised(bot_api: FakeBotAPI, run_bot: Any) -> None:
    bot = run_bot(slow_echo_bot(0))
    bot_api.push_message(user_id=1, text="boom")
    with pytest.raises(HandlerError, match="RuntimeError: the handler failed") as raised:
        bot.wait_idle()
    assert isinstance(raised.value.__cause__, RuntimeError)
    bot_api.push_message(user_id=1, text="fine")
    bot.wait_idle()  # reported once
    assert bot_api.transcript(1)[-1] == "bot: echo: fine"


def test_transcripts_are_per_chat_and_show_groups_and_edits(
    bot_api: FakeBotAPI, run_bot: Any
) -> None:
    bot = telebot.TeleBot(FakeBotAPI.token)

    @bot.message_handler(commands=["poll"])
    def poll(message: Any) -> None:
        keyboard = telebot.types.InlineKeyboardMarkup()
        keyboard.row(
            telebot.types.InlineKeyboardButton("Yes", callback_data="yes"),
            telebot.types.InlineKeyboardButton("No", callback_data="no"),
        )
        bot.send_message(message.chat.id, "Coffee?", reply_markup=keyboard)

    @bot.callback_query_handler(func=lambda call: True)
    def vote(call: Any) -> None:
        bot.answer_callback_query(call.id, f"{call.from_user.first_name} said {call.data}")
        bot.edit_message_text(f"Voted {call.data}", call.message.chat.id, call.message.id)

    runner = run_bot(bot)
    bot_api.push_message(user_id=5, text="/poll", chat_id=-100)
    runner.wait_idle()
    sent = bot_api.chat_messages(-100)[-1]
    press = bot_api.push_callback(7, "no", chat_id=-100, message_id=sent["message_id"])
    runner.wait_idle()
    assert bot_api.transcript(-100) == [
        "user 5: /poll",
        "bot: Coffee? [Yes | No]",
        "user 7 pressed 'no'",
        "bot answered user 7: 'User said no'",
        f"bot edited #{sent['message_id']}: Voted no",
    ]
    assert bot_api.transcript(5) == [] and bot_api.transcript(7) == []
    assert bot_api.query(press).answer == {"callback_query_id": "1", "text": "User said no"}
    assert bot_api.chat_messages(-100)[-1]["text"] == "Voted no"


def test_callback_answers_are_tied_to_the_user_and_query(bot_api: FakeBotAPI, run_bot: Any) -> None:
    bot = telebot.TeleBot(FakeBotAPI.token, threaded=True, num_threads=4)

    @bot.callback_query_handler(func=lambda call: True)
    def answer(call: Any) -> None:
        time.sleep(0.05 * (call.from_user.id % 3))  # answered out of order
        bot.answer_callback_query(call.id, f"hi {call.from_user.id}, {call.data}")

    runner = run_bot(bot)
    presses = {user: bot_api.push_callback(user, f"button {user}") for user in (1, 2, 3)}
    runner.wait_idle()
    for user, press in presses.items():
        query = bot_api.query(press)
        assert query.user_id == user and query.answer is not None
        assert query.answer["text"] == f"hi {user}, button {user}"
    assert bot_api.transcript(2)[-1] == "bot answered user 2: 'hi 2, button 2'"


def test_a_second_answer_to_one_query_is_refused_as_telegram_does(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    press = bot_api.push_callback(1, "x")
    query_id = press["callback_query"]["id"]
    bot.answer_callback_query(query_id, "first")
    with pytest.raises(ApiTelegramException, match="query is too old"):
        bot.answer_callback_query(query_id, "second")
    assert bot_api.query(query_id).answer == {"callback_query_id": query_id, "text": "first"}


def test_inline_queries_and_their_answers(bot_api: FakeBotAPI, run_bot: Any) -> None:
    bot = telebot.TeleBot(FakeBotAPI.token)

    @bot.inline_handler(func=lambda query: True)
    def search(query: Any) -> None:
        result = telebot.types.InlineQueryResultArticle(
            "1", query.query.upper(), telebot.types.InputTextMessageContent(query.query)
        )
        bot.answer_inline_query(query.id, [result])

    runner = run_bot(bot)
    pushed = bot_api.push_inline_query(4, "cats")
    runner.wait_idle()
    answer = bot_api.query(pushed).answer
    assert answer is not None and json.loads(answer["results"])[0]["title"] == "CATS"


def test_the_methods_bots_commonly_call_are_served_and_recorded(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    bot = telebot.TeleBot(bot_api.token)
    bot_api.push_message(user_id=9, text="hi", first_name="Ann")
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG" + b"\0" * 100)
    with open(picture, "rb") as upload:
        photo = bot.send_photo(9, upload, caption="a cat")
    assert photo.photo[0].file_id and photo.caption == "a cat"
    bot.send_photo(9, photo.photo[0].file_id)
    bot.send_document(9, "file-id-1", caption="the doc")
    album = bot.send_media_group(
        9,
        [
            telebot.types.InputMediaPhoto("p1", caption="one"),
            telebot.types.InputMediaPhoto("p2"),
        ],
    )
    assert [m.media_group_id for m in album] == [album[0].media_group_id] * 2
    location = bot.send_location(9, 51.5, -0.12)
    assert location.location.latitude == 51.5
    bot.send_chat_action(9, "typing")
    text = bot.send_message(9, "draft")
    bot.edit_message_text("final", 9, text.message_id)
    keyboard = telebot.types.InlineKeyboardMarkup()
    keyboard.add(telebot.types.InlineKeyboardButton("Go", callback_data="go"))
    bot.edit_message_reply_markup(9, text.message_id, reply_markup=keyboard)
    bot.delete_message(9, location.message_id)
    assert bot.get_chat(9).first_name == "Ann"
    assert bot.get_chat_member(9, 9).status == "member"
    for status in ("administrator", "creator", "restricted", "left", "kicked"):
        bot_api.member_status[(9, 9)] = status
        assert bot.get_chat_member(9, 9).status == status
    assert bot_api.transcript(9) == [
        "user 9: hi",
        "bot sent photo: a cat",
        "bot sent photo",
        "bot sent document: the doc",
        "bot sent media group (photo+photo): one",
        "bot sent location: 51.5, -0.12",
        "bot is typing",
        "bot: draft",
        f"bot edited #{text.message_id}: final",
        f"bot edited the buttons of #{text.message_id}: [Go]",
        f"bot deleted #{location.message_id}",
    ]
    upload_call = bot_api.calls("sendPhoto")[0]
    assert upload_call["photo"] == {"filename": "cat.png", "size": 104}
    assert [c["method"] for c in bot_api.calls(None)][-2:] == ["getChatMember"] * 2


def test_edits_and_deletes_are_refused_as_telegram_refuses_them(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    sent = bot.send_message(3, "same")
    with pytest.raises(ApiTelegramException, match="message is not modified"):
        bot.edit_message_text("same", 3, sent.message_id)
    with pytest.raises(ApiTelegramException, match="message to edit not found"):
        bot.edit_message_text("other", 3, 999)
    bot.delete_message(3, sent.message_id)
    with pytest.raises(ApiTelegramException, match="message to delete not found"):
        bot.delete_message(3, sent.message_id)
    with pytest.raises(ApiTelegramException, match="chat not found"):
        bot.get_chat(404)


# -- webhook mode -----------------------------------------------------------------------------


def test_webhook_mode_posts_updates_to_the_bots_own_webhook_server(
    bot_api: FakeBotAPI, run_bot: Any
) -> None:
    bot = run_bot(slow_echo_bot(0.1), webhook=True)
    info = telebot.TeleBot(bot_api.token).get_webhook_info()
    assert info.url.startswith("http://127.0.0.1:")
    with pytest.raises(ApiTelegramException, match="can't use getUpdates method while webhook"):
        telebot.TeleBot(bot_api.token).get_updates()
    for text in ("one", "two"):
        bot_api.push_message(user_id=1, text=text)
    bot.wait_idle()
    assert sorted(bot_api.transcript(1)[2:]) == ["bot: echo: one", "bot: echo: two"]
    assert bot_api.pending_updates == 0


def test_a_webhook_outside_loopback_is_refused(bot_api: FakeBotAPI) -> None:
    with pytest.raises(ApiTelegramException, match="loopback URLs only"):
        telebot.TeleBot(bot_api.token).set_webhook("https://example.com/hook")


# -- faults -----------------------------------------------------------------------------------


def test_a_429_carries_retry_after_and_a_bot_that_honours_it_gets_through(
    bot_api: FakeBotAPI, run_bot: Any
) -> None:
    bot = telebot.TeleBot(FakeBotAPI.token)
    waited: list[int] = []

    @bot.message_handler(func=lambda message: True)
    def polite(message: Any) -> None:
        try:
            bot.send_message(message.chat.id, "hello")
        except ApiTelegramException as error:
            retry_after = error.result_json["parameters"]["retry_after"]
            waited.append(retry_after)
            bot.send_message(message.chat.id, "hello")

    runner = run_bot(bot)
    bot_api.inject_fault("sendMessage", status=429, retry_after=7)
    bot_api.push_message(user_id=1, text="hi")
    runner.wait_idle()
    assert waited == [7]
    assert bot_api.transcript(1) == ["user 1: hi", "bot: hello"]
    assert bot_api.faults_served == [("sendMessage", 429, 0.0)]


def test_a_5xx_and_a_slow_reply_are_served_as_injected(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    bot_api.inject_fault("sendMessage", status=502, times=2)
    for _ in range(2):
        with pytest.raises(ApiTelegramException, match="Bad Gateway"):
            bot.send_message(1, "x")
    bot_api.inject_fault("sendMessage", delay=0.3)
    started = time.monotonic()
    bot.send_message(1, "late")
    assert time.monotonic() - started >= 0.3
    assert bot_api.transcript(1) == ["bot: late"]


# -- for bot authors: the plugin, an example suite, chatting from the terminal ----------------


def pytest_in_a_process(test: Path) -> subprocess.CompletedProcess[str]:
    """Run pytest on the test file ``test`` in a process of its own, in its directory."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        cwd=test.parent,
        env=child_env(),
    )


def test_the_plugin_gives_a_users_test_its_fixtures(tmp_path: Path) -> None:
    test = tmp_path / "test_mine.py"
    test.write_text(
        "def test_count(bot_api, run_bot):\n"
        f"    bot = run_bot({str(REPO / 'examples' / 'counter_bot.py')!r})\n"
        "    bot_api.push_message(user_id=1, text='/count')\n"
        "    bot.wait_idle()\n"
        "    assert bot_api.transcript(1) == ['user 1: /count', 'bot: count: 1']\n"
    )
    result = pytest_in_a_process(test)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert not (tmp_path / ".tgsession").exists()  # the bot's sessions went to tmp_path


def test_the_example_test_suite_of_counter_bot_passes() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "examples/test_counter_bot.py",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def chat(*args: str, typed: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tgsession.testing chat ARGS`` from the checkout, with ``typed`` as
    what the developer types; return what it did (any exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "tgsession.testing", "chat", *args],
        input=typed,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=120,
    )


def test_chat_mode_talks_to_a_bot_file_from_the_terminal(tmp_path: Path) -> None:
    typed = "/count\n/count\n:user 2\n/count\n:quit\n"
    result = chat("examples/counter_bot.py", "--sessions", str(tmp_path), typed=typed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["bot: count: 1", "bot: count: 2", "bot: count: 1"]
    assert DiskStorage(tmp_path).read("session:1") == b'{"count":2}'


def test_chat_mode_numbers_buttons_and_presses_them(tmp_path: Path) -> None:
    bot_file = tmp_path / "buttons_bot.py"
    bot_file.write_text(BUTTONS_BOT)
    result = chat(str(bot_file), typed="/start\n:press 2\n:press 9\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "bot: Pick one [Red | Blue]",
        "    1: Red",
        "    2: Blue",
        "bot answered user 1: 'blue it is'",
        "no button 9 here",
    ]


BUTTONS_BOT = """
import os
import telebot

bot = telebot.TeleBot(os.environ["BOT_TOKEN"])

@bot.message_handler(commands=["start"])
def start(message):
    keyboard = telebot.types.InlineKeyboardMarkup()
    keyboard.row(
        telebot.types.InlineKeyboardButton("Red", callback_data="red"),
        telebot.types.InlineKeyboardButton("Blue", callback_data="blue"),
    )
    bot.send_message(message.chat.id, "Pick one", reply_markup=keyboard)

@bot.callback_query_handler(func=lambda call: True)
def picked(call):
    bot.answer_callback_query(call.id, f"{call.data} it is")

if __name__ == "__main__":
    bot.infinity_polling()
"""


# -- after review: what bot authors do -----------------------------------------------------------


def echo_bot(threaded: bool = True, token: str = FakeBotAPI.token) -> telebot.TeleBot:
    bot = telebot.TeleBot(token, threaded=threaded)

    @bot.message_handler(func=lambda message: True)
    def echo(message: Any) -> None:
        if message.text.startswith("raise"):
            raise RuntimeError(message.text)
        bot.send_message(message.chat.id, f"echo: {message.text}")

    return bot


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "not threaded"])
def test_one_telebot_runs_again_after_a_run(bot_api: FakeBotAPI, threaded: bool) -> None:
    bot = echo_bot(threaded)
    for text in ("first", "second"):
        with run_bot(bot_api, bot) as runner:
            bot_api.push_message(user_id=1, text=text)
            runner.wait_idle()
    assert bot_api.transcript(1)[-1] == "bot: echo: second"


def test_a_bot_with_its_own_token_runs_against_the_stand_in(
    bot_api: FakeBotAPI, run_bot: Any
) -> None:
    runner = run_bot(echo_bot(token="987654:the-bots-own-token"))
    bot_api.push_message(user_id=1, text="hi")
    runner.wait_idle()
    assert bot_api.transcript(1) == ["user 1: hi", "bot: echo: hi"]


def test_a_bot_file_imports_its_own_modules_and_keeps_typed_sessions(
    bot_api: FakeBotAPI, run_bot: Any, tmp_path: Path
) -> None:
    (tmp_path / "helpers.py").write_text("def greet(name):\n    return f'hello {name}'\n")
    (tmp_path / "typed_bot.py").write_text(TYPED_BOT)
    runner = run_bot(tmp_path / "typed_bot.py")
    for _ in range(2):
        bot_api.push_message(user_id=3, text="/visit")
        runner.wait_idle()
    assert bot_api.transcript(3)[-1] == "bot: hello 3, visit 2"


TYPED_BOT = """
from __future__ import annotations

import os
from dataclasses import dataclass, field

import telebot
from helpers import greet
from tgsession import with_session


@dataclass
class Inner:
    visits: int = 0


@dataclass
class Profile:
    inner: Inner = field(default_factory=Inner)


bot = telebot.TeleBot(os.environ["BOT_TOKEN"])


@bot.message_handler(commands=["visit"])
@with_session(initial=Profile)
def visit(message, session):
    session.inner.visits += 1
    bot.send_message(message.chat.id, f"{greet(message.chat.id)}, visit {session.inner.visits}")
"""


def test_a_bot_file_that_polls_when_imported_is_a_clear_error(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    bot_file = tmp_path / "eager_bot.py"
    bot_file.write_text(
        "import os, telebot\nbot = telebot.TeleBot(os.environ['BOT_TOKEN'])\n"
        "bot.infinity_polling()\n"
    )
    with (
        pytest.raises(RuntimeError, match="starts polling when it is imported"),
        run_bot(bot_api, bot_file),
    ):
        pass


def test_an_error_the_bots_exception_handler_handles_is_not_reported(
    bot_api: FakeBotAPI, run_bot: Any
) -> None:
    class Handled(telebot.ExceptionHandler):
        def handle(self, exception: Exception) -> bool:
            return True

    bot = echo_bot()
    bot.exception_handler = Handled()
    runner = run_bot(bot)
    bot_api.push_message(user_id=1, text="raise once")
    runner.wait_idle()  # nothing raised: the bot handled it


def test_every_handler_error_is_reported_once_and_leftovers_at_the_end(
    bot_api: FakeBotAPI,
) -> None:
    bot = echo_bot()
    with pytest.raises(HandlerError, match="raise later"), run_bot(bot_api, bot) as runner:
        bot_api.push_message(user_id=1, text="raise one")
        bot_api.push_message(user_id=2, text="raise two")
        with pytest.raises(HandlerError, match=r"and 1 more"):
            runner.wait_idle()
        bot_api.push_message(user_id=1, text="raise later")
        bot_api.wait_idle()  # the stand-in's wait does not raise: the end of the run does


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "not threaded"])
def test_a_handler_that_raises_in_webhook_mode_is_reported_once(
    bot_api: FakeBotAPI, run_bot: Any, threaded: bool
) -> None:
    runner = run_bot(echo_bot(threaded), webhook=True)
    bot_api.push_message(user_id=1, text="raise in webhook")
    with pytest.raises(HandlerError, match="raise in webhook"):
        runner.wait_idle()
    assert bot_api.pending_updates == 0 and bot_api.dropped_updates == []


def test_run_bot_keeps_sessions_out_of_the_working_directory(
    bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TGSESSION_DIR", raising=False)
    for _ in range(2):  # a fresh directory each run: the count starts again
        with run_bot(bot_api, REPO / "examples" / "counter_bot.py") as runner:
            bot_api.push_message(user_id=1, text="/count")
            runner.wait_idle()
        assert bot_api.transcript(1)[-1] == "bot: count: 1"
    assert not (tmp_path / ".tgsession").exists()


def test_a_second_bot_polling_at_once_is_a_conflict_the_test_hears_of(
    bot_api: FakeBotAPI,
) -> None:
    refused = pytest.raises(HandlerError, match=r"polling was refused.*Conflict")
    with refused, run_bot(bot_api, echo_bot()), run_bot(bot_api, echo_bot()):
        time.sleep(1.5)  # both poll: one of them meets the other's long poll


def test_faults_on_unknown_methods_are_refused_and_get_updates_can_fail(
    bot_api: FakeBotAPI,
) -> None:
    with pytest.raises(ValueError, match="serves no method 'send_message'"):
        bot_api.inject_fault("send_message", status=429)
    bot_api.inject_fault("getUpdates", status=502)
    with pytest.raises(ApiTelegramException, match="Bad Gateway"):
        telebot.TeleBot(bot_api.token).get_updates()


def test_what_telegram_refuses_is_refused_and_not_recorded(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    pushed = bot_api.push_message(user_id=4, text="mine")
    with pytest.raises(ApiTelegramException, match="message can't be edited"):
        bot.edit_message_text("changed", 4, pushed["message"]["message_id"])
    photo = bot.send_photo(4, "photo-id")
    with pytest.raises(ApiTelegramException, match="no text in the message to edit"):
        bot.edit_message_text("caption?", 4, photo.message_id)
    before = len(bot_api.calls(None))
    with pytest.raises(ApiTelegramException, match="parameters of sendLocation"):
        telebot.apihelper._make_request(bot_api.token, "sendLocation", params={"chat_id": 4})
    assert len(bot_api.calls(None)) == before
    channel = bot.send_message("@news", "to the channel")
    assert channel.chat.type == "channel" and bot_api.transcript(channel.chat.id) == [
        "bot: to the channel"
    ]


def test_a_bot_may_ask_for_its_own_membership(bot_api: FakeBotAPI) -> None:
    bot = telebot.TeleBot(bot_api.token)
    bot_api.push_message(user_id=5, text="hi", chat_id=-100)
    bot_api.member_status[(-100, bot_api.bot_user["id"])] = "administrator"
    member = bot.get_chat_member(-100, bot_api.bot_user["id"])
    assert member.status == "administrator" and member.user.is_bot


def test_chat_mode_takes_wrong_input_and_switching_users_in_its_stride(tmp_path: Path) -> None:
    bot_file = tmp_path / "buttons_bot.py"
    bot_file.write_text(BUTTONS_BOT)
    typed = "/start\n:press x\n:user abc\n:user 7\n:press 1\n:frobnicate\n"
    result = chat(str(bot_file), typed=typed)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3] == "no button x here" and lines[4].startswith("? type a message")
    assert lines[5] == "no button 1 here"  # user 7's chat has no buttons
    assert lines[6].startswith("? ")
    missing = chat(str(tmp_path / "nope.py"), typed="")
    assert missing.returncode == 1 and "no bot file at" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_one_telebot_serves_tests_with_fresh_stand_ins(tmp_path: Path) -> None:
    bot = echo_bot()
    for texts in (["a", "b", "c"], ["x"]):  # each stand-in numbers its updates from 1
        with FakeBotAPI() as api, run_bot(api, bot) as runner:
            for text in texts:
                api.push_message(user_id=1, text=text)
            runner.wait_idle()
            replies = [line for line in api.transcript(1) if line.startswith("bot")]
            # telebot's two workers may answer in either order
            assert sorted(replies) == [f"bot: echo: {text}" for text in texts]


def test_a_telebot_runs_in_one_run_bot_at_a_time(bot_api: FakeBotAPI, run_bot: Any) -> None:
    bot = echo_bot()
    run_bot(bot)
    with pytest.raises(ValueError, match="running already"):
        run_bot(bot)


def test_sessions_the_test_seeds_are_the_ones_the_bot_finds(
    bot_api: FakeBotAPI, run_bot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from tgsession import with_session

    with with_session(initial=lambda: {"count": 0}).open(1) as session:
        session["count"] = 41  # seeded before the bot runs, in the test's sessions
    runner = run_bot(REPO / "examples" / "counter_bot.py")
    bot_api.push_message(user_id=1, text="/count")
    runner.wait_idle()
    assert bot_api.transcript(1)[-1] == "bot: count: 42"
    assert not (tmp_path / ".tgsession").exists()


def test_run_bot_leaves_a_default_session_held_around_it_usable(
    bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TGSESSION_DIR", str(tmp_path / "outer"))
    from tgsession import with_session

    counter = with_session(initial=lambda: {"count": 0})
    with counter.open(7) as session:
        with run_bot(bot_api, echo_bot()):
            pass
        session["count"] = 5  # saved on leaving, to the store it was opened from
    assert DiskStorage(tmp_path / "outer").read("session:7") == b'{"count":5}'


def test_a_malformed_parameter_is_refused_before_anything_is_kept(bot_api: FakeBotAPI) -> None:
    with pytest.raises(ApiTelegramException, match="reply_markup must be a JSON object"):
        telebot.apihelper._make_request(
            bot_api.token, "sendMessage", params={"chat_id": 4, "text": "x", "reply_markup": "[1]"}
        )
    assert bot_api.calls(None) == [] and bot_api.chat_messages(4) == []


def test_a_run_that_fails_to_start_leaves_the_bot_ready_to_run(bot_api: FakeBotAPI) -> None:
    bot = echo_bot()
    bot_api.inject_fault("setWebhook", status=502)
    with (
        pytest.raises(ApiTelegramException, match="Bad Gateway"),
        run_bot(bot_api, bot, webhook=True),
    ):
        pass
    with run_bot(bot_api, bot) as runner:
        bot_api.push_message(user_id=1, text="after")
        runner.wait_idle()
    assert bot_api.transcript(1)[-1] == "bot: echo: after"


def test_skip_pending_keeps_only_the_newest_queued_update_as_telebot_does(
    bot_api: FakeBotAPI,
) -> None:
    bot = echo_bot()
    bot.skip_pending = True
    bot_api.push_message(user_id=1, text="old1")
    bot_api.push_message(user_id=1, text="old2")
    with run_bot(bot_api, bot) as runner:
        runner.wait_idle()
        bot_api.push_message(user_id=1, text="during")
        runner.wait_idle()
    replies = [line for line in bot_api.transcript(1) if line.startswith("bot")]
    assert replies == ["bot: echo: old2", "bot: echo: during"]


def test_a_bot_restarted_on_one_stand_in_handles_each_update_once(bot_api: FakeBotAPI) -> None:
    handled: list[str] = []
    bot = slow_bot(handled)
    with run_bot(bot_api, bot):
        bot_api.push_message(user_id=1, text="pay")
        time.sleep(0.2)  # stopped while the handler runs
    with run_bot(bot_api, bot) as runner:
        runner.wait_idle()
    assert handled == ["pay"]


def slow_bot(handled: list[str]) -> telebot.TeleBot:
    """A bot whose handler takes half a second, long enough to stop the bot during it."""
    bot = telebot.TeleBot(FakeBotAPI.token, threaded=False)

    @bot.message_handler(func=lambda message: True)
    def slow(message: Any) -> None:
        time.sleep(0.5)
        handled.append(message.text)

    return bot


@pytest.mark.parametrize("webhook", [False, True], ids=["polling", "webhook"])
def test_a_new_bot_object_after_a_restart_gets_no_update_handled_before(
    bot_api: FakeBotAPI, webhook: bool
) -> None:
    handled: list[str] = []
    with run_bot(bot_api, slow_bot(handled)):
        bot_api.push_message(user_id=1, text="pay")
        time.sleep(0.2)  # stopped while the handler runs, before the next getUpdates
    # A new process builds a new TeleBot, polling or behind a webhook.
    with run_bot(bot_api, slow_bot(handled), webhook=webhook) as runner:
        bot_api.push_message(user_id=1, text="after")
        runner.wait_idle()
    assert handled == ["pay", "after"]


def test_skip_pending_holds_for_every_start_of_the_bot(bot_api: FakeBotAPI) -> None:
    bot = echo_bot()
    bot.skip_pending = True
    for first, second in (("old1", "old2"), ("old3", "old4")):
        bot_api.push_message(user_id=1, text=first)
        bot_api.push_message(user_id=1, text=second)
        with run_bot(bot_api, bot) as runner:
            runner.wait_idle()
    assert [line for line in bot_api.transcript(1) if line.startswith("bot")] == [
        "bot: echo: old2",
        "bot: echo: old4",
    ]
    assert bot.skip_pending  # left as it was found


def test_a_failing_run_bot_leaves_no_default_store_to_the_next_test(tmp_path: Path) -> None:
    test = tmp_path / "test_two.py"
    test.write_text(
        "import telebot\n"
        "from tgsession import with_session\n"
        "from tgsession.testing import FakeBotAPI\n"
        "\n"
        "sessions = with_session(initial=dict)\n"
        "\n"
        "def test_a_handler_raises(bot_api, run_bot):\n"
        "    bot = telebot.TeleBot(FakeBotAPI.token)\n"
        "\n"
        "    @bot.message_handler(func=lambda message: True)\n"
        "    @sessions\n"
        "    def handler(message, session):\n"
        "        if message.text == 'raise':\n"
        "            raise RuntimeError('boom')\n"
        "        session['secret'] = 'from the first test'\n"
        "\n"
        "    run_bot(bot)\n"
        "    bot_api.push_message(user_id=7, text='save')\n"
        "    bot_api.push_message(user_id=8, text='raise')\n"
        "    bot_api.wait_idle()  # the runner's wait_idle() would report it: the teardown does\n"
        "\n"
        "def test_the_next_test_has_its_own_sessions(tmp_path, monkeypatch):\n"
        "    monkeypatch.setenv('TGSESSION_DIR', str(tmp_path / 'mine'))\n"
        "    with sessions.open(7) as session:\n"
        "        assert session == {}\n"
    )
    result = pytest_in_a_process(test)
    assert "2 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert "HandlerError" in result.stdout


def test_run_bot_moves_a_default_store_opened_elsewhere(
    bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tgsession.storage.disk import default_directory, default_storage

    monkeypatch.setenv("TGSESSION_DIR", str(tmp_path / "a"))
    default_storage()  # opened in a
    monkeypatch.setenv("TGSESSION_DIR", str(tmp_path / "b"))
    with run_bot(bot_api, echo_bot(), sessions=tmp_path / "b"):
        default_storage()
        assert default_directory() == str(tmp_path / "b")


def test_a_default_store_forgotten_while_held_is_closed_once_free(tmp_path: Path) -> None:
    from tgsession import with_session
    from tgsession.storage import disk

    with run_bot_sessions(tmp_path / "first"):
        held = with_session(initial=dict).open(1)
        held.__enter__()
        disk.forget_default_storage()
        assert disk._retired  # kept open: a session of it is held
        held.__exit__(None, None, None)
        disk.forget_default_storage()
        assert disk._retired == []


@pytest.mark.parametrize("when", ["locking", "unlocking"])
def test_a_forget_while_a_thread_takes_or_releases_a_lock_closes_nothing_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    import fcntl

    from tgsession import with_session
    from tgsession.storage import disk

    forgets: list[int] = []

    def forgetting(original: Any) -> Any:
        def call(fd: int, operation: int, *args: Any) -> Any:
            unlocking = operation == fcntl.LOCK_UN
            if not forgets and unlocking == (when == "unlocking"):
                forgets.append(len(disk._retired))
                disk.forget_default_storage()  # another thread's forget, at the worst time
                forgets.append(len(disk._retired))
            return original(fd, operation, *args)

        return call

    sessions = with_session(initial=dict)
    with run_bot_sessions(tmp_path / "sessions"):
        with sessions.open(1) as session:  # the default store is open
            session["n"] = 1
        monkeypatch.setattr(fcntl, "lockf", forgetting(fcntl.lockf))
        with sessions.open(1) as session:
            session["n"] = 2
        monkeypatch.undo()
        assert forgets == [0, 1]  # retired, and kept open while the thread was in its lock
        disk.forget_default_storage()
        assert disk._retired == []  # closed once free
        with sessions.open(1) as session:
            assert session == {"n": 2}


def test_runs_of_a_threaded_bot_leave_no_files_of_their_stores_open(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    import gc

    from tgsession import with_session

    sessions = with_session(initial=lambda: {"n": 0})
    bot = telebot.TeleBot(FakeBotAPI.token)  # threaded: telebot's workers outlive each run

    @bot.message_handler(func=lambda message: True)
    @sessions
    def count(message: Any, session: dict[str, int]) -> None:
        session["n"] += 1

    for run in range(3):
        with run_bot(bot_api, bot, sessions=tmp_path / f"run{run}") as runner:
            for user in range(4):
                bot_api.push_message(user_id=user, text="hi")
            runner.wait_idle()
    gc.collect()
    open_files = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            open_files.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    assert [name for name in open_files if name.startswith(str(tmp_path))] == []


def test_a_session_held_through_a_forgotten_store_stays_locked_when_another_store_closes(
    tmp_path: Path,
) -> None:
    from tgsession import with_session
    from tgsession.storage import disk

    directory = tmp_path / "sessions"
    with run_bot_sessions(directory):
        held = with_session(initial=dict).open(1)
        session = held.__enter__()  # a handler holds it, through the default store
        other = DiskStorage(directory)  # another store object of the same directory
        disk.forget_default_storage()
        other.close()  # allowed: it holds nothing; the directory must stay open
        elsewhere = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from tgsession import DiskStorage, SessionLockTimeout\n"
                f"store = DiskStorage({str(directory)!r}, lock_timeout=0.3)\n"
                "try:\n"
                "    store.lock('session:1').__enter__()\n"
                "except SessionLockTimeout:\n"
                "    sys.exit(7)\n",
            ],
            env=child_env(),
            timeout=60,
        )
        assert elsewhere.returncode == 7  # still locked by the handler
        session["saved"] = True
        held.__exit__(None, None, None)  # and its save goes through
        disk.forget_default_storage()
        assert disk._retired == []
    assert json.loads(DiskStorage(directory).read("session:1") or b"") == {"saved": True}


def run_bot_sessions(directory: Path) -> Any:
    from tgsession.testing._runner import sessions_in

    return sessions_in(directory)

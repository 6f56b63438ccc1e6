"""Every example runs, as a user would run it, against the loopback Bot API stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tgsession import DiskStorage, with_session
from tgsession.testing import FakeBotAPI

from conftest import child_env, redis_storage, redis_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_env(api: FakeBotAPI, sessions: Path) -> dict[str, str]:
    return child_env(
        BOT_TOKEN=api.token, TELEGRAM_API_URL=api.base_url, TGSESSION_DIR=str(sessions)
    )


@contextmanager
def running(name: str, api: FakeBotAPI, sessions: Path, **env: str) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)], env={**example_env(api, sessions), **env}
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(15)


def replies(api: FakeBotAPI, count: int) -> list[str]:
    return [call["text"] for call in api.wait_for_calls(count, timeout=60)]


def test_counter_bot_counts_per_user_and_resets(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    with running("counter_bot.py", bot_api, tmp_path):
        for text in ("/count", "/count", "/reset", "/count"):
            bot_api.push_message(user_id=1, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
        bot_api.push_message(user_id=2, text="/count")
        texts = replies(bot_api, 5)
    assert texts == ["count: 1", "count: 2", "count reset", "count: 1", "count: 1"]


def test_counter_bot_keeps_counting_after_a_restart(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    counter = with_session(storage=DiskStorage(tmp_path))
    for expected in (1, 2):
        with running("counter_bot.py", bot_api, tmp_path):
            bot_api.push_message(user_id=1, text="/count")
            assert replies(bot_api, expected)[-1] == f"count: {expected}"
            # The bot replies before its handler returns and saves; opening the session takes
            # its lock, so this waits for that save before the bot is stopped.
            with counter.open(1) as session:
                assert session == {"count": expected}


def test_lazy_bot_saves_and_lists_notes(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    notes = with_session(storage=DiskStorage(tmp_path))
    with running("lazy_bot.py", bot_api, tmp_path):
        # While this test holds user 4's session, the bot can only answer what never
        # touches it: /help and a bare /note must still get their replies.
        with notes.open(4):
            for text in ("/help", "/note"):
                bot_api.push_message(user_id=4, text=text)
                replies(bot_api, len(bot_api.calls()) + 1)
        for text in ("/note buy milk", "/note call mum", "/notes"):
            bot_api.push_message(user_id=4, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
    assert [call["text"] for call in bot_api.calls()] == [
        "/note TEXT saves a note, /notes lists them",
        "usage: /note TEXT",
        "saved note 1",
        "saved note 2",
        "1. buy milk\n2. call mum",
    ]


def test_group_bot_keeps_a_user_and_a_chat_session(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    steps = [(1, "/topic cats"), (1, "/stats"), (2, "/stats"), (1, "/stats")]
    with running("group_bot.py", bot_api, tmp_path):
        for user, text in steps:
            bot_api.push_message(user_id=user, text=text, chat_id=-50)
            replies(bot_api, len(bot_api.calls()) + 1)
        bot_api.push_message(user_id=1, text="/stats", chat_id=-60)
        texts = replies(bot_api, 5)
    assert texts == [
        "topic: cats",
        "you: 1, this chat: 1, topic: cats",
        "you: 1, this chat: 2, topic: cats",
        "you: 2, this chat: 3, topic: cats",
        "you: 3, this chat: 1, topic: none",
    ]


def test_edit_sessions_script_edits_a_counter_while_the_bot_runs(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    def script(*args: str) -> str:
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "edit_sessions.py"), *args],
            env=example_env(bot_api, tmp_path),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    with running("counter_bot.py", bot_api, tmp_path):
        bot_api.push_message(user_id=7, text="/count")
        replies(bot_api, 1)
        assert script("7", "add", "10") == "user 7: count 11"
        bot_api.push_message(user_id=7, text="/count")
        assert replies(bot_api, 2)[-1] == "count: 12"
        assert script("7", "reset") == "user 7: reset"
        assert script("7", "show") == "user 7: count 0"


def test_migration_bot_upgrades_the_sessions_of_counter_bot(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    with running("counter_bot.py", bot_api, tmp_path):
        for _ in range(3):
            bot_api.push_message(user_id=6, text="/count")
        replies(bot_api, 3)
        with with_session(storage=DiskStorage(tmp_path)).open(6) as session:
            assert session == {"count": 3}  # waits for the last save
    with running("migration_bot.py", bot_api, tmp_path):
        bot_api.push_message(user_id=6, text="/count")
        assert replies(bot_api, 4)[-1] == "visits: 4 (en)"
        with with_session(storage=DiskStorage(tmp_path), version=2).open(6):
            pass  # waits for the bot's save
    assert DiskStorage(tmp_path).read("session:6") == b'{"$v":2,"lang":"en","visits":4}'


def test_profile_bot_keeps_a_dataclass_profile_and_forgets_it(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    profiles = with_session(key="profile", storage=DiskStorage(tmp_path))
    with running("profile_bot.py", bot_api, tmp_path):
        for text in ("/name Ann", "/lang de", "/lang fr", "/profile", "/profile"):
            bot_api.push_message(user_id=3, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
        with profiles.open(3) as stored:  # waits for the last save, under the lock
            assert stored == {"lang": "de", "name": "Ann", "visits": 2}
        bot_api.push_message(user_id=3, text="/forget")
        bot_api.push_message(user_id=3, text="/profile")
        texts = replies(bot_api, 7)
    assert texts == [
        "name: Ann",
        "lang: de",
        "usage: /lang en|de",
        "Hallo, Ann (visit 1)",
        "Hallo, Ann (visit 2)",
        "forgotten",
        "Hello, stranger (visit 1)",
    ]


def test_reminder_bot_keeps_due_times_as_datetimes(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    with running("reminder_bot.py", bot_api, tmp_path):
        for text in ("/remind 30 call mum", "/remind 90 water plants", "/done 1", "/list"):
            bot_api.push_message(user_id=4, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
        with with_session(key="reminders", storage=DiskStorage(tmp_path)).open(4) as stored:
            pass  # waits for the last save, under the lock
    texts = replies(bot_api, 4)
    assert texts[0].startswith("reminder 1 set for") and texts[2] == "done: call mum"
    assert texts[3].startswith("1. water plants at ") and texts[3].endswith(" UTC")
    (reminder,) = stored["items"]
    due = datetime.fromisoformat(reminder["due"].replace("Z", "+00:00"))
    assert due.utcoffset() == timedelta(0)  # an aware datetime, stored as ISO 8601 text
    assert timedelta(minutes=85) < due - datetime.now(timezone.utc) <= timedelta(minutes=90)
    assert stored["snooze"] == "PT600S"  # a timedelta, as an ISO 8601 duration


def test_redis_bot_counts_in_redis(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    with redis_storage() as storage:
        env = {"REDIS_URL": redis_url(), "REDIS_PREFIX": storage.prefix}
        with running("redis_bot.py", bot_api, tmp_path, **env):
            for _ in range(3):
                bot_api.push_message(user_id=8, text="/count")
            texts = replies(bot_api, 3)
            with with_session(storage=storage).open(8) as session:
                assert session == {"count": 3}
    assert [text.split(" (pid")[0] for text in texts] == ["count: 1", "count: 2", "count: 3"]


def test_offline_demo_runs_without_a_token_or_network() -> None:
    env = {k: v for k, v in child_env().items() if k not in ("BOT_TOKEN", "TELEGRAM_API_URL")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "offline_demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 9
    for user in (101, 102, 103):
        assert [line for line in lines if f"user {user}:" in line] == [
            f"bot -> user {user}: count: {n}" for n in (1, 2, 3)
        ]


def test_form_bot_goes_on_after_a_sigkill_mid_form(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "form_bot.py")], env=example_env(bot_api, tmp_path)
    )
    try:
        for text in ("/signup", "Ann"):
            bot_api.push_message(user_id=1, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
    finally:
        process.kill()  # SIGKILL: no chance to save anything more
        process.wait(15)
    with running("form_bot.py", bot_api, tmp_path):
        for text in ("30", "Paris"):
            bot_api.push_message(user_id=1, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
    assert [call["text"] for call in bot_api.calls()] == [
        "What is your name?",
        "How old are you?",
        "Which city?",
        "Signed up: Ann, 30, Paris",
    ]


# A webhook worker: the example's bot, fed one update per line of stdin.
WEBHOOK_WORKER = """
import json, runpy, sys, telebot
bot = runpy.run_path(sys.argv[1])["bot"]
for line in sys.stdin:
    bot.process_new_updates([telebot.types.Update.de_json(json.loads(line))])
"""


def test_form_bot_in_two_webhook_workers_fed_alternately(
    bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WEBHOOK_WORKER, str(EXAMPLES / "form_bot.py")],
            stdin=subprocess.PIPE,
            text=True,
            env=example_env(bot_api, tmp_path),
        )
        for _ in range(2)
    ]
    try:
        for turn, text in enumerate(("/signup", "Bob", "41", "Rome")):
            update = {"update_id": turn, "message": bot_api.message(2, text)}
            worker = workers[turn % 2]
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(update) + "\n")
            worker.stdin.flush()
            replies(bot_api, turn + 1)
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(30)
    assert [call["text"] for call in bot_api.calls()][-1] == "Signed up: Bob, 41, Rome"

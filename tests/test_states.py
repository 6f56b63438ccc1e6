"""StateStorage: telebot's StatesGroup, state= filters and StateContext on tgsession."""

from __future__ import annotations

import json
import pickle
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, StateStorage
from tgsession.testing import FakeBotAPI

from conftest import polling

pytest.importorskip("telebot.states.sync.context", reason="telebot before 4.22: no StatesV2")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "survey_bot.py"


from telebot.states import State, StatesGroup  # noqa: E402 (after the skip above)


class Old(StatesGroup):  # at module level (pickle finds it by name), as in a real bot
    step = State()


def survey(api: FakeBotAPI, storage: Any, threaded: bool = False) -> Any:
    """examples/survey_bot.py's bot, on ``storage`` (as the example, but not polling)."""
    import telebot

    module = runpy.run_path(str(EXAMPLE), run_name="survey")  # builds the bot, no polling
    bot: telebot.TeleBot = module["bot"]
    bot.current_states = StateStorage(storage)
    if not threaded:
        bot.threaded = False
    return bot


def answers(api: FakeBotAPI) -> list[str]:
    return [call["text"] for call in api.calls()]


@pytest.fixture
def env(bot_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBotAPI:
    monkeypatch.setenv("BOT_TOKEN", bot_api.token)
    monkeypatch.setenv("TGSESSION_DIR", str(tmp_path / "default"))
    return bot_api


def test_a_survey_is_asked_and_its_state_stored_as_json(env: FakeBotAPI, storage: Any) -> None:
    bot = survey(env, storage)
    for text in ("/start", "Ann"):
        env.push_message(user_id=1, text=text)
        bot.process_new_updates(bot.get_updates(offset=-1))
    entry = f"state:{bot.bot_id}:1:1"  # telebot keys states by bot, chat and user
    record = json.loads(storage.read(entry) or b"")
    assert record == {"state": "Survey:age", "data": {"name": "Ann"}}
    for text in ("old", "30"):
        env.push_message(user_id=1, text=text)
        bot.process_new_updates(bot.get_updates(offset=-1))
    assert answers(env) == [
        "What is your name?",
        "How old are you?",
        "Please send your age as a number.",
        "Thank you, Ann, aged 30.",
    ]
    assert storage.read(entry) is None  # state.delete() deleted the record


def test_answers_sent_at_once_fill_one_question_each(env: FakeBotAPI, storage: Any) -> None:
    bot = survey(env, storage, threaded=True)
    users = range(1, 41)
    for user in users:
        for text in ("/start", f"name{user}", f"{user}"):
            env.push_message(user_id=user, text=text)
    with polling(bot):
        env.wait_for_calls(3 * len(users))
    done = sorted(text for text in answers(env) if text.startswith("Thank you"))
    assert done == sorted(f"Thank you, name{user}, aged {user}." for user in users)


def test_set_state_inside_a_retrieve_data_block_keeps_both(env: FakeBotAPI) -> None:
    states = StateStorage(DiskStorage(Path(env.token.replace(":", "_"))))
    states.set_state(5, 5, "Survey:name")
    with states.get_interactive_data(5, 5) as data:
        data["name"] = "Eve"
        states.set_state(5, 5, "Survey:age")
    assert states.get_state(5, 5) == "Survey:age"
    assert states.get_data(5, 5) == {"name": "Eve"}
    with pytest.raises(RuntimeError), states.get_interactive_data(5, 5) as data:
        data["name"] = "half-done"
        raise RuntimeError("the block failed")
    assert states.get_data(5, 5) == {"name": "Eve"}  # telebot's own saves it anyway


def test_existing_telebot_states_are_imported_once_from_redis(storage: Any) -> None:
    import redis
    from telebot.storage import StateRedisStorage

    from conftest import redis_url

    client = redis.Redis.from_url(redis_url())
    prefix = "tgsession-test-import"
    old = StateRedisStorage(redis_url=redis_url(), prefix=prefix)
    try:
        old.set_state(7, 7, "Survey:age")
        old.set_data(7, 7, "name", "Gus")
        old.set_state(-100, 8, "Survey:name", message_thread_id=3)
        states = StateStorage(storage)
        assert states.import_redis(client, prefix) == 2
        assert states.get_state(7, 7) == "Survey:age"
        assert states.get_data(7, 7) == {"name": "Gus"}
        assert states.get_state(-100, 8, message_thread_id=3) == "Survey:name"
        assert states.import_redis(client, prefix) == 0  # kept, unless overwrite=True
    finally:
        for key in client.scan_iter(match=prefix + ":*"):
            client.delete(key)


def test_a_trusted_pickle_file_of_telebot_states_is_imported_with_a_warning(
    tmp_path: Path, storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from telebot.storage import StatePickleStorage

    path = tmp_path / "states.pkl"
    old = StatePickleStorage(file_path=str(path))
    old.set_state(9, 9, Old.step)  # telebot 4.37.1 pickles the State object itself
    old.set_data(9, 9, "k", "v")
    assert isinstance(pickle.loads(path.read_bytes())["telebot:9:9"]["state"], State)
    states = StateStorage(storage)
    assert states.import_pickle(str(path)) == 1
    assert states.get_state(9, 9) == "Old:step"  # its name, which state= filters match
    assert states.get_data(9, 9) == {"k": "v"}
    assert "only for a file you trust" in caplog.text


def test_the_survey_bot_goes_on_after_a_sigkill(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    from test_examples import example_env, replies, running

    states = StateStorage(DiskStorage(tmp_path))
    bot_id = int(bot_api.token.split(":")[0])
    process = subprocess.Popen([sys.executable, str(EXAMPLE)], env=example_env(bot_api, tmp_path))
    try:
        for text in ("/start", "Hal"):
            bot_api.push_message(user_id=3, text=text)
            replies(bot_api, len(bot_api.calls()) + 1)
        # telebot's example replies before its update is saved: reading the state takes its
        # lock, so this waits for that save before the bot is killed.
        assert states.get_state(3, 3, bot_id=bot_id) == "Survey:age"
    finally:
        process.kill()  # SIGKILL: nothing more is saved
        process.wait(15)
    with running("survey_bot.py", bot_api, tmp_path):
        bot_api.push_message(user_id=3, text="52")
        assert replies(bot_api, 3)[-1] == "Thank you, Hal, aged 52."

"""StateStorage: telebot's StatesGroup, state= filters and StateContext on tgsession."""

from __future__ import annotations

import importlib.util
import json
import pickle
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, MemoryStorage, SessionError, StateStorage, isolate
from tgsession.errors import describe
from tgsession.testing import FakeBotAPI

from conftest import polling

# telebot 4.22 brought StatesV2 (telebot.states, StateContext), which the example uses.
needs_states_v2 = pytest.mark.skipif(
    importlib.util.find_spec("telebot.states") is None, reason="telebot before 4.22"
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "survey_bot.py"


from telebot.handler_backends import State, StatesGroup  # noqa: E402 (every version)


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


@needs_states_v2
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


@needs_states_v2
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


def test_set_state_inside_a_retrieve_data_block_keeps_both(tmp_path: Path) -> None:
    states = StateStorage(DiskStorage(tmp_path))
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


@needs_states_v2
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


def test_an_import_that_stops_at_a_bad_state_names_it_and_how_many_came_before(
    tmp_path: Path, storage: Any
) -> None:
    path = tmp_path / "states.pkl"
    good = {"state": "Survey:age", "data": {}}
    states_file = {"telebot:1:1": good, "telebot:1:2": ["a", "list"], "telebot:1:3": good}
    path.write_bytes(pickle.dumps(states_file))
    states = StateStorage(storage)
    with pytest.raises(SessionError) as stopped:
        states.import_pickle(str(path))
    message = str(stopped.value)
    assert "stopped at telebot's state 'telebot:1:2'" in message
    assert "its record is of type list, not a telebot state record" in message
    assert "1 state was imported before it" in message
    assert "Import again once it is fixed or removed: the states already copied are kept" in (
        message
    )
    assert states.get_state(1, 1) == "Survey:age" and states.get_state(1, 3) is None
    failed: list[tuple[str, str]] = []
    copied = states.import_pickle(
        str(path), on_error=lambda name, error: failed.append((name, type(error).__name__))
    )
    assert copied == 1 and failed == [("telebot:1:2", "ValueError")]  # it went on
    assert states.get_state(1, 3) == "Survey:age"


def test_states_outside_the_prefix_or_not_telebots_are_reported_by_name(
    tmp_path: Path, storage: Any
) -> None:
    path = tmp_path / "states.pkl"
    path.write_bytes(
        pickle.dumps(
            {
                "bot:1:1": {"state": "S:a", "data": {}},  # made with another prefix
                "telebot:1:2": {"state": "S:a", "data": ["a", "list"]},
                "telebot:1:3": {"state": 7, "data": {}},
                10: {21: "not a record"},  # the layout before StatesV2
            }
        )
    )
    failed: dict[str, str] = {}
    copied = StateStorage(storage).import_pickle(
        str(path), on_error=lambda name, error: failed.setdefault(name, str(error))
    )
    assert copied == 0
    assert "not under the prefix 'telebot:'" in failed["bot:1:1"]
    assert "is not a telebot state record" in failed["telebot:1:2"]
    assert "is not a telebot state record" in failed["telebot:1:3"]
    assert "its record is of type str, not a telebot state record" in failed["chat 10, user 21"]


def test_a_file_that_is_not_telebots_dict_of_states_imports_nothing(
    tmp_path: Path, storage: Any
) -> None:
    path = tmp_path / "states.pkl"
    path.write_bytes(pickle.dumps(["telebot:1:1"]))
    with pytest.raises(ValueError, match="holds a value of type list, not the dict of a"):
        StateStorage(storage).import_pickle(str(path))


def test_an_import_from_redis_names_bad_data_and_keys_that_are_not_utf8(storage: Any) -> None:
    import redis

    from conftest import redis_url

    client = redis.Redis.from_url(redis_url())
    prefix = "tgsession-test-bad-import"
    not_utf8 = f"{prefix}:5:\xff".encode("latin-1")
    try:
        client.hset(f"{prefix}:5:5", mapping={"state": "S:a", "data": "{not json"})
        client.hset(not_utf8, mapping={"state": "S:a"})
        client.hset(f"{prefix}:5:6", mapping={"state": "S:a", "data": '{"n": 1}'})
        failed: dict[str, str] = {}
        copied = StateStorage(storage).import_redis(
            client, prefix, on_error=lambda name, error: failed.setdefault(name, describe(error))
        )
        assert copied == 1
        assert failed[f"{prefix}:5:5"].startswith("JSONDecodeError")
        assert failed[f"{prefix}:5:\\xff"].startswith("UnicodeDecodeError")
        with pytest.raises(SessionError, match="stopped at telebot's state"):
            StateStorage(storage).import_redis(client, prefix)
    finally:
        client.delete(f"{prefix}:5:5", f"{prefix}:5:6", not_utf8)
        client.close()


@needs_states_v2
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


@needs_states_v2
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
        # And its next poll told the stand-in that "Hal" is done, as Telegram would be told:
        # else the restarted bot would get "Hal" again, as from Telegram, and take it for an age.
        deadline = time.monotonic() + 30
        while bot_api.pending_updates:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        process.kill()  # SIGKILL: nothing more is saved
        process.wait(15)
    with running("survey_bot.py", bot_api, tmp_path):
        bot_api.push_message(user_id=3, text="52")
        assert replies(bot_api, 3)[-1] == "Thank you, Hal, aged 52."


class Survey(StatesGroup):
    name = State()
    age = State()


def test_the_older_states_api_works_on_every_telebot_version(bot_api: FakeBotAPI) -> None:
    # bot.set_state(user, state, chat) and retrieve_data(user, chat), from before StatesV2.
    import telebot
    from telebot import custom_filters

    bot = telebot.TeleBot(
        bot_api.token, threaded=False, state_storage=StateStorage(MemoryStorage())
    )
    isolate(bot)

    @bot.message_handler(commands=["start"])
    def start(message: Any) -> None:
        bot.set_state(message.from_user.id, Survey.name, message.chat.id)
        bot.send_message(message.chat.id, "name?")

    @bot.message_handler(state=Survey.name)
    def name(message: Any) -> None:
        with bot.retrieve_data(message.from_user.id, message.chat.id) as data:
            data["name"] = message.text
        bot.set_state(message.from_user.id, Survey.age, message.chat.id)
        bot.send_message(message.chat.id, "age?")

    @bot.message_handler(state=Survey.age)
    def age(message: Any) -> None:
        with bot.retrieve_data(message.from_user.id, message.chat.id) as data:
            name = data["name"]
        bot.delete_state(message.from_user.id, message.chat.id)
        bot.send_message(message.chat.id, f"thanks {name} {message.text}")

    bot.add_custom_filter(custom_filters.StateFilter(bot))
    for text in ("/start", "Ann", "30"):
        bot_api.push_message(user_id=5, text=text)
        bot.process_new_updates(bot.get_updates(offset=-1))
    assert answers(bot_api) == ["name?", "age?", "thanks Ann 30"]


def test_two_users_changing_each_others_state_at_once_do_not_wait_for_each_other(
    bot_api: FakeBotAPI,
) -> None:
    # Each update holds its own user's state to its end; another user's state is changed
    # after the update's save, so two users inviting each other cannot deadlock.
    import telebot

    states = StateStorage(MemoryStorage(lock_timeout=10))
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=8, state_storage=states)
    isolate(bot)
    from telebot import custom_filters

    @bot.message_handler(state=Survey.age)  # its filter holds the sender's own state
    def invited(message: Any) -> None:
        bot.send_message(message.chat.id, "you were invited")

    @bot.message_handler(commands=["invite"])
    def invite(message: Any) -> None:
        other = int(message.text.split()[1])
        bot.set_state(other, Survey.age, other)
        bot.send_message(message.chat.id, f"invited {other}")

    bot.add_custom_filter(custom_filters.StateFilter(bot))
    for _ in range(20):
        bot_api.push_message(user_id=1, text="/invite 2")
        bot_api.push_message(user_id=2, text="/invite 1")
    with polling(bot):
        bot_api.wait_for_calls(40, timeout=30)
    # telebot keys states by bot id since StatesV2; 4.14 has none
    assert states.get_state(1, 1, bot_id=getattr(bot, "bot_id", None)) == "Survey:age"


def test_imports_follow_the_prefix_and_separator_and_skip_what_is_no_state(
    storage: Any, tmp_path: Path
) -> None:
    import redis

    from conftest import redis_url

    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    prefix = "tgsession-test-[1]"
    try:
        client.hset(f"{prefix}_5_5", mapping={"state": "Survey:age", "data": '{"a": 1}'})
        client.set(f"{prefix}_junk", "not a hash")
        states = StateStorage(storage)
        assert states.import_redis(client, prefix, separator="_") == 1
        assert states.get_state(5, 5) == "Survey:age" and states.get_data(5, 5) == {"a": 1}
    finally:
        client.delete(f"{prefix}_5_5", f"{prefix}_junk")
    old = tmp_path / "old.pkl"  # telebot before 4.23: {chat: {user: record}}
    old.write_bytes(pickle.dumps({6: {6: {"state": "Survey:name", "data": {}}}}))
    assert states.import_pickle(str(old)) == 1
    assert states.get_state(6, 6) == "Survey:name"
    new = tmp_path / "new.pkl"
    new.write_bytes(pickle.dumps({"my:bot:7:7": {"state": "Survey:name", "data": {}}}))
    assert states.import_pickle(str(new), prefix="my:bot") == 1
    assert states.get_state(7, 7) == "Survey:name"


def test_retrieve_data_outside_an_update_holds_the_lock_for_the_whole_block(
    storage: Any,
) -> None:
    import threading
    import time

    states = StateStorage(storage)
    states.set_data(3, 3, "n", 0)

    def bump() -> None:
        with states.get_interactive_data(3, 3) as data:
            value = data["n"]
            time.sleep(0.01)
            data["n"] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert states.get_data(3, 3) == {"n": 10}


def test_an_update_reads_back_its_own_changes_to_another_users_state(
    bot_api: FakeBotAPI,
) -> None:
    import telebot

    states = StateStorage(MemoryStorage())
    bot = telebot.TeleBot(bot_api.token, threaded=False, state_storage=states)
    isolate(bot)
    seen: list[Any] = []

    @bot.inline_handler(func=lambda query: True)  # an update without a chat: its sender's
    def inline(query: Any) -> None:
        bot.set_state(query.from_user.id, Survey.name)
        seen.append(bot.get_state(query.from_user.id))

    @bot.message_handler(commands=["pair"])
    def pair(message: Any) -> None:
        states.set_data(2, 2, "x", 1)
        with states.get_interactive_data(2, 2) as data:
            data["y"] = 2
        seen.append(states.get_data(2, 2))

    bot_api.push_update(
        {
            "inline_query": {
                "id": "1",
                "from": {"id": 9, "is_bot": False, "first_name": "I"},
                "query": "q",
                "offset": "",
            }
        }
    )
    bot_api.push_message(user_id=1, text="/pair")
    bot.process_new_updates(bot.get_updates())  # one batch, run in arrival order
    assert seen[0] == "Survey:name"
    assert seen[1] == {"x": 1, "y": 2}
    assert states.get_data(2, 2) == {"x": 1, "y": 2}

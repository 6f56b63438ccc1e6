"""isolate(bot): each user's updates one at a time, in arrival order, filters included.

A real threaded telebot polls the loopback stand-in; bursts are queued before it polls, so
that each user's messages reach the worker pool together, as when a user types fast.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import telebot

from tgsession import DiskStorage, MemoryStorage, SessionError, isolate, with_session
from tgsession.testing import FakeBotAPI

from conftest import cue, polling, rest_of, said, start_worker


def threaded_bot(api: FakeBotAPI, threads: int = 8) -> telebot.TeleBot:
    return telebot.TeleBot(api.token, threaded=True, num_threads=threads)


def form_bot(api: FakeBotAPI, storage: Any) -> tuple[telebot.TeleBot, Any]:
    """A three-step form routed by the step in the session, decided by filters."""
    bot = threaded_bot(api)
    form = with_session(initial=lambda: {"step": "name"}, storage=storage)
    isolate(bot)

    def at(step: str) -> Any:
        return lambda message: form.current(message)["step"] == step

    def jitter() -> None:  # handlers of other users overlap, and workers race
        time.sleep(random.random() / 500)

    @bot.message_handler(func=at("name"))
    @form
    def name(message: Any, session: Any) -> None:
        jitter()
        session.update(name=message.text, step="age")

    @bot.message_handler(func=at("age"))
    @form
    def age(message: Any, session: Any) -> None:
        jitter()
        session.update(age=message.text, step="city")

    @bot.message_handler(func=at("city"))
    @form
    def city(message: Any, session: Any) -> None:
        jitter()
        session.update(city=message.text, step="done")
        bot.send_message(message.chat.id, "thanks")

    return bot, form


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_bursts_of_three_messages_are_routed_and_stored_in_order(
    bot_api: FakeBotAPI, tmp_path: Path, kind: str
) -> None:
    storage = MemoryStorage() if kind == "memory" else DiskStorage(tmp_path)
    bot, form = form_bot(bot_api, storage)
    users = range(1, 101)
    rounds = 3
    with polling(bot):
        for round_ in range(rounds):
            for user in users:  # three messages per user at once, 300 updates a round
                for field in ("name", "age", "city"):
                    bot_api.push_message(user_id=user, text=f"{field} {user}.{round_}")
            bot_api.wait_for_calls(len(users) * (round_ + 1))
            for user in users:  # the next round starts the form again
                with form.open(user) as session:
                    session.update(step="name")
    misrouted = []
    for user in users:
        with form.open(user) as session:
            expected = {f: f"{f} {user}.{rounds - 1}" for f in ("name", "age", "city")}
            if {f: session.get(f) for f in expected} != expected:
                misrouted.append((user, dict(session)))
    assert misrouted == []


def test_a_user_flooding_the_bot_does_not_take_the_other_users_workers(
    bot_api: FakeBotAPI,
) -> None:
    bot = threaded_bot(bot_api, threads=4)
    isolate(bot)
    started: list[int] = []
    lock = threading.Lock()

    @bot.message_handler(func=lambda message: True)
    def handle(message: Any) -> None:
        with lock:
            started.append(message.from_user.id)
        time.sleep(0.005)
        bot.send_message(message.chat.id, "ok")

    for _ in range(200):
        bot_api.push_message(user_id=1, text="spam")
    for user in range(2, 6):
        bot_api.push_message(user_id=user, text="hello")
    with polling(bot):
        bot_api.wait_for_calls(204)
    first_turn = {user: started.index(user) for user in range(2, 6)}
    # The flooder holds one place in the pool's queue at a time: the others come next.
    assert max(first_turn.values()) < 8, first_turn
    assert started.count(1) == 200


def test_updates_of_one_batch_run_in_arrival_order_across_update_types(
    bot_api: FakeBotAPI,
) -> None:
    # telebot dispatches a batch by type (messages before callback queries): a button pressed
    # before a message was sent would otherwise be handled after it.
    bot = threaded_bot(bot_api)
    isolate(bot)
    seen: list[str] = []

    @bot.callback_query_handler(func=lambda query: True)
    def pressed(query: Any) -> None:
        time.sleep(0.02)
        seen.append(f"button {query.data}")

    @bot.message_handler(func=lambda message: True)
    def typed(message: Any) -> None:
        seen.append(f"message {message.text}")
        bot.send_message(message.chat.id, "ok")

    bot_api.push_callback(user_id=7, data="1")
    bot_api.push_message(user_id=7, text="2")
    bot_api.push_callback(user_id=7, data="3")
    bot_api.push_message(user_id=7, text="4")
    with polling(bot):
        bot_api.wait_for_calls(2)
    assert seen == ["button 1", "message 2", "button 3", "message 4"]


def unthreaded(api: FakeBotAPI) -> telebot.TeleBot:
    return telebot.TeleBot(api.token, threaded=False)


def test_a_handler_raising_mid_step_leaves_the_step_as_it_was(bot_api: FakeBotAPI) -> None:
    bot = unthreaded(bot_api)
    form = with_session(initial=lambda: {"step": "name"}, storage=MemoryStorage())
    isolate(bot)

    @bot.message_handler(func=lambda message: form.current(message)["step"] == "name")
    @form
    def name(message: Any, session: Any) -> None:
        session["step"] = "age"
        raise RuntimeError("the database is down")

    bot_api.push_message(user_id=3, text="Ann")
    with pytest.raises(RuntimeError):
        bot.process_new_updates(bot.get_updates())
    with form.open(3) as session:
        assert session == {"step": "name"}


def test_filters_and_handlers_of_one_update_see_one_session_loaded_once(
    bot_api: FakeBotAPI,
) -> None:
    from conftest import RecordingStorage

    recording = RecordingStorage()
    bot = unthreaded(bot_api)
    form = with_session(initial=lambda: {"step": "name"}, storage=recording)
    isolate(bot)
    objects: list[int] = []

    def at(step: str) -> Any:
        def check(message: Any) -> bool:
            objects.append(id(form.current(message)))
            return bool(form.current(message)["step"] == step)

        return check

    @bot.message_handler(func=at("age"))
    @form
    def age(message: Any, session: Any) -> None:
        raise AssertionError("not this step")

    @bot.message_handler(func=at("name"))
    @form
    def name(message: Any, session: Any) -> None:
        objects.append(id(session))
        session["step"] = "age"

    bot_api.push_message(user_id=4, text="Ann")
    bot.process_new_updates(bot.get_updates())
    assert len(set(objects)) == 1 and len(objects) == 3
    assert recording.of("read") == ["session:4"]
    assert recording.of("lock") == ["session:4"]
    assert recording.of("write") == ["session:4"]


def test_updates_without_a_key_run_as_before(bot_api: FakeBotAPI) -> None:
    bot = unthreaded(bot_api)
    isolate(bot, get_session_key=lambda update: None)
    seen: list[str] = []

    @bot.message_handler(func=lambda message: True)
    def typed(message: Any) -> None:
        seen.append(message.text)

    bot_api.push_message(user_id=5, text="hi")
    bot.process_new_updates(bot.get_updates())
    assert seen == ["hi"]


def test_a_bot_is_isolated_once_and_can_be_given_back_its_dispatch(bot_api: FakeBotAPI) -> None:
    bot = unthreaded(bot_api)
    isolation = isolate(bot)
    with pytest.raises(ValueError, match="isolated already"):
        isolate(bot)
    isolation.undo()
    assert "_exec_task" not in vars(bot) and "process_new_updates" not in vars(bot)
    isolate(bot)


def test_current_in_a_filter_of_a_bot_that_is_not_isolated_is_a_clear_error(
    bot_api: FakeBotAPI,
) -> None:
    bot = unthreaded(bot_api)
    form = with_session(storage=MemoryStorage())

    @bot.message_handler(func=lambda message: form.current(message).get("step") is None)
    def start(message: Any) -> None:
        pass

    bot_api.push_message(user_id=6, text="hi")
    with pytest.raises(SessionError, match="isolated update"):
        bot.process_new_updates(bot.get_updates())


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_with_a_storage_one_users_updates_exclude_each_other_across_processes(
    tmp_path: Path, backend: str
) -> None:
    # Two webhook workers get one user's updates alternately. Each update reads a plain file,
    # waits, and writes it back: only a lock around the whole update keeps every increment.
    # The handler's own session of that user is opened inside the update, and saved.
    from conftest import redis_storage, redis_url

    counter = tmp_path / "counter.txt"
    counter.write_text("0")

    def run_together(spec: dict[str, Any]) -> list[str]:
        workers = [start_worker("webhook", spec, str(counter), 60) for _ in range(2)]
        assert [said(worker) for worker in workers] == ["ready"] * 2  # both started up
        for worker in workers:  # they then handle their updates together
            cue(worker)
        return [rest_of(worker) for worker in workers]

    if backend == "disk":
        outputs = run_together({"disk": str(tmp_path / "sessions")})
        storage: Any = DiskStorage(tmp_path / "sessions")
        check = with_session(storage=storage)
    else:
        with redis_storage() as storage:
            outputs = run_together({"redis": redis_url(), "prefix": storage.prefix})
            check = with_session(storage=storage)
            with check.open(42) as session:
                assert session == {"updates": 120}
    assert all("done" in out for out in outputs)
    assert counter.read_text() == "120"
    if backend == "disk":
        with check.open(42) as session:
            assert session == {"updates": 120}


def test_isolated_updates_reach_the_store_as_json(bot_api: FakeBotAPI, tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    bot, _ = form_bot(bot_api, storage)
    for field in ("name", "age", "city"):
        bot_api.push_message(user_id=9, text=field)
    with polling(bot):
        bot_api.wait_for_calls(1)
    assert json.loads(storage.read("session:9") or b"") == {
        "age": "age",
        "city": "city",
        "name": "name",
        "step": "done",
    }


def test_with_class_middlewares_a_raising_handler_saves_nothing_and_sends_no_reply(
    bot_api: FakeBotAPI,
) -> None:
    # telebot catches the handler's exception itself in this mode: isolate still hears it.
    from tgsession import after_save

    bot = telebot.TeleBot(bot_api.token, threaded=False, use_class_middlewares=True)
    form = with_session(initial=lambda: {"step": "name"}, storage=MemoryStorage())
    isolate(bot)

    @bot.message_handler(func=lambda message: form.current(message)["step"] == "name")
    def name(message: Any) -> None:
        form.current(message).update(step="age", half=True)
        after_save(bot.reply_to, message, "How old are you?")
        raise RuntimeError("the database is down")

    bot_api.push_message(user_id=3, text="Ann")
    bot.process_new_updates(bot.get_updates())
    with form.open(3) as session:
        assert session == {"step": "name"}
    assert bot_api.calls() == []


def test_webhook_requests_of_one_user_each_run_their_own_update(bot_api: FakeBotAPI) -> None:
    # An unthreaded bot behind a webhook server: concurrent requests of one user take turns,
    # each running its own update, so one update's failure fails only its own request.
    bot = unthreaded(bot_api)
    isolate(bot)
    ran: dict[str, str] = {}

    @bot.message_handler(func=lambda message: True)
    def handle(message: Any) -> None:
        ran[message.text] = threading.current_thread().name
        time.sleep(0.05)
        if message.text == "bad":
            raise RuntimeError("bad update")

    def request(text: str, outcome: dict[str, str]) -> None:
        update = telebot.types.Update.de_json(
            {"update_id": len(text), "message": bot_api.message(8, text)}
        )
        try:
            bot.process_new_updates([update])
            outcome[text] = "ok"
        except RuntimeError:
            outcome[text] = "failed"

    outcome: dict[str, str] = {}
    threads = [
        threading.Thread(target=request, args=(text, outcome), name=text)
        for text in ("good", "bad", "fine")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcome == {"good": "ok", "bad": "failed", "fine": "ok"}
    assert ran == {"good": "good", "bad": "bad", "fine": "fine"}

"""What isolate(bot) costs an update, and what a flooding user costs the others.

Updates go straight to ``process_new_updates``, as a webhook server hands them over: no
network, so the figures are telebot's dispatch and tgsession's alone.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import telebot

from benchmarks.timing import interleaved
from tgsession import isolate

TOKEN = "123:BENCH"


def _message(update_id: int, user: int) -> Any:
    message = {
        "message_id": update_id,
        "date": 1,
        "chat": {"id": user, "type": "private"},
        "from": {"id": user, "is_bot": False, "first_name": "U"},
        "text": "hi",
    }
    return telebot.types.Update.de_json({"update_id": update_id, "message": message})


def _dispatching(isolated: bool) -> Any:
    """One update through an unthreaded bot with one handler: its whole dispatch."""
    bot = telebot.TeleBot(TOKEN, threaded=False)
    if isolated:
        isolate(bot)

    @bot.message_handler(func=lambda message: True)
    def handle(message: Any) -> None:
        pass

    def update(user: int) -> None:
        bot.process_new_updates([_message(user, user)])

    return update


def overhead(users: list[int], rounds: int) -> dict[str, float]:
    """Microseconds per update of a bot's dispatch, plain and isolated, interleaved."""
    return interleaved(
        {"dispatch plain": _dispatching(False), "dispatch isolated": _dispatching(True)},
        users,
        rounds,
    )


HANDLER_SECONDS = 0.002  # one update's time in the latency cases


def latency(flood: int, others: int, threads: int) -> float:
    """Median milliseconds from dispatch to handler start of other users' updates, while
    user 1 has ``flood`` updates waiting (0: no flood), on an isolated threaded bot."""
    bot = telebot.TeleBot(TOKEN, threaded=True, num_threads=threads)
    isolate(bot)
    sent: dict[int, float] = {}
    waits: list[float] = []
    done = threading.Event()

    @bot.message_handler(func=lambda message: True)
    def handle(message: Any) -> None:
        if message.from_user.id != 1:
            waits.append(time.perf_counter() - sent[message.message_id])
            if len(waits) == others:
                done.set()
        time.sleep(HANDLER_SECONDS)

    bot.process_new_updates([_message(i, 1) for i in range(flood)])
    for n in range(others):
        update_id = 1_000_000 + n
        sent[update_id] = time.perf_counter()
        bot.process_new_updates([_message(update_id, 2 + n)])
        time.sleep(HANDLER_SECONDS * 2)  # spaced out: each finds the pool as the flood left it
    done.wait(60)
    bot.worker_pool.close()
    return statistics.median(waits) * 1000

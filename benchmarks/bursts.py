"""Bursts against a real threaded telebot: how many conversations end up misrouted.

``python -m benchmarks.bursts``: 100 users each send the three answers of a form at once (a
user typing fast, or a client resending), three rounds, on a bot with 8 worker threads that
polls the loopback stand-in. The form's step lives in the session and the handler of each
step is chosen by a filter that reads it. Printed: the users whose stored form is not the
three answers in the order sent, without isolate() (the filter opens the session itself,
as a hand-written bot would) and with it (the filter uses current()).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import telebot

from tgsession import MemoryStorage, isolate, with_session
from tgsession.testing import FakeBotAPI

USERS, ROUNDS, THREADS = 100, 3, 8
FIELDS = ("name", "age", "city")


def run(isolated: bool) -> tuple[int, int]:
    """Misrouted conversations, and all conversations, of one bot."""
    with FakeBotAPI() as api:
        api.install()
        bot = telebot.TeleBot(api.token, threaded=True, num_threads=THREADS)
        form = with_session(initial=lambda: {"step": "name"}, storage=MemoryStorage())
        if isolated:
            isolate(bot)

        def step_of(message: Any) -> str:
            if isolated:
                return str(form.current(message)["step"])
            with form.open(message.from_user.id) as session:  # decided outside the handler
                return str(session["step"])

        def handler_of(field: str, following: str) -> None:
            @bot.message_handler(func=lambda message: step_of(message) == field)
            @form
            def answer(message: Any, session: Any) -> None:
                time.sleep(random.random() / 500)
                session.update({field: message.text, "step": following})
                if following == "done":
                    bot.send_message(message.chat.id, "thanks")

        for field, following in zip(FIELDS, (*FIELDS[1:], "done")):
            handler_of(field, following)

        wrong = 0
        poller = threading.Thread(
            target=bot.infinity_polling, kwargs={"timeout": 5, "long_polling_timeout": 1}
        )
        poller.start()
        try:
            for round_ in range(ROUNDS):
                for user in range(1, USERS + 1):
                    for field in FIELDS:
                        api.push_message(user_id=user, text=f"{field} {round_}")
                with contextlib.suppress(TimeoutError):  # a misrouted form never says thanks
                    api.wait_for_calls(USERS * (round_ + 1), timeout=10)
                time.sleep(0.5)  # what is still running finishes
                for user in range(1, USERS + 1):
                    with form.open(user) as session:
                        if any(session.get(f) != f"{f} {round_}" for f in FIELDS):
                            wrong += 1
                        session.clear()
        finally:
            bot.stop_bot()
            poller.join()
        return wrong, USERS * ROUNDS


def main() -> None:
    for isolated in (False, True):
        wrong, total = run(isolated)
        label = "isolate(bot), filter uses current()" if isolated else "filter opens the session"
        print(f"{label:<40} {wrong:>4} of {total} conversations misrouted or out of order")


if __name__ == "__main__":
    main()

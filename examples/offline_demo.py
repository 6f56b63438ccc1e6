"""Run counter_bot.py against tgsession's loopback Bot API stand-in: no token, no network.

    python examples/offline_demo.py

Three users send /count three times each, all at once; the bot answers each of them 1, 2, 3.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tgsession.testing import FakeBotAPI

USERS, TIMES = (101, 102, 103), 3

with FakeBotAPI() as api, tempfile.TemporaryDirectory() as sessions:
    env = {
        **os.environ,
        "BOT_TOKEN": api.token,
        "TELEGRAM_API_URL": api.base_url,
        "TGSESSION_DIR": sessions,
    }
    bot = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("counter_bot.py"))], env=env
    )
    try:
        for _ in range(TIMES):
            for user in USERS:
                api.push_message(user_id=user, text="/count")
        for call in api.wait_for_calls(len(USERS) * TIMES, timeout=60):
            print(f"bot -> user {call['chat_id']}: {call['text']}")
    finally:
        bot.terminate()
        bot.wait(10)

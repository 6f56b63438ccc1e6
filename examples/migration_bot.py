"""counter_bot.py, version 2: the sessions it stored are upgraded as users come back.

    BOT_TOKEN=123:abc python examples/migration_bot.py

counter_bot.py stored {"count": 3}. This version keeps {"visits": 3, "lang": "en"}: each old
session is migrated the first time its user writes, under its lock, and saved as version 2.
"""

import os
import sys

import telebot

from tgsession import with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)


def from_counter_bot(old):
    """Version 1 (counter_bot.py) to 2: the count becomes visits, and a language appears."""
    return {"visits": old.get("count", 0), "lang": "en"}


visits = with_session(
    initial=lambda: {"visits": 0, "lang": "en"}, version=2, migrations={2: from_counter_bot}
)


@bot.message_handler(commands=["count"])
@visits
def count(message, session):
    session["visits"] += 1
    bot.reply_to(message, f"visits: {session['visits']} ({session['lang']})")


if __name__ == "__main__":
    bot.infinity_polling()

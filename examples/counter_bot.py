"""A counter per user, kept on disk: send /count, restart the bot, send /count again.

    BOT_TOKEN=123:abc python examples/counter_bot.py

Sessions live in ./.tgsession (or $TGSESSION_DIR). Set TELEGRAM_API_URL to use a local Bot API
server, e.g. http://127.0.0.1:8081.
"""

import os
import sys

import telebot

from tgsession import with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)


@bot.message_handler(commands=["count"])
@with_session(initial=lambda: {"count": 0})
def count(message, session):
    session["count"] += 1
    bot.reply_to(message, f"count: {session['count']}")


@bot.message_handler(commands=["reset"])
@with_session(initial=lambda: {"count": 0})
def reset(message, session):
    session.clear()  # deletes the stored session; the next /count starts from 0
    bot.reply_to(message, "count reset")


if __name__ == "__main__":
    bot.infinity_polling()

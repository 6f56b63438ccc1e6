"""Lazy sessions: handlers that may not need the session never touch the storage.

    BOT_TOKEN=123:abc python examples/lazy_bot.py

/note TEXT saves a note, /notes lists them, /help answers without reading any session.
"""

import os
import sys

import telebot

from tgsession import with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)
notes = with_session(lazy=True, initial=lambda: {"notes": []})


@bot.message_handler(commands=["note"])
@notes
def add_note(message, session):
    text = message.text.partition(" ")[2].strip()
    if not text:  # the session was never used: no read, no lock, no write
        bot.reply_to(message, "usage: /note TEXT")
        return
    session["notes"].append(text)  # first use: the session is locked and loaded here
    bot.reply_to(message, f"saved note {len(session['notes'])}")


@bot.message_handler(commands=["notes"])
@notes
def list_notes(message, session):
    lines = [f"{i}. {note}" for i, note in enumerate(session["notes"], 1)]
    bot.reply_to(message, "\n".join(lines) or "no notes yet")


@bot.message_handler(commands=["help"])
@notes
def help_(message, session):
    bot.reply_to(message, "/note TEXT saves a note, /notes lists them")


if __name__ == "__main__":
    bot.infinity_polling()

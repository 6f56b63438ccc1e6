"""Reminders with due times: a dataclass session holding datetimes and a timedelta.

    BOT_TOKEN=123:abc python examples/reminder_bot.py

/remind 30 call mum adds a reminder due in 30 minutes, /list shows them, /done 1 removes the
first. Each due time is an aware datetime, stored as ISO 8601 text
("2026-12-01T09:30:00Z") and loaded back as the same datetime; the snooze length is a
timedelta. (This bot only stores reminders: a real one would also send them when due.)
"""

import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import telebot

from tgsession import with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)


@dataclass
class Reminder:
    text: str
    due: datetime


@dataclass
class Reminders:
    items: list[Reminder] = field(default_factory=list)
    snooze: timedelta = timedelta(minutes=10)


reminders = with_session(key="reminders", initial=Reminders)


@bot.message_handler(commands=["remind"])
@reminders
def remind(message: telebot.types.Message, reminders: Reminders) -> None:
    _, minutes, text = ((message.text or "") + "  ").split(" ", 2)
    if not minutes.isdigit() or not text.strip():
        bot.reply_to(message, "usage: /remind MINUTES TEXT")
        return
    due = datetime.now(timezone.utc) + timedelta(minutes=int(minutes))
    reminders.items.append(Reminder(text.strip(), due))
    bot.reply_to(message, f"reminder {len(reminders.items)} set for {due:%H:%M} UTC")


@bot.message_handler(commands=["list"])
@reminders
def show(message: telebot.types.Message, reminders: Reminders) -> None:
    lines = [f"{i}. {r.text} at {r.due:%H:%M} UTC" for i, r in enumerate(reminders.items, 1)]
    bot.reply_to(message, "\n".join(lines) or "no reminders")


@bot.message_handler(commands=["done"])
@reminders
def done(message: telebot.types.Message, reminders: Reminders) -> None:
    number = (message.text or "").partition(" ")[2].strip()
    if not number.isdigit() or not 1 <= int(number) <= len(reminders.items):
        bot.reply_to(message, "usage: /done NUMBER (see /list)")
        return
    removed = reminders.items.pop(int(number) - 1)
    bot.reply_to(message, f"done: {removed.text}")


if __name__ == "__main__":
    bot.infinity_polling()

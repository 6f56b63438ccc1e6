"""telebot's own states (StatesGroup, state= filters, StateContext) on tgsession.

    BOT_TOKEN=123:abc python examples/survey_bot.py

This is telebot's custom-states example, unchanged but for two lines: its storage is
tgsession's StateStorage (JSON on disk in ./.tgsession or $TGSESSION_DIR, so a survey goes on
after a restart), and isolate(bot) routes each user's updates one at a time, in order (two
answers sent at once fill two questions, never one twice). Needs pyTelegramBotAPI 4.22 or
later (telebot.states). Set TELEGRAM_API_URL to use a local Bot API server.
"""

import os
import sys

import telebot
from telebot import custom_filters
from telebot.states import State, StatesGroup
from telebot.states.sync.context import StateContext
from telebot.states.sync.middleware import StateMiddleware

from tgsession import StateStorage, isolate

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(
    token,
    state_storage=StateStorage(),  # tgsession: states on disk, every change locked
    use_class_middlewares=True,
    threaded=True,
    num_threads=4,
)
isolate(bot)  # tgsession: one user's updates one at a time, in order


class Survey(StatesGroup):
    name = State()
    age = State()


@bot.message_handler(commands=["start"])
def start(message, state: StateContext):
    state.set(Survey.name)
    bot.send_message(message.chat.id, "What is your name?")


@bot.message_handler(state="*", commands=["cancel"])
def cancel(message, state: StateContext):
    state.delete()
    bot.send_message(message.chat.id, "Survey cancelled.")


@bot.message_handler(state=Survey.name)
def name(message, state: StateContext):
    state.add_data(name=message.text)
    state.set(Survey.age)
    bot.send_message(message.chat.id, "How old are you?")


@bot.message_handler(state=Survey.age, is_digit=True)
def age(message, state: StateContext):
    with state.data() as data:
        name = data.get("name")
    state.delete()
    bot.send_message(message.chat.id, f"Thank you, {name}, aged {message.text}.")


@bot.message_handler(state=Survey.age, is_digit=False)
def age_not_a_number(message):
    bot.send_message(message.chat.id, "Please send your age as a number.")


bot.add_custom_filter(custom_filters.StateFilter(bot))
bot.add_custom_filter(custom_filters.IsDigitFilter())
bot.setup_middleware(StateMiddleware(bot))

if __name__ == "__main__":
    bot.infinity_polling()

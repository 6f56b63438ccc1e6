"""A sign-up form in steps: /signup, then name, age and city; /cancel in any step.

    BOT_TOKEN=123:abc python examples/form_bot.py

The step each user is at lives in a session on disk (./.tgsession or $TGSESSION_DIR): stop
the bot in the middle of a form, start it again, and the form goes on where it was. Each
user's messages are routed one at a time, in order, so two answers sent at once fill two
fields, never the same one twice. Set TELEGRAM_API_URL to use a local Bot API server.
"""

import os
import sys

import telebot

from tgsession import Steps, after_save

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)
signup = Steps(bot, "signup")


@signup.entry(commands=["signup"])
def start(message, step):
    step.goto("name")
    after_save(bot.reply_to, message, "What is your name?")


@signup.step("name")
def name(message, step):
    step.goto("age", name=message.text)
    after_save(bot.reply_to, message, "How old are you?")


@signup.step("age", timeout=600)  # unanswered for 10 minutes: the form is dropped
def age(message, step):
    if not message.text.isdigit():
        after_save(bot.reply_to, message, "Please send a number.")
        return
    step.goto("city", age=int(message.text))
    after_save(bot.reply_to, message, "Which city?")


@signup.step("city")
def city(message, step):
    form = {**step.data, "city": message.text}
    step.end()
    after_save(bot.reply_to, message, f"Signed up: {form['name']}, {form['age']}, {form['city']}")


@signup.command(commands=["cancel"])
def cancel(message, step):
    was = step.name
    step.end()
    after_save(bot.reply_to, message, "Cancelled." if was else "Nothing to cancel.")


if __name__ == "__main__":
    bot.infinity_polling()

"""A typed session: each user's profile is a dataclass, with attribute access and checks.

    BOT_TOKEN=123:abc python examples/profile_bot.py

/name Ann sets a name, /lang de switches language, /profile shows it, /forget starts over.
The session is stored as JSON ({"lang": "de", "name": "Ann", "visits": 3}); mypy and editors
know that `profile` in `with profiles.open(42) as profile:` is a Profile.
"""

import os
import sys
from dataclasses import dataclass

import telebot

import tgsession
from tgsession import with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)

GREETING = {"en": "Hello", "de": "Hallo"}


@dataclass
class Profile:
    name: str = "stranger"
    lang: str = "en"
    visits: int = 0


profiles = with_session(key="profile", initial=Profile)


def argument(message: telebot.types.Message) -> str:
    """The text after the command: "Ann" in "/name Ann"."""
    return (message.text or "").partition(" ")[2].strip()


@bot.message_handler(commands=["name"])
@profiles
def set_name(message: telebot.types.Message, profile: Profile) -> None:
    profile.name = argument(message) or profile.name
    bot.reply_to(message, f"name: {profile.name}")


@bot.message_handler(commands=["lang"])
@profiles
def set_lang(message: telebot.types.Message, profile: Profile) -> None:
    lang = argument(message)
    if lang in GREETING:
        profile.lang = lang
        bot.reply_to(message, f"lang: {lang}")
    else:
        bot.reply_to(message, "usage: /lang en|de")


@bot.message_handler(commands=["profile"])
@profiles
def show(message: telebot.types.Message, profile: Profile) -> None:
    profile.visits += 1
    bot.reply_to(message, f"{GREETING[profile.lang]}, {profile.name} (visit {profile.visits})")


@bot.message_handler(commands=["forget"])
@profiles
def forget(message: telebot.types.Message, profile: Profile) -> None:
    tgsession.clear(profile)  # back to Profile(); the stored profile is deleted
    bot.reply_to(message, "forgotten")


if __name__ == "__main__":
    bot.infinity_polling()

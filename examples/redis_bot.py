"""The counter bot on Redis: run it as several processes, on one host or many.

    pip install 'tgsession[redis]'
    BOT_TOKEN=123:abc REDIS_URL=redis://127.0.0.1:6379/0 python examples/redis_bot.py

Every process polls or serves webhooks for the same bot; the lock of each user's session lives
in Redis, so updates of one user handled by different processes never overwrite each other.
(One bot token allows one getUpdates poller at a time: several processes behind a webhook
load balancer is the usual production layout; see the README.)
"""

import os
import sys

import telebot

from tgsession import RedisStorage, with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

storage = RedisStorage.from_url(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    prefix=os.environ.get("REDIS_PREFIX", "counter-bot:"),
    lock_ttl=10,  # a crashed process frees its users' sessions within 10 s
)
bot = telebot.TeleBot(token, threaded=True, num_threads=8)


@bot.message_handler(commands=["count"])
@with_session(initial=lambda: {"count": 0}, storage=storage)
def count(message, session):
    session["count"] += 1
    bot.reply_to(message, f"count: {session['count']} (pid {os.getpid()})")


if __name__ == "__main__":
    bot.infinity_polling()

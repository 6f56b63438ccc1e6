"""Two sessions per update: one per user, one per chat (grammY's multi sessions).

    BOT_TOKEN=123:abc python examples/group_bot.py

Add the bot to a group: /stats tells each member how many messages they and the whole chat
have sent to the bot, and the chat's topic, which /topic TEXT sets.
"""

import os
import sys

import telebot

from tgsession import by_chat, with_session

token = os.environ.get("BOT_TOKEN") or sys.exit("set BOT_TOKEN to your bot's token")
if api_url := os.environ.get("TELEGRAM_API_URL"):
    telebot.apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"

bot = telebot.TeleBot(token, threaded=True, num_threads=4)
user_session = with_session(key="user", initial=lambda: {"messages": 0})
chat_session = with_session(
    key="chat", initial=lambda: {"messages": 0, "topic": None}, get_session_key=by_chat
)


@bot.message_handler(commands=["topic"])
@chat_session
def set_topic(message, chat):
    chat["topic"] = message.text.partition(" ")[2].strip() or None
    bot.reply_to(message, f"topic: {chat['topic'] or 'none'}")


@bot.message_handler(commands=["stats"])
@user_session
@chat_session
def stats(message, user, chat):
    user["messages"] += 1
    chat["messages"] += 1
    bot.reply_to(
        message,
        f"you: {user['messages']}, this chat: {chat['messages']}, topic: {chat['topic'] or 'none'}",
    )


if __name__ == "__main__":
    bot.infinity_polling()

"""Talk to a bot file from the terminal, without a token or a network:

    python -m tgsession.testing chat examples/counter_bot.py

Each line you type is a message from you to the bot; the bot's replies are printed as they
come, with their buttons numbered. ``:press N`` presses button N of the newest message with
buttons, ``:user ID`` speaks as another user, ``:quit`` (or end of input) stops. Sessions go to
a fresh directory (removed at the end) unless ``--sessions DIR`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ._api import FakeBotAPI
from ._runner import HandlerError, run_bot
from ._transcript import render


def _callback_buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    """The (text, data) of the callback buttons of a message, in order (link buttons, which
    a press does not send to the bot, are left out)."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [
        (str(button.get("text")), str(button["callback_data"]))
        for row in rows
        for button in row
        if "callback_data" in button
    ]


def _keyboard(api: FakeBotAPI, chat: int) -> tuple[int, list[tuple[str, str]]] | None:
    """The newest message of the bot in ``chat`` with callback buttons, as it stands now."""
    for message in reversed(api.chat_messages(chat)):
        buttons = _callback_buttons(message)
        if buttons and message.get("from", {}).get("id") == api.bot_user["id"]:
            return int(message["message_id"]), buttons
    return None


def _print_buttons(api: FakeBotAPI, chat: int, message_id: int | None, out: Any) -> None:
    """Number the callback buttons of the message as it stands now, a line each."""
    for message in api.chat_messages(chat):
        if message["message_id"] == message_id:
            for number, (text, _) in enumerate(_callback_buttons(message), 1):
                print(f"    {number}: {text}", file=out)


def _number(text: str) -> int | None:
    try:
        return int(text.strip(), 10)
    except ValueError:
        return None


HELP = "type a message; :press N presses button N, :user ID speaks as another user, :quit"


def chat(path: str, user: int, sessions: str | None, out: Any) -> int:
    """Run the bot file at ``path`` and relay lines between stdin and it; return an exit code."""
    with FakeBotAPI() as api, run_bot(api, path, sessions=sessions) as bot:
        shown = 0
        if sys.stdin.isatty():
            print(f"talking to {path} as user {user}; {HELP}", file=out)
        for line in sys.stdin:
            line = line.strip()
            command, _, argument = line.partition(" ")
            if command in (":quit", ":q"):
                break
            if command == ":user":
                chosen = _number(argument)
                if chosen is None:
                    print(f"? {HELP}", file=out)
                else:
                    user = chosen
                continue
            if command == ":press":
                keyboard = _keyboard(api, user)
                number = _number(argument) or 0
                if keyboard is None or not 1 <= number <= len(keyboard[1]):
                    print(f"no button {argument.strip() or '?'} here", file=out)
                    continue
                message_id, buttons = keyboard
                api.push_callback(user, buttons[number - 1][1], message_id=message_id)
            elif line.startswith(":"):
                print(f"? {HELP}", file=out)
                continue
            elif line:
                api.push_message(user, line)
            else:
                continue
            try:
                bot.wait_idle(timeout=60)
            except HandlerError as error:
                print(f"! {error}", file=out)
            except TimeoutError:
                print("! the bot is still busy after 60 s", file=out)
            events = api.events()
            for event in events[shown:]:
                if event.user_id is not None or event.chat_id != user:
                    continue
                print(render(event), file=out)
                if event.message_id is not None and event.kind in ("send", "edit", "markup"):
                    current = [
                        m for m in api.chat_messages(user) if m["message_id"] == event.message_id
                    ]
                    for number, (text, _) in enumerate(
                        _callback_buttons(current[0]) if current else [], 1
                    ):
                        print(f"    {number}: {text}", file=out)
            shown = len(events)
            out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tgsession.testing", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    talk = commands.add_parser("chat", help="talk to a bot file from the terminal")
    talk.add_argument("bot", help="the bot's file (its polling must be under __main__)")
    talk.add_argument("--user", type=int, default=1, help="your user id (default 1)")
    talk.add_argument("--sessions", help="the sessions directory (default: a fresh one)")
    args = parser.parse_args(argv)
    try:
        return chat(args.bot, args.user, args.sessions, sys.stdout)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, RuntimeError, ImportError, SyntaxError) as error:
        print(f"python -m tgsession.testing: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

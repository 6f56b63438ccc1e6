"""Talk to a bot file from the terminal, without a token or a network:

    python -m tgsession.testing chat examples/counter_bot.py

Each line you type is a message from you to the bot; the bot's replies are printed as they
come, with their buttons numbered. ``:press N`` presses button N of the last message that had
buttons, ``:user ID`` speaks as another user, ``:quit`` (or end of input) stops. Sessions go to
a fresh directory unless ``--sessions DIR`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ._api import FakeBotAPI
from ._runner import HandlerError, run_bot
from ._transcript import Event, render


def _buttons(event: Event) -> list[tuple[str, str]]:
    """The (text, callback data) of the inline buttons of a bot's message, in order."""
    markup = event.params.get("reply_markup")
    if isinstance(markup, str):
        import json

        markup = json.loads(markup)
    rows = (markup or {}).get("inline_keyboard") or []
    return [(str(b.get("text")), str(b.get("callback_data", ""))) for row in rows for b in row]


def chat(path: str, user: int, out: Any) -> int:
    """Run the bot file at ``path`` and relay lines between stdin and it; return an exit code."""
    with FakeBotAPI() as api, run_bot(api, path) as bot:
        shown = 0
        keyboard: list[tuple[str, str]] = []
        keyboard_message: int | None = None
        if sys.stdin.isatty():
            print(f"talking to {path} as user {user}; :press N, :user ID, :quit", file=out)
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line in (":quit", ":q"):
                break
            if line.startswith(":user "):
                user = int(line.split()[1])
                continue
            if line.startswith(":press "):
                number = int(line.split()[1])
                if not 1 <= number <= len(keyboard):
                    print(f"no button {number}", file=out)
                    continue
                api.push_callback(user, keyboard[number - 1][1], message_id=keyboard_message)
            elif line:
                api.push_message(user, line)
            else:
                continue
            try:
                bot.wait_idle(timeout=30)
            except HandlerError as error:
                print(f"! {error}", file=out)
            events = api.events()
            for event in events[shown:]:
                if event.user_id is not None:
                    continue
                print(render(event), file=out)
                for number, (text, _) in enumerate(_buttons(event), 1):
                    print(f"    {number}: {text}", file=out)
                if _buttons(event):
                    keyboard, keyboard_message = _buttons(event), event.message_id
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
    os.environ["TGSESSION_DIR"] = args.sessions or tempfile.mkdtemp(prefix="tgsession-chat-")
    try:
        return chat(args.bot, args.user, sys.stdout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

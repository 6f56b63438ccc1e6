"""Edit counter_bot.py's sessions from a script, safely, while the bot runs.

    python examples/edit_sessions.py USER_ID show
    python examples/edit_sessions.py USER_ID add N
    python examples/edit_sessions.py USER_ID reset

It takes the same per-user lock as the bot's handlers, so no update is lost while it edits.
"""

import sys

from tgsession import with_session

# The same session as counter_bot.py: same key ("session"), same default storage
# (./.tgsession or $TGSESSION_DIR).
counter = with_session(initial=lambda: {"count": 0})


def main(argv):
    if len(argv) < 2 or argv[1] not in ("show", "add", "reset"):
        sys.exit(__doc__)
    user_id, action = int(argv[0]), argv[1]
    if action == "reset":
        counter.delete(user_id)
        print(f"user {user_id}: reset")
        return
    with counter.open(user_id) as session:
        if action == "add":
            session["count"] += int(argv[2])
        print(f"user {user_id}: count {session['count']}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Steps: a conversation whose current step lives in a session.

A bot asks, the user answers, the bot asks the next question: which handler gets the next
message depends on where the user is. Kept in memory (telebot's next-step handlers), that
place is lost at every restart and unknown to other webhook workers; kept in a session and
decided by a filter before any lock, it is raced by the user's next message. Here it lives in
a session of its own and is decided under that session's lock, in an isolated update (see
`tgsession.isolate`), so one decision and its change are one atomic update.

The session holds ``{"step": name, "data": {...}, "until": timestamp}``: the step's name,
never a function, so it survives restarts and is shared by every process on the store.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Union

from telebot import util

from .decorator import with_session
from .isolation import isolate
from .keys import KeyStrategy, by_user
from .storage.base import Storage

Handler = Callable[[Any, "Step"], Any]
Target = Union[str, Handler]


class Step:
    """Where one user's conversation is, as its handler sees it, and how to move it on."""

    __slots__ = ("_state", "_steps")

    def __init__(self, steps: Steps, state: dict[str, Any]) -> None:
        self._steps, self._state = steps, state

    @property
    def name(self) -> str | None:
        """The current step, or None when the conversation is not running."""
        return self._state.get("step")

    @property
    def data(self) -> dict[str, Any]:
        """What the conversation has gathered so far (JSON values), kept until it ends."""
        return self._state.setdefault("data", {})  # type: ignore[no-any-return]

    def goto(self, step: Target, **data: Any) -> None:
        """Make ``step`` (a step's name, or its handler) handle the user's next update, and
        add ``data`` to the conversation's data."""
        name = self._steps.name_of(step)
        self._state["step"] = name
        if data:
            self.data.update(data)
        timeout = self._steps.timeouts.get(name)
        if timeout is None:
            self._state.pop("until", None)
        else:
            self._state["until"] = time.time() + timeout

    def end(self) -> None:
        """End the conversation: its step and data are deleted when the update is saved."""
        self._state.clear()

    def __repr__(self) -> str:
        return f"<Step {self.name!r} of {self._steps.name!r}>"


class Steps:
    """A conversation in steps on one bot: declare its steps, its entry and its commands.

        signup = Steps(bot, "signup")

        @signup.entry(commands=["signup"])
        def start(message, step):
            bot.reply_to(message, "Your name?")
            step.goto("name")

        @signup.step("name")
        def name(message, step):
            step.goto("age", name=message.text)
            bot.reply_to(message, "Your age?")

        @signup.step("age", timeout=600)  # unanswered for 10 minutes: the conversation ends
        def age(message, step):
            bot.reply_to(message, f"Welcome, {step.data['name']}")
            step.end()

        @signup.command(commands=["cancel"])  # in every step
        def cancel(message, step):
            step.end()

    The bot is isolated (`tgsession.isolate`) if it is not yet, with the same key
    strategy and storage, so each user's updates are routed one at a time, in order.
    """

    def __init__(
        self,
        bot: Any,
        name: str = "steps",
        *,
        storage: Storage | None = None,
        get_session_key: KeyStrategy | None = None,
    ) -> None:
        """Keep the conversation of each user (by ``get_session_key``, by_user by default)
        in the session ``name`` of ``storage`` (the default DiskStorage if None)."""
        self.bot = bot
        self.name = name
        key = get_session_key or by_user
        self.session = with_session(key=name, storage=storage, get_session_key=key)
        self.steps: dict[str, Handler] = {}
        self.timeouts: dict[str, float | None] = {}
        self._handlers_seen = -1  # how many message handlers the bot had when last read
        self._bot_commands: set[str] = set()  # the commands its message handlers take
        if getattr(bot, "_tgsession_isolation", None) is None:
            isolate(bot, get_session_key=key, storage=storage)

    def name_of(self, step: Target) -> str:
        """The name under which ``step`` (a name or a step's handler) is registered."""
        name = step if isinstance(step, str) else getattr(step, "__tgsession_step__", None)
        if not isinstance(name, str) or name not in self.steps:
            raise ValueError(
                f"{step!r} is no step of {self.name!r}: declare it with @steps.step(...) "
                f"(steps: {sorted(self.steps)})"
            )
        return name

    def state(self, update: Any) -> dict[str, Any]:
        """The conversation of ``update``'s user, as the running update holds it; a step
        past its timeout has ended."""
        state: dict[str, Any] = self.session.current(update)
        until = state.get("until")
        if until is not None and until <= time.time():
            state.clear()
        return state

    def _is_command(self, update: Any) -> bool:
        """Whether ``update`` is a command that some message handler of the bot takes: a
        command is never an answer to a step (``/cancel`` of another conversation, ``/help``
        declared after the steps)."""
        command = util.extract_command(getattr(update, "text", None) or "")
        if command is None:
            return False
        handlers = self.bot.message_handlers
        if len(handlers) != self._handlers_seen:  # handlers were added: look again
            self._handlers_seen = len(handlers)
            self._bot_commands = {
                name
                for handler in handlers
                for name in handler.get("filters", {}).get("commands") or ()
            }
        return command in self._bot_commands

    def at(self, step: str | None) -> Callable[[Any], bool]:
        """A filter: the update's user is at ``step`` (None: not in the conversation), and
        the update is no command that a handler of the bot takes."""

        def check(update: Any) -> bool:
            return not self._is_command(update) and self.state(update).get("step") == step

        return check

    def _register(
        self, handler: Handler, kind: str, filters: dict[str, Any], starts: bool = False
    ) -> None:
        """Register ``handler`` with telebot, as ``handler(update, step, ...)``: telebot sees
        its signature without ``step``, and passes what it passes handlers by name (a
        middleware's values, ``bot``). With ``starts``, the conversation starts afresh."""
        signature = inspect.signature(handler)
        parameters = list(signature.parameters.values())

        def run(update: Any, *args: Any, **kwargs: Any) -> Any:
            state = self.state(update)
            if starts:
                state.clear()  # a new attempt: nothing of the last one's data
            return handler(update, Step(self, state), *args, **kwargs)

        run.__name__ = getattr(handler, "__name__", "step")
        del parameters[1:2]  # the step, which telebot must not try to fill
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        getattr(self.bot, f"{kind}_handler")(**filters)(run)

    def step(
        self,
        name: str | None = None,
        *,
        timeout: float | None = None,
        kind: str = "message",
        **filters: Any,
    ) -> Callable[[Handler], Handler]:
        """Declare the handler of the step ``name`` (the function's name by default).

        ``timeout``: seconds from ``goto`` after which a user still at this step has left
        the conversation. ``kind``: the update type it handles ("message",
        "callback_query", ...), as telebot names its ``*_handler`` decorators; ``filters``
        go to that decorator too (``content_types=["photo"]``).
        """

        def declare(handler: Handler) -> Handler:
            step = name or handler.__name__
            if step in self.steps:
                raise ValueError(f"{self.name!r} has two steps named {step!r}")
            self.steps[step] = handler
            self.timeouts[step] = timeout
            handler.__tgsession_step__ = step  # type: ignore[attr-defined]
            self._register(handler, kind, {**filters, "func": self.at(step)})
            return handler

        return declare

    def entry(self, kind: str = "message", **filters: Any) -> Callable[[Handler], Handler]:
        """Declare a handler that starts the conversation afresh, in any step (telebot's
        filters of ``kind`` updates, e.g. ``commands=["signup"]``): it typically calls
        ``step.goto(...)``."""
        return self._always(kind, filters, starts=True)

    def command(self, commands: list[str] | str, **filters: Any) -> Callable[[Handler], Handler]:
        """Declare a handler of ``commands`` (``["cancel"]``) that works in every step,
        whatever order the handlers were declared in."""
        return self._always("message", {**filters, "commands": commands}, starts=False)

    def _always(
        self, kind: str, filters: dict[str, Any], starts: bool
    ) -> Callable[[Handler], Handler]:
        if isinstance(filters.get("commands"), str):  # telebot takes one command as a str
            filters["commands"] = [filters["commands"]]

        def declare(handler: Handler) -> Handler:
            self._register(handler, kind, filters, starts=starts)
            return handler

        return declare

    def next_step_handler(self, update: Any, handler: Handler) -> None:
        """For code written for telebot's ``register_next_step_handler(message, handler)``:
        make the step of ``handler`` handle the user's next update, by its name."""
        Step(self, self.state(update)).goto(handler)

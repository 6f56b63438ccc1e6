"""with_session as a decorator: what the handler receives and what callers see."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from tgsession import MemoryStorage, Session, SessionManager, with_session

from conftest import Update, by_key


def counter(**options: Any) -> SessionManager:
    options.setdefault("storage", MemoryStorage())
    return with_session(initial=lambda: {"count": 0}, get_session_key=by_key, **options)


def test_handler_receives_its_session_as_a_dict_of_json_values() -> None:
    @counter()
    def handler(update: Update, session: dict[str, Any]) -> Any:
        return session

    session = handler(Update(1))
    assert isinstance(session, dict)
    assert isinstance(session, Session)
    assert session == {"count": 0}


def test_visible_signature_drops_the_session_parameter() -> None:
    @counter()
    def handler(message: Any, bot: Any, session: dict[str, Any], *, extra: int = 0) -> None:
        pass

    assert list(inspect.signature(handler).parameters) == ["message", "bot", "extra"]
    assert handler.__name__ == "handler"


def test_other_arguments_pass_through_unchanged_by_position_or_name() -> None:
    @counter()
    def handler(update: Update, session: dict[str, Any], bot: Any, *, extra: int = 0) -> Any:
        return update.key, bot, extra, session["count"]

    assert handler(Update(1), "bot", extra=5) == (1, "bot", 5, 0)
    assert handler(Update(1), bot="bot") == (1, "bot", 0, 0)


def test_return_value_passes_through() -> None:
    @counter()
    def handler(update: Update, session: dict[str, Any]) -> str:
        return "result"

    assert handler(Update(1)) == "result"


def test_key_names_the_parameter_that_receives_the_session() -> None:
    @counter(key="state")
    def handler(update: Update, state: dict[str, Any]) -> Any:
        return state

    assert handler(Update(1)) == {"count": 0}


def test_handler_with_var_kwargs_receives_the_session_in_them() -> None:
    @counter(key="profile")
    def handler(update: Update, **kwargs: Any) -> Any:
        return kwargs

    assert handler(Update(1)) == {"profile": {"count": 0}}


def test_missing_parameter_is_a_type_error_at_decoration_naming_function_and_parameter() -> None:
    with pytest.raises(TypeError, match=r"handler\(\) has no parameter 'state'"):

        @counter(key="state")
        def handler(update: Update, session: dict[str, Any]) -> None:
            pass


def test_positional_only_session_parameter_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="positional-only"):

        @counter()
        def handler(update: Update, session: dict[str, Any], /) -> None:
            pass


def test_key_must_be_a_parameter_name() -> None:
    with pytest.raises(ValueError, match="parameter name"):
        with_session(key="not a name")


def test_initial_is_called_for_every_new_session() -> None:
    made: list[dict[str, Any]] = []

    def initial() -> dict[str, Any]:
        made.append({"items": []})
        return made[-1]

    storage = MemoryStorage()

    @with_session(initial=initial, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: dict[str, Any]) -> None:
        session["items"].append(update.key)

    handler(Update(1))
    handler(Update(2))
    assert len(made) >= 2  # once per new session (and once more to learn the type)
    assert storage.read("session:1") == b'{"items":[1]}'
    assert storage.read("session:2") == b'{"items":[2]}'


def test_a_new_session_shares_nothing_with_what_initial_returned() -> None:
    # One shared dict returned by initial(): its nested list must not carry one user's cart
    # into another user's new session.
    shared = {"cart": [], "profile": {"tags": []}}
    storage = MemoryStorage()

    @with_session(initial=lambda: shared, storage=storage, get_session_key=by_key)
    def add(update: Update, session: dict[str, Any]) -> None:
        session["cart"].append(f"item of {update.key}")
        session["profile"]["tags"].append(update.key)

    add(Update(1))
    add(Update(2))
    assert shared == {"cart": [], "profile": {"tags": []}}
    assert json.loads(storage.read("session:2") or b"") == {
        "cart": ["item of 2"],
        "profile": {"tags": [2]},
    }


def test_initial_that_does_not_return_a_dict_is_a_session_error() -> None:
    from tgsession import SessionError

    @with_session(initial=lambda: [], storage=MemoryStorage(), get_session_key=by_key)  # type: ignore[arg-type,return-value]
    def handler(update: Update, session: dict[str, Any]) -> None:
        pass

    with pytest.raises(SessionError, match=r"'session:1'.*must return a new dict"):
        handler(Update(1))


def test_calling_without_an_update_is_a_type_error() -> None:
    @counter()
    def handler(update: Update, session: dict[str, Any]) -> None:
        pass

    with pytest.raises(TypeError, match="update"):
        handler()

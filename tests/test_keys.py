"""Key strategies: the session key of every update type telebot dispatches."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from telebot import types

from tgsession import (
    MemoryStorage,
    SessionKeyError,
    by_business_chat,
    by_business_connection,
    by_chat,
    by_chat_thread,
    by_user,
    by_user_in_chat,
    by_user_in_thread,
    with_session,
)

UPDATE_FIELDS = set(inspect.signature(types.Update.__init__).parameters) - {"self", "update_id"}
USER = {"id": 111, "is_bot": False, "first_name": "Ann"}
OTHER = {"id": 222, "is_bot": False, "first_name": "Bob"}
PRIVATE = {"id": 111, "type": "private", "first_name": "Ann"}
GROUP = {"id": -100, "type": "supergroup", "title": "Group"}
CHANNEL = {"id": -200, "type": "channel", "title": "Channel"}
MEMBER = {"status": "member", "user": OTHER}
MEMBER_UPDATED = {
    "chat": GROUP,
    "from": USER,
    "date": 0,
    "old_chat_member": {"status": "left", "user": OTHER},
    "new_chat_member": MEMBER,
}


def message(chat: dict[str, Any] = GROUP, **fields: Any) -> dict[str, Any]:
    return {"message_id": 1, "date": 0, "chat": chat, "text": "hi", "from": USER, **fields}


# Each update type telebot dispatches, the sender key by_user finds and the chat by_chat finds.
UPDATES: dict[str, tuple[dict[str, Any], int | None, int | None]] = {
    "message": (message(), 111, -100),
    "edited_message": (message(edit_date=1), 111, -100),
    "channel_post": (message(CHANNEL, sender_chat=CHANNEL, **{"from": None}), -200, -200),
    "edited_channel_post": (message(CHANNEL, sender_chat=CHANNEL, **{"from": None}), -200, -200),
    "business_message": (message(PRIVATE, business_connection_id="b"), 111, 111),
    "edited_business_message": (message(PRIVATE, business_connection_id="b"), 111, 111),
    "guest_message": (message(PRIVATE), 111, 111),
    "callback_query": (
        {"id": "1", "from": USER, "chat_instance": "c", "data": "x", "message": message()},
        111,
        -100,
    ),
    "inline_query": ({"id": "1", "from": USER, "query": "q", "offset": ""}, 111, None),
    "chosen_inline_result": ({"result_id": "1", "from": USER, "query": "q"}, 111, None),
    "shipping_query": (
        {
            "id": "1",
            "from": USER,
            "invoice_payload": "p",
            "shipping_address": {
                "country_code": "DE",
                "state": "",
                "city": "Berlin",
                "street_line1": "a",
                "street_line2": "",
                "post_code": "1",
            },
        },
        111,
        None,
    ),
    "pre_checkout_query": (
        {"id": "1", "from": USER, "currency": "EUR", "total_amount": 1, "invoice_payload": "p"},
        111,
        None,
    ),
    "poll_answer": (
        {"poll_id": "1", "option_ids": [0], "option_persistent_ids": ["a"], "user": USER},
        111,
        None,
    ),
    "my_chat_member": (MEMBER_UPDATED, 111, -100),
    "chat_member": (MEMBER_UPDATED, 111, -100),
    "chat_join_request": (
        {"chat": GROUP, "from": USER, "user_chat_id": 111, "date": 0},
        111,
        -100,
    ),
    "message_reaction": (
        {
            "chat": GROUP,
            "message_id": 1,
            "date": 0,
            "old_reaction": [],
            "new_reaction": [],
            "user": USER,
        },
        111,
        -100,
    ),
    "chat_boost": (
        {
            "chat": CHANNEL,
            "boost": {
                "boost_id": "1",
                "add_date": 0,
                "expiration_date": 1,
                "source": {"source": "premium", "user": USER},
            },
        },
        111,
        -200,
    ),
    "removed_chat_boost": (
        {
            "chat": CHANNEL,
            "boost_id": "1",
            "remove_date": 0,
            "source": {"source": "premium", "user": USER},
        },
        111,
        -200,
    ),
    "business_connection": (
        {
            "id": "b",
            "user": USER,
            "user_chat_id": 111,
            "date": 0,
            "is_enabled": True,
            "can_reply": True,  # required by older telebot releases
        },
        111,
        None,
    ),
    "deleted_business_messages": (
        {"business_connection_id": "b", "chat": PRIVATE, "message_ids": [1]},
        111,
        111,
    ),
    # telebot 4.37 reads this update's sender from "from_user", not from the API's "from".
    "purchased_paid_media": ({"from_user": USER, "paid_media_payload": "p"}, 111, None),
    "managed_bot": ({"user": USER, "bot": OTHER}, 111, None),
    "subscription": ({"user": USER, "invoice_payload": "p", "state": "active"}, 111, None),
    "stopped_message_generation": ({"chat": PRIVATE, "draft_id": 1}, 111, 111),
}


def parse(kind: str, payload: dict[str, Any]) -> Any:
    if kind not in UPDATE_FIELDS:
        pytest.skip(f"the installed telebot has no {kind} updates")
    update = types.Update.de_json({"update_id": 1, kind: payload})
    parsed = getattr(update, kind)
    assert parsed is not None, kind
    return parsed


@pytest.mark.parametrize("kind", sorted(UPDATES))
def test_by_user_finds_the_sender_of_every_update_type(kind: str) -> None:
    payload, sender, _ = UPDATES[kind]
    assert by_user(parse(kind, payload)) == sender


@pytest.mark.parametrize("kind", sorted(UPDATES))
def test_by_chat_finds_the_chat_of_every_update_type_that_has_one(kind: str) -> None:
    payload, _, chat = UPDATES[kind]
    assert by_chat(parse(kind, payload)) == chat


def test_every_update_type_of_telebot_is_covered() -> None:
    assert UPDATE_FIELDS - {"poll", "message_reaction_count"} <= set(UPDATES)


def test_message_sent_on_behalf_of_a_chat_is_keyed_by_that_chat() -> None:
    # An anonymous group admin: Telegram puts a placeholder user in `from`.
    placeholder = {"id": 1087968824, "is_bot": True, "first_name": "Group"}
    update = parse("message", message(GROUP, sender_chat=GROUP, **{"from": placeholder}))
    assert by_user(update) == -100


def test_senders_without_a_user_fall_back_to_their_chat() -> None:
    answer = parse(
        "poll_answer",
        {"poll_id": "1", "option_ids": [0], "option_persistent_ids": ["a"], "voter_chat": CHANNEL},
    )
    reaction = parse(
        "message_reaction",
        {
            "chat": GROUP,
            "message_id": 1,
            "date": 0,
            "old_reaction": [],
            "new_reaction": [],
            "actor_chat": CHANNEL,
        },
    )
    assert by_user(answer) == by_user(reaction) == -200


def test_updates_without_a_sender_have_no_user_key() -> None:
    poll = parse(
        "poll",
        {
            "id": "1",
            "question": "q",
            "options": [{"text": "a", "voter_count": 1, "persistent_id": "a"}],
            "total_voter_count": 1,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
        },
    )
    counts = parse(
        "message_reaction_count", {"chat": CHANNEL, "message_id": 1, "date": 0, "reactions": []}
    )
    assert by_user(poll) is None
    assert by_user(counts) is None


def test_by_user_in_chat_combines_user_and_chat() -> None:
    assert by_user_in_chat(parse("message", message())) == "111:-100"
    inline = parse("inline_query", UPDATES["inline_query"][0])
    assert by_user_in_chat(inline) is None


UPDATES_NO_KEY = {"chat": CHANNEL, "message_id": 1, "date": 0, "reactions": []}


def test_update_without_a_key_still_runs_its_handler_and_unused_session_is_fine() -> None:
    @with_session(storage=MemoryStorage())
    def handler(update: Any, session: Any) -> str:
        return "ran"

    assert handler(parse("message_reaction_count", UPDATES_NO_KEY)) == "ran"


@pytest.mark.parametrize("lazy", [False, True])
def test_using_the_session_of_an_update_without_a_key_names_the_type_and_the_fix(
    lazy: bool,
) -> None:
    @with_session(storage=MemoryStorage(), lazy=lazy)
    def handler(update: Any, session: Any) -> None:
        session["seen"] = True

    with pytest.raises(SessionKeyError) as raised:
        handler(parse("message_reaction_count", UPDATES_NO_KEY))
    text = str(raised.value)
    assert "MessageReactionCountUpdated" in text and "get_session_key" in text
    assert "by_user found none" in text


def test_key_function_returning_a_non_id_is_a_clear_error() -> None:
    @with_session(storage=MemoryStorage(), get_session_key=lambda update: update)
    def handler(update: Any, session: Any) -> None:
        pass

    with pytest.raises(SessionKeyError, match="str or int"):
        handler(object())


@pytest.mark.parametrize("lazy", [False, True])
def test_a_key_function_that_raises_is_a_key_error_naming_the_update_type(lazy: bool) -> None:
    def by_chat_and_topic(update: Any) -> str:  # no .chat on a callback query: AttributeError
        return f"{update.chat.id}:{update.message_thread_id}"

    @with_session(storage=MemoryStorage(), lazy=lazy, get_session_key=by_chat_and_topic)
    def handler(update: Any, session: Any) -> None:
        session["seen"] = True

    payload = UPDATES["callback_query"][0]
    with pytest.raises(SessionKeyError) as raised:
        handler(parse("callback_query", payload))
    text = str(raised.value)
    assert "by_chat_and_topic() raised AttributeError" in text and "CallbackQuery" in text
    assert isinstance(raised.value.__cause__, AttributeError)


def test_the_documented_topic_key_function_keys_messages_and_callback_queries() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "keys.md").read_text()
    code = page.split("def by_topic(update):", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec("def by_topic(update):" + code, namespace)  # the docs' own example, as written
    by_topic = namespace["by_topic"]
    topic = message(message_thread_id=7, is_topic_message=True)
    assert by_topic(parse("message", topic)) == "-100:7"
    assert by_topic(parse("message", message())) == "-100:0"
    assert by_topic(parse("callback_query", UPDATES["callback_query"][0])) == "-100:0"
    assert by_topic(parse("inline_query", UPDATES["inline_query"][0])) is None


def test_custom_key_function_chooses_the_session() -> None:
    storage = MemoryStorage()

    @with_session(storage=storage, get_session_key=lambda m: f"lang-{m.from_user.language_code}")
    def handler(update: Any, session: Any) -> None:
        session["n"] = session.get("n", 0) + 1

    handler(parse("message", message(**{"from": {**USER, "language_code": "de"}})))
    handler(parse("message", message(**{"from": {**OTHER, "language_code": "de"}})))
    assert storage.read("session:lang-de") == b'{"n":2}'


FORUM = {"id": -300, "type": "supergroup", "title": "Forum", "is_forum": True}
IN_TOPIC = message(FORUM, message_thread_id=7, is_topic_message=True, date=1)


def test_by_chat_thread_keys_each_forum_topic_and_a_message_outside_topics_by_its_chat() -> None:
    assert by_chat_thread(parse("message", IN_TOPIC)) == "-300:7"
    assert by_chat_thread(parse("message", message(FORUM))) == -300  # the General topic
    # A reply in a group without topics has a thread id, but no topic: keyed by its chat.
    assert by_chat_thread(parse("message", message(GROUP, message_thread_id=3))) == -100
    assert by_chat_thread(parse("inline_query", UPDATES["inline_query"][0])) is None


def test_by_chat_thread_keys_a_callback_query_by_the_topic_of_its_message() -> None:
    query = {**UPDATES["callback_query"][0], "message": IN_TOPIC}
    assert by_chat_thread(parse("callback_query", query)) == "-300:7"
    assert by_user_in_thread(parse("callback_query", query)) == "111:-300:7"
    # A message too old for Telegram to send back (date 0) tells no topic: keyed by its chat.
    old = {**query, "message": {**IN_TOPIC, "date": 0}}
    assert by_chat_thread(parse("callback_query", old)) == -300


def test_by_user_in_thread_gives_each_user_a_session_per_topic() -> None:
    other = message(FORUM, message_thread_id=7, is_topic_message=True, **{"from": OTHER})
    assert by_user_in_thread(parse("message", IN_TOPIC)) == "111:-300:7"
    assert by_user_in_thread(parse("message", other)) == "222:-300:7"
    assert by_user_in_thread(parse("message", message(FORUM))) == "111:-300"
    assert by_user_in_thread(parse("inline_query", UPDATES["inline_query"][0])) is None


def test_business_keys_give_each_connected_account_and_each_of_its_chats_a_session() -> None:
    business = message(PRIVATE, business_connection_id="bc1")
    assert by_business_chat(parse("business_message", business)) == "bc1:111"
    assert by_business_connection(parse("business_message", business)) == "bc1"
    deleted = {"business_connection_id": "bc1", "chat": PRIVATE, "message_ids": [1]}
    assert by_business_chat(parse("deleted_business_messages", deleted)) == "bc1:111"
    connection = UPDATES["business_connection"][0]
    assert by_business_connection(parse("business_connection", connection)) == str(connection["id"])
    assert by_business_chat(parse("message", message())) is None
    assert by_business_connection(parse("message", message())) is None


def test_key_of_returns_the_key_tgsession_would_use() -> None:
    manager = with_session(storage=MemoryStorage(), get_session_key=by_user_in_thread)
    assert manager.key_of(parse("message", IN_TOPIC)) == "111:-300:7"
    assert manager.key_of(parse("inline_query", UPDATES["inline_query"][0])) is None

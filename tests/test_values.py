"""The values sessions keep: the JSON codec's bytes, stores written by earlier releases, and
dates, durations, UUIDs, Decimals and sets in typed sessions."""

from __future__ import annotations

import enum
import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Optional, TypedDict
from zoneinfo import ZoneInfo

import pytest

from tgsession import (
    MemoryStorage,
    Session,
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    with_session,
)
from tgsession.codec import JSONCodec

from conftest import RecordingStorage, Update, by_key

# What every earlier release wrote: the standard library's json, configured so.
OLD = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))


def load(manager: Any) -> Any:
    """Open and close session 1, as a handler that only reads it would."""
    with manager.open(1) as session:
        return session


def old_bytes(value: Any) -> bytes:
    return OLD.encode(value).encode("utf-8")


def nested(depth: int) -> Any:
    value: Any = {"leaf": [1, "x"]}
    for level in range(depth):
        value = {"level": level, "down": [value]} if level % 2 else [value, level]
    return value


def floats() -> list[float]:
    generator = random.Random(11)
    values = [0.0, -0.0, 0.1, 1.5, 1e15, 1e16, 1e17, 1e20, 1e-5, 1e-7, 5e-324, 1.797e308]
    values += [generator.uniform(-1, 1) * 10 ** generator.randint(-320, 300) for _ in range(300)]
    return values


CORPUS: list[dict[str, Any]] = [
    {"text": "plain", "count": 3, "flag": True, "none": None},
    {"unicode": "é ü 😀 中文 \u2028\u2029 \ufeff \U0010ffff", "emoji_key_😀": 1},
    {"control": "".join(map(chr, range(32))) + '"\\/\x7f', "tab\tkey": "\n"},
    {"big": 2**64, "bigger": 2**200, "negative": -(2**100), "max": 2**63 - 1, "min": -(2**63)},
    {"floats": floats()},
    {"magnitudes": [1.0 * 10**e for e in range(-30, 30)] + [2.5 * 10**e for e in range(-30, 30)]},
    {"deep": nested(90)},
    {"keys": {"b": 1, "a": 2, "A": 3, "_": 4, "é": 5, "😀": 6, "\uffff": 7, "": 8}},
    {"empty": {}, "list": [], "string": ""},
]


@pytest.mark.parametrize("value", CORPUS, ids=lambda value: next(iter(value)))
def test_the_codec_reads_what_earlier_releases_wrote(value: dict[str, Any]) -> None:
    assert JSONCodec().decode(old_bytes(value)) == value


@pytest.mark.parametrize("value", CORPUS, ids=lambda value: next(iter(value)))
def test_the_codec_writes_the_same_bytes_as_before_except_for_exponent_floats(
    value: dict[str, Any],
) -> None:
    new, old = JSONCodec().encode(value), old_bytes(value)
    if new != old:  # only floats in exponent notation may be written otherwise
        assert json.loads(new) == json.loads(old)
        assert b"e+" in old or b"e-0" in old or b"e-" in old
    assert JSONCodec().encode(JSONCodec().decode(new)) == new  # stable from then on


@pytest.mark.parametrize("value", CORPUS, ids=lambda value: next(iter(value)))
def test_a_stored_session_is_rewritten_at_most_once_and_never_again(
    recording: RecordingStorage, value: dict[str, Any]
) -> None:
    recording.inner.write("session:1", old_bytes(value))
    manager = with_session(storage=recording)
    for _ in range(3):  # three updates that only read the session
        with manager.open(1) as session:
            assert session == value
    writes = recording.of("write")
    rewritten = JSONCodec().encode(value) != old_bytes(value)
    assert len(writes) == (1 if rewritten else 0)
    assert recording.inner.read("session:1") == JSONCodec().encode(value)


def test_about_one_random_float_in_sixteen_is_written_otherwise_than_before() -> None:
    # The measured difference behind the rule above: exponent notation, 1e+20 against 1e20.
    differ = [x for x in floats() if JSONCodec().encode([x]) != old_bytes([x])]
    assert differ and all("e" in repr(x) for x in differ)


def test_ints_beyond_64_bits_round_trip_in_dict_sessions() -> None:
    manager = with_session(storage=MemoryStorage())
    with manager.open(1) as session:
        session["big"] = 3**100
    with manager.open(1) as session:
        assert session["big"] == 3**100 and type(session["big"]) is int


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        ({"draft": {"due": datetime(2026, 12, 1, 9, 30)}}, "session['draft']['due']", "datetime"),
        ({"tags": {"a", "b"}}, "session['tags']", "set"),
        ({"price": Decimal("1.10")}, "session['price']", "Decimal"),
        ({"id": uuid.UUID(int=7)}, "session['id']", "UUID"),
        ({"log": [1, {"at": date(2026, 1, 1)}]}, "session['log'][1]['at']", "date"),
        ({"ratio": float("nan")}, "session['ratio'] is nan", ""),
        ({"span": timedelta(hours=1)}, "session['span']", "timedelta"),
        ({"blob": b"bytes"}, "session['blob']", "bytes"),
    ],
)
def test_a_dict_session_holding_what_json_does_not_keep_is_refused_at_the_save_naming_the_path(
    recording: RecordingStorage, value: dict[str, Any], path: str, kind: str
) -> None:
    manager = with_session(storage=recording, get_session_key=by_key)

    @manager
    def handler(update: Update, session: Session) -> None:
        session.update(value)

    with pytest.raises(SessionEncodeError) as caught:
        handler(Update(1))
    message = str(caught.value)
    assert "'session:1' cannot be saved" in message and path in message and kind in message
    assert "dataclass or TypedDict" in message  # what to do instead
    assert recording.of("write") == []
    with manager.open(1) as session:  # released, and nothing was stored
        assert session == {}


def test_an_initial_dict_that_json_does_not_keep_is_refused_at_the_first_session() -> None:
    manager = with_session(initial=lambda: {"since": datetime(2026, 1, 1)}, storage=MemoryStorage())
    with pytest.raises(SessionError, match=r"session\['since'\] is a datetime"):
        load(manager)


def test_tuples_and_int_keys_in_dict_sessions_come_back_as_json_gives_them() -> None:
    manager = with_session(storage=MemoryStorage())
    with manager.open(1) as session:
        session["pos"] = (1, 2)
        session["votes"] = {7: "yes", 10: "no"}
        session["flags"] = {True: 1, None: 2, 1.5: 3}
    with manager.open(1) as session:
        assert session == {
            "pos": [1, 2],
            "votes": {"7": "yes", "10": "no"},
            "flags": {"true": 1, "null": 2, "1.5": 3},
        }


def test_two_keys_that_would_be_stored_as_one_string_are_refused() -> None:
    storage = MemoryStorage()
    manager = with_session(storage=storage)
    with pytest.raises(SessionEncodeError, match="two keys that are both stored as"):  # noqa: SIM117
        with manager.open(1) as session:  # the save at the end of this block raises
            session["votes"] = {1: "int", "1": "str"}
    assert storage.read("session:1") is None


@dataclass
class Reminder:
    text: str = ""
    due: Optional[datetime] = None  # noqa: UP045 (Python 3.9)
    local_due: Optional[datetime] = None  # noqa: UP045
    day: Optional[date] = None  # noqa: UP045
    at: Optional[time] = None  # noqa: UP045
    cooldown: timedelta = timedelta(0)
    id: Optional[uuid.UUID] = None  # noqa: UP045
    price: Decimal = Decimal("0")
    tags: set[str] = field(default_factory=set)
    seen: frozenset[int] = frozenset()
    where: tuple[float, float] = (0.0, 0.0)
    by_day: dict[date, int] = field(default_factory=dict)


def a_full_reminder() -> Reminder:
    return Reminder(
        text="call mum",
        due=datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=3))),
        local_due=datetime(2026, 12, 1, 9, 30),
        day=date(2026, 12, 1),
        at=time(9, 30, 1, 5),
        cooldown=timedelta(days=1, seconds=5, microseconds=7),
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        price=Decimal("10.50"),
        tags={"work", "family", "alpha"},
        seen=frozenset({3, 1, 2}),
        where=(55.75, 37.62),
        by_day={date(2026, 12, 2): 1, date(2026, 11, 30): 2},
    )


def test_dates_durations_uuids_decimals_sets_and_tuples_round_trip_in_dataclasses(
    storage: Any,
) -> None:
    manager = with_session(initial=Reminder, storage=storage)
    with manager.open(1) as reminder:
        for name, value in vars(a_full_reminder()).items():
            setattr(reminder, name, value)
    with manager.open(1) as reminder:
        assert reminder == a_full_reminder()
        for name, value in vars(a_full_reminder()).items():
            assert type(getattr(reminder, name)) is type(value), name
        assert reminder.local_due is not None and reminder.local_due.tzinfo is None  # naive
        assert reminder.due is not None and reminder.due.utcoffset() == timedelta(hours=3)
        assert reminder.price.as_tuple() == Decimal("10.50").as_tuple()  # the trailing zero


def test_typed_values_are_stored_as_iso_8601_text_and_sets_sorted(storage: Any) -> None:
    manager = with_session(initial=Reminder, storage=storage)
    with manager.open(1) as reminder:
        for name, value in vars(a_full_reminder()).items():
            setattr(reminder, name, value)
    data = json.loads(storage.read("session:1"))
    assert data["due"] == "2026-12-01T09:30:15.123456+03:00"
    assert data["local_due"] == "2026-12-01T09:30:00"
    assert data["day"] == "2026-12-01" and data["at"] == "09:30:01.000005"
    assert data["cooldown"] == "P1DT5.000007S"
    assert data["id"] == "12345678-1234-5678-1234-567812345678"
    assert data["price"] == "10.50"
    assert data["tags"] == ["alpha", "family", "work"] and data["seen"] == [1, 2, 3]
    assert data["by_day"] == {"2026-11-30": 2, "2026-12-02": 1}


def test_a_utc_datetime_stays_aware_and_utc() -> None:
    manager = with_session(initial=Reminder, storage=MemoryStorage())
    due = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    with manager.open(1) as reminder:
        reminder.due = due
    with manager.open(1) as reminder:
        assert reminder.due == due and reminder.due.utcoffset() == timedelta(0)


def test_a_date_that_is_no_date_in_stored_data_is_refused_naming_the_field() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"day":"the first of May"}')
    with pytest.raises(SessionDecodeError, match=r"the session.day: Invalid"):
        load(with_session(initial=Reminder, storage=storage))
    assert storage.read("session:1") == b'{"day":"the first of May"}'


class Draft(TypedDict):
    title: str
    due: datetime
    tags: set[str]


def new_draft() -> Draft:
    return {"title": "", "due": datetime(2026, 1, 1), "tags": set()}


def test_a_typeddict_session_keeps_dates_and_sets_by_its_annotations(storage: Any) -> None:
    manager = with_session(initial=new_draft, storage=storage)
    with manager.open(1) as draft:
        assert isinstance(draft, Session)
        draft["due"] = datetime(2026, 12, 24, 18, 0)
        draft["tags"].add("xmas")
    with manager.open(1) as draft:
        assert draft == {"title": "", "due": datetime(2026, 12, 24, 18, 0), "tags": {"xmas"}}
    assert json.loads(storage.read("session:1"))["due"] == "2026-12-24T18:00:00"


def test_a_typeddict_session_refuses_stored_keys_it_does_not_declare() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"due":"2026-01-01T00:00:00","secret":1,"tags":[],"title":""}')
    with pytest.raises(SessionDecodeError, match=r"fields \['secret'\] that Draft does not have"):
        load(with_session(initial=new_draft, storage=storage))


def test_a_typeddict_session_refuses_a_key_it_does_not_declare_at_the_save() -> None:
    storage = MemoryStorage()
    manager = with_session(initial=new_draft, storage=storage)
    with pytest.raises(SessionEncodeError, match=r"\['extra'\] would not load back"):  # noqa: SIM117
        with manager.open(1) as draft:  # the save at the end of this block raises
            draft["extra"] = 1  # type: ignore[typeddict-unknown-key]
    assert storage.read("session:1") is None


def test_messages_about_stored_values_quote_no_value() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"title":"SECRET-TITLE","due":"SECRET-DUE","tags":[]}')
    with pytest.raises(SessionDecodeError) as caught:
        load(with_session(initial=new_draft, storage=storage))
    assert "SECRET" not in str(caught.value) and "session.due" in str(caught.value)


def test_versioned_typed_sessions_are_stamped_and_read_back_alike() -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Reminder, storage=storage, version=3)
    with manager.open(1) as reminder:
        reminder.day = date(2026, 1, 2)
    data = storage.read("session:1")
    assert data is not None and data.startswith(b'{"$v":3,"at":null,')
    assert json.loads(data)["day"] == "2026-01-02"
    with manager.open(1) as reminder:
        assert reminder.day == date(2026, 1, 2)
    assert storage.read("session:1") == data


# -- What reviews found ------------------------------------------------------------------


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Pin:
    pin: Literal[1111, 2222] = 1111
    level: Level = Level.LOW


@pytest.mark.parametrize("data", [b'{"pin":987654}', b'{"level":987654}'])
def test_a_stored_value_outside_a_literal_or_an_enum_is_not_quoted(data: bytes) -> None:
    storage = MemoryStorage()
    storage.write("session:1", data)
    with pytest.raises(SessionDecodeError, match=r"the session\.(pin|level) is none of") as caught:
        load(with_session(initial=Pin, storage=storage))
    assert "987654" not in str(caught.value)


@dataclass
class Checked:
    pin: str = "0000"

    def __post_init__(self) -> None:
        if self.pin == "hunter2":
            raise ValueError(f"pin {self.pin} is not digits")
        if self.pin == "swordfish":
            raise LookupError(self.pin)


@pytest.mark.parametrize("pin", ["hunter2", "swordfish"])
def test_a_post_init_that_refuses_stored_data_is_a_decode_error_quoting_nothing(pin: str) -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"pin":"%s"}' % pin.encode())
    manager = with_session(initial=Checked, storage=storage)
    with pytest.raises(SessionDecodeError, match=r"made Checked\(\) raise") as caught:
        load(manager)
    assert pin not in str(caught.value)
    errors: list[str] = []
    assert list(manager.items(on_error=lambda key, error: errors.append(key))) == []
    assert errors == ["1"]


@dataclass
class Zoned:
    due: Optional[datetime] = None  # noqa: UP045 (Python 3.9)
    seen: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda z: setattr(z, "due", datetime(2026, 1, 15, 9, tzinfo=ZoneInfo("Europe/Berlin"))),
            "the session.due has a time zone (a ZoneInfo)",
        ),
    ],
    ids=["zone name"],
)
def test_values_equal_but_not_alike_after_loading_are_refused_at_the_save(
    change: Any, problem: str
) -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Zoned, storage=storage)
    with pytest.raises(SessionEncodeError, match=re.escape(problem)):  # noqa: SIM117
        with manager.open(1) as zoned:  # the save at the end of this block raises
            change(zoned)
    assert storage.read("session:1") is None
    assert "Berlin" not in problem


def test_a_value_equal_to_its_annotated_type_comes_back_as_that_type() -> None:
    manager = with_session(initial=Zoned, storage=MemoryStorage())
    with manager.open(1) as zoned:
        zoned.seen = {"a"}  # type: ignore[assignment]  # a set in a frozenset field
        zoned.due = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    with manager.open(1) as zoned:
        assert zoned.seen == frozenset({"a"}) and type(zoned.seen) is frozenset
        assert zoned.due == datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))


class Plain(enum.Enum):
    A = 1
    B = 2


@dataclass
class PlainPicks:
    picks: set[Plain] = field(default_factory=set)


@dataclass
class KeyedByPair:
    by_pair: dict[tuple[int, int], int] = field(default_factory=dict)


@dataclass
class Groups:
    groups: set[frozenset[str]] = field(default_factory=set)


@dataclass
class Maybe:
    names: set[Optional[str]] = field(default_factory=set)  # noqa: UP045


@dataclass
class Home:
    home: Optional[Path] = None  # noqa: UP045


@pytest.mark.parametrize(
    ("initial", "problem"),
    [
        (Groups, "Groups has a set of FrozenSet items"),
        (Maybe, "Maybe has a set of Union items"),
        (Home, "Home has a field of type Path, which msgspec does not convert"),
        (PlainPicks, "PlainPicks has a set of Enum items"),
        (KeyedByPair, "KeyedByPair has a dict with Tuple keys"),
    ],
)
def test_types_a_session_cannot_keep_are_a_type_error_at_the_first_session(
    initial: Any, problem: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(problem)):
        load(with_session(initial=initial, storage=MemoryStorage()))


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


def test_subclasses_of_str_int_and_float_in_dict_sessions_are_stored_as_json_stored_them() -> None:
    manager = with_session(storage=MemoryStorage())
    with manager.open(1) as session:
        session.update(text=Text("x"), number=Number(3), real=Real(1.5), level=Level.HIGH)
    with manager.open(1) as session:
        assert session == {"text": "x", "number": 3, "real": 1.5, "level": 2}
        assert [type(value) for value in session.values()] == [int, int, float, str]


Tagged = TypedDict("Tagged", {"#tag": str, "name": str})


def tagged() -> Tagged:
    return {"#tag": "a", "name": "b"}


def test_a_typeddict_with_keys_before_the_version_stamp_writes_sorted_bytes() -> None:
    storage = MemoryStorage()
    manager = with_session(initial=tagged, storage=storage, version=2)
    with manager.open(1) as session:
        session["name"] = "c"
    assert storage.read("session:1") == b'{"#tag":"a","$v":2,"name":"c"}'


def test_a_typeddict_annotation_that_cannot_be_resolved_is_a_type_error() -> None:
    def initial() -> Unknown:  # type: ignore[name-defined]  # noqa: F821
        return {}

    with pytest.raises(TypeError, match=r"return annotation of .*initial.* cannot be resolved"):
        load(with_session(initial=initial, storage=MemoryStorage()))


@dataclass
class Ratio:
    ratio: float = 0.5


def test_an_int_in_a_float_field_is_stored_as_it_loads_so_it_is_written_once(
    recording: RecordingStorage,
) -> None:
    manager = with_session(initial=Ratio, storage=recording)
    with manager.open(1) as ratio:
        ratio.ratio = 1
    for _ in range(2):
        with manager.open(1) as ratio:
            assert ratio.ratio == 1.0 and type(ratio.ratio) is float
    assert len(recording.of("write")) == 1
    assert recording.inner.read("session:1") == b'{"ratio":1.0}'


def test_a_migration_may_put_dates_into_a_typed_session() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"text":"old"}')
    manager = with_session(
        initial=Reminder,
        storage=storage,
        version=2,
        migrations={2: lambda old: {**old, "day": date(2026, 1, 1), "tags": {"x"}}},
    )
    with manager.open(1) as reminder:
        assert reminder.day == date(2026, 1, 1) and reminder.tags == {"x"}


def test_dict_session_messages_name_the_path_and_quote_no_text() -> None:
    manager = with_session(storage=MemoryStorage())
    with pytest.raises(SessionEncodeError, match=r"session\['votes'\] has two keys") as caught:  # noqa: SIM117
        with manager.open(1) as session:  # the save at the end of this block raises
            session["votes"] = {1: "a", "1": "b"}
    with pytest.raises(SessionEncodeError, match=r"session\['name'\] holds text") as caught:  # noqa: SIM117
        with manager.open(1) as session:
            session["name"] = "\ud83d"
    assert "\\ud83d" not in str(caught.value)


@dataclass
class Sortable:
    letters: set[Literal["a", "b"]] = field(default_factory=set)
    flags: set[bool] = field(default_factory=set)
    blobs: set[bytes] = field(default_factory=set)
    levels: set[Level] = field(default_factory=set)


def test_sets_whose_items_sort_are_kept() -> None:
    manager = with_session(initial=Sortable, storage=MemoryStorage())
    with manager.open(1) as sortable:
        sortable.letters, sortable.flags = {"b", "a"}, {True, False}
        sortable.blobs, sortable.levels = {b"y", b"x"}, {Level.HIGH, Level.LOW}
    assert load(manager) == Sortable({"a", "b"}, {False, True}, {b"x", b"y"}, set(Level))


@dataclass
class Moments:
    whens: set[datetime] = field(default_factory=set)
    counts: dict[datetime, int] = field(default_factory=dict)


@pytest.mark.parametrize("where", ["whens", "counts"])
def test_a_zoned_datetime_in_a_set_or_a_dict_key_is_refused_at_the_save(where: str) -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Moments, storage=storage)
    moment = datetime(2020, 6, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))
    with pytest.raises(SessionEncodeError, match=r"time zone \(a ZoneInfo\)"):  # noqa: SIM117
        with manager.open(1) as moments:  # the save at the end of this block raises
            if where == "whens":
                moments.whens.add(moment)
            else:
                moments.counts[moment] = 1
    assert storage.read("session:1") is None

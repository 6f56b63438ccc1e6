"""Typed sessions: a dataclass, a TypedDict-shaped dict or a pydantic model from initial()."""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Final,
    Generic,
    Literal,
    NewType,
    Optional,
    TypedDict,
    TypeVar,
    Union,
)

import pydantic
import pytest
import telebot

import tgsession
from tgsession import (
    DiskStorage,
    LazyTypedSession,
    MemoryStorage,
    Session,
    SessionDecodeError,
    SessionEncodeError,
    SessionError,
    SessionMiddleware,
    with_session,
)
from tgsession.testing import FakeBotAPI

from conftest import RecordingStorage, Update, by_key, polling


@dataclass
class Profile:
    name: str = ""
    count: int = 0
    tags: list[str] = field(default_factory=list)


@dataclass
class Place:
    lat: float
    lon: float


@dataclass
class Trip:
    home: Optional[Place] = None  # noqa: UP045 (Python 3.9 cannot evaluate `Place | None`)
    stops: list[Place] = field(default_factory=list)
    by_day: dict[int, Place] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)
    mode: Literal["walk", "bus"] = "walk"


class Cart(pydantic.BaseModel):
    items: list[str] = []
    total: float = 0.0


class Shape(TypedDict):
    count: int


def load(manager: Any, session_key: int = 1) -> Any:
    """Open and close a session, as a handler that only reads it would."""
    with manager.open(session_key) as session:
        return session


def stored(storage: Any, entry: str = "session:1") -> Any:
    data = storage.read(entry)
    return None if data is None else json.loads(data)


def test_a_dataclass_session_has_attribute_access_and_round_trips_as_json(storage: Any) -> None:
    @with_session(initial=Profile, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Profile) -> Profile:
        assert type(session) is Profile
        session.count += 1
        session.tags.append(f"t{session.count}")
        return dataclasses.replace(session)

    handler(Update(1))
    assert handler(Update(1)) == Profile(count=2, tags=["t1", "t2"])
    assert stored(storage) == {"count": 2, "name": "", "tags": ["t1", "t2"]}


def test_nested_dataclasses_tuples_int_keys_and_optionals_come_back_as_their_types(
    storage: Any,
) -> None:
    manager = with_session(initial=Trip, storage=storage)
    with manager.open(1) as trip:
        trip.home = Place(1.5, 2)
        trip.stops.append(Place(3, 4))
        trip.by_day[7] = Place(5, 6)
        trip.span = (10, 20)
        trip.mode = "bus"
    with manager.open(1) as trip:
        assert trip == Trip(
            home=Place(1.5, 2.0),
            stops=[Place(3.0, 4.0)],
            by_day={7: Place(5.0, 6.0)},
            span=(10, 20),
            mode="bus",
        )
        assert isinstance(trip.home, Place) and isinstance(trip.span, tuple)


def test_an_unchanged_dataclass_session_is_not_written(recording: RecordingStorage) -> None:
    manager = with_session(initial=Profile, storage=recording)
    with manager.open(1) as profile:
        profile.count = 5
    with manager.open(1):
        pass
    with manager.open(2):  # new and left as initial() made it
        pass
    assert recording.of("write") == ["session:1"]


def test_a_new_field_with_a_default_fills_in_for_sessions_stored_without_it() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"count":3}')
    with with_session(initial=Profile, storage=storage).open(1) as profile:
        assert profile == Profile(count=3)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"count":1,"age":3}', "the session has fields ['age'] that Profile does not have"),
        (b'{"count":"many"}', "the session.count is a str, not a int"),
        (b'{"tags":["a",2]}', "the session.tags[1] is a int, not a str"),
        (b'{"count":true}', "the session.count is a bool, not a int"),
    ],
)
def test_stored_data_that_no_longer_fits_the_dataclass_is_refused_and_left_untouched(
    storage: Any, data: bytes, problem: str
) -> None:
    storage.write("session:1", data)
    ran = []

    @with_session(initial=Profile, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Profile) -> None:
        ran.append(session)

    with pytest.raises(SessionDecodeError) as caught:
        handler(Update(1))
    message = str(caught.value)
    assert "'session:1' no longer fits" in message and problem in message
    assert "add a migration" in message
    assert ran == [] and storage.read("session:1") == data


def test_a_nested_dataclass_that_lacks_a_required_field_is_refused() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"home":{"lat":1}}')
    with pytest.raises(SessionDecodeError, match=r"the session.home lacks the fields \['lon'\]"):
        load(with_session(initial=Trip, storage=storage))


def test_a_migration_reshapes_old_data_into_the_dataclass(storage: Any) -> None:
    storage.write("session:1", b'{"n":4,"nick":"ann"}')

    def rename(old: dict[str, Any]) -> dict[str, Any]:
        return {"count": old["n"], "name": old["nick"]}

    manager = with_session(initial=Profile, storage=storage, version=2, migrations={2: rename})
    with manager.open(1) as profile:
        assert profile == Profile(name="ann", count=4)
    assert stored(storage) == {"$v": 2, "count": 4, "name": "ann", "tags": []}


def test_a_field_that_json_cannot_hold_is_an_encode_error_and_saves_nothing() -> None:
    @dataclass
    class Stamped:
        when: Any = None

    storage = MemoryStorage()

    @with_session(initial=Stamped, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Stamped) -> None:
        session.when = datetime(2026, 1, 1)

    with pytest.raises(SessionEncodeError, match="'session:1' cannot be saved"):
        handler(Update(1))
    assert storage.read("session:1") is None


def test_a_typeddict_shaped_session_is_a_dict(storage: Any) -> None:
    manager = with_session(initial=lambda: Shape(count=0), storage=storage)
    with manager.open(1) as session:
        assert isinstance(session, Session)
        session["count"] += 1
    assert stored(storage) == {"count": 1}


def test_a_pydantic_session_round_trips_through_json(storage: Any) -> None:
    @with_session(initial=Cart, storage=storage, get_session_key=by_key)
    def handler(update: Update, session: Cart) -> float:
        assert type(session) is Cart
        session.items.append("tea")
        session.total += 2.5
        return session.total

    handler(Update(1))
    assert handler(Update(1)) == 5.0
    assert stored(storage) == {"items": ["tea", "tea"], "total": 5.0}


def test_pydantic_field_aliases_round_trip() -> None:
    class Aliased(pydantic.BaseModel):
        user_name: str = pydantic.Field("", alias="userName")

    storage = MemoryStorage()
    manager = with_session(initial=lambda: Aliased(userName="x"), storage=storage)
    with manager.open(1) as session:
        session.user_name = "ann"
    assert stored(storage) == {"userName": "ann"}
    with manager.open(1) as session:
        assert session.user_name == "ann"


def test_stored_data_that_pydantic_rejects_is_refused_and_left_untouched(storage: Any) -> None:
    storage.write("session:1", b'{"total":"lots"}')
    with pytest.raises(SessionDecodeError, match=r"'session:1' no longer fits Cart: .*total"):
        load(with_session(initial=Cart, storage=storage))
    assert storage.read("session:1") == b'{"total":"lots"}'


def test_stored_fields_that_the_pydantic_model_would_drop_are_refused() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"total":1,"coupon":"X"}')
    with pytest.raises(SessionDecodeError, match=r"fields \[.coupon.\] that Cart does not"):
        load(with_session(initial=Cart, storage=storage))


def test_a_pydantic_model_that_allows_extra_fields_keeps_them() -> None:
    class Open(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        n: int = 0

    storage = MemoryStorage()
    storage.write("session:1", b'{"n":1,"more":[1]}')
    with with_session(initial=Open, storage=storage).open(1) as session:
        session.n += 1
    assert stored(storage) == {"n": 2, "more": [1]}


def add_tag(session: Any, tag: str) -> None:
    """Change a session of any of the three types."""
    if isinstance(session, dict):
        session["tags"].append(tag)
    elif isinstance(session, Profile):
        session.tags.append(tag)
    else:
        session.items.append(tag)


@pytest.mark.parametrize(
    "initial",
    [
        lambda: {"count": 5, "tags": ["a"]},
        lambda: Profile(count=5, tags=["a"]),
        lambda: Cart(items=["a"], total=5),
    ],
    ids=["dict", "dataclass", "pydantic"],
)
def test_clear_starts_any_session_over_and_deletes_it_unless_changed_again(
    storage: Any, initial: Any
) -> None:
    manager = with_session(initial=initial, storage=storage)
    with manager.open(1) as session:
        add_tag(session, "b")
    assert storage.read("session:1") is not None
    with manager.open(1) as session:
        tgsession.clear(session)
        assert session == initial()
    assert storage.read("session:1") is None
    with manager.open(1) as session:
        add_tag(session, "c")
        tgsession.clear(session)
        add_tag(session, "d")
    with manager.open(1) as session:
        cleared_then_changed = initial()
        add_tag(cleared_then_changed, "d")
        assert session == cleared_then_changed


def test_clear_works_on_a_dataclass_whose_fields_shadow_the_method_names() -> None:
    @dataclass
    class Odd:
        clear: bool = False
        items: list[int] = field(default_factory=list)

    storage = MemoryStorage()
    manager = with_session(initial=Odd, storage=storage)
    with manager.open(1) as odd:
        odd.clear, odd.items = True, [1]
    with manager.open(1) as odd:
        assert odd == Odd(clear=True, items=[1])
        tgsession.clear(odd)
        assert odd == Odd()
    assert storage.read("session:1") is None


def test_clear_on_a_session_that_is_not_open_is_an_error() -> None:
    manager = with_session(initial=Profile, storage=MemoryStorage())
    with manager.open(1) as profile:
        profile.count = 1
    with pytest.raises(SessionError, match=r"not an open session.*delete"):
        tgsession.clear(profile)
    with pytest.raises(SessionError, match="not an open session"):
        tgsession.clear(Profile())


def test_a_lazy_dataclass_session_loads_on_first_attribute_use(
    recording: RecordingStorage,
) -> None:
    @with_session(initial=Profile, lazy=True, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: Profile) -> None:
        assert isinstance(session, LazyTypedSession)
        assert recording.calls == [] and repr(session) == "<LazyTypedSession, not loaded>"
        session.count += 1
        assert recording.calls == [("lock", "session:1"), ("read", "session:1")]
        assert session == Profile(count=1) and "count=1" in repr(session)

    handler(Update(1))
    assert json.loads(recording.inner.read("session:1") or b"") == {
        "count": 1,
        "name": "",
        "tags": [],
    }


def test_an_untouched_lazy_pydantic_session_makes_no_storage_call(
    recording: RecordingStorage,
) -> None:
    @with_session(initial=Cart, lazy=True, storage=recording, get_session_key=by_key)
    def handler(update: Update, session: Cart) -> None:
        pass

    handler(Update(1))
    assert recording.calls == []


def test_clear_takes_a_lazy_typed_session() -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Cart, lazy=True, storage=storage, get_session_key=by_key)

    @manager
    def fill(update: Update, session: Cart) -> None:
        session.items.append("x")

    @manager
    def reset(update: Update, session: Cart) -> None:
        tgsession.clear(session)
        assert session.items == []

    fill(Update(1))
    assert storage.read("session:1") is not None
    reset(Update(1))
    assert storage.read("session:1") is None


def test_a_lazy_typed_session_used_after_its_handler_returned_is_an_error() -> None:
    kept: list[Any] = []

    @with_session(initial=Profile, lazy=True, storage=MemoryStorage(), get_session_key=by_key)
    def handler(update: Update, session: Profile) -> None:
        kept.append(session)

    handler(Update(1))
    with pytest.raises(SessionError, match="used after its handler returned"):
        kept[0].count += 1


def test_items_and_open_yield_the_typed_session(storage: Any) -> None:
    manager = with_session(initial=Profile, storage=storage)
    for user in (1, 2):
        with manager.open(user) as profile:
            profile.count = user * 10
    assert sorted((key, p.count) for key, p in manager.items()) == [("1", 10), ("2", 20)]
    assert all(type(p) is Profile for _, p in manager.items())


def test_initial_must_return_a_dict_a_dataclass_or_a_model() -> None:
    manager = with_session(initial=lambda: {1, 2}, storage=MemoryStorage())
    with pytest.raises(
        SessionError, match=r"'session:1'.* returned a set; it must return a new dict"
    ):
        load(manager)


def test_initial_must_return_one_type_of_session() -> None:
    kinds = iter([Profile(), Cart()])
    manager = with_session(initial=lambda: next(kinds), storage=MemoryStorage())
    with manager.open(1):
        pass
    with pytest.raises(SessionError, match="returned a Cart where it first returned a Profile"):
        load(manager, 2)


def test_a_frozen_dataclass_is_refused_because_a_handler_cannot_change_it() -> None:
    @dataclass(frozen=True)
    class Fixed:
        n: int = 0

    with pytest.raises(TypeError, match="Fixed is a frozen dataclass"):
        load(with_session(initial=Fixed, storage=MemoryStorage()))


def test_the_middleware_hands_telebot_handlers_a_lazy_typed_session_they_can_clear(
    bot_api: FakeBotAPI, storage: Any
) -> None:
    profiles = with_session(initial=Profile, storage=storage)
    bot = telebot.TeleBot(bot_api.token, threaded=True, num_threads=4, use_class_middlewares=True)
    bot.setup_middleware(SessionMiddleware(profiles))

    @bot.message_handler(commands=["tag"])
    def tag(message: Any, session: Profile) -> None:
        assert isinstance(session, LazyTypedSession)
        session.tags.append(message.text.split()[1])
        bot.reply_to(message, " ".join(session.tags))

    @bot.message_handler(commands=["forget"])
    def forget(message: Any, session: Profile) -> None:
        tgsession.clear(session)
        bot.reply_to(message, "forgotten")

    bot_api.push_message(user_id=4, text="/tag a")
    bot_api.push_message(user_id=5, text="/tag b")
    with polling(bot):
        bot_api.wait_for_calls(2)
        # Sent after /tag a replied: it waits for that update's lock, so it comes second.
        bot_api.push_message(user_id=4, text="/forget")
        assert bot_api.wait_for_calls(3)[-1]["text"] == "forgotten"
    assert stored(storage, "session:4") is None
    assert stored(storage, "session:5") == {"count": 0, "name": "", "tags": ["b"]}


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    S = 1
    M = 2


T = TypeVar("T")


@dataclass
class Box(Generic[T]):
    item: Any = None


@dataclass
class Palette:
    main: Color = Color.RED
    size: Size = Size.S
    accent: Literal["red", "blue"] = "red"
    by_color: dict[Color, int] = field(default_factory=dict)
    by_size: dict[Size, str] = field(default_factory=dict)
    weights: dict[float, str] = field(default_factory=dict)
    amount: Union[float, int] = 0  # noqa: UP007 (Python 3.9 cannot evaluate `float | int`)
    box: Box[int] = field(default_factory=Box)


def test_enums_literals_number_unions_and_generic_dataclasses_keep_their_types() -> None:
    manager = with_session(initial=Palette, storage=MemoryStorage())
    with manager.open(1) as palette:
        palette.main, palette.size, palette.accent = Color.BLUE, Size.M, "blue"
        palette.by_color[Color.BLUE] = 1
        palette.by_size[Size.M] = "m"
        palette.weights[1.5] = "x"
        palette.amount = 3
        palette.box = Box(7)
    with manager.open(1) as palette:
        assert palette == Palette(
            Color.BLUE, Size.M, "blue", {Color.BLUE: 1}, {Size.M: "m"}, {1.5: "x"}, 3, Box(7)
        )
        assert type(palette.main) is Color
        assert type(palette.size) is Size and type(palette.amount) is int
        assert [type(k) for k in (*palette.by_color, *palette.by_size)] == [Color, Size]


@dataclass
class Keyed:
    by_id: dict[int, str] = field(default_factory=dict)


@pytest.mark.parametrize("key", ["01", " 1", "1_0", "1.0", "x"])
def test_int_keys_other_than_json_wrote_them_are_refused_not_merged(key: str) -> None:
    data = json.dumps({"by_id": {"1": "a", key: "b"}}).encode()
    storage = MemoryStorage()
    storage.write("session:1", data)
    # A key is quoted only if it looks like a name: other keys may be data (a user id).
    quoted = rf"\['{key}'\]" if key.isidentifier() else r"\[<a str>\]"
    problem = rf"the session.by_id (has a key that is no int|has fields {quoted} that)"
    with pytest.raises(SessionDecodeError, match=problem):
        load(with_session(initial=Keyed, storage=storage))
    assert storage.read("session:1") == data


@dataclass
class Walk:
    minutes: int = 0


@dataclass
class Run:
    minutes: int = 0


@dataclass
class Activity:
    last: Union[Walk, Run] = field(default_factory=Walk)  # noqa: UP007 (Python 3.9)


def test_a_union_of_dataclasses_json_cannot_tell_apart_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match=r"Activity cannot be a session type: .*unions"):
        load(with_session(initial=Activity, storage=MemoryStorage()))


@dataclass
class EnumLiteral:
    accent: Literal[Color.RED, Color.BLUE] = Color.RED


@dataclass
class BoolKeys:
    by_flag: dict[bool, int] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("initial", "problem"),
    [
        (EnumLiteral, "EnumLiteral cannot be a session type: Literal may only contain"),
        (BoolKeys, "BoolKeys has a dict with Bool keys"),
    ],
)
def test_types_msgspec_cannot_convert_are_a_type_error_at_the_first_session(
    initial: Any, problem: str
) -> None:
    with pytest.raises(TypeError, match=problem):
        load(with_session(initial=initial, storage=MemoryStorage()))


@dataclass
class Animal:
    name: str = ""


@dataclass
class Dog(Animal):
    good: bool = True


@dataclass
class Pet:
    pet: Animal = field(default_factory=Animal)


@dataclass
class Stamps:
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log.append("loaded")


@pytest.mark.parametrize(
    ("initial", "change", "problem"),
    [
        (Pet, lambda s: setattr(s, "pet", Dog("rex")), "the session.pet holds a Dog, which"),
        (Profile, lambda s: setattr(s, "count", "3"), "is a str, not a int"),
        (Profile, lambda s: setattr(s, "tags", {"a"}), "the session.tags holds a set, which"),
    ],
    ids=["subclass instance", "value of another type", "not JSON"],
)
def test_a_session_that_would_not_load_back_is_not_saved(
    storage: Any, initial: Any, change: Any, problem: str
) -> None:
    manager = with_session(initial=initial, storage=storage, get_session_key=by_key)

    @manager
    def handler(update: Update, session: Any) -> None:
        change(session)

    with pytest.raises(SessionEncodeError, match="'session:1' cannot be saved") as caught:
        handler(Update(1))
    assert problem in str(caught.value)
    assert storage.read("session:1") is None
    load(manager)  # the session is not locked out


def test_a_post_init_that_changes_fields_on_every_load_is_refused() -> None:
    with pytest.raises(SessionError, match=r"initial\(\) .* returns a Stamps that would not load"):
        load(with_session(initial=Stamps, storage=MemoryStorage()))


def test_a_shared_initial_instance_is_copied_for_each_session() -> None:
    shared = Profile(tags=["default"])
    manager = with_session(initial=lambda: shared, storage=MemoryStorage())
    with manager.open(1) as profile:
        profile.tags.append("mine")
    assert load(manager, 2) == Profile(tags=["default"]) and shared == Profile(tags=["default"])


@dataclass
class Measure:
    total: float = 0


def test_a_float_field_stored_as_an_int_loads_as_a_float_and_is_rewritten_once(
    recording: RecordingStorage,
) -> None:
    recording.inner.write("session:1", b'{"total":2}')
    manager = with_session(initial=Measure, storage=recording)
    for _ in range(3):
        assert load(manager) == Measure(2.0) and type(load(manager).total) is float
    assert recording.of("write") == ["session:1"]  # once, as any bytes in another layout
    assert stored(recording.inner) == {"total": 2.0}


class Inner(pydantic.BaseModel):
    a: int = 0


class Outer(pydantic.BaseModel):
    inner: Inner = Inner()


def test_nested_pydantic_fields_the_model_would_drop_are_refused() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"inner":{"a":1,"coupon":"X"}}')
    with pytest.raises(SessionDecodeError, match=r"session\[.inner.\] has fields \[.coupon.\]"):
        load(with_session(initial=Outer, storage=storage))
    assert storage.read("session:1") == b'{"inner":{"a":1,"coupon":"X"}}'


class StrictSpan(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)
    span: tuple[int, int] = (0, 0)


class Counted(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    items: list[str] = []

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def n(self) -> int:
        return len(self.items)


def test_strict_models_and_computed_fields_round_trip() -> None:
    storage = MemoryStorage()
    spans = with_session(key="span", initial=StrictSpan, storage=storage)
    with spans.open(1) as span:
        span.span = (1, 2)
    assert load(spans).span == (1, 2)
    counted = with_session(key="counted", initial=Counted, storage=storage)
    with counted.open(1) as session:
        session.items.append("a")
    assert stored(storage, "counted:1") == {"items": ["a"]} and load(counted).n == 1


def test_a_model_that_does_not_load_what_it_dumps_is_refused_at_the_save() -> None:
    class OnlyValidationAlias(pydantic.BaseModel):
        user_name: str = pydantic.Field("", validation_alias="userName")

    manager = with_session(initial=OnlyValidationAlias, storage=MemoryStorage())
    with pytest.raises(SessionEncodeError, match=r"would not load back as it is"):  # noqa: SIM117
        with manager.open(1) as session:  # the save at the end of this block raises
            session.user_name = "ann"


def test_root_models_and_frozen_models_are_refused() -> None:
    class Numbers(pydantic.RootModel[list[int]]):
        pass

    class Fixed(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)

    with pytest.raises(TypeError, match="use a model with fields, not a RootModel"):
        load(with_session(initial=lambda: Numbers([]), storage=MemoryStorage()))
    with pytest.raises(TypeError, match="Fixed is a frozen model"):
        load(with_session(initial=Fixed, storage=MemoryStorage()))


if TYPE_CHECKING:
    from decimal import Decimal


@dataclass
class Priced:
    price: Optional[Decimal] = None  # noqa: UP045 (Python 3.9)


def test_an_annotation_that_cannot_be_resolved_is_an_error_not_a_skipped_check() -> None:
    with pytest.raises(TypeError, match=r"annotations of Priced cannot be resolved.*Decimal"):
        load(with_session(initial=Priced, storage=MemoryStorage()))


def test_copying_a_lazy_typed_session_copies_the_session() -> None:
    @with_session(initial=Profile, lazy=True, storage=MemoryStorage(), get_session_key=by_key)
    def handler(update: Update, session: Profile) -> tuple[Any, Any]:
        session.tags.append("a")
        return copy.copy(session), copy.deepcopy(session)

    shallow, deep = handler(Update(1))
    assert type(shallow) is Profile and deep == Profile(tags=["a"])


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


UserId = NewType("UserId", int)


@dataclass
class Keys:
    mood: Mood = Mood.HAPPY
    by_mood: dict[Mood, int] = field(default_factory=dict)
    by_size: dict[Size, int] = field(default_factory=dict)
    by_user: dict[UserId, str] = field(default_factory=dict)
    owner: Final[UserId] = UserId(0)  # type: ignore[misc]


def test_plain_enums_enum_keys_and_newtype_keys_keep_their_types() -> None:
    manager = with_session(initial=Keys, storage=MemoryStorage())
    with manager.open(1) as keys:
        keys.mood = Mood.SAD
        keys.by_mood[Mood.SAD] = 1
        keys.by_size[Size.M] = 2
        keys.by_user[UserId(5)] = "x"
    assert load(manager) == Keys(Mood.SAD, {Mood.SAD: 1}, {Size.M: 2}, {UserId(5): "x"}, UserId(0))


@dataclass
class Holder:
    item: Animal = field(default_factory=Animal)
    numbers: list[int] = field(default_factory=list)


@dataclass
class SameFields(Animal):
    pass


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: setattr(s, "item", SameFields("rex")), "a SameFields, which would load"),
        (lambda s: setattr(s, "numbers", (1, 2)), "a tuple, which would load back as a list"),
    ],
    ids=["subclass with the same fields", "tuple in a list field"],
)
def test_a_session_that_would_load_back_as_something_else_is_not_saved(
    change: Any, problem: str
) -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Holder, storage=storage)
    with pytest.raises(SessionEncodeError, match="'session:1' cannot be saved") as caught:  # noqa: SIM117
        with manager.open(1) as holder:  # the save at the end of this block raises
            change(holder)
    assert problem in str(caught.value)
    assert storage.read("session:1") is None


@dataclass
class Money:
    amount: float = 0.0
    log: list[Any] = field(default_factory=list)


@pytest.mark.parametrize("change", ["a float too large", "a list that contains itself"])
def test_values_json_cannot_hold_are_encode_errors_and_release_the_session(change: str) -> None:
    manager = with_session(initial=Money, storage=MemoryStorage())
    with pytest.raises(SessionEncodeError):  # noqa: SIM117
        with manager.open(1) as money:  # the save at the end of this block raises
            if change == "a list that contains itself":
                money.log.append(money.log)
            else:
                money.amount = 10**400  # type: ignore[assignment]
    assert load(manager) == Money()


@pytest.mark.parametrize("data", [b'{"amount":1e999}', b'{"amount":' + b"9" * 400 + b"}"])
def test_numbers_too_large_for_a_float_are_refused_on_load(data: bytes) -> None:
    storage = MemoryStorage()
    storage.write("session:1", data)
    with pytest.raises(SessionDecodeError, match="'session:1'"):
        load(with_session(initial=Money, storage=storage))
    assert storage.read("session:1") == data


class Tags(pydantic.BaseModel):
    seen: set[int] = set()


def test_a_pydantic_set_is_not_refused_for_being_stored_in_another_order() -> None:
    manager = with_session(initial=Tags, storage=MemoryStorage())
    with manager.open(1) as tags:
        tags.seen.update(range(100))
    with manager.open(1) as tags:
        tags.seen.intersection_update({1, 8})
    assert load(manager).seen == {1, 8}


def slow_annotation() -> str:
    time.sleep(0.3)  # resolving the annotations of RaceInner takes a while
    return "slow"


@dataclass
class RaceInner:
    n: Annotated[int, slow_annotation()] = 0


@dataclass
class RaceOuter:
    inner: Optional[RaceInner] = None  # noqa: UP045 (Python 3.9)


def test_threads_that_make_the_first_sessions_of_a_dataclass_at_once_all_succeed() -> None:
    manager = with_session(initial=RaceOuter, storage=MemoryStorage())
    errors: list[BaseException] = []

    def first_session(user: int) -> None:
        try:
            with manager.open(user) as outer:
                outer.inner = RaceInner(user)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=first_session, args=(user,)) for user in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [load(manager, user).inner for user in range(4)] == [RaceInner(u) for u in range(4)]


class Flagged(pydantic.BaseModel):
    flag: bool = False


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # about that very 1
def test_a_pydantic_value_equal_in_python_but_not_to_pydantic_is_refused_at_the_save() -> None:
    storage = MemoryStorage()
    manager = with_session(initial=Flagged, storage=storage)
    with pytest.raises(SessionEncodeError, match=r"'session:1' cannot be saved"):  # noqa: SIM117
        with manager.open(1) as session:  # the save at the end of this block raises
            session.flag = 1  # type: ignore[assignment]  # 1 == True, but it loads as True
    assert storage.read("session:1") is None
    assert load(manager) == Flagged()


PYDANTIC_SETS = """
import sys
from pydantic import BaseModel
from tgsession import DiskStorage, with_session

class Tags(BaseModel):
    tags: set[str] = set()
    by_topic: dict[str, frozenset[str]] = {}
    pairs: set[tuple[str, int]] = set()

manager = with_session(initial=Tags, storage=DiskStorage(sys.argv[1]), ttl=3600)
with manager.open(1) as session:
    if sys.argv[2] == "write":
        words = [f"word{i}" for i in range(40)]
        session.tags = set(words)
        session.by_topic = {"a": frozenset(words[:20]), "b": frozenset(words[20:])}
        session.pairs = {(word, i) for i, word in enumerate(words)}
"""


def test_a_pydantic_session_with_sets_is_stored_alike_by_every_process(tmp_path: Path) -> None:
    pytest.importorskip("pydantic")
    import subprocess
    import sys

    from conftest import child_env

    def run(seed: int, action: str, directory: Path) -> bytes:
        subprocess.run(
            [sys.executable, "-c", PYDANTIC_SETS, str(directory), action],
            env=child_env(PYTHONHASHSEED=str(seed)),
            check=True,
        )
        storage = DiskStorage(directory)
        data = storage.read("session:1")
        storage.close()
        assert data is not None
        return data

    # Equal sessions written by processes with different string hashes: equal bytes.
    written = {run(seed, "write", tmp_path / f"store{seed}") for seed in range(1, 6)}
    assert len(written) == 1
    # A process that only reads the session writes nothing, whatever its hash order: the
    # entry's expiry, which each write moves, stays where it was.
    storage = DiskStorage(tmp_path / "store1")
    before = storage._dir().cache.get("session:1", expire_time=True)
    for seed in range(6, 10):
        assert run(seed, "read", tmp_path / "store1") == next(iter(written))
    assert storage._dir().cache.get("session:1", expire_time=True) == before
    storage.close()


def test_sorting_pydantic_sets_keeps_the_models_own_json_settings() -> None:
    pydantic = pytest.importorskip("pydantic")
    from datetime import timedelta

    class Spans(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        model_config = pydantic.ConfigDict(
            ser_json_bytes="base64", val_json_bytes="base64", ser_json_timedelta="float"
        )
        blobs: set[tuple[bytes, int]] = pydantic.Field(default_factory=set)
        spans: set[tuple[timedelta, int]] = pydantic.Field(default_factory=set)

    storage = MemoryStorage()
    manager = with_session(initial=Spans, storage=storage)
    with manager.open(1) as session:
        session.spans = {(timedelta(seconds=1.5), 2), (timedelta(seconds=0.5), 1)}
        session.blobs = {(b"\xff\xfe", 1)}
    assert storage.read("session:1") == b'{"blobs":[["__4=",1]],"spans":[[0.5,1],[1.5,2]]}'

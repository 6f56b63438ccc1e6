"""Session models: what a session is (a dict, a dataclass, a TypedDict or a pydantic model),
how it becomes the bytes that a storage keeps, and how stored bytes become that type again.

``initial()`` decides the model: a dict gives `tgsession.Session` (a dict), or a
``TypedDict`` if ``initial`` is one or is annotated to return one; a dataclass instance gives
that dataclass; anything with pydantic v2's ``model_dump`` and ``model_validate_json`` gives
that model (pydantic itself stays optional). Dataclasses and TypedDicts are converted by
msgspec, pydantic models by pydantic.

A session must survive the trip through its bytes unchanged: `SessionModel.read`
rebuilds it from stored data and refuses data that the type would not save back the same (a
field it does not know, a value it would convert), and the manager reads back what
initial() returns and every session it saves, so that no session is stored that cannot be
loaded as it was.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import re
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

import msgspec
import msgspec.inspect

from .codec import DECODER, ENCODER, JSONCodec, json_key
from .errors import SessionDecodeError, SessionError, key_step
from .migrations import VERSION_KEY, Migrations
from .session import LazySession, LazyTypedSession, Loader, Session

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class PydanticLike(Protocol):
    """A pydantic v2 model, as far as tgsession uses one (pydantic itself is not needed)."""

    def model_dump(self, *args: Any, **kwargs: Any) -> Any: ...

    @classmethod
    def model_validate_json(cls, *args: Any, **kwargs: Any) -> Any: ...


# What initial() may return, for type checkers: a dict (a TypedDict too), a dataclass or a
# pydantic model. Only a string at run time, where _typeshed does not exist.
SessionValue = Union["Mapping[str, Any]", "DataclassInstance", PydanticLike]


class Misfit(Exception):
    """Stored data that does not fit a session type; the message says where and how."""


class SessionModel:
    """How sessions of one type are checked, turned into bytes, and read back."""

    type: type
    stand_in: Callable[[Loader], object] = LazyTypedSession  # what a lazy session looks like
    # What a SessionEncodeError advises when a session would not load back as it is.
    advice = (
        "JSON keeps no class names, so keep each field to what its annotation says (an "
        "instance of a subclass, a value of another type, or a __post_init__ that changes "
        "fields does not survive)"
    )

    # Whether a session loads back converted (an int saved in a float field loads as a float),
    # so that the bytes to store are those of the session as it loads back.
    converts = False

    def __init__(self, migrations: Migrations) -> None:
        self.migrations = migrations

    @property
    def name(self) -> str:
        """The name of the session type, for messages."""
        return self.type.__qualname__

    def check(self, entry: str, value: Any) -> Any:
        """Return ``value``, a new session from ``initial()``, or raise if it has another type."""
        if type(value) is not self.type:
            raise self.other_type(entry, value)
        return value

    def other_type(self, entry: str, value: Any) -> SessionError:
        """The error for an ``initial()`` that returned another type than it first did."""
        first = "dict" if self.type is Session else self.type.__name__
        return SessionError(
            f"initial() of session {entry!r} returned a {type(value).__name__} where it "
            f"first returned a {first}; return one type of session"
        )

    def dump(self, session: Any) -> dict[str, Any]:
        """Return the dict of JSON values that ``session`` is stored as."""
        raise NotImplementedError

    def to_json(self, session: Any) -> bytes:
        """Return the bytes that the default JSON codec stores ``session`` as."""
        return _JSON.encode(self.migrations.stamp(self.dump(session)))

    def from_json(self, data: bytes) -> Any | None:
        """The session that ``data``, bytes of the default JSON codec, holds, if they are
        exactly what saving that session writes; otherwise None, and the caller takes the
        general path (decode, migrate, `load`)."""
        return None

    def reread(self, data: bytes) -> Any:
        """The session that ``data``, just made by `to_json`, holds; or raise Misfit."""
        return self.read(self.migrations.migrate("", _decode(data)))

    def build(self, data: dict[str, Any]) -> Any:
        """Return the session that the stored ``data`` holds, or raise Misfit."""
        raise NotImplementedError

    def read(self, data: dict[str, Any]) -> Any:
        """Return the session that ``data`` holds; raise Misfit if saving it would lose or
        change any of ``data`` (so a field that the type drops or converts is refused)."""
        session = self.build(data)
        # Walked, not compared with ==, which takes True for 1. This is the general path:
        # the default codec's bytes usually take the exact one of from_json().
        problem = _difference(data, self.dump(session), "the session", self.name)
        if problem is not None:
            raise Misfit(problem)
        return session

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        """Return the session that the stored ``data`` holds, or raise SessionDecodeError."""
        try:
            return self.read(data)
        except Misfit as problem:
            raise SessionDecodeError(
                f"session {entry!r} no longer fits {self.name}: {problem}. It is "
                "left untouched: add a migration (with_session(version=..., migrations=...)) "
                "that turns the stored data into the new shape, or delete the entry"
            ) from None

    def reset(self, session: Any, fresh: Any) -> None:
        """Make ``session`` equal to ``fresh``, a new session from ``initial()``, in place."""
        raise NotImplementedError

    def difference(self, loaded: Any, session: Any) -> str | None:
        """Where ``loaded``, ``session`` saved and read back, is not ``session``; or None."""
        raise NotImplementedError

    def locate(self, session: Any) -> str | None:
        """Where ``session`` holds a value that cannot be stored, if that can be told."""
        return None


def _decode(data: bytes) -> Any:
    try:
        return DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise Misfit(f"the session would be saved as bytes that do not decode ({error})") from None


_JSON = JSONCodec()  # for dicts of JSON values: writes non-str keys as json writes them


class DictModel(SessionModel):
    """Sessions that are dicts of JSON values: a `Session`."""

    type = Session
    stand_in = LazySession
    advice = (
        "Dict sessions hold JSON values (dict, list, str, int, float, bool, None): convert "
        "the value (a datetime to dt.isoformat(), a set to a sorted list), or make the "
        "session a dataclass or TypedDict, whose annotations bring datetimes, sets, UUIDs "
        "and Decimals back as they were"
    )

    def check(self, entry: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise self.other_type(entry, value)
        return Session(value)

    def dump(self, session: Any) -> dict[str, Any]:
        return session  # type: ignore[no-any-return]

    def read(self, data: dict[str, Any]) -> Any:
        return Session(data)  # the values are JSON values already: nothing to check

    def from_json(self, data: bytes) -> Any | None:
        try:
            value = DECODER.decode(data)
        except msgspec.DecodeError:
            return None
        if type(value) is not dict:
            return None
        stored = value.pop(VERSION_KEY, 1)  # the stamp of this version, or none at version 1
        if type(stored) is not int or stored != self.migrations.version:
            return None  # the general path migrates it, or says what is wrong
        return Session(value)

    def reread(self, data: bytes) -> Any:
        value = _decode(data)
        value.pop(VERSION_KEY, None)  # to_json() stamped it with this version
        return Session(value)

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        return Session(data)

    def reset(self, session: Any, fresh: Any) -> None:
        dict.clear(session)  # not Session.clear(), which would mark it cleared
        session.update(fresh)

    def difference(self, loaded: Any, session: Any) -> str | None:
        # Equal, or different only where json would differ too: a tuple comes back as a
        # list, an int key as a string.
        return None if loaded == session else _not_json(session, "session")

    def locate(self, session: Any) -> str | None:
        return _not_json(session, "session")


def _not_json(value: Any, where: str) -> str | None:
    """Where ``value`` holds what JSON does not bring back as it was; None if nowhere.

    Tuples (which come back as lists), non-str keys that json writes as strings, and
    subclasses of str and int (which come back as the base type) are JSON values here, as
    they are to `json`.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} holds text that is not valid Unicode (a lone surrogate)"
        return None
    if isinstance(value, int) or value is None:  # bool is an int
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold"
    if isinstance(value, dict):
        texts = set()
        for key, item in value.items():
            try:
                text = json_key(key, where)
            except TypeError as error:
                return str(error)
            if text in texts:
                return f"{where} has two keys that are both stored as the string {key_step(text)}"
            texts.add(text)
            problem = _not_json(item, f"{where}{key_step(key)}")
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _not_json(item, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, which JSON does not keep"


def _stamped(body: bytes, version: int) -> bytes:
    """``body``, a JSON object with sorted keys, with the version stamp it is stored with.

    "$v" sorts before every identifier, so with fields named by identifiers (every
    dataclass's, most TypedDicts') it comes first, where the codec's sorted encoding of the
    stamped dict would put it.
    """
    if version == 1:
        return body
    head = b'{"' + VERSION_KEY.encode() + b'":' + str(version).encode()
    return head + b"}" if body == b"{}" else head + b"," + body[1:]


class _MsgspecModel(SessionModel):
    """Sessions of a type that msgspec converts by its annotations: a dataclass or a
    TypedDict. The default codec's bytes are read straight into the type and written from
    it; other codecs get the session as a dict of JSON values."""

    splice = True  # whether to_json() may put the version stamp first (see _stamped)

    def difference(self, loaded: Any, session: Any) -> str | None:
        # loaded holds exactly the annotated types: a value equal to it (an IntEnum in an int
        # field, a set in a frozenset field) comes back as what the annotation says. Only
        # times are compared type for type, since == ignores their zones.
        if not self.strict and loaded == session:
            return None
        return _unlike(loaded, session, "the session")

    def __init__(self, migrations: Migrations, annotation: Any, name: str) -> None:
        super().__init__(migrations)
        self.annotation = annotation
        self.name_ = name
        try:
            self.decoder = msgspec.json.Decoder(annotation)
            kinds = _check_type(msgspec.inspect.type_info(annotation), name)
        except NameError as error:
            raise TypeError(
                f"the annotations of {name} cannot be resolved ({error}), so its stored fields "
                "could not be checked: import every name they use at run time (not only under "
                "TYPE_CHECKING), define the class at module level, and on Python 3.9 write "
                "Optional[X] rather than X | None"
            ) from error
        except TypeError as error:  # a type msgspec cannot convert
            raise TypeError(f"{name} cannot be a session type: {error}") from error
        # == takes an aware datetime for another in another zone: compare those type for type.
        self.strict = not kinds.isdisjoint(_ZONED)
        # An int saved in a float or Decimal field loads converted (see SessionModel.converts).
        self.converts = not kinds.isdisjoint(_CONVERTED)

    def wrap(self, value: Any) -> Any:
        """The session that msgspec's result ``value`` is."""
        return value

    def dump(self, session: Any) -> dict[str, Any]:
        return msgspec.to_builtins(session, str_keys=True, order="sorted")  # type: ignore[no-any-return]

    def to_json(self, session: Any) -> bytes:
        if not self.splice:
            return _JSON.encode(self.migrations.stamp(self.dump(session)))
        try:
            body = ENCODER.encode(session)
        except TypeError:  # msgspec sorts only str keys: make them strings first
            body = ENCODER.encode(self.dump(session))
        return _stamped(body, self.migrations.version)

    def from_json(self, data: bytes) -> Any | None:
        try:
            session = self.wrap(self.decoder.decode(data))
            return session if self.to_json(session) == data else None
        except RecursionError:
            raise
        except Exception:  # the general path says what is wrong, or migrates
            return None

    def reread(self, data: bytes) -> Any:
        return self.converted(self.decoder.decode, data)

    def build(self, data: dict[str, Any]) -> Any:
        return self.converted(
            lambda value: msgspec.convert(value, self.annotation, str_keys=True), data
        )

    def converted(self, convert: Callable[[Any], Any], data: Any) -> Any:
        """The session that ``convert(data)`` makes; raise Misfit, naming the field and
        quoting no value, for anything it raises but running out of stack."""
        try:
            return self.wrap(convert(data))
        except RecursionError:
            raise
        except Exception as error:
            raise Misfit(self.problem(error)) from None

    def read(self, data: dict[str, Any]) -> Any:
        # A migration may have put datetimes, sets or tuples in: compare as they are stored.
        try:
            data = DECODER.decode(_JSON.encode(data))
        except (TypeError, ValueError) as error:
            raise Misfit(f"the session holds what JSON cannot ({error})") from None
        return super().read(data)

    def problem(self, error: Exception) -> str:
        """What a failed conversion found, naming the field and quoting no value."""
        cause = error.__cause__ if isinstance(error, msgspec.ValidationError) else error
        if cause is not None:  # __post_init__ or __init__ raised: its text may quote values
            return f"the session made {self.name_}() raise {type(cause).__name__}"
        return _validation_problem(error)


# What a set may hold: values of one kind that sort, so that a set is written in one order
# in every process (a set of frozensets or of str and None would follow string hashing).
_SORTABLE = (
    msgspec.inspect.StrType,
    msgspec.inspect.IntType,
    msgspec.inspect.FloatType,
    msgspec.inspect.BoolType,
    msgspec.inspect.BytesType,
    msgspec.inspect.DateTimeType,
    msgspec.inspect.DateType,
    msgspec.inspect.TimeType,
    msgspec.inspect.TimeDeltaType,
    msgspec.inspect.UUIDType,
    msgspec.inspect.DecimalType,
)


# Dict keys that msgspec writes as JSON object keys (str-like and number-like).
_KEYS = (
    msgspec.inspect.StrType,
    msgspec.inspect.IntType,
    msgspec.inspect.FloatType,
    msgspec.inspect.EnumType,
    msgspec.inspect.LiteralType,
    msgspec.inspect.DateTimeType,
    msgspec.inspect.DateType,
    msgspec.inspect.TimeType,
    msgspec.inspect.UUIDType,
    msgspec.inspect.DecimalType,
)


def _sortable(info: Any) -> bool:
    """Whether set items of the type msgspec's ``info`` describes sort, so that a set is
    written in one order: one kind of scalar, enums whose members order (IntEnum, str
    enums), Literals of only str or only int values."""
    if isinstance(info, msgspec.inspect.EnumType):
        return issubclass(info.cls, (int, str))
    if isinstance(info, msgspec.inspect.LiteralType):
        return len({type(value) for value in info.values}) == 1
    return isinstance(info, _SORTABLE)


_ZONED = frozenset({msgspec.inspect.DateTimeType, msgspec.inspect.TimeType})
_CONVERTED = frozenset({msgspec.inspect.FloatType, msgspec.inspect.DecimalType})


def _check_type(info: Any, name: str, seen: dict[int, Any] | None = None) -> set[type]:
    """Raise TypeError for what msgspec's ``info`` describes that a session cannot keep: a
    class msgspec does not convert, a dict key that JSON does not keep, a set that cannot be
    written in one order. Return the kinds of msgspec type found in it."""
    seen = {} if seen is None else seen
    if id(info) in seen:  # a type that contains itself
        return set()
    seen[id(info)] = info  # kept alive, so that no other object takes its id meanwhile
    kinds = {type(info)}
    inspect = msgspec.inspect
    if isinstance(info, inspect.CustomType):
        raise TypeError(
            f"{name} has a field of type {info.cls.__qualname__}, which msgspec does not "
            "convert: store it as a str, number or dataclass, and convert it in your code"
        )
    if isinstance(info, inspect.DictType) and not isinstance(info.key_type, _KEYS):
        raise TypeError(
            f"{name} has a dict with {type(info.key_type).__name__[:-4]} keys, which JSON "
            "cannot keep as they are: use str, int, float, enum, date or UUID keys"
        )
    if isinstance(info, (inspect.SetType, inspect.FrozenSetType)) and not _sortable(info.item_type):
        raise TypeError(
            f"{name} has a set of {type(info.item_type).__name__[:-4]} items, which cannot "
            "be written in one order: use a set of str, int, float, dates or enum values, "
            "or a list"
        )
    for attribute in getattr(type(info), "__struct_fields__", ()):
        for inner in _inner_types(getattr(info, attribute)):
            kinds |= _check_type(inner, name, seen)
    return kinds


def _inner_types(value: Any) -> list[Any]:
    """The msgspec.inspect types inside one attribute of another."""
    if isinstance(value, msgspec.inspect.Type):
        return [value]
    if isinstance(value, msgspec.inspect.Field):
        return [value.type]
    if isinstance(value, tuple):
        return [inner for item in value for inner in _inner_types(item)]
    return []


def _validation_problem(error: Exception) -> str:
    """msgspec's ValidationError as "the session.field is a str, not an int", quoting no
    value of the session."""
    problem, _, where = str(error).partition(" - at ")
    is_key = where.startswith("`key` in ")
    path = "the session" + where.removeprefix("`key` in ").strip("`")[1:]
    expected = re.fullmatch(r"Expected `(.+?)`(.*), got `(.+)`", problem)
    missing = re.fullmatch(r"Object missing required field `(.+)`", problem)
    if expected and is_key:
        return f"{path} has a key that is no {expected[1]}"
    if expected:
        return f"{path} is a {expected[3]}, not a {expected[1]}{expected[2]}"
    if missing:
        return f"{path} lacks the fields {[missing[1]]}"
    if problem.startswith("Invalid enum value"):  # it quotes the value, which may be data
        return f"{'a key of ' if is_key else ''}{path} is none of the values it may hold"
    problem = re.sub(r"'[^']*'", "<a value>", problem)  # no other message should quote one
    return f"{'a key of ' if is_key else ''}{path}: {problem}"


class DataclassModel(_MsgspecModel):
    """Sessions that are instances of one dataclass, converted by msgspec."""

    def __init__(self, migrations: Migrations, cls: type) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:
            raise TypeError(
                f"{cls.__qualname__} is a frozen dataclass, which a handler cannot change; "
                "make the session a dataclass that is not frozen"
            )
        super().__init__(migrations, cls, cls.__qualname__)
        self.type = cls

    def reset(self, session: Any, fresh: Any) -> None:
        for field in dataclasses.fields(fresh):
            setattr(session, field.name, getattr(fresh, field.name))


class TypedDictModel(_MsgspecModel):
    """Sessions that are dicts shaped by one ``TypedDict``: a `Session` whose values
    are converted by the TypedDict's annotations."""

    stand_in = LazySession

    def __init__(self, migrations: Migrations, shape: type) -> None:
        super().__init__(migrations, shape, shape.__qualname__)
        self.type = Session
        self.shape = shape
        # TypedDict("T", {"#tag": str}) may have keys that sort before "$v" (see _stamped).
        self.splice = all(key.isidentifier() for key in getattr(shape, "__annotations__", {}))

    def check(self, entry: str, value: Any) -> Any:
        return DictModel.check(self, entry, value)  # type: ignore[arg-type]

    def wrap(self, value: Any) -> Any:
        return Session(value)

    def to_json(self, session: Any) -> bytes:
        if VERSION_KEY in session:
            self.migrations.stamp(session)  # raises the error that names the reserved key
        return super().to_json(session)

    def reset(self, session: Any, fresh: Any) -> None:
        DictModel.reset(self, session, fresh)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.shape.__qualname__


class PydanticModel(SessionModel):
    """Sessions that are instances of one pydantic v2 model, validated by pydantic on load.

    They are stored as ``model_dump(mode="json", by_alias=True)`` without computed fields, and
    loaded with ``model_validate_json``, pydantic's own JSON round trip.
    """

    def __init__(self, migrations: Migrations, cls: type) -> None:
        super().__init__(migrations)
        config = getattr(cls, "model_config", {})
        if config.get("frozen"):
            raise TypeError(
                f"{cls.__qualname__} is a frozen model, which a handler cannot change; make "
                "the session a model that is not frozen"
            )
        self.type = cls
        # Computed fields are dumped but not accepted back (with extra="forbid", refused).
        computed = getattr(cls, "model_computed_fields", {})
        self.computed = [info.alias or name for name, info in computed.items()]
        self.has_sets = _may_hold_sets(cls)

    def dump(self, session: Any) -> dict[str, Any]:
        data = session.model_dump(mode="json", by_alias=True)
        if not isinstance(data, dict):
            raise TypeError(
                f"a {type(session).__name__} dumps to a {type(data).__name__}, and sessions "
                "are stored as objects: use a model with fields, not a RootModel"
            )
        if self.has_sets:
            # pydantic writes a set in its iteration order, which differs between processes
            # (string hashes are salted per process): sorted, equal sessions give equal bytes.
            data = _order_sets(session, data)
            assert isinstance(data, dict)
        for name in self.computed:
            data.pop(name, None)
        return data

    def build(self, data: dict[str, Any]) -> Any:
        try:
            return self.type.model_validate_json(ENCODER.encode(data))  # type: ignore[attr-defined]
        except Exception as error:  # ValidationError, or whatever a validator raised
            raise Misfit(_validation_problems(error)) from error

    def reset(self, session: Any, fresh: Any) -> None:
        for name in type(fresh).model_fields:
            setattr(session, name, getattr(fresh, name))
        extra = session.model_extra
        if extra is not None:
            extra.clear()
            extra.update(fresh.model_extra or {})

    def difference(self, loaded: Any, session: Any) -> str | None:
        # pydantic's own comparison of the fields (sets compare as sets), leaving private
        # attributes out: they are not saved, by pydantic's design.
        loaded_fields, fields = loaded.model_dump(), session.model_dump()
        if loaded_fields == fields:
            return None
        names = sorted(name for name in fields if fields[name] != loaded_fields.get(name))
        return f"the fields {names} would load back as other values"


def _validation_problems(error: Exception) -> str:
    """What pydantic's ValidationError found, on one line: where, what, and the value."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return f"validation raised {type(error).__name__}"
    # Not the input itself: it may be the whole session, secrets included; and pydantic's
    # own message only where it quotes no input (not a validator's text, not a union's tag).
    return "; ".join(
        f"{_path(problem['loc'])}: {_message(problem)} "
        f"(found a {type(problem.get('input')).__name__})"
        for problem in errors()
    )


def _path(location: Sequence[Any]) -> str:
    """pydantic's error location as a path that quotes no dict key that may be data."""
    steps = []
    for step in location:
        if isinstance(step, int):
            steps.append(f"[{step}]")
        elif isinstance(step, str) and step.isidentifier() and len(step) <= 40:
            steps.append(f".{step}")
        else:
            steps.append(f"[<a {type(step).__name__}>]")
    return "the session" + "".join(steps)


# pydantic error types whose messages say what was expected, never what was found.
_PLAIN_ERRORS = ("missing", "extra_forbidden", "literal_error", "enum", "too_short", "too_long")
_PLAIN_SUFFIXES = ("_type", "_parsing", "_than", "_than_equal", "multiple_of")


def _message(problem: Any) -> str:
    kind = str(problem.get("type", ""))
    if kind in _PLAIN_ERRORS or kind.endswith(_PLAIN_SUFFIXES):
        return str(problem["msg"])
    return kind.replace("_", " ") or "invalid"


def _may_hold_sets(cls: type) -> bool:
    """Whether a pydantic model's fields may hold sets, by its JSON schema ("uniqueItems")."""
    try:
        schema = cls.model_json_schema()  # type: ignore[attr-defined]
    except Exception:  # a type without a schema: cannot tell, so order on every save
        return True
    return _has_key(schema, "uniqueItems")


def _has_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(value, key) for value in node.values())
    if isinstance(node, list):
        return any(_has_key(value, key) for value in node)
    return False


def _order_sets(value: Any, data: Any) -> Any:
    """``data``, pydantic's JSON dump of ``value``, with each list dumped from a set sorted.

    The dump is walked beside the values it was made from (the model's own attributes, not a
    copy): a set iterates in the same order each time within a process, so its elements pair
    up with pydantic's, and pydantic's JSON of each element is kept as it wrote it.
    """
    if isinstance(value, (set, frozenset)):
        if not isinstance(data, list) or len(data) != len(value):  # a custom serializer
            return data
        return sorted(map(_order_sets, value, data), key=_canonical)
    if isinstance(data, dict):
        fields = getattr(type(value), "model_fields", None)
        if fields is not None:  # a model: its fields by their JSON names, then its extras
            names = {info.alias or name: name for name, info in fields.items()}
            extra = getattr(value, "model_extra", None) or {}
            return {
                key: _order_sets(
                    getattr(value, names[key]) if key in names else extra.get(key), item
                )
                for key, item in data.items()
            }
        if dataclasses.is_dataclass(value):
            return {key: _order_sets(getattr(value, key, None), item) for key, item in data.items()}
        if isinstance(value, dict) and len(value) == len(data):  # keys in one order
            return {
                key: _order_sets(inner, item)
                for (key, item), inner in zip(data.items(), value.values())
            }
        return data
    if isinstance(data, list) and isinstance(value, (list, tuple)) and len(value) == len(data):
        return [_order_sets(inner, item) for inner, item in zip(value, data)]
    return data


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def model_of(entry: str, value: Any, initial: object, migrations: Migrations) -> SessionModel:
    """Return the model of the sessions that ``initial()`` makes, judging by ``value``, its
    first result, and by ``initial`` itself (a TypedDict, or annotated to return one)."""
    kind = type(value)
    if isinstance(value, dict):
        shape = _typeddict_of(initial)
        return DictModel(migrations) if shape is None else TypedDictModel(migrations, shape)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return DataclassModel(migrations, kind)
    if callable(getattr(kind, "model_validate_json", None)) and callable(
        getattr(value, "model_dump", None)
    ):
        model = PydanticModel(migrations, kind)
        model.dump(value)  # a RootModel is refused now, not at its first save
        return model
    raise SessionError(
        f"initial() of session {entry!r} returned a {kind.__name__}; it must return a new "
        "dict, dataclass instance or pydantic model"
    )


def _is_typeddict(annotation: object) -> bool:
    # typing.is_typeddict is Python 3.10+, and misses typing_extensions' TypedDict on 3.9.
    return (
        isinstance(annotation, type)
        and issubclass(annotation, dict)
        and hasattr(annotation, "__total__")
    )


def _typeddict_of(initial: object) -> type | None:
    """The TypedDict that ``initial`` is, or is annotated to return; None if neither."""
    if _is_typeddict(initial):
        return initial  # type: ignore[return-value]
    if isinstance(initial, type) or not callable(initial):
        return None
    try:
        returns = typing.get_type_hints(initial).get("return")
    except Exception as error:  # a builtin, a partial, or an annotation that does not resolve
        if "return" not in getattr(initial, "__annotations__", {}):
            return None
        raise TypeError(
            f"the return annotation of {getattr(initial, '__qualname__', initial)!r} cannot "
            f"be resolved ({error}), so whether it is a TypedDict is unknown: define the "
            "TypedDict at module level and import every name it uses at run time"
        ) from error
    return returns if _is_typeddict(returns) else None


def _unlike(loaded: Any, session: Any, where: str) -> str | None:
    """Where ``loaded`` (a session read back) is not what ``session`` holds; None if nowhere.

    Types must match, except that an int comes back as an equal float in a float field. The
    path is written only for a difference: the walk runs at every changed save.
    """
    found = _first_unlike(loaded, session)
    if found is None:
        return None
    steps, problem = found
    return f"{where}{''.join(reversed(steps))} {problem}"


_EXACT = frozenset({str, int, float, bool, type(None)})  # compared by ==, once types match


def _first_unlike(loaded: Any, session: Any) -> tuple[list[str], str] | None:
    """The first difference between ``loaded`` and ``session``: the steps to it, innermost
    first, and what it is; None if there is none."""
    kind: Any = type(session)
    if type(loaded) is not kind:
        # What loads back is of the annotated type: an equal value of another type (an int
        # in a float field, a set in a frozenset field) comes back as that type.
        if loaded == session and not isinstance(session, (datetime.datetime, datetime.time)):
            return None
        return [], f"holds a {kind.__name__}, which would load back as a {type(loaded).__name__}"
    if kind in _EXACT:
        return None if loaded == session else ([], "would load back as another value")
    if kind is list or kind is tuple:
        if len(loaded) != len(session):
            return [], f"would load back with {len(loaded)} items, not {len(session)}"
        for i, (again, value) in enumerate(zip(loaded, session)):
            if type(value) in _EXACT and type(again) is type(value) and again == value:
                continue  # the common case, without a call
            found = _first_unlike(again, value)
            if found is not None:
                found[0].append(f"[{i}]")
                return found
        return None
    if isinstance(session, dict):
        for key, value in session.items():
            if key not in loaded:
                return [key_step(key)], "would not load back: the type has no such key"
            problem = _unkept_time(key)
            if problem is not None:
                return [], f"has a key that {problem}"
            again = loaded[key]
            if type(value) in _EXACT and type(again) is type(value) and again == value:
                continue
            found = _first_unlike(again, value)
            if found is not None:
                found[0].append(key_step(key))
                return found
        return None
    names = _field_names(kind)  # type: ignore[arg-type]  # (mypy: a class is not Hashable)
    if names is not None:
        for name in names:
            value, again = getattr(session, name), getattr(loaded, name)
            if type(value) in _EXACT and type(again) is type(value) and again == value:
                continue
            found = _first_unlike(again, value)
            if found is not None:
                found[0].append(f".{name}")
                return found
        return None
    if loaded != session:
        return [], "would load back as another value"
    # Times in sets and dict keys too: == matched them by instant, ignoring their zones.
    for value in session if kind in (set, frozenset) else (session,):
        problem = _unkept_time(value)
        if problem is not None:
            return [], problem
    return None


def _unkept_time(value: Any) -> str | None:
    """What ISO 8601 text would not keep of ``value``, if it is a datetime or a time."""
    if not isinstance(value, (datetime.datetime, datetime.time)):
        return None
    zone = value.tzinfo
    if zone is not None and type(zone) is not datetime.timezone:
        return (
            f"has a time zone (a {type(zone).__name__}) that is stored only as its UTC "
            "offset: use datetime.timezone.utc or a fixed datetime.timezone(offset), and "
            "keep a zone name in a str field"
        )
    if value.fold:
        return "has fold=1, which ISO 8601 text does not keep"
    return None


@functools.lru_cache(maxsize=256)
def _field_names(kind: Any) -> tuple[str, ...] | None:
    """The field names of the dataclass ``kind``; None if it is no dataclass."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple(field.name for field in dataclasses.fields(kind))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _difference(stored: Any, saved: Any, where: str, name: str = "its type") -> str | None:
    """Where saving ``saved`` (a dumped session) would lose or change what ``stored`` (decoded
    JSON) holds; None if nowhere. Keys may be added (a new field's default); numbers compare
    by value, so 0.0 saved for 0 changes nothing."""
    if isinstance(stored, dict) and isinstance(saved, dict):
        saved = {json_key(key): value for key, value in saved.items()}
        lost = ", ".join(map(key_step, sorted(stored.keys() - saved.keys())))
        if lost:
            return f"{where} has fields {lost} that {name} does not have"
        for key, value in stored.items():
            problem = _difference(value, saved[key], f"{where}{key_step(key)}")
            if problem is not None:
                return problem
        return None
    if isinstance(stored, list) and isinstance(saved, (list, tuple)):
        if len(stored) != len(saved):
            return f"{where} would be saved with {len(saved)} items, not {len(stored)}"
        for i, (value, again) in enumerate(zip(stored, saved)):
            problem = _difference(value, again, f"{where}[{i}]")
            if problem is not None:
                # A set is stored as a list in no set order: plain values in another order
                # are the same values.
                return None if _same_values(stored, saved) else problem
        return None
    if _kind(stored) == _kind(saved) and stored == saved:
        return None
    if _kind(stored) != _kind(saved):
        return (
            f"{where} is stored as a {type(stored).__name__} but would be saved as a "
            f"{type(saved).__name__}"
        )
    return f"{where} would be saved as another value than the one stored"


def _same_values(stored: list[Any], saved: Sequence[Any]) -> bool:
    """Whether two lists of plain JSON values hold the same values, in any order."""

    def counted(values: Sequence[Any]) -> Counter[tuple[type, Any]] | None:
        if not all(type(value) in _SCALARS for value in values):
            return None
        return Counter((_kind(value), value) for value in values)

    mine = counted(stored)
    return mine is not None and mine == counted(saved)


def _kind(value: Any) -> type:
    """What JSON tells apart: int and float are one kind, numbers; bool is not a number."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    if isinstance(value, str):
        return str
    return type(value)

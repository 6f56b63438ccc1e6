"""Session models: what a session is (a dict, a dataclass or a pydantic model), how it becomes
the JSON-ready dict that a codec stores, and how stored data becomes that type again.

``initial()`` decides the model: a dict gives :class:`~tgsession.Session` (a dict); a dataclass
instance gives that dataclass; anything with pydantic v2's ``model_dump`` and
``model_validate_json`` gives that model (pydantic itself stays optional).

A typed session must survive the trip through JSON unchanged: :meth:`SessionModel.read`
rebuilds it from stored data and refuses data that the type would not save back the same (a
field it does not know, a value it would convert). The manager reads back what initial()
returns and every session it saves, so that no session is stored that cannot be loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
import weakref
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Union

from .errors import SessionDecodeError, SessionError
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

_UNIONS: tuple[object, ...] = (Union,)
if sys.version_info >= (3, 10):
    _UNIONS += (types.UnionType,)


class Misfit(Exception):
    """Stored data that does not fit a session type; the message says where and how."""


class SessionModel:
    """How sessions of one type are checked, dumped to a JSON-ready dict and read back."""

    type: type
    stand_in: Callable[[Loader], object] = LazyTypedSession  # what a lazy session looks like
    # Whether sessions are read back to prove that they survive JSON: sessions of a type do,
    # since the type converts what it loads; dicts hold the JSON values themselves.
    typed = True

    def check(self, entry: str, value: Any) -> Any:
        """Return ``value``, a new session from ``initial()``, or raise if it has another type."""
        if type(value) is not self.type:
            raise SessionError(
                f"initial() of session {entry!r} returned a {type(value).__name__} where it "
                f"first returned a {self.type.__name__}; return one type of session"
            )
        return value

    def dump(self, session: Any) -> dict[str, Any]:
        """Return the dict of JSON values that ``session`` is stored as."""
        raise NotImplementedError

    def build(self, data: dict[str, Any]) -> Any:
        """Return the session that the stored ``data`` holds, or raise Misfit."""
        raise NotImplementedError

    def read(self, data: dict[str, Any]) -> Any:
        """Return the session that ``data`` holds; raise Misfit if saving it would lose or
        change any of ``data`` (so a field that the type drops or converts is refused)."""
        session = self.build(data)
        problem = _difference(data, self.dump(session), "the session")
        if problem is not None:
            raise Misfit(problem)
        return session

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        """Return the session that the stored ``data`` holds, or raise SessionDecodeError."""
        try:
            return self.read(data)
        except Misfit as problem:
            raise SessionDecodeError(
                f"session {entry!r} no longer fits {self.type.__qualname__}: {problem}. It is "
                "left untouched: add a migration (with_session(version=..., migrations=...)) "
                "that turns the stored data into the new shape, or delete the entry"
            ) from None

    def reset(self, session: Any, fresh: Any) -> None:
        """Make ``session`` equal to ``fresh``, a new session from ``initial()``, in place."""
        raise NotImplementedError


class DictModel(SessionModel):
    """Sessions that are dicts (a ``TypedDict`` is a dict at run time): a :class:`Session`."""

    type = Session
    stand_in = LazySession
    typed = False

    def check(self, entry: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise SessionError(
                f"initial() of session {entry!r} returned a {type(value).__name__} where it "
                "first returned a dict; return one type of session"
            )
        return Session(value)

    def dump(self, session: Any) -> dict[str, Any]:
        return session  # type: ignore[no-any-return]

    def build(self, data: dict[str, Any]) -> Any:
        return Session(data)

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        return Session(data)  # the values are JSON values already: nothing to check

    def reset(self, session: Any, fresh: Any) -> None:
        dict.clear(session)  # not Session.clear(), which would mark it cleared
        session.update(fresh)


class DataclassModel(SessionModel):
    """Sessions that are instances of one dataclass, rebuilt field by field on load.

    The field annotations say what each stored value becomes: ``str``, ``int``, ``float``,
    ``bool``, ``None``, enums, ``Literal``, ``Optional`` and other unions, lists, tuples, dicts
    (with str, int, float or enum keys) and nested dataclasses are converted and checked; a
    value under another annotation (``Any`` among them) is kept as the JSON value stored.
    """

    def __init__(self, cls: type) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:
            raise TypeError(
                f"{cls.__qualname__} is a frozen dataclass, which a handler cannot change; "
                "make the session a dataclass that is not frozen"
            )
        _resolve(cls, set())  # an annotation that cannot be resolved is an error now
        self.type = cls

    def dump(self, session: Any) -> dict[str, Any]:
        return dataclasses.asdict(session)

    def build(self, data: dict[str, Any]) -> Any:
        return _build(self.type, data, "the session")

    def reset(self, session: Any, fresh: Any) -> None:
        for field in dataclasses.fields(fresh):
            setattr(session, field.name, getattr(fresh, field.name))


class PydanticModel(SessionModel):
    """Sessions that are instances of one pydantic v2 model, validated by pydantic on load.

    They are stored as ``model_dump(mode="json", by_alias=True)`` without computed fields, and
    loaded with ``model_validate_json``, pydantic's own JSON round trip.
    """

    def __init__(self, cls: type) -> None:
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

    def dump(self, session: Any) -> dict[str, Any]:
        data = session.model_dump(mode="json", by_alias=True)
        if not isinstance(data, dict):
            raise TypeError(
                f"a {type(session).__name__} dumps to a {type(data).__name__}, and sessions "
                "are stored as objects: use a model with fields, not a RootModel"
            )
        for name in self.computed:
            data.pop(name, None)
        return data

    def build(self, data: dict[str, Any]) -> Any:
        try:
            return self.type.model_validate_json(json.dumps(data))  # type: ignore[attr-defined]
        except Exception as error:  # ValidationError, or whatever a validator raised
            raise Misfit(_validation_problems(error)) from error

    def reset(self, session: Any, fresh: Any) -> None:
        for name in type(fresh).model_fields:
            setattr(session, name, getattr(fresh, name))
        extra = session.model_extra
        if extra is not None:
            extra.clear()
            extra.update(fresh.model_extra or {})


def _validation_problems(error: Exception) -> str:
    """What pydantic's ValidationError found, on one line: where, what, and the value."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return f"validation raised {error!r}"
    return "; ".join(
        f"the session.{'.'.join(map(str, problem['loc']))}: {problem['msg']} "
        f"(found {problem.get('input')!r})"
        for problem in errors()
    )


def model_of(entry: str, value: Any) -> SessionModel:
    """Return the model of the sessions that ``initial()`` makes, judging by ``value``."""
    kind = type(value)
    if isinstance(value, dict):
        return DictModel()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return DataclassModel(kind)
    if callable(getattr(kind, "model_validate_json", None)) and callable(
        getattr(value, "model_dump", None)
    ):
        model = PydanticModel(kind)
        model.dump(value)  # a RootModel is refused now, not at its first save
        return model
    raise SessionError(
        f"initial() of session {entry!r} returned a {kind.__name__}; it must return a new "
        "dict, dataclass instance or pydantic model"
    )


def _build(cls: type, data: Any, where: str) -> Any:
    """Return an instance of the dataclass ``cls`` from the stored ``data``."""
    if not isinstance(data, dict):
        raise Misfit(f"{where} is a {type(data).__name__}, not an object of {cls.__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(data.keys() - fields.keys())
    if unknown:
        raise Misfit(f"{where} has fields {unknown} that {cls.__name__} does not have")
    missing = sorted(
        name
        for name, field in fields.items()
        if name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    if missing:
        raise Misfit(f"{where} lacks the fields {missing} that {cls.__name__} requires")
    hints = _hints(cls)
    values = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    later = {name: values.pop(name) for name in list(values) if not fields[name].init}
    try:
        instance = cls(**values)
    except Exception as error:  # __init__ or __post_init__ refused the values
        raise Misfit(f"{cls.__name__}({where}) raised {error!r}") from error
    for name, value in later.items():  # fields that __init__ does not take
        object.__setattr__(instance, name, value)
    return instance


# The resolved field annotations of each dataclass, kept no longer than the class.
_resolved: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of the fields of the dataclass ``cls``."""
    hints = _resolved.get(cls)
    if hints is None:
        try:
            every = typing.get_type_hints(cls)
        except Exception as error:
            raise TypeError(
                f"the annotations of {cls.__qualname__} cannot be resolved ({error!r}), so its "
                "stored fields could not be checked: import every name they use at run time "
                "(not only under TYPE_CHECKING), define the class at module level, and on "
                "Python 3.9 write Optional[X] rather than X | None"
            ) from error
        hints = _resolved[cls] = {
            field.name: every[field.name] for field in dataclasses.fields(cls)
        }
    return hints


def _resolve(hint: Any, seen: set[int]) -> None:
    """Resolve the annotations of every dataclass that ``hint`` reaches, or raise TypeError."""
    if id(hint) in seen:
        return
    seen.add(id(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        for inner in _hints(hint).values():
            _resolve(inner, seen)
    for inner in (typing.get_origin(hint), *typing.get_args(hint)):
        if inner is not None:
            _resolve(inner, seen)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Return the stored JSON ``value`` as the type ``hint``, or raise Misfit."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):  # Box[int]
        return _build(origin, value, where)
    if origin in _UNIONS:
        return _convert_union(value, args, where)
    if origin is Literal:
        for option in args:
            if option == value and isinstance(option, bool) == isinstance(value, bool):
                return option  # the option itself: an enum member where the option is one
        raise Misfit(f"{where} is {value!r}, not one of {list(args)}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise Misfit(f"{where} is {value!r}, not a value of {hint.__name__}") from None
    simple = _SIMPLE.get(hint)
    if simple is not None:
        accepted, convert = simple
        if isinstance(value, accepted) and not (isinstance(value, bool) and hint is not bool):
            return convert(value)
        raise Misfit(f"{where} is {value!r}, not a {_name(hint)}")
    if hint in (list, tuple, dict):
        origin = hint
    if origin in (list, tuple, Sequence, MutableSequence):
        if not isinstance(value, list):
            raise Misfit(f"{where} is {value!r}, not a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise Misfit(f"{where} has {len(value)} items, not {len(args)}")
            return tuple(
                _convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping, MutableMapping):
        if not isinstance(value, dict):
            raise Misfit(f"{where} is {value!r}, not an object")
        key_type, item = args if args else (str, Any)
        return {
            _convert_key(k, key_type, where): _convert(v, item, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    return value  # Any, or an annotation these checks do not cover


def _convert_union(value: Any, options: tuple[Any, ...], where: str) -> Any:
    """Return ``value`` as the one option of a union that it fits; raise Misfit if it fits
    none, or several of different types (JSON does not record which one was saved)."""
    fits: list[Any] = []
    misfits: list[Misfit] = []
    for option in options:
        try:
            result = _convert(value, option, where)
        except Misfit as misfit:
            if option is not type(None):
                misfits.append(misfit)
            continue
        if type(result) is type(value) and not isinstance(result, (dict, list)):
            return result  # an exact match: 3 stays an int in Union[float, int]
        fits.append(result)
    if not fits:
        if len(misfits) == 1:  # Optional[X]: say why the value is no X
            raise misfits[0]
        raise Misfit(f"{where} is {value!r}, which is none of {', '.join(map(_name, options))}")
    if len({type(result) for result in fits}) > 1:
        raise Misfit(
            f"{where} is {value!r}, which fits each of "
            f"{', '.join(_name(type(result)) for result in fits)}: JSON does not record which "
            "one it was, so make the union's types tell apart by their fields"
        )
    return fits[0]


def _convert_key(key: str, key_type: Any, where: str) -> Any:
    """Return the JSON object key ``key`` as ``key_type``: json writes int, float and enum keys
    as strings, and only the string json would write is accepted ("01" would merge with "1")."""
    if key_type is str or not isinstance(key_type, type):
        return key
    if issubclass(key_type, enum.Enum):
        try:
            converted = key_type(key)  # an enum of strings
        except ValueError:
            converted = _parsed_key(key, key_type)
    elif key_type in (int, float):
        converted = _parsed_key(key, key_type)
    else:
        return key
    if converted is None or _json_key(converted) != key:
        raise Misfit(f"{where} has the key {key!r}, which is no {_name(key_type)}")
    return converted


def _parsed_key(key: str, key_type: type) -> Any:
    """The key read as the JSON number it spells, as ``key_type``; None if it is none."""
    try:
        return _convert(json.loads(key), key_type, "")
    except (ValueError, Misfit):
        return None


def _json_key(key: Any) -> str:
    """The string that json writes for the dict key ``key``."""
    if isinstance(key, str):
        return str.__str__(key)
    return json.dumps(key.value if isinstance(key, enum.Enum) else key)


def _difference(stored: Any, saved: Any, where: str) -> str | None:
    """Where saving ``saved`` (a dumped session) would lose or change what ``stored`` (decoded
    JSON) holds; None if nowhere. Keys may be added (a new field's default); numbers compare
    by value, so 0.0 saved for 0 changes nothing."""
    if isinstance(stored, dict) and isinstance(saved, dict):
        saved = {_json_key(key): value for key, value in saved.items()}
        lost = sorted(stored.keys() - saved.keys())
        if lost:
            return f"{where} would be saved without its keys {lost}"
        for key, value in stored.items():
            problem = _difference(value, saved[key], f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    if isinstance(stored, list) and isinstance(saved, (list, tuple)):
        if len(stored) != len(saved):
            return f"{where} would be saved with {len(saved)} items, not {len(stored)}"
        for i, (value, again) in enumerate(zip(stored, saved)):
            problem = _difference(value, again, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if _kind(stored) == _kind(saved) and stored == saved:
        return None
    return f"{where} is stored as {stored!r} but would be saved as {saved!r}"


def _kind(value: Any) -> type:
    """What JSON tells apart: int and float are one kind, numbers; bool is not a number."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    if isinstance(value, str):
        return str
    return type(value)


_SIMPLE: dict[Any, tuple[type | tuple[type, ...], Any]] = {
    str: (str, str),
    int: (int, int),
    float: ((int, float), float),
    bool: (bool, bool),
    type(None): (type(None), lambda value: value),
    None: (type(None), lambda value: value),
}


def _name(hint: Any) -> str:
    return "None" if hint in (None, type(None)) else getattr(hint, "__name__", str(hint))

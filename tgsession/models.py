"""Session models: what a session is (a dict, a dataclass or a pydantic model), how it becomes
the JSON-ready dict that a codec stores, and how stored data becomes that type again.

``initial()`` decides the model: a dict gives :class:`~tgsession.Session` (a dict); a dataclass
instance gives that dataclass; anything with pydantic v2's ``model_dump`` and
``model_validate`` gives that model (pydantic itself stays optional). Stored data that no
longer fits the type is refused with an error, never dropped or rewritten.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Callable, Literal, Union

from .errors import SessionDecodeError, SessionError
from .session import LazySession, LazyTypedSession, Loader, Session

_UNIONS: tuple[object, ...] = (Union,)
if sys.version_info >= (3, 10):
    _UNIONS += (types.UnionType,)


class SessionModel:
    """How sessions of one type are checked, dumped to a JSON-ready dict and loaded back."""

    type: type
    stand_in: Callable[[Loader], object] = LazyTypedSession  # what a lazy session looks like

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

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        """Return the session that the stored ``data`` holds, or raise SessionDecodeError."""
        raise NotImplementedError

    def reset(self, session: Any, fresh: Any) -> None:
        """Make ``session`` equal to ``fresh``, a new session from ``initial()``, in place."""
        raise NotImplementedError

    def misfit(self, entry: str, problem: str) -> SessionDecodeError:
        """The error for stored data that does not fit this type."""
        return SessionDecodeError(
            f"session {entry!r} no longer fits {self.type.__qualname__}: {problem}. It is left "
            "untouched: add a migration (with_session(version=..., migrations=...)) that "
            "turns the stored data into the new shape, or delete the entry"
        )


class DictModel(SessionModel):
    """Sessions that are dicts (a ``TypedDict`` is a dict at run time): a :class:`Session`."""

    type = Session
    stand_in = LazySession

    def check(self, entry: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise SessionError(
                f"initial() of session {entry!r} returned a {type(value).__name__} where it "
                "first returned a dict; return one type of session"
            )
        return Session(value)

    def dump(self, session: Any) -> dict[str, Any]:
        return session  # type: ignore[no-any-return]

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        return Session(data)

    def reset(self, session: Any, fresh: Any) -> None:
        dict.clear(session)  # not Session.clear(), which would mark it cleared
        session.update(fresh)


class DataclassModel(SessionModel):
    """Sessions that are instances of one dataclass, checked field by field on load.

    Stored fields are checked against the field annotations: ``str``, ``int``, ``float``,
    ``bool``, ``None``, ``Any``, ``Optional`` and other unions, ``Literal``, lists, tuples,
    dicts (with str or int keys) and nested dataclasses. Values of other annotations are loaded
    as the JSON value stored.
    """

    def __init__(self, cls: type) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:
            raise TypeError(
                f"{cls.__qualname__} is a frozen dataclass, which a handler cannot change; "
                "make the session a dataclass that is not frozen"
            )
        self.type = cls

    def dump(self, session: Any) -> dict[str, Any]:
        return dataclasses.asdict(session)

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        try:
            return _build(self.type, data, "the session")
        except _Misfit as misfit:
            raise self.misfit(entry, str(misfit)) from None

    def reset(self, session: Any, fresh: Any) -> None:
        for field in dataclasses.fields(fresh):
            setattr(session, field.name, getattr(fresh, field.name))


class PydanticModel(SessionModel):
    """Sessions that are instances of one pydantic v2 model, validated by pydantic on load.

    Stored fields that the model would drop (its ``extra`` is ``"ignore"``, the default) are
    refused rather than lost.
    """

    def __init__(self, cls: type) -> None:
        self.type = cls

    def dump(self, session: Any) -> dict[str, Any]:
        return session.model_dump(mode="json", by_alias=True)  # type: ignore[no-any-return]

    def load(self, entry: str, data: dict[str, Any]) -> Any:
        try:
            session = self.type.model_validate(data)  # type: ignore[attr-defined]
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise self.misfit(entry, _validation_problems(error)) from error
        dropped = sorted(data.keys() - self.dump(session).keys())
        if dropped:
            raise self.misfit(entry, f"it would drop the stored fields {dropped}")
        return session

    def reset(self, session: Any, fresh: Any) -> None:
        for name in type(fresh).model_fields:
            setattr(session, name, getattr(fresh, name))
        extra = session.model_extra
        if extra is not None:
            extra.clear()
            extra.update(fresh.model_extra or {})


def _validation_problems(error: ValueError) -> str:
    """What pydantic's ValidationError found, on one line: where, what, and the value."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
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
    if callable(getattr(kind, "model_validate", None)) and callable(
        getattr(value, "model_dump", None)
    ):
        return PydanticModel(kind)
    raise SessionError(
        f"initial() of session {entry!r} returned a {kind.__name__}; it must return a new "
        "dict, dataclass instance or pydantic model"
    )


class _Misfit(Exception):
    """Stored data that does not fit a type; the message says where and how."""


def _build(cls: type, data: Any, where: str) -> Any:
    """Return an instance of the dataclass ``cls`` from the stored ``data``."""
    if not isinstance(data, dict):
        raise _Misfit(f"{where} is a {type(data).__name__}, not an object of {cls.__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(data.keys() - fields.keys())
    if unknown:
        raise _Misfit(f"{where} has fields {unknown} that {cls.__name__} does not have")
    missing = sorted(
        name
        for name, field in fields.items()
        if name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    if missing:
        raise _Misfit(f"{where} lacks the fields {missing} that {cls.__name__} requires")
    hints = _hints(cls)
    values = {
        name: _convert(value, hints.get(name, Any), f"{where}.{name}")
        for name, value in data.items()
    }
    later = {name: values.pop(name) for name in list(values) if not fields[name].init}
    try:
        instance = cls(**values)
    except (TypeError, ValueError) as error:
        raise _Misfit(f"{cls.__name__}({where}) raised {error!r}") from error
    for name, value in later.items():  # fields that __init__ does not take
        object.__setattr__(instance, name, value)
    return instance


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of ``cls``; unresolvable ones count as Any."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference to a name that is not global
        return {
            field.name: field.type
            for field in dataclasses.fields(cls)
            if not isinstance(field.type, str)
        }


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Return the stored JSON ``value`` as the type ``hint``, or raise _Misfit."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        options = [option for option in args if option is not type(None)]
        if len(options) == 1:  # Optional[X]: say why the value is no X
            return _convert(value, options[0], where)
        for option in options:
            try:
                return _convert(value, option, where)
            except _Misfit:
                continue
        raise _Misfit(f"{where} is {value!r}, which is none of {_names(args)}")
    if origin is Literal:
        if value in args and type(value) in {type(arg) for arg in args}:
            return value
        raise _Misfit(f"{where} is {value!r}, not one of {list(args)}")
    simple = _SIMPLE.get(hint)
    if simple is not None:
        accepted, convert = simple
        if isinstance(value, accepted) and not (isinstance(value, bool) and hint is not bool):
            return convert(value)
        raise _Misfit(f"{where} is {value!r}, not a {_names((hint,))}")
    if hint in (list, tuple, dict):
        origin = hint
    if origin in (list, tuple, Sequence, MutableSequence):
        if not isinstance(value, list):
            raise _Misfit(f"{where} is {value!r}, not a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Misfit(f"{where} has {len(value)} items, not {len(args)}")
            return tuple(
                _convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping, MutableMapping):
        if not isinstance(value, dict):
            raise _Misfit(f"{where} is {value!r}, not an object")
        key_type, item = args if args else (str, Any)
        return {
            _key(k, key_type, where): _convert(v, item, f"{where}[{k!r}]") for k, v in value.items()
        }
    return value  # Any, or an annotation these checks do not cover


def _key(key: str, key_type: Any, where: str) -> Any:
    # JSON keys are strings: a dict[int, ...] comes back with its int keys as strings.
    if key_type is int:
        try:
            return int(key)
        except ValueError:
            raise _Misfit(f"{where} has the key {key!r}, not an int") from None
    return key


_SIMPLE: dict[Any, tuple[type | tuple[type, ...], Any]] = {
    str: (str, str),
    int: (int, int),
    float: ((int, float), float),
    bool: (bool, bool),
    type(None): (type(None), lambda value: value),
    None: (type(None), lambda value: value),
}


def _names(hints: tuple[Any, ...]) -> str:
    return ", ".join(
        "None" if h in (None, type(None)) else getattr(h, "__name__", str(h)) for h in hints
    )

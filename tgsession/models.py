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
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

from . import _convert
from .errors import SessionDecodeError, SessionError, key_step
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
    """How sessions of one type are checked, dumped to a JSON-ready dict and read back."""

    type: type
    stand_in: Callable[[Loader], object] = LazyTypedSession  # what a lazy session looks like
    # Whether sessions are read back to prove that they survive JSON: sessions of a type do,
    # since the type converts what it loads; dicts hold the JSON values themselves.
    typed = True

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

    def difference(self, loaded: Any, session: Any) -> str | None:
        """Where ``loaded``, ``session`` saved and read back, is not ``session``; or None."""
        raise NotImplementedError


class DictModel(SessionModel):
    """Sessions that are dicts (a ``TypedDict`` is a dict at run time): a :class:`Session`."""

    type = Session
    stand_in = LazySession
    typed = False

    def check(self, entry: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise self.other_type(entry, value)
        return Session(value)

    def dump(self, session: Any) -> dict[str, Any]:
        return session  # type: ignore[no-any-return]

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
        _convert.check(cls)  # an annotation that cannot be resolved is an error now
        self.type = cls

    def dump(self, session: Any) -> dict[str, Any]:
        return _convert.dump(session)  # type: ignore[no-any-return]

    def build(self, data: dict[str, Any]) -> Any:
        try:
            return _convert.build(self.type, data)
        except _convert.Wrong as wrong:
            raise Misfit(str(wrong)) from None

    def reset(self, session: Any, fresh: Any) -> None:
        for field in dataclasses.fields(fresh):
            setattr(session, field.name, getattr(fresh, field.name))

    def difference(self, loaded: Any, session: Any) -> str | None:
        return _convert.difference(loaded, session)


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
        f"{'.'.join(['the session', *map(str, problem['loc'])])}: {_message(problem)} "
        f"(found a {type(problem.get('input')).__name__})"
        for problem in errors()
    )


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


def _difference(stored: Any, saved: Any, where: str) -> str | None:
    """Where saving ``saved`` (a dumped session) would lose or change what ``stored`` (decoded
    JSON) holds; None if nowhere. Keys may be added (a new field's default); numbers compare
    by value, so 0.0 saved for 0 changes nothing."""
    if isinstance(stored, dict) and isinstance(saved, dict):
        saved = {_convert.json_key(key): value for key, value in saved.items()}
        lost = sorted(stored.keys() - saved.keys())
        if lost:
            return f"{where} would be saved without its keys {lost}"
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
        if not all(type(value) in _convert.SCALARS for value in values):
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

"""What type checkers infer from with_session(initial=...): checked by test_typing.py with mypy.

Never run; every line states a type that mypy --strict must agree with. A line with
`# type: ignore[...]` must be an error, since the unused ignore would be reported otherwise.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import pydantic
from typing_extensions import assert_type

from tgsession import SessionManager, with_session


@dataclass
class Profile:
    count: int = 0


class Cart(pydantic.BaseModel):
    items: list[str] = []


class Shape(TypedDict):
    count: int


def shape() -> Shape:
    return {"count": 0}


assert_type(with_session(), SessionManager[dict[str, Any]])
assert_type(with_session(initial=dict), SessionManager[dict[str, Any]])
assert_type(with_session(initial=Profile), SessionManager[Profile])
assert_type(with_session(initial=lambda: Profile(count=1)), SessionManager[Profile])
assert_type(with_session(initial=Cart, lazy=True), SessionManager[Cart])
assert_type(with_session(initial=shape), SessionManager[Shape])
assert_type(with_session(initial=lambda: {"count": 0}), SessionManager[dict[str, int]])

profiles = with_session(initial=Profile)
with profiles.open(1) as profile:
    assert_type(profile, Profile)
    profile.count += 1
    profile.name = "x"  # type: ignore[attr-defined]
assert_type(profiles.items(), Iterator[tuple[str, Profile]])

with with_session(initial=shape).open(1) as typed_dict:
    typed_dict["count"] += 1
    typed_dict["name"] = "x"  # type: ignore[typeddict-unknown-key]

with with_session(initial=lambda: {"count": 0}).open(1) as counts:
    counts["name"] = "x"  # type: ignore[assignment]

# initial() must return a dict, a dataclass or a model: anything else is refused.
with_session(initial=list)  # type: ignore[arg-type]
with_session(initial=lambda: 3)  # type: ignore[type-var]


# What cannot be inferred: a handler's session parameter. with_session removes that
# parameter by name, which Python's typing cannot express, so its annotation is not checked
# against initial(): this handler says Cart where the session is a Profile, and mypy is silent.
@profiles
def handler(message: object, session: Cart) -> None:
    session.items.append("x")

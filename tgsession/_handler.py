"""Wrapping a handler so that it receives its sessions by keyword, for one call at a time."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable

from ._call import HeldSessions

if TYPE_CHECKING:
    from .manager import SessionManager


def _check_parameters(
    handler: Callable[..., Any], signature: inspect.Signature, names: list[str]
) -> None:
    """Raise TypeError unless ``handler`` can receive each of ``names`` by keyword."""
    params = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in names:
        param = params.get(name)
        if param is None and not takes_kwargs:
            raise TypeError(
                f"{handler.__qualname__}() has no parameter {name!r} to receive its session: "
                "add one, or pass with_session(key=...) the name of the parameter that should "
                "receive it"
            )
        if param is not None and param.kind not in (
            param.POSITIONAL_OR_KEYWORD,
            param.KEYWORD_ONLY,
        ):
            raise TypeError(
                f"{handler.__qualname__}() takes its session {name!r} as a "
                f"{param.kind.description} parameter; it is passed by keyword"
            )


def wrap(
    handler: Callable[..., Any], managers: tuple[SessionManager[Any], ...]
) -> Callable[..., Any]:
    """Return ``handler`` wrapped to receive the session of each of ``managers`` by keyword.

    The wrapper's signature is the handler's without the session parameters, which is what
    telebot inspects to pass ``bot``, ``data`` or middleware values.
    """
    signature = inspect.signature(handler)
    names = [manager.key for manager in managers]
    _check_parameters(handler, signature, names)
    params = list(signature.parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Callers see no session parameter, so positional arguments from the first one on would
    # land in it: they are passed by name instead.
    cut = next((i for i, name in enumerate(positional) if name in names), None)
    shifted = [] if cut is None else [name for name in positional[cut:] if name not in names]
    if cut is not None and any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(
            f"{handler.__qualname__}() takes *args after a session parameter; "
            "make the session parameter keyword-only (after the *args)"
        )
    eager = tuple(manager for manager in managers if not manager.lazy)
    lazy = tuple(manager for manager in managers if manager.lazy)

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError(f"{handler.__qualname__}() needs the update as its first argument")
        update = args[0]
        if cut is not None and len(args) > cut:
            if len(args) > cut + len(shifted):
                raise TypeError(
                    f"{handler.__qualname__}() takes {cut + len(shifted)} positional "
                    f"arguments besides its sessions, but {len(args)} were given"
                )
            kwargs.update(zip(shifted, args[cut:]))
            args = args[:cut]
        held = HeldSessions(update)
        held.enter()
        try:
            held.open(update, eager, lazy, kwargs)
            result = handler(*args, **kwargs)
        except BaseException as error:
            held.finish(error)
            raise
        held.finish()
        return result

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in params if p.name not in names]
    )
    wrapper.__tgsession_stack__ = (handler, managers)  # type: ignore[attr-defined]
    return wrapper

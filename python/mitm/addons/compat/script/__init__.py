"""``mitmproxy.script``: the ``concurrent`` decorator."""

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def concurrent(fn: F) -> F:
    """Accepted for mitmproxy's scripts and otherwise nothing: under mitm's addon host
    every hook already runs on a thread of its own flow (a hook that blocks holds up
    only its flow)."""
    return fn


__all__ = ["concurrent"]

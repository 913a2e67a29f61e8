"""How the engine calls Python hooks (internal).

The engine asks `plan` once per middleware which hooks a class defines and how each may
run: *inline* on the engine's thread (plain functions, and ``async def`` hooks whose code
never awaits, which finish in one step) or on the asyncio loop the server was started
from (hooks that may await). Hooks a class does not override are not called at all.
"""

from __future__ import annotations

import asyncio
import dis
import inspect
import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

logger = logging.getLogger("mitm")

#: The original's seven middleware hooks, in the order of a connection's life.
HOOKS = (
    "mitm_started",
    "client_connected",
    "server_connected",
    "client_data",
    "server_data",
    "client_disconnected",
    "server_disconnected",
    "tls_clienthello",
)

# Opcodes that can suspend a coroutine: `await`, `async for`, `async with`.
_SUSPENDING = frozenset(
    {
        "GET_AWAITABLE",
        "GET_AITER",
        "GET_ANEXT",
        "BEFORE_ASYNC_WITH",
        "SETUP_ASYNC_WITH",
        "END_ASYNC_FOR",
        "YIELD_FROM",
        "SEND",
    }
)


def may_suspend(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` may give a coroutine that suspends (awaits)."""
    func = getattr(func, "__func__", func)
    if hasattr(func, "__wrapped__"):
        return True  # a decorator's wrapper: its own code is not what runs
    code = getattr(func, "__code__", None)
    if code is None:
        return True
    return any(ins.opname in _SUSPENDING for ins in dis.get_instructions(code))


def hook_plan(obj: Any, name: str, base: type) -> Optional[Tuple[Any, ...]]:
    """``(bound method, is coroutine function, inline)`` for hook ``name`` of ``obj``
    (with a fourth item, True or a ``HookGate``, for a plain function marked
    ``_mitm_blocking``), or None when its class does not override ``base``'s."""
    method = getattr(obj, name, None)
    if method is None or not callable(method):
        return None
    func = getattr(method, "__func__", method)
    if func is getattr(base, name, None):
        return None
    coroutine = inspect.iscoroutinefunction(func)
    inline = not coroutine or not may_suspend(func)
    blocking = getattr(func, "_mitm_blocking", False)
    if blocking is not False and not coroutine:
        # A plain function that may block (the addon host's hooks): the engine runs it
        # where its other connections do not wait (`block_in_place`). A
        # `_native.HookGate` instead of True switches that, and the call, at run time.
        return (method, coroutine, inline, True if blocking is True else blocking)
    return (method, coroutine, inline)


def plan(obj: Any, base: type, hooks=HOOKS) -> Dict[str, Any]:
    """The hooks of ``obj`` that the engine calls, by name, with its class name."""
    out: Dict[str, Any] = {"name": type(obj).__name__}
    for name in hooks:
        out[name] = hook_plan(obj, name, base)
    return out


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def submit(awaitable: Awaitable[Any], loop: asyncio.AbstractEventLoop, done: Callable[[Any], None]) -> None:
    """Runs ``awaitable`` on ``loop`` (from any thread); ``done`` gets the finished
    ``concurrent.futures.Future``."""
    coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    future.add_done_callback(done)


class _Resume:
    """What is left of a coroutine that yielded ``first`` when driven inline: awaiting
    this yields ``first`` to the task, then drives the coroutine on."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self):
        coro, yielded = self.coro, self.first
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task (e.g. cancellation)
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def resume(coro: Any, first: Any) -> _Resume:
    """An awaitable finishing ``coro``, which yielded ``first`` already."""
    return _Resume(coro, first)


def settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    """Sets ``future``'s result (or exception), unless it was cancelled meanwhile."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def report(what: str, exc: BaseException) -> None:
    """Logs an exception raised by a hook, with its traceback."""
    logger.error(
        "%s raised %s: %s (its connection is closed; the server goes on)",
        what,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )

"""HTTP messages for the message hooks of middlewares, and the server options beyond
the original's.

A :class:`~mitm.core.Middleware` may define, besides the original's seven connection
hooks, hooks on whole HTTP messages (every HTTP version, plain or intercepted HTTPS,
from every mode)::

    from mitm import MITM, Middleware
    from mitm.http import HttpFlow

    class NoAds(Middleware):
        body_limit = 1 << 20  # bodies up to 1 MiB are held for the hooks

        async def request(self, flow: HttpFlow) -> None:
            if flow.request.path.startswith("/ads/"):
                flow.respond(204)  # answered here; no origin is contacted

        async def response(self, flow: HttpFlow) -> None:
            flow.response.headers["X-Seen-By"] = "mitm"

    MITM(middlewares=[NoAds]).run()

The classes here are made by the engine (``Response`` and ``Headers`` may also be made
in Python); they are views of the engine's messages, so reading a body copies it into
Python only when asked for.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from mitm import _bridge
from mitm._native import Headers, HttpFlow, Request, Response, WebSocketMessage

if TYPE_CHECKING:  # pragma: no cover
    from mitm.core import Middleware, Protocol

__all__ = [
    "HttpFlow",
    "Request",
    "Response",
    "Headers",
    "WebSocketMessage",
    "MESSAGE_HOOKS",
    "DEFAULT_BODY_LIMIT",
    "DEFAULT_WEBSOCKET_MESSAGE_LIMIT",
]

logger = logging.getLogger("mitm")

#: The message hooks a middleware may define, besides the original's seven.
MESSAGE_HOOKS = ("request", "response", "flow_finished", "websocket_message")

#: The bodies a middleware with message hooks sees whole unless it sets ``body_limit``.
DEFAULT_BODY_LIMIT = 1 << 20

#: The WebSocket messages a middleware with ``websocket_message`` sees whole unless it
#: sets ``websocket_message_limit``.
DEFAULT_WEBSOCKET_MESSAGE_LIMIT = 1 << 20

PathArg = Union[str, "os.PathLike[str]"]


def message_plan(middleware: Any, base: type) -> Optional[Dict[str, Any]]:
    """The message hooks of ``middleware`` the engine calls (see
    ``mitm._bridge.hook_plan``) and its limits, or None when it defines none."""
    hooks = {name: _bridge.hook_plan(middleware, name, base) for name in MESSAGE_HOOKS}
    if not any(hooks.values()):
        return None
    plan: Dict[str, Any] = {"name": type(middleware).__name__, **hooks}
    for name, default in (
        ("body_limit", DEFAULT_BODY_LIMIT),
        ("websocket_message_limit", DEFAULT_WEBSOCKET_MESSAGE_LIMIT),
    ):
        value = getattr(middleware, name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{type(middleware).__name__}.{name} is a number of bytes, at least 0, not {value!r}"
            )
        plan[name] = value
    return plan


def _paths(name: str, value: Union[None, PathArg, Sequence[PathArg]]) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    try:
        return [os.fspath(v) for v in value]
    except TypeError:
        raise TypeError(f"{name} takes a path or a list of paths, not {value!r}") from None


def _number(name: str, value: Any, least: float, kind: type = int) -> Any:
    if value is None:
        return None
    ok = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, ok) or value < least:
        raise ValueError(f"{name} takes a number at least {least}, not {value!r}")
    return value


def server_options(
    modes: Union[None, str, Sequence[str]] = None,
    save: Union[None, PathArg, Sequence[PathArg]] = None,
    max_connections: Optional[int] = None,
    body_size_limit: Optional[int] = None,
    timeout: Optional[float] = None,
    connect_timeout: Optional[float] = None,
    response_timeout: Optional[float] = None,
    idle_timeout: Optional[float] = None,
    ssl_insecure: bool = False,
    upstream_ca: Union[None, PathArg, Sequence[PathArg]] = None,
    proxy_auth: Union[None, str, Tuple[str, str]] = None,
    keep_host_header: bool = False,
) -> Dict[str, Any]:
    """The options ``MITM(...)`` takes beyond the original's arguments, checked, as
    the engine takes them (see :class:`mitm.MITM` for what each does)."""
    if isinstance(modes, str):
        modes = [modes]
    if modes is not None:
        modes = list(modes)
        if not modes or not all(isinstance(m, str) for m in modes):
            raise ValueError(f"modes takes mode specs such as 'regular@8080' or 'socks5@1080', not {modes!r}")
    if isinstance(proxy_auth, str):
        user, sep, password = proxy_auth.partition(":")
        if not sep:
            raise ValueError("proxy_auth takes 'user:password' or (user, password)")
        proxy_auth = (user, password)
    elif proxy_auth is not None:
        if isinstance(proxy_auth, (bytes, bytearray)) or len(proxy_auth) != 2:
            raise ValueError("proxy_auth takes 'user:password' or (user, password)")
        user, password = proxy_auth
        proxy_auth = (str(user), str(password))
    return {
        "modes": modes,
        "save": _paths("save", save),
        "max_connections": _number("max_connections", max_connections, 2),
        "body_size_limit": _number("body_size_limit", body_size_limit, 0),
        "timeout": _number("timeout", timeout, 0, float),
        "connect_timeout": _number("connect_timeout", connect_timeout, 0, float),
        "response_timeout": _number("response_timeout", response_timeout, 0, float),
        "idle_timeout": _number("idle_timeout", idle_timeout, 0, float),
        "ssl_insecure": bool(ssl_insecure),
        "upstream_ca": _paths("upstream_ca", upstream_ca),
        "proxy_auth": proxy_auth,
        "keep_host_header": bool(keep_host_header),
    }


def engine_options(
    options: Dict[str, Any], middlewares: Sequence["Middleware"], protocols: Sequence["Protocol"]
) -> Dict[str, Any]:
    """What ``_native.start`` takes as ``options``: ``options`` (from
    :func:`server_options`) and the message hooks of ``middlewares``."""
    from mitm.core import Middleware
    from mitm.protocol import HTTP

    if options.get("modes"):
        others = [p for p in protocols if not isinstance(p, HTTP)]
        if others:
            raise ValueError(
                f"modes= gives each listener the engine's protocols; {others} would not be used "
                "(a Protocol written in Python runs on the listener of host and port, without modes=)"
            )
    plans = [plan for plan in (message_plan(m, Middleware) for m in middlewares) if plan is not None]
    return {**options, "handlers": plans}


def _report(what: str, exc: BaseException, outcome: str) -> None:
    """Logs an exception raised by a message hook, with its traceback (called by the
    engine)."""
    logger.error(
        "%s raised %s: %s (%s; the server goes on)",
        what,
        type(exc).__name__,
        exc,
        outcome,
        exc_info=(type(exc), exc, exc.__traceback__),
    )

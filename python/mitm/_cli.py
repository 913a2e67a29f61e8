"""The ``mitm`` command of the package (internal): the Rust binary's command line, run
by the engine (``_native.cli``), with mitmproxy's addon scripts (``-s FILE``).

The command is the same as the binary's (same options, subcommands, output and exit
codes), built from the same sources. What the package adds: ``-s`` runs addon scripts
in this Python, through a factory, ``mitm.addons.Addons`` unless
``MITM_ADDONS_FACTORY=module:attr`` names another (meant for tests): called as
``factory(scripts, options)`` with the script paths (``str``) and the settings no
option of the command takes (``--set name=value`` and ``config.yaml``), as a dict of
name to value: a ``str``, a ``list`` of them for a name set more than once, None for a
name given bare. It returns a :class:`mitm.Middleware` whose hooks the proxy runs as
``MITM(middlewares=[...])`` would; its ``mitm_started`` runs once per listener, and its
``mitm_stopped()`` (if it has one, plain or ``async``) once the proxy has stopped.

Hooks that await run on an asyncio loop of the command's own, on a thread of its own;
the engine runs with the GIL released. Log lines (the engine's, the scripts') go to
stderr through :mod:`logging`, at the level ``-q``/``-v`` choose.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mitm import _bridge, _native, http
from mitm.core import Middleware

#: The environment variable that names the factory of ``-s``'s middleware, as
#: ``module:attr`` (for tests; the default is :data:`DEFAULT_FACTORY`).
FACTORY_VARIABLE = "MITM_ADDONS_FACTORY"

#: The factory of ``-s``'s middleware.
DEFAULT_FACTORY = "mitm.addons:Addons"

#: Python's logging level for each of the command's.
LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG, "trace": 5}


class CommandError(Exception):
    """A mistake the command reports as its one-line error (no traceback)."""


class Factory:
    """The factory named ``module:attr``, imported when first called (so that a
    command without ``-s`` imports nothing more)."""

    def __init__(self, spec: str) -> None:
        module, sep, attr = spec.partition(":")
        if not module or not sep or not attr:
            raise CommandError(f"{FACTORY_VARIABLE}={spec!r}: give module:attr, e.g. {DEFAULT_FACTORY}")
        self.spec = spec
        self.module = module
        self.attr = attr

    def __call__(self, scripts: List[str], options: Dict[str, Any]) -> Any:
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            if e.name is not None and self.module.startswith(e.name):
                raise CommandError(
                    f"addon scripts need {self.module}, which this installation of the mitm package "
                    f"does not have: install a version of it that runs addon scripts"
                ) from None
            raise
        factory = getattr(module, self.attr, None)
        if factory is None:
            raise CommandError(f"{self.module} has no {self.attr} (from {self.spec})")
        return factory(scripts, options)

    def __repr__(self) -> str:
        return f"Factory({self.spec!r})"


def factory() -> Factory:
    """The factory of ``-s``'s middleware: :data:`FACTORY_VARIABLE`'s, else
    :data:`DEFAULT_FACTORY`."""
    return Factory(os.environ.get(FACTORY_VARIABLE) or DEFAULT_FACTORY)


def configure_logging(level: str) -> None:
    """Log lines to stderr at ``level`` (``error``, ``warn``, ``info``, ``debug``,
    ``trace``), the engine's (logger ``mitm.engine``) among them: called by the command
    once its options are read."""
    number = LEVELS.get(level, logging.INFO)
    logging.addLevelName(5, "TRACE")
    logging.basicConfig(
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=number,
        force=True,
    )
    logging.getLogger("mitm.engine").setLevel(number)


def load(make: Callable[..., Any], scripts: Sequence[Any], options: Dict[str, Any]) -> Tuple[Any, Dict[str, Any], Optional[Dict[str, Any]]]:
    """The middleware ``make(scripts, options)`` returns, its hooks' plan and its message
    hooks' plan (None without them): what the engine runs for ``-s``."""
    middleware = make([os.fspath(s) for s in scripts], dict(options))
    if isinstance(middleware, type):
        raise CommandError(f"{make!r} returned the class {middleware.__name__}, not an instance of it")
    if not isinstance(middleware, Middleware):
        raise CommandError(f"{make!r} returned {type(middleware).__name__}, not a mitm.Middleware")
    return middleware, _bridge.plan(middleware, Middleware), http.message_plan(middleware, Middleware)


async def stopped(middleware: Any) -> None:
    """Runs ``middleware.mitm_stopped()`` if it has one (awaited if it is a
    coroutine): the proxy has stopped."""
    hook = getattr(middleware, "mitm_stopped", None)
    if hook is None:
        return
    result = hook()
    if inspect.isawaitable(result):
        await result


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``mitm`` command with ``argv`` (without the program's name; default:
    ``sys.argv[1:]``) and returns its exit code: 0, 1 for an error, 2 for a usage
    error. Ctrl-C and SIGTERM stop the proxy cleanly, as they stop the binary."""
    args = list(sys.argv[1:] if argv is None else argv)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_serve, args=(loop,), name="mitm-hooks", daemon=True)
    thread.start()
    # The engine handles SIGINT and SIGTERM itself once the proxy is up; until then they
    # end the process, as they end the binary (Python's handler would raise
    # KeyboardInterrupt only once the command returned).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL) if main_thread else None
    try:
        return _native.cli(["mitm", *args], loop, factory())
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

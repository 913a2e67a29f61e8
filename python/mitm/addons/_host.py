"""Loading addon scripts, calling their hooks, and reloading them when they change
(internal: :class:`mitm.addons.Addons` is the public face).

A script is a Python file run as a module of its own (with ``mitmproxy`` mapped to
the compat layer, see ``_importer``). Its addons are the module itself and, as
mitmproxy does, every object of its ``addons`` list (and theirs, depth first). Hooks
are looked up once per (re)load into a table ``{hook name: [callables]}``.

Errors are mitmproxy's: a script that fails to import or ``load`` is logged with its
traceback and left out until it changes again; a hook that raises is logged with its
traceback and the flow goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import threading
import traceback
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mitm.addons import _importer
from mitm.addons._options import Options
from mitm.addons.compat.addonmanager import Loader

logger = logging.getLogger("mitm.addons")

#: mitmproxy's hooks this host calls.
SCRIPT_HOOKS = (
    "load",
    "configure",
    "running",
    "done",
    "requestheaders",
    "request",
    "responseheaders",
    "response",
    "error",
    "http_connect",
    "client_connected",
    "client_disconnected",
    "server_connect",
    "server_connected",
    "server_disconnected",
    "websocket_start",
    "websocket_message",
    "websocket_end",
    "tls_clienthello",
)

#: mitmproxy's hooks that this host knows but cannot call, and why.
UNSUPPORTED_HOOKS = {
    "tls_start_client": "TLS is set up by the engine",
    "tls_start_server": "TLS is set up by the engine",
    "tls_established_client": "TLS is set up by the engine",
    "tls_established_server": "TLS is set up by the engine",
    "tls_failed_client": "TLS is set up by the engine",
    "tls_failed_server": "TLS is set up by the engine",
    "http_connect_upstream": "upstream proxies are the engine's",
    "tcp_start": "plain TCP flows are not given to scripts",
    "tcp_message": "plain TCP flows are not given to scripts",
    "tcp_end": "plain TCP flows are not given to scripts",
    "tcp_error": "plain TCP flows are not given to scripts",
    "udp_start": "UDP flows are not given to scripts",
    "udp_message": "UDP flows are not given to scripts",
    "udp_end": "UDP flows are not given to scripts",
    "dns_request": "DNS flows are not given to scripts",
    "dns_response": "DNS flows are not given to scripts",
    "websocket_error": "not supported",
    "update": "there is no flow list to update",
    "add_log": "logs go through Python's logging (add a logging.Handler)",
}


class _AsyncRunner:
    """An asyncio loop on a thread of its own, for ``async def`` hooks."""

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock = threading.Lock()

    def run(self, awaitable: Any) -> Any:
        """Runs ``awaitable`` on the loop and waits (this thread only) for its result."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mitm-addons-loop", daemon=True)
                thread.start()
                self._loop = loop
            loop = self._loop

        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), loop).result()

    def close(self) -> None:
        """Stops the loop's thread."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


class Script:
    """One script file: its module and addons, as last loaded."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.name = os.path.splitext(os.path.basename(self.path))[0]
        self.addons: List[Any] = []
        self.stamp: Optional[Tuple[float, int]] = None
        self.module: Optional[types.ModuleType] = None

    def _stat(self) -> Optional[Tuple[float, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def changed(self) -> bool:
        """Whether the file changed since it was last loaded (or tried)."""
        return self._stat() != self.stamp

    def import_(self) -> None:
        """Runs the file as a module; raises what it raises (the addons stay empty)."""
        self.stamp = self._stat()
        self.addons = []
        self.module = None
        with open(self.path, "rb") as f:
            source = f.read()
        code = compile(source, self.path, "exec")
        module = types.ModuleType(self.name)
        module.__file__ = self.path
        module.__dict__["__builtins__"] = _importer.script_builtins()
        directory = os.path.dirname(self.path)
        had = sys.modules.get(self.name)
        sys.path.insert(0, directory)
        sys.modules[self.name] = module
        try:
            exec(code, module.__dict__)
        finally:
            if had is not None:
                sys.modules[self.name] = had
            else:
                sys.modules.pop(self.name, None)
            try:
                sys.path.remove(directory)
            except ValueError:
                pass
        self.module = module
        self.addons = list(walk(module))


def walk(addon: Any) -> List[Any]:
    """``addon`` and its ``addons`` (depth first), as mitmproxy traverses them."""
    out = [addon]
    children = getattr(addon, "addons", None)
    if isinstance(children, (list, tuple)):
        for child in children:
            out.extend(walk(child))
    return out


def hooks_of(addon: Any) -> Dict[str, Callable[..., Any]]:
    """The mitmproxy hooks ``addon`` defines, by name (warning about those this host
    cannot call)."""
    out = {}
    for name in SCRIPT_HOOKS:
        func = getattr(addon, name, None)
        if callable(func):
            out[name] = func
    for name, why in UNSUPPORTED_HOOKS.items():
        if callable(getattr(addon, name, None)):
            logger.error(
                "%s defines %s, which mitm's addon host does not call: %s",
                getattr(addon, "__name__", type(addon).__name__),
                name,
                why,
            )
    return out


def describe(func: Callable[..., Any]) -> str:
    """``script.hook`` for logs."""
    return getattr(func, "__qualname__", repr(func))


class Host:
    """The scripts of one :class:`~mitm.addons.Addons` and their hook table."""

    def __init__(self, paths: Sequence[str], options: Options) -> None:
        self.options = options
        self.scripts = [Script(os.fspath(p)) for p in paths]
        self.table: Dict[str, List[Callable[..., Any]]] = {}
        self.running = False
        self.closed = False
        self.runner = _AsyncRunner()
        self._lock = threading.RLock()
        self._watcher: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.on_table: Optional[Callable[[Dict[str, List[Callable[..., Any]]]], None]] = None

    # -- calling hooks -----------------------------------------------------------------

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Calls one hook; an exception (or one of its awaitable) is logged with its
        traceback and gives None."""
        try:
            out = func(*args)
            if out is not None and inspect.isawaitable(out):
                out = self.runner.run(out)
            return out
        except Exception:  # noqa: BLE001 - mitmproxy logs a hook's errors and goes on
            logger.error("Addon error: %s raised:\n%s", describe(func), traceback.format_exc().rstrip())
            return None

    def invoke(self, name: str, *args: Any) -> None:
        """Calls hook ``name`` of every addon, in order."""
        for func in self.table.get(name, ()):
            self.call(func, *args)

    def _invoke_script(self, script: Script, name: str, *args: Any) -> bool:
        """Calls ``name`` on a script's addons; False if one raised (logged)."""
        for addon in script.addons:
            func = getattr(addon, name, None)
            if not callable(func):
                continue
            try:
                out = func(*args)
                if inspect.isawaitable(out):
                    self.runner.run(out)
            except Exception:  # noqa: BLE001
                logger.error(
                    "Addon error: %s.%s raised:\n%s",
                    script.name,
                    name,
                    traceback.format_exc().rstrip(),
                )
                return False
        return True

    # -- loading -----------------------------------------------------------------------

    def load(self, script: Script) -> None:
        """(Re)loads ``script``: import, ``load(loader)``, ``configure``, and
        ``running`` if the proxy runs. Failures are logged; the script is left out.
        Its options stay declared until the new load has declared its own."""
        old_options = self.options._declared_by(script.path)
        try:
            self._load(script)
        finally:
            self.options._forget(script.path, old_options)

    def _load(self, script: Script) -> None:
        try:
            script.import_()
        except Exception:  # noqa: BLE001 - mitmproxy reports and serves on
            logger.error("Error loading script %s:\n%s", script.path, traceback.format_exc().rstrip())
            script.addons = []
            return
        loader = Loader(self.options, script.path)
        if not self._invoke_script(script, "load", loader):
            script.addons = []
            return
        if not self._invoke_script(script, "configure", self.options.keys()):
            script.addons = []
            return
        if self.running:
            self._invoke_script(script, "running")
        logger.info("Loaded script %s", script.path)

    def load_all(self) -> None:
        """Loads every script (first load), and builds the hook table."""
        with self._lock:
            for script in self.scripts:
                self.load(script)
            self.rebuild()

    def rebuild(self) -> None:
        """Makes the hook table from the scripts' addons."""
        table: Dict[str, List[Callable[..., Any]]] = {}
        for script in self.scripts:
            for addon in script.addons:
                for name, func in hooks_of(addon).items():
                    table.setdefault(name, []).append(func)
        self.table = table
        if self.on_table is not None:
            self.on_table(table)

    def reload(self, script: Script) -> None:
        """Unloads (``done``) and loads ``script`` again."""
        with self._lock:
            logger.info("Reloading script %s", script.path)
            if script.addons:
                self._invoke_script(script, "done")
            self.load(script)
            self.rebuild()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, watch: bool) -> None:
        """The proxy listens: ``running`` on every script, and the watcher if asked."""
        with self._lock:
            if self.running:
                return
            self.running = True
            for script in self.scripts:
                if script.addons:
                    self._invoke_script(script, "running")
        if watch and self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="mitm-addons-reload", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for script in self.scripts:
                if script.changed():
                    try:
                        self.reload(script)
                    except Exception:  # noqa: BLE001 - the watcher must go on
                        logger.error("Reloading %s failed:\n%s", script.path, traceback.format_exc().rstrip())

    def stop(self) -> None:
        """The proxy stopped: ``done`` on every script, the watcher and loop end."""
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)
        with self._lock:
            if not self.closed:
                self.closed = True
                self.running = False
                for script in self.scripts:
                    if script.addons:
                        self._invoke_script(script, "done")
        self.runner.close()

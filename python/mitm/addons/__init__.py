"""mitmproxy's addon scripts on mitm's engine.

:class:`Addons` is a :class:`mitm.Middleware` that loads mitmproxy addon scripts
(``def request(flow)`` at module level, or ``addons = [obj, ...]``) and calls their
hooks, reloading a script when its file changes::

    from mitm import MITM
    from mitm.addons import Addons

    MITM(middlewares=[Addons(["add_header.py"], {"greeting": "hi"})]).run()

Scripts import ``mitmproxy`` (``from mitmproxy import http, ctx``) and get this
package's compatibility layer (:mod:`mitm.addons.compat`); see the README section
"Addons (Python)" for the supported API.

Every sync hook of a script runs on a thread of its own flow, so a hook that blocks
(``time.sleep``, a slow HTTP call) holds up only its flow; ``async def`` hooks run on
an asyncio loop of the host's own. A hook's exception is logged with its traceback
and the flow goes on unchanged by it.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Union

from mitm import _native
from mitm.addons import _importer
from mitm.addons._host import Host, Script
from mitm.addons._options import Options, OptionsError
from mitm.core import Connection, Middleware

__all__ = ["Addons", "OptionsError"]

# The engine hooks each script hook needs.
_ENGINE_HOOKS: Dict[str, Sequence[str]] = {
    "requestheaders": ("request",),
    "request": ("request",),
    "http_connect": ("request",),
    "responseheaders": ("response",),
    "response": ("response",),
    "websocket_start": ("flow_finished",),
    "error": ("flow_finished",),
    "websocket_message": ("flow_finished", "websocket_message"),
    "websocket_end": ("flow_finished", "client_disconnected"),
    "client_connected": ("client_connected",),
    "client_disconnected": ("client_disconnected",),
    "server_connect": ("server_connected",),
    "server_connected": ("server_connected",),
    "server_disconnected": ("server_disconnected",),
    "tls_clienthello": ("tls_clienthello",),
}

_PLANNABLE = (
    "request",
    "response",
    "flow_finished",
    "websocket_message",
    "client_connected",
    "client_disconnected",
    "server_connected",
    "server_disconnected",
    "tls_clienthello",
)

# Where the compat objects are kept: a key of the native flow's metadata, and
# attributes of the engine's Connection.
_FLOW_KEY = object()
_CLIENT = "_mitm_addons_client"
_SERVER = "_mitm_addons_server"
_WEBSOCKETS = "_mitm_addons_websockets"


def _blocking(func: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a hook of :class:`Addons` as one that may block: the engine runs it on a
    thread the rest of its work does not wait for (``mitm._bridge.hook_plan``)."""
    func._mitm_blocking = True  # type: ignore[attr-defined]
    return func


class _HookData:
    """``ServerConnectionHookData``: the ``server`` and ``client`` of a server hook."""

    __slots__ = ("server", "client")

    def __init__(self, server: Any, client: Any) -> None:
        self.server = server
        self.client = client

    def __repr__(self) -> str:
        return f"ServerConnectionHookData(server={self.server!r}, client={self.client!r})"


class Addons(Middleware):
    """Runs mitmproxy addon scripts as a middleware.

    ``scripts``: the script files, loaded now (one that fails to import or to
    ``load`` is logged with its traceback and left out; the proxy serves on).
    ``options``: ``--set name=value`` pairs as text, converted by the type the
    script's ``loader.add_option`` declared; a name no loaded script declares raises
    :class:`OptionsError` ("No such option"). ``reload``: reload a script within
    about half a second of its file changing (``done`` on the old, then ``load``,
    ``configure`` and ``running`` on the new).

    Without ``reload`` only the engine hooks the loaded scripts need are planned; with
    it every one is, each behind a ``_native.HookGate`` that is off (the engine skips
    the call) while no loaded script needs it. Either way a script's hook runs on the
    engine's pool of hook threads (a blocking hook holds up only its flow).
    ``running`` is called when the server listens (``mitm_started``) and ``done``
    when it stops (``mitm_stopped``, or :meth:`close`).
    """

    def __init__(
        self,
        scripts: Sequence[Union[str, "os.PathLike[str]"]],
        options: Mapping[str, str] = {},
        *,
        reload: bool = True,
    ) -> None:
        if isinstance(scripts, (str, os.PathLike)):
            scripts = [scripts]
        _importer.install()
        from mitm.addons.compat import ctx

        self.options = Options({str(k): str(v) for k, v in dict(options).items()})
        ctx.options = self.options
        self.reload = reload
        self._host = Host([os.fspath(s) for s in scripts], self.options)
        self._host.on_table = self._table_changed
        self._planned: Set[str] = set()
        self._host.load_all()
        bad = self.options._bad()
        if bad:
            self._host.stop()
            raise OptionsError("; ".join(bad))
        unknown = self.options._unknown()
        if unknown:
            self._host.stop()
            raise OptionsError(
                "No such option: "
                + ", ".join(sorted(unknown))
                + " (no loaded script declares it with loader.add_option)"
            )
        # With reload, every hook is planned (a reloaded script may gain any); each
        # carries a gate the engine reads before calling it, switched off while no
        # script needs it, so it costs an atomic load.
        self._planned = set(_PLANNABLE) if reload else self._needed(self._host.table)
        self._gates: Dict[str, Any] = {}
        for name in _PLANNABLE:
            if name not in self._planned:
                # `_bridge.plan` skips a hook that is not callable: the engine never calls it.
                setattr(self, name, None)
                continue
            gate = _native.HookGate()
            hook = functools.partial(getattr(type(self), name), self)
            hook._mitm_blocking = gate  # type: ignore[attr-defined]
            setattr(self, name, hook)
            self._gates[name] = gate
        self._set_gates(self._host.table)

    @property
    def scripts(self) -> List[Script]:
        """The scripts, as last loaded."""
        return list(self._host.scripts)

    @staticmethod
    def _needed(table: Mapping[str, Any]) -> Set[str]:
        return {engine for name in table for engine in _ENGINE_HOOKS.get(name, ())}

    def _set_gates(self, table: Mapping[str, Any]) -> None:
        needed = self._needed(table)
        for name, gate in self._gates.items():
            active = name in needed
            gate.set(active, active)

    def _table_changed(self, table: Mapping[str, Any]) -> None:
        if not self._planned:
            return  # the first load: the plan is made from it
        self._set_gates(table)
        missing = self._needed(table) - self._planned
        for name in sorted(missing):
            from mitm.addons._host import logger

            logger.warning(
                "a reloaded script needs the engine's %s hook, which was not planned when the "
                "proxy started: restart the proxy for its new hooks to be called",
                name,
            )

    # -- lifecycle ---------------------------------------------------------------------

    @_blocking
    def mitm_started(self, host: str, port: int) -> None:
        """The server listens: the scripts' ``running`` (once) and the reload
        watcher."""
        self._host.start(self.reload)

    def mitm_stopped(self) -> None:
        """The server stopped: the scripts' ``done``; the watcher ends."""
        self._host.stop()

    def close(self) -> None:
        """Same as :meth:`mitm_stopped`."""
        self._host.stop()

    # -- flows -------------------------------------------------------------------------

    def _client(self, connection: Connection) -> Any:
        client = getattr(connection, _CLIENT, None)
        if client is None:
            from mitm.addons.compat.connection import Client

            client = Client(connection)
            setattr(connection, _CLIENT, client)
        return client

    def _flow(self, native: Any) -> Any:
        meta = native.metadata
        flow = meta.get(_FLOW_KEY)
        if flow is None:
            from mitm.addons.compat.http import HTTPFlow

            flow = HTTPFlow(native, lambda: self._client(native.connection))
            meta[_FLOW_KEY] = flow
        return flow

    def _done(self, flow: Any) -> bool:
        return flow._n.killed

    @_blocking
    def request(self, native: Any) -> None:
        """``http_connect`` for a CONNECT, else ``requestheaders`` then ``request``
        (skipped once a hook answered or killed the flow)."""
        table = self._host.table
        if not (table.get("requestheaders") or table.get("request") or table.get("http_connect")):
            return
        flow = self._flow(native)
        host = self._host
        if flow._request._n.method == "CONNECT":
            for func in table.get("http_connect", ()):
                host.call(func, flow)
                if self._done(flow) or native.response is not None:
                    return
            return
        for func in table.get("requestheaders", ()):
            host.call(func, flow)
            if self._done(flow):
                return
            if native.response is not None:
                flow.__dict__["_answered"] = True
                return
        for func in table.get("request", ()):
            host.call(func, flow)
            if self._done(flow):
                return
        if native.response is not None:
            flow.__dict__["_answered"] = True  # no server is contacted

    @_blocking
    def response(self, native: Any) -> None:
        """``responseheaders`` then ``response`` (not for the proxy's error pages:
        those get ``error``; not for a CONNECT's answer)."""
        table = self._host.table
        names = ("responseheaders", "response")
        if not (table.get("responseheaders") or table.get("response")):
            return
        if native.error is not None:
            return  # the proxy's own error page: mitmproxy calls `error` instead
        flow = self._flow(native)
        if flow._request._n.method == "CONNECT":
            return  # mitmproxy calls no response hooks for a CONNECT's answer
        host = self._host
        if not flow.__dict__.get("_answered"):
            flow.__dict__["_connected"] = True  # server_conn.address is known
        for name in names:
            for func in table.get(name, ()):
                host.call(func, flow)
                if self._done(flow):
                    return

    @staticmethod
    def _websockets(table: Mapping[str, Any]) -> bool:
        return bool(table.get("websocket_start") or table.get("websocket_message") or table.get("websocket_end"))

    @_blocking
    def flow_finished(self, native: Any) -> None:
        """``error`` for a flow that failed; ``websocket_start`` for one that became a
        WebSocket (its ``101`` is through)."""
        table = self._host.table
        if native.error is not None:
            if table.get("error"):
                self._host.invoke("error", self._flow(native))
            return
        response = native.response
        if response is None or response.status_code != 101 or not self._websockets(table):
            return
        from mitm.addons.compat.websocket import WebSocketData

        flow = self._flow(native)
        flow.websocket = WebSocketData()
        conn = native.connection
        opened = getattr(conn, _WEBSOCKETS, None)
        if opened is None:
            opened = []
            setattr(conn, _WEBSOCKETS, opened)
        opened.append(flow)
        self._host.invoke("websocket_start", flow)

    @_blocking
    def websocket_message(self, native: Any, message: Any) -> None:
        """``websocket_message`` with the message last of ``flow.websocket.messages``."""
        if native is None or not self._host.table.get("websocket_message"):
            return
        from mitm.addons.compat.websocket import WebSocketData, WebSocketMessage

        flow = self._flow(native)
        if flow.websocket is None:
            flow.websocket = WebSocketData()
        record = WebSocketMessage(message)
        flow.websocket.messages.append(record)
        try:
            self._host.invoke("websocket_message", flow)
        finally:
            record._freeze()

    # -- connections -------------------------------------------------------------------

    @_blocking
    def client_connected(self, connection: Connection) -> None:
        """``client_connected(client)``."""
        self._host.invoke("client_connected", self._client(connection))

    @_blocking
    def client_disconnected(self, connection: Connection) -> None:
        """``websocket_end`` of the connection's WebSockets, then
        ``client_disconnected(client)``."""
        from mitm.addons.compat.connection import ConnectionState

        for flow in getattr(connection, _WEBSOCKETS, None) or ():
            self._host.invoke("websocket_end", flow)
        client = self._client(connection)
        client.state = ConnectionState.CLOSED
        self._host.invoke("client_disconnected", client)

    def _server_data(self, connection: Connection) -> _HookData:
        data = getattr(connection, _SERVER, None)
        if data is None:
            from mitm.addons.compat.connection import Server

            server = connection.server
            target = (server.host, server.port) if server.host is not None and server.port is not None else None
            data = _HookData(Server(connection, target), self._client(connection))
            setattr(connection, _SERVER, data)
        return data

    @_blocking
    def server_connected(self, connection: Connection) -> None:
        """``server_connect`` then ``server_connected`` (the engine connects before
        either: ``server_connect`` cannot change where)."""
        data = self._server_data(connection)
        self._host.invoke("server_connect", data)
        self._host.invoke("server_connected", data)

    @_blocking
    def server_disconnected(self, connection: Connection) -> None:
        """``server_disconnected``."""
        from mitm.addons.compat.connection import ConnectionState

        data = self._server_data(connection)
        data.server.state = ConnectionState.CLOSED
        self._host.invoke("server_disconnected", data)

    @_blocking
    def tls_clienthello(self, connection: Connection, sni: Optional[str], alpn: List[bytes], target: Any) -> bool:
        """``tls_clienthello(data)`` for a client's ClientHello in a tunnel to
        ``target`` (host, port); True (pass the connection through untouched) when a
        script set ``data.ignore_connection``."""
        from mitm.addons.compat.connection import Server
        from mitm.addons.compat.tls import ClientHello, ClientHelloData, Context

        client = self._client(connection)
        client.sni = sni
        data = getattr(connection, _SERVER, None)
        if data is None:
            data = _HookData(Server(connection, tuple(target) if target else None), client)
            setattr(connection, _SERVER, data)
        hello = ClientHelloData(Context(client, data.server), ClientHello(sni, list(alpn)))
        self._host.invoke("tls_clienthello", hello)
        return bool(hello.ignore_connection)

    def __repr__(self) -> str:
        return f"Addons({[s.path for s in self._host.scripts]})"

"""The core of the `mitm` package: hosts, connections, flows, middlewares and
protocols, with the original package's names and signatures.

The engine underneath is Rust: it accepts connections, picks a protocol, connects
upstream and relays bytes, calling the hooks of the middlewares given to
:class:`mitm.MITM` at each event.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from mitm.http import HttpFlow, WebSocketMessage

from mitm.crypto import CertificateAuthority  # noqa: F401 - the original's core has it too

__all__ = ["Host", "Connection", "Flow", "Middleware", "InvalidProtocol", "Protocol"]


class _EngineStream:
    """The stream of a side the engine relays itself (the built-in HTTP protocol's
    client and server). It has no Python reader or writer: use a middleware's data
    hooks to see and change its bytes, or a :class:`Protocol` written in Python to own
    the streams."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"this side's stream is relayed by the engine and has no {name!r}: a "
            "middleware's client_data/server_data hooks see and change its bytes, and a "
            "Protocol written in Python gets asyncio streams of its own"
        )

    def __repr__(self) -> str:
        return "<stream relayed by the engine>"


_ENGINE_STREAM = _EngineStream()


class Host:
    """One side of a relayed connection: a client connected to the proxy, or a server
    the proxy connected to on its behalf.

    A host has a ``reader`` and a ``writer`` (asyncio streams for hosts a Python
    :class:`Protocol` connects; the engine's own for the built-in HTTP protocol), the
    peer's ``host`` (IP address) and ``port`` once connected, and ``mitm_managed``
    (when False, the proxy leaves closing that side to you). It is falsy while
    unconnected and prints as ``ip:port`` (``[ip]:port`` for IPv6) or
    ``<empty host>``.

    Example::

        reader, writer = await asyncio.open_connection(host, port)
        connection.server = Host(reader, writer)
    """

    def __init__(
        self,
        reader: Optional[asyncio.StreamReader] = None,
        writer: Optional[asyncio.StreamWriter] = None,
        mitm_managed: Optional[bool] = True,
    ) -> None:
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.reader = reader
        self.mitm_managed = mitm_managed
        self.writer = writer

    @classmethod
    def _engine(cls, ip: str, port: int) -> "Host":
        """A side whose stream the engine holds, at ``ip:port``."""
        host = cls(_ENGINE_STREAM, _ENGINE_STREAM)
        host.host, host.port = ip, port
        return host

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "writer" and value is not None and not isinstance(value, _EngineStream):
            if getattr(self, "host", None) is None:
                get = getattr(value, "get_extra_info", None)
                peer = get("peername") if get else None
                if peer:
                    object.__setattr__(self, "host", peer[0])
                    object.__setattr__(self, "port", peer[1])

    def __bool__(self) -> bool:
        return self.reader is not None and self.writer is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Host):
            return NotImplemented
        return (self.reader, self.writer, self.mitm_managed) == (
            other.reader,
            other.writer,
            other.mitm_managed,
        ) and (self.host, self.port) == (other.host, other.port)

    __hash__ = object.__hash__

    def _address(self) -> str:
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def __repr__(self) -> str:
        if self:
            return f"Host({self._address()}, mitm_managed={self.mitm_managed})"
        return f"Host(mitm_managed={self.mitm_managed})"

    def __str__(self) -> str:
        return self._address() if self and self.host is not None else "<empty host>"


class Connection:
    """A client and the server the proxy relays it to, and the protocol that took it.

    Made when a client connects, with only ``client`` set; ``server`` is an empty
    :class:`Host` until a protocol connects upstream. The same object is passed to
    every hook of one connection, so a middleware may keep its own attributes on it.
    """

    def __init__(self, client: Host, server: Host, protocol: Optional["Protocol"] = None) -> None:
        self.client = client
        self.server = server
        self.protocol = protocol

    def __repr__(self) -> str:
        return f"Connection(client={self.client}, server={self.server}, protocol={self.protocol})"


class Flow(Enum):
    """The direction data moves in."""

    CLIENT_TO_SERVER = 0
    SERVER_TO_CLIENT = 1


class Middleware:
    """Event hooks of the proxy: subclass and override the hooks you need.

    The seven hooks below are the original's, called in this order over a connection's
    life: ``mitm_started`` (once per listener), ``client_connected``, ``client_data``
    with the client's first bytes (before any server is connected), ``server_connected``,
    then ``client_data``/``server_data`` for every chunk each way (decrypted: a TLS
    handshake never reaches them), and at the end ``server_disconnected`` then
    ``client_disconnected``. What a data hook returns is what is sent on.

    Hooks are usually ``async def``. Those that never ``await`` run on the engine's
    thread at once; those that do run on the asyncio loop the server was started from.
    Either way only the connection that called waits. A hook a subclass does not
    override is never called and costs nothing; without ``client_data`` and
    ``server_data`` the engine relays bytes without copying them through Python.

    An exception in a hook is logged with its traceback and ends that connection only.

    Beyond the original, the message hooks ``request``, ``response``,
    ``flow_finished`` and ``websocket_message`` see whole HTTP messages as a
    :class:`mitm.http.HttpFlow` (an exception in one answers that exchange ``502``).
    """

    async def mitm_started(self, host: str, port: int) -> None:
        """The server listens on ``host:port``."""

    async def client_connected(self, connection: Connection) -> None:
        """A client connected; only ``connection.client`` is set."""

    async def server_connected(self, connection: Connection) -> None:
        """The server is connected (and TLS is set up on both sides for HTTPS)."""

    async def client_data(self, connection: Connection, data: bytes) -> bytes:
        """Bytes from the client; return the bytes to send to the server."""
        return data

    async def server_data(self, connection: Connection, data: bytes) -> bytes:
        """Bytes from the server; return the bytes to send to the client."""
        return data

    async def client_disconnected(self, connection: Connection) -> None:
        """The client's side is closed: the connection's last hook."""

    async def server_disconnected(self, connection: Connection) -> None:
        """The server's side is closed (before ``client_disconnected``)."""

    # -- message hooks (beyond the original; see mitm.http) -------------------------

    #: The largest request or response body, in bytes, this middleware's message hooks
    #: see whole (``flow.request.content``); larger ones stream past and read as None.
    #: 0 lets every body stream.
    body_limit: int = 1 << 20

    #: The largest WebSocket message, in bytes, ``websocket_message`` sees; a larger
    #: one closes the WebSocket (status 1009). 0: the hook is never called, frames
    #: stream through.
    websocket_message_limit: int = 1 << 20

    async def request(self, flow: "HttpFlow") -> None:
        """An HTTP request (any version, plain or intercepted HTTPS; a ``CONNECT`` too)
        is about to go to its origin. Change ``flow.request`` and the origin gets it
        changed; set ``flow.response`` (or call ``flow.respond(...)``) to answer here
        without contacting the origin; ``flow.kill()`` drops the client."""

    async def response(self, flow: "HttpFlow") -> None:
        """The response (head and, within ``body_limit``, body) is about to go to the
        client: change ``flow.response``, replace it, or ``flow.kill()``. Also called
        for the proxy's own error pages (``flow.error`` says why) and local answers."""

    async def flow_finished(self, flow: "HttpFlow") -> None:
        """The exchange is over (answered, or broken off: ``flow.error``); called once
        for every request ``request`` saw."""

    async def websocket_message(self, flow: "HttpFlow", message: "WebSocketMessage") -> None:
        """A WebSocket message (text or binary, whole) of the WebSocket ``flow``
        opened is on its way: change ``message.content``, ``message.drop()`` it, or
        ``flow.kill()`` to close the WebSocket."""

    def __repr__(self) -> str:
        return f"Middleware({self.__class__.__name__})"


class InvalidProtocol(Exception):
    """Raised by a protocol's ``resolve`` or ``connect``: not this protocol, try the
    next one."""


class Protocol:
    """A way of speaking to clients, recognised from their first bytes.

    Class attributes: ``bytes_needed`` (first bytes read to decide), ``buffer_size``
    (bytes per relayed read), ``timeout`` (seconds), ``keep_alive``. Subclasses
    implement ``resolve`` (``(host, port, tls)`` or raise :class:`InvalidProtocol`),
    ``connect`` (set ``connection.server``) and may override ``handle`` (relay).

    Protocols are tried in the order given to :class:`mitm.MITM`, before or after
    the built-in ``protocol.HTTP``. Once one's ``resolve`` accepts, ``connect`` and
    ``handle`` run on the event loop the server was started from, with
    ``connection.client.reader`` an :class:`asyncio.StreamReader` and
    ``connection.client.writer`` an object with :class:`asyncio.StreamWriter`'s
    methods (``write``, ``writelines``, ``drain``, ``close``, ``wait_closed``,
    ``is_closing``, ``get_extra_info``, and ``start_tls(server_hostname=host)``,
    which intercepts TLS with a certificate of the server's CA). Unlike the
    original, ``InvalidProtocol`` from ``connect`` ends the connection (the client's
    stream is this protocol's by then), and ``resolve`` sees the first bytes before
    the middlewares' ``client_data`` does. An exception in any of the three is logged with its
    traceback and ends that connection only; the client's socket is closed when the
    connection ends, whatever ``handle`` left open.
    """

    bytes_needed: int = 8192
    buffer_size: int = 8192
    timeout: int = 15
    keep_alive: bool = True

    def __init__(self, certificate_authority: Any = None, middlewares: Optional[List[Middleware]] = None) -> None:
        if certificate_authority is None:
            from mitm.crypto import CertificateAuthority

            certificate_authority = CertificateAuthority()
        self.certificate_authority = certificate_authority
        self.middlewares = middlewares if middlewares else []

    async def resolve(self, connection: Connection, data: bytes) -> Tuple[str, int, bool]:
        """Where the connection goes: ``(host, port, tls)``; raise
        :class:`InvalidProtocol` if ``data`` is not this protocol."""
        raise NotImplementedError

    async def connect(self, connection: Connection, host: str, port: int, tls: bool, data: bytes) -> None:
        """Connects to the destination and sets ``connection.server``; raise
        :class:`InvalidProtocol` to let the next protocol try."""
        raise NotImplementedError

    async def handle(self, connection: Connection) -> None:
        """Relays the connection until it ends. By default: both ways,
        ``buffer_size`` bytes at a time, through each of ``self.middlewares``'
        ``client_data``/``server_data`` (as the original's HTTP protocol relays)."""
        from mitm._protocol import relay

        await relay(self, connection)

    def __repr__(self) -> str:
        return f"Protocol({self.__class__.__name__})"

"""Protocols written in Python on the engine (internal).

The engine reads a client's first bytes and offers them to the protocols in order.
For a :class:`mitm.Protocol` written in Python it calls ``resolve`` (raising
:class:`mitm.InvalidProtocol` passes to the next protocol); the one that accepts gets
the client's stream as ``connection.client.reader`` (an
:class:`asyncio.StreamReader` the engine feeds) and ``.writer`` (a
:class:`StreamWriter`) and runs, on the event loop the server was started from:

1. :func:`connect` — the protocol's ``connect``, which sets ``connection.server``;
2. (the engine fires ``server_connected``)
3. :func:`handle` — the protocol's ``handle``, or :func:`relay` when its class has none
   (both ways through the middlewares' ``client_data``/``server_data``, as the
   original's HTTP protocol relays);
4. :func:`finish` — closes the server's writer (when ``mitm_managed``) and the
   client's; the engine then fires ``server_disconnected`` and
   ``client_disconnected``, and closes the client's socket whatever Python did.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Optional, Tuple

from mitm import _bridge
from mitm.core import Connection, Flow, Protocol

#: What a client reader buffers before it stops reading from the socket (as asyncio's
#: default stream limit; a line longer than this makes ``readline`` fail, as there).
LIMIT = 2**16


def _engine_stub(cls: type, name: str) -> bool:
    """Whether ``cls.name`` is the stub of a protocol the engine runs (``HTTP``)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__.get("_engine") is not None
    return False


def plan(proto: Protocol) -> Dict[str, Any]:
    """What the engine needs of a protocol written in Python: its settings and the
    plans of its ``resolve``/``connect``/``handle`` (``handle`` None: the default
    relay). Raises TypeError for a protocol the engine cannot run."""
    cls = type(proto)
    name = cls.__name__
    out: Dict[str, Any] = {"name": name}
    settings = (("bytes_needed", int), ("buffer_size", int), ("timeout", (int, float)), ("keep_alive", bool))
    for attr, kind in settings:
        value = getattr(proto, attr, None)
        if not isinstance(value, kind) or (attr != "keep_alive" and value <= 0):
            raise TypeError(
                f"{name}.{attr} is {value!r}: set it to a positive number"
                if attr != "keep_alive"
                else f"{name}.keep_alive is {value!r}: set it to True or False"
            )
        out[attr] = value
    for hook in ("resolve", "connect"):
        found = _bridge.hook_plan(proto, hook, Protocol)
        if found is not None and _engine_stub(cls, hook):
            raise TypeError(
                f"{name} inherits {hook}() from a protocol the engine runs (protocol.HTTP), "
                "which Python cannot call: a subclass that changes any of resolve, connect "
                "or handle defines resolve and connect itself"
            )
        if found is None:
            raise TypeError(
                f"{name} does not define {hook}(): a Protocol written in Python defines "
                "async resolve(connection, data) -> (host, port, tls) and "
                "async connect(connection, host, port, tls, data)"
            )
        out[hook] = found
    handle = _bridge.hook_plan(proto, "handle", Protocol)
    out["handle"] = None if handle is None or _engine_stub(cls, "handle") else handle[0]
    return out


class _Transport:
    """What a client reader pauses and resumes when its buffer fills and empties (the
    role of asyncio's transport): the engine stops reading the socket meanwhile."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def pause_reading(self) -> None:
        self._stream.pause_reading()

    def resume_reading(self) -> None:
        self._stream.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # pragma: no cover
        return default


def _deliverer(reader: asyncio.StreamReader) -> Callable[[int, Any], None]:
    """What the engine's reading task calls (on the loop) with each chunk, the EOF,
    an error, or a settled ``hold``."""

    def deliver(kind: int, value: Any) -> None:
        if kind == 0:
            reader.feed_data(value)
        elif kind == 1:
            reader.feed_eof()
        elif kind == 2:
            reader.set_exception(ConnectionResetError(value))
        elif not value.done():
            value.set_result(None)

    return deliver


class StreamWriter:
    """The writing half of a client connected to a Python protocol, with the methods
    of :class:`asyncio.StreamWriter`: ``write`` queues bytes (the engine sends them in
    order), ``drain`` waits until they are sent, ``close``/``wait_closed`` end the
    connection, ``start_tls`` intercepts TLS."""

    def __init__(self, stream: Any, reader: asyncio.StreamReader) -> None:
        self._stream = stream
        self._reader = reader
        self._closing = False

    def write(self, data: bytes) -> None:
        """Queues ``data`` to be sent (ignored once closing, as asyncio does)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._closing or not data:
            return
        self._stream.write(bytes(data))

    def writelines(self, data: Any) -> None:
        """Queues each of ``data``'s chunks."""
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        """Waits until everything written is sent; ConnectionResetError if the
        connection failed or is closed."""
        await self._stream.drain()

    def can_write_eof(self) -> bool:
        """True: the engine's streams can be half-closed."""
        return True

    def write_eof(self) -> None:
        """Sends what is queued, then ends the sending direction."""
        self._stream.write_eof()

    async def start_tls(
        self,
        sslcontext: Any = None,
        *,
        server_hostname: Optional[str] = None,
        ssl_handshake_timeout: Optional[float] = None,
    ) -> None:
        """Upgrades the client's connection to TLS in place, the proxy being the TLS
        server: it presents a certificate for ``server_hostname`` signed by the
        server's certificate authority (the one given to :class:`mitm.MITM`). Bytes
        the client sent already (its ClientHello) are not lost; the reader then gives
        the decrypted bytes. ``sslcontext`` must be None: the engine does the TLS.
        Raises ConnectionResetError if the handshake fails (the connection is closed
        then)."""
        if sslcontext is not None:
            raise TypeError(
                "start_tls: the engine does the TLS with its own certificate for server_hostname; "
                "call start_tls(server_hostname=host) without an SSLContext"
            )
        if not server_hostname:
            raise ValueError("start_tls needs server_hostname=: the host to present a certificate for")
        await self.drain()
        held = asyncio.get_running_loop().create_future()
        self._stream.hold(held)
        await held
        # What the client sent already (its ClientHello, usually) is read again, by TLS.
        buffered = self._reader._buffer
        prefix = bytes(buffered)
        del buffered[:]
        try:
            await self._stream.start_tls(server_hostname, prefix, float(ssl_handshake_timeout or 60.0))
        except BaseException:
            self._reader.feed_eof()
            raise

    def close(self) -> None:
        """Sends what is queued, then closes the connection."""
        self._closing = True
        self._stream.close()

    def is_closing(self) -> bool:
        """Whether ``close`` was called (or the connection ended)."""
        return self._closing or self._stream.closed

    async def wait_closed(self) -> None:
        """Waits until the connection is closed."""
        await self._stream.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` (the client's ``(ip, port)``) and ``sockname`` (the proxy's)."""
        if name == "peername":
            return self._stream.peername
        if name == "sockname":
            return self._stream.sockname or default
        return default

    @property
    def transport(self) -> "StreamWriter":
        """This writer (what the original read ``get_extra_info`` from)."""
        return self

    _transport = transport

    def __repr__(self) -> str:
        return f"<mitm StreamWriter {self._stream.peername!r}{' closing' if self.is_closing() else ''}>"


def attach(connection: Connection, stream: Any) -> None:
    """Gives ``connection.client`` a reader and a writer over the engine's ``stream``
    (on the event loop)."""
    reader = asyncio.StreamReader(limit=LIMIT)
    reader.set_transport(_Transport(stream))  # type: ignore[arg-type]
    stream.start_reading(asyncio.get_running_loop().call_soon_threadsafe, _deliverer(reader))
    connection.client.reader = reader
    connection.client.writer = StreamWriter(stream, reader)


async def connect(
    proto: Protocol, connection: Connection, stream: Any, host: str, port: int, tls: bool, data: bytes
) -> Tuple[bool, Optional[Tuple[str, int]]]:
    """Runs ``proto.connect`` with the client's streams attached: whether it set
    ``connection.server``, and the server's ``(ip, port)`` if known."""
    attach(connection, stream)
    await proto.connect(connection=connection, host=host, port=port, tls=tls, data=data)
    server = connection.server
    if not server:
        return (False, None)
    get = getattr(server.writer, "get_extra_info", None)
    peer = get("peername") if get is not None else None
    if peer:
        return (True, (str(peer[0]), int(peer[1])))
    if server.host is not None and server.port is not None:
        return (True, (str(server.host), int(server.port)))
    return (True, None)


async def handle(proto: Protocol, connection: Connection, custom: Any) -> None:
    """Runs the protocol's ``handle``, or the default relay."""
    if custom is not None:
        await custom(connection=connection)
    else:
        await relay(proto, connection)


async def relay(proto: Protocol, connection: Connection) -> None:
    """The default ``handle``: relays both ways, ``buffer_size`` bytes at a time,
    through each middleware's ``client_data``/``server_data``, until either side ends
    (or, without ``keep_alive``, after one exchange); a read waiting longer than
    ``timeout`` seconds ends it too."""
    run_once = True
    while (
        not connection.client.reader.at_eof()
        and not connection.server.reader.at_eof()
        and (proto.keep_alive or run_once)
    ):
        done = asyncio.Event()
        await asyncio.gather(
            _relay_one(proto, connection, done, Flow.SERVER_TO_CLIENT),
            _relay_one(proto, connection, done, Flow.CLIENT_TO_SERVER),
        )
        run_once = False


async def _relay_one(proto: Protocol, connection: Connection, done: asyncio.Event, flow: Flow) -> None:
    if flow is Flow.CLIENT_TO_SERVER:
        reader, writer, hook = connection.client.reader, connection.server.writer, "client_data"
    else:
        reader, writer, hook = connection.server.reader, connection.client.writer, "server_data"
    middlewares = list(getattr(proto, "middlewares", None) or [])
    stop = asyncio.ensure_future(done.wait())
    try:
        while not done.is_set() and not reader.at_eof():
            read = asyncio.ensure_future(reader.read(proto.buffer_size))
            finished, _ = await asyncio.wait(
                {read, stop}, timeout=proto.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if read not in finished:
                read.cancel()
                done.set()
                return
            data = read.result()
            if not data:
                done.set()
                return
            for middleware in middlewares:
                data = await getattr(middleware, hook)(connection, data)
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(
                        f"{type(middleware).__name__}.{hook} returned {type(data).__name__}: a data hook "
                        "returns the bytes to send on (return data to pass them unchanged)"
                    )
            writer.write(data)
            await writer.drain()
    finally:
        stop.cancel()


async def finish(connection: Connection) -> None:
    """Closes the server's writer (when ``mitm_managed``) and the client's."""
    server = connection.server
    if server and server.mitm_managed:
        try:
            server.writer.close()
            await asyncio.wait_for(server.writer.wait_closed(), 5)
        except (Exception, asyncio.TimeoutError):  # already gone: closed is what we want
            pass
    client = connection.client
    if client.mitm_managed and isinstance(client.writer, StreamWriter):
        client.writer.close()


async def abandon(connection: Connection) -> None:
    """The engine dropped the connection (the server stopped): closes the server's
    writer, so that a ``handle`` still reading it sees its end."""
    server = connection.server
    if server and server.mitm_managed:
        try:
            server.writer.close()
        except Exception:  # pragma: no cover - already closed
            pass


def report(what: str, exc: BaseException) -> None:
    """Logs a protocol's exception with its traceback."""
    _bridge.report(what, exc)

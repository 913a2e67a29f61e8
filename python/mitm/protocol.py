"""Protocols: how the proxy learns what a client speaks and where it goes.

``HTTP`` is the engine's own HTTP/1 and HTTP/2 proxy (``CONNECT`` with TLS
interception, plain requests to the port the ``Host`` names, keep-alive clients whose
requests go to several origins). Subclass :class:`mitm.Protocol` for your own.
"""

from __future__ import annotations

from typing import Tuple

from mitm.core import Connection, InvalidProtocol, Protocol

__all__ = ["HTTP", "InvalidProtocol", "Protocol"]


class HTTP(Protocol):
    """The HTTP proxy protocol, run by the engine (with TLS interception after
    ``CONNECT``). Its attributes are the original's; its methods run in Rust and are
    not called from Python."""

    bytes_needed: int = 8192
    buffer_size: int = 8192
    timeout: int = 15
    keep_alive: bool = True

    #: The engine protocol this class stands for.
    _engine = "http"

    async def resolve(self, connection: Connection, data: bytes) -> Tuple[str, int, bool]:
        raise NotImplementedError("protocol.HTTP runs in the engine")

    async def connect(self, connection: Connection, host: str, port: int, tls: bool, data: bytes) -> None:
        raise NotImplementedError("protocol.HTTP runs in the engine")

    async def handle(self, connection: Connection) -> None:
        raise NotImplementedError("protocol.HTTP runs in the engine")

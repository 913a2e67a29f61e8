"""``mitmproxy.connection``: the client and the server of a flow or a connection
hook, made from the engine's :class:`mitm.core.Connection`.

``Client`` has ``peername``, ``sockname`` (None: not known here), ``address``
(= ``peername``), ``sni`` and ``tls_established`` (from the first request seen on it,
None/False before), ``id``, ``timestamp_start``; ``Server`` has ``address`` (where the
flow goes), ``peername`` (the address connected to, once connected), ``sni``,
``tls_established``, ``id``. Other attributes raise AttributeError.
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any, Optional, Tuple

from mitm.addons.compat._unsupported import Refusing


class ConnectionState(enum.Flag):
    """Which sides of a connection are open."""

    CLOSED = 0
    CAN_READ = 1
    CAN_WRITE = 2
    OPEN = CAN_READ | CAN_WRITE


def _address(host: Any) -> Optional[Tuple[str, int]]:
    if host is None or getattr(host, "host", None) is None:
        return None
    return (host.host, host.port)


class Connection(Refusing):
    """What clients and servers have in common."""

    __slots__ = ("_conn", "_id", "timestamp_start", "sni", "tls_established", "state", "error")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._id: Optional[str] = None
        self.timestamp_start: Optional[float] = time.time()
        self.sni: Optional[str] = None
        self.tls_established = False
        self.state = ConnectionState.OPEN
        self.error: Optional[str] = None

    @property
    def id(self) -> str:
        """A UUID, made when first read."""
        if self._id is None:
            self._id = str(uuid.uuid4())
        return self._id

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.OPEN

    @property
    def tls(self) -> bool:
        return self.tls_established

    @property
    def sockname(self) -> None:
        """Not known to the addon host: None."""
        return None


class Client(Connection):
    """The client of a connection."""

    __slots__ = ()

    @property
    def peername(self) -> Optional[Tuple[str, int]]:
        return _address(getattr(self._conn, "client", None))

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        return self.peername

    def __repr__(self) -> str:
        return f"Client({self.peername})"


class Server(Connection):
    """The server a connection goes to."""

    __slots__ = ("_target", "_flow")

    def __init__(self, conn: Any, target: Optional[Tuple[str, int]] = None, flow: Any = None) -> None:
        super().__init__(conn)
        self._target = target
        self._flow = flow

    @property
    def peername(self) -> Optional[Tuple[str, int]]:
        return _address(getattr(self._conn, "server", None))

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        if self._target is not None:
            return self._target
        flow = self._flow
        if flow is not None and flow.__dict__.get("_connected"):
            request = flow.request
            return (request.host, request.port)
        return self.peername

    @address.setter
    def address(self, value: Tuple[str, int]) -> None:
        raise AttributeError(
            "Server.address cannot be changed by mitm's addon host; change "
            "flow.request.host/port in request (or requestheaders) to send a request elsewhere"
        )

    def __repr__(self) -> str:
        return f"Server({self.address})"


__all__ = ["Connection", "Client", "Server", "ConnectionState"]

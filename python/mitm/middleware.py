"""Built-in middlewares: ``Log`` (one line per event) and ``HTTPLog`` (requests and
responses, pretty-printed)."""

from __future__ import annotations

import logging
import sys

from mitm.core import Connection, Middleware

__all__ = ["Log", "HTTPLog", "Middleware"]

logger = logging.getLogger("mitm")


def _bold(text: object) -> str:
    # The original always bolds; only a terminal shows it, so only a terminal gets it.
    if getattr(sys.stdout, "isatty", lambda: False)():
        return f"\033[1m{text}\033[0m"
    return str(text)


class Log(Middleware):
    """Logs every event of every connection (the original's lines), at ``INFO`` on the
    ``mitm`` logger."""

    async def mitm_started(self, host: str, port: int) -> None:
        logger.info("MITM server started on %s.", _bold(f"{host}:{port}"))

    async def client_connected(self, connection: Connection) -> None:
        logger.info("Client %s has connected.", _bold(connection.client))

    async def server_connected(self, connection: Connection) -> None:
        logger.info(
            "Client %s has connected to server %s.",
            _bold(connection.client),
            _bold(connection.server),
        )

    async def client_data(self, connection: Connection, data: bytes) -> bytes:
        if not connection.server:
            logger.info("Client %s to mitm: \n\n\t%r\n", connection.client, data)
        else:
            logger.info("Client %s to %s: \n\n\t%r\n", connection.client, connection.server, data)
        return data

    async def server_data(self, connection: Connection, data: bytes) -> bytes:
        logger.info("Server %s to client %s: \n\n\t%r\n", connection.server, connection.client, data)
        return data

    async def client_disconnected(self, connection: Connection) -> None:
        logger.info("Client %s has disconnected.", connection.client)

    async def server_disconnected(self, connection: Connection) -> None:
        logger.info("Server %s has disconnected.", connection.server)


def _pretty(data: bytes, arrow: str) -> str:
    """A message's head, one ``arrow``-prefixed line per line, then its body's size."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [f"{arrow} {line}" for line in head.decode("latin-1").split("\r\n")]
    if sep and body:
        lines.append(f"{arrow} ")
        lines.append(f"{arrow} [{len(body)} bytes of body]")
    return "\n".join(lines)


def _is_head(data: bytes, request: bool) -> bool:
    first = data.split(b"\r\n", 1)[0]
    if request:
        parts = first.split(b" ")
        return len(parts) == 3 and parts[2].startswith(b"HTTP/")
    return first.startswith(b"HTTP/")


class HTTPLog(Log):
    """Logs requests and responses pretty-printed (``→`` for the client's, ``←`` for
    the server's), and the connection events as :class:`Log` does. A chunk that does not
    start a message (the rest of a body, bytes that are not HTTP) is logged by its size
    instead of being misread."""

    async def client_data(self, connection: Connection, data: bytes) -> bytes:
        where = "mitm" if not connection.server else str(connection.server)
        if _is_head(data, request=True):
            logger.info("Client %s to %s: \n\n%s\n", connection.client, where, _pretty(data, "→"))
        else:
            logger.info("Client %s to %s: %d more bytes", connection.client, where, len(data))
        return data

    async def server_data(self, connection: Connection, data: bytes) -> bytes:
        if _is_head(data, request=False):
            logger.info(
                "Server %s to client %s: \n\n%s\n", connection.server, connection.client, _pretty(data, "←")
            )
        else:
            logger.info("Server %s to client %s: %d more bytes", connection.server, connection.client, len(data))
        return data

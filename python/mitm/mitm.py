"""The man-in-the-middle server: :class:`MITM`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from mitm import _bridge, _native
from mitm.core import Connection, Host, InvalidProtocol, Middleware, Protocol  # noqa: F401 - the original's names here
from mitm.crypto import CertificateAuthority
from mitm.middleware import Log
from mitm.protocol import HTTP

__all__ = ["MITM"]

logger = logging.getLogger("mitm")


def default_data_dir() -> Path:
    """Where ``MITM()`` keeps its CA unless given one: the original's user data
    directory (``~/.local/share/mitm`` on Linux)."""
    found = _native.default_ca_dir()
    if found is None:  # pragma: no cover - platforms without a data directory
        return Path.home() / ".mitm"
    return Path(found)


def _instances(items: Sequence[Any], make: Any) -> List[Any]:
    return [make(item) if isinstance(item, type) else item for item in items]


class MITM:
    """The man-in-the-middle server.

    ``protocols`` and ``middlewares`` take classes (instantiated here, as the original
    does) or instances. Without a ``certificate_authority`` the CA kept in the user
    data directory is used, made there on the first start and kept across restarts
    (the original made a new one at every start).

    Example::

        from mitm import MITM, middleware, protocol

        mitm = MITM(host="127.0.0.1", port=8888, protocols=[protocol.HTTP],
                    middlewares=[middleware.Log])
        mitm.run()

    Inside a running asyncio program, use ``await mitm.start()`` and
    ``await mitm.stop()``, or ``async with MITM(...) as mitm:``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8888,
        protocols: Optional[List[Union[Protocol, type]]] = None,
        middlewares: Optional[List[Union[Middleware, type]]] = None,
        certificate_authority: Optional[CertificateAuthority] = None,
        run: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        if certificate_authority is None:
            certificate_authority = CertificateAuthority.init(default_data_dir())
        self.certificate_authority = certificate_authority
        self.middlewares: List[Middleware] = _instances(
            [Log] if middlewares is None else middlewares, lambda cls: cls()
        )
        self.protocols: List[Protocol] = _instances(
            [HTTP] if protocols is None else protocols,
            lambda cls: cls(certificate_authority=self.certificate_authority, middlewares=self.middlewares),
        )
        self._server: Any = None
        if run:
            self.run()

    # -- running -------------------------------------------------------------------

    def _protocol_plans(self) -> List[Any]:
        plans = []
        for proto in self.protocols:
            engine = getattr(proto, "_engine", None)
            if engine is not None and _builtin(proto):
                plans.append(("builtin", engine, proto))
            else:
                plans.append(("python", type(proto).__name__, proto))
        return plans

    async def start(self) -> None:
        """Binds and starts serving, on the engine's threads; returns once listening.
        Hooks that await run on the calling event loop."""
        if self._server is not None and not self._server.stopped:
            raise RuntimeError("this MITM is running already")
        loop = asyncio.get_running_loop()
        self._server = _native.start(
            loop,
            self.host,
            self.port,
            self._protocol_plans(),
            [_bridge.plan(m, Middleware) for m in self.middlewares],
            self.certificate_authority._native,
        )

    @property
    def addresses(self) -> List[tuple]:
        """``(host, port)`` of every listener, the real port when 0 was asked for."""
        return list(self._server.addresses) if self._server is not None else []

    async def stop(self) -> None:
        """Stops accepting and waits for the connections in flight (a few seconds at
        most)."""
        server = self._server
        if server is None:
            return
        server.stop()
        await server.wait()

    async def wait(self) -> None:
        """Waits until the server stops."""
        if self._server is not None:
            await self._server.wait()

    async def entry(self) -> None:
        """Serves until cancelled (the original's coroutine)."""
        await self.start()
        try:
            await self._server.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> "MITM":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def run(self) -> None:
        """Serves until Ctrl-C (or ``SIGINT``), then stops cleanly."""
        try:
            asyncio.run(self.entry())
        except KeyboardInterrupt:
            logger.info("MITM server stopped.")

    def __repr__(self) -> str:
        return f"MITM({self.host}:{self.port}, protocols={self.protocols}, middlewares={self.middlewares})"


def _builtin(proto: Protocol) -> bool:
    """Whether ``proto`` is a built-in protocol, or a subclass that changes none of
    its methods."""
    for cls in type(proto).__mro__:
        if cls.__dict__.get("_engine") is not None:
            base = cls
            break
    else:
        return False
    return all(getattr(type(proto), name) is getattr(base, name) for name in ("resolve", "connect", "handle"))

"""The man-in-the-middle server: :class:`MITM`."""

from __future__ import annotations

import asyncio
import inspect
import logging
from pathlib import Path
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

from mitm import _bridge, _native, http
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

    Beyond the original's arguments, keyword only (None: the engine's default):

    - ``modes``: listeners in mitmproxy's syntax, replacing the one of ``host`` and
      ``port``: ``"regular@8080"``, ``"socks5@1080"``,
      ``"reverse:https://example.com@8443"``, ``"upstream:http://proxy:3128"``,
      ``"transparent"``; a spec without ``@port`` listens on ``host:port``.
    - ``save``: capture files the finished flows are written to, by extension:
      ``.har`` (HAR 1.2), ``.sqlite``/``.db``, else mitmproxy's flow format. A file that
      exists is never overwritten (``FileExistsError`` at start); the files are
      complete once ``stop()`` returns.
    - ``max_connections`` (client and upstream sockets together; more clients are
      refused), ``body_size_limit`` (bytes; larger bodies get ``413``/``502``),
      ``timeout``, ``connect_timeout``, ``response_timeout``, ``idle_timeout``
      (seconds).
    - ``ssl_insecure`` (do not verify upstream certificates: for tests and servers you
      control), ``upstream_ca`` (PEM files of CAs to trust upstream, besides the
      system's), ``proxy_auth`` (``"user:password"`` asked of every client),
      ``keep_host_header`` (a reverse proxy keeps the client's ``Host``).

    The engine's own log lines (upstream failures, refused clients, ...) go to the
    ``mitm.engine`` logger, at ``WARNING`` and above unless its level is set lower.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8888,
        protocols: Optional[List[Union[Protocol, type]]] = None,
        middlewares: Optional[List[Union[Middleware, type]]] = None,
        certificate_authority: Optional[CertificateAuthority] = None,
        run: bool = False,
        *,
        modes: Union[None, str, Sequence[str]] = None,
        save: Union[None, str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]] = None,
        max_connections: Optional[int] = None,
        body_size_limit: Optional[int] = None,
        timeout: Optional[float] = None,
        connect_timeout: Optional[float] = None,
        response_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        ssl_insecure: bool = False,
        upstream_ca: Union[None, str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]] = None,
        proxy_auth: Union[None, str, Tuple[str, str]] = None,
        keep_host_header: bool = False,
    ) -> None:
        # Beyond the original's arguments (keyword only): see the class's docs.
        self.options = http.server_options(
            modes=modes,
            save=save,
            max_connections=max_connections,
            body_size_limit=body_size_limit,
            timeout=timeout,
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
            idle_timeout=idle_timeout,
            ssl_insecure=ssl_insecure,
            upstream_ca=upstream_ca,
            proxy_auth=proxy_auth,
            keep_host_header=keep_host_header,
        )
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
            http.engine_options(self.options, self.middlewares, self.protocols),
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
        for m in self.middlewares:
            # Beyond the original: a middleware may have `mitm_stopped` (mitm.addons's
            # Addons calls its scripts' `done` there).
            stopped = getattr(m, "mitm_stopped", None)
            if callable(stopped):
                try:
                    out = stopped()
                    if inspect.isawaitable(out):
                        await out
                except Exception as exc:  # noqa: BLE001 - one middleware must not stop the others'
                    logger.error("%s.mitm_stopped raised %s: %s", type(m).__name__, type(exc).__name__, exc, exc_info=exc)

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

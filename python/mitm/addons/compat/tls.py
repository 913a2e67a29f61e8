"""``mitmproxy.tls``: what ``tls_clienthello`` gets.

``ClientHelloData`` has ``context`` (``client``: the connection's ``Client``, its
``sni`` set from the hello; ``server``: the ``Server`` the tunnel goes to, its
``address`` the tunnel's target), ``client_hello`` (``sni``, ``alpn_protocols``) and
``ignore_connection``: set it to True to relay the connection untouched (the client
talks TLS with the origin itself; no flows are seen). ``establish_server_tls_first`` is
accepted and has no effect (the engine connects the origin as it needs). Other
attributes raise AttributeError.
"""

from __future__ import annotations

from typing import Any, List, Optional

from mitm.addons.compat._unsupported import Refusing


class ClientHello(Refusing):
    """What the client's TLS ClientHello offered."""

    __slots__ = ("sni", "alpn_protocols")

    def __init__(self, sni: Optional[str], alpn_protocols: List[bytes]) -> None:
        self.sni = sni
        self.alpn_protocols = alpn_protocols

    def __repr__(self) -> str:
        return f"ClientHello(sni={self.sni!r}, alpn_protocols={self.alpn_protocols!r})"


class Context(Refusing):
    """The connection a hook is about: its ``client`` and ``server``."""

    __slots__ = ("client", "server")

    def __init__(self, client: Any, server: Any) -> None:
        self.client = client
        self.server = server

    def __repr__(self) -> str:
        return f"Context(client={self.client!r}, server={self.server!r})"


class ClientHelloData(Refusing):
    """``tls_clienthello``'s argument."""

    __slots__ = ("context", "client_hello", "ignore_connection", "establish_server_tls_first")

    def __init__(self, context: Context, client_hello: ClientHello) -> None:
        self.context = context
        self.client_hello = client_hello
        self.ignore_connection = False
        self.establish_server_tls_first = False

    def __repr__(self) -> str:
        return f"ClientHelloData(client_hello={self.client_hello!r}, ignore_connection={self.ignore_connection!r})"


__all__ = ["ClientHello", "ClientHelloData", "Context"]

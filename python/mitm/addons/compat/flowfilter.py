"""``mitmproxy.flowfilter``: ``parse(expr)`` gives a filter callable on a flow
(``f(flow) -> bool``), in mitmproxy's filter language as the engine implements it
(``~d``, ``~m``, ``~u``, ``~h``, ``~b``, ``~c``, ``~q``, ``~s``, ``~e``, ``!``, ``&``,
``|``, ...); ``match(expr_or_filter, flow)``."""

from __future__ import annotations

from typing import Any, Optional, Union

from mitm._native import Filter as _Filter


def _address(addr: Optional[tuple]) -> Optional[str]:
    if not addr:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TFilter:
    """A parsed filter: call it with an ``HTTPFlow``."""

    __slots__ = ("_filter", "pattern")

    def __init__(self, native: _Filter, pattern: str) -> None:
        self._filter = native
        self.pattern = pattern

    def __call__(self, flow: Any) -> bool:
        native = getattr(flow, "_n", None)
        if native is None:
            return False  # not an HTTP flow: no operator here matches it
        server = getattr(flow, "server_conn", None)
        return self._filter.matches(
            native,
            failed=native.error is not None,
            client=_address(flow.client_conn.peername),
            server=_address(server.peername) if server is not None else None,
            marked=flow.marked if isinstance(flow.marked, str) else ("marked" if flow.marked else ""),
            comment=flow.comment or "",
        )

    def __str__(self) -> str:
        return self.pattern

    def __repr__(self) -> str:
        return f"<flowfilter {self.pattern!r}>"


def parse(expr: str) -> TFilter:
    """Parses ``expr``; a ``ValueError`` says where it is wrong."""
    return TFilter(_Filter(expr), expr)


def match(flt: Union[str, TFilter], flow: Any) -> bool:
    """Whether ``flow`` matches ``flt`` (a filter or its text)."""
    if isinstance(flt, str):
        flt = parse(flt)
    return flt(flow)


__all__ = ["parse", "match", "TFilter"]

"""``mitmproxy.websocket``: a WebSocket's messages as a script sees them on
``flow.websocket``."""

from __future__ import annotations

import time
from typing import Any, List, Optional

from mitm.addons.compat._unsupported import Refusing


class WebSocketMessage(Refusing):
    """One WebSocket message. In ``websocket_message`` the last of
    ``flow.websocket.messages`` is the one on its way: change ``content``/``text`` or
    ``drop()`` it. Older messages are read-only records."""

    __slots__ = ("_native", "_content", "from_client", "is_text", "timestamp", "_dropped")

    def __init__(self, native: Any) -> None:
        self._native = native
        self._content: Optional[bytes] = None
        self.from_client: bool = native.from_client
        self.is_text: bool = native.is_text
        self.timestamp = time.time()
        self._dropped = False

    def _freeze(self) -> None:
        """Keeps a copy of the content; the native message is on the wire now."""
        if self._native is not None:
            self._content = self._native.content
            self._dropped = self._native.dropped
            self._native = None

    @property
    def type(self) -> int:
        """The opcode: 1 text, 2 binary."""
        return 1 if self.is_text else 2

    @property
    def content(self) -> bytes:
        return self._native.content if self._native is not None else (self._content or b"")

    @content.setter
    def content(self, value: bytes) -> None:
        if self._native is None:
            raise ValueError("this WebSocket message is sent already; change it in its websocket_message hook")
        self._native.content = value

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @text.setter
    def text(self, value: str) -> None:
        self.content = value.encode("utf-8")

    def drop(self) -> None:
        """Does not send the message on."""
        if self._native is None:
            raise ValueError("this WebSocket message is sent already; drop it in its websocket_message hook")
        self._native.drop()

    @property
    def dropped(self) -> bool:
        return self._native.dropped if self._native is not None else self._dropped

    def __repr__(self) -> str:
        side = "client" if self.from_client else "server"
        return f"WebSocketMessage({side}, {self.content[:40]!r})"


class WebSocketData(Refusing):
    """``flow.websocket``: the messages seen so far and how the WebSocket closed."""

    __slots__ = ("messages", "closed_by_client", "close_code", "close_reason", "timestamp_end")

    def __init__(self) -> None:
        self.messages: List[WebSocketMessage] = []
        self.closed_by_client: Optional[bool] = None
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.timestamp_end: Optional[float] = None

    def __repr__(self) -> str:
        return f"WebSocketData({len(self.messages)} messages)"


__all__ = ["WebSocketMessage", "WebSocketData"]

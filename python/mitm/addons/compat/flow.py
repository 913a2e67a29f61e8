"""``mitmproxy.flow``: the ``Error`` a failed flow has."""

from __future__ import annotations

import time
from typing import Optional


class Error:
    """Why a flow failed: ``msg`` and when (``timestamp``)."""

    KILLED_MESSAGE = "Connection killed."

    def __init__(self, msg: str, timestamp: Optional[float] = None) -> None:
        self.msg = msg
        self.timestamp = time.time() if timestamp is None else timestamp

    def __str__(self) -> str:
        return self.msg

    def __repr__(self) -> str:
        return f"Error({self.msg!r})"


__all__ = ["Error"]

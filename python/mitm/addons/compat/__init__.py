"""The part of mitmproxy's addon API that addon scripts use, on mitm's engine.

Scripts loaded by :class:`mitm.addons.Addons` import this package as ``mitmproxy``
(``from mitmproxy import http, ctx``); nothing else sees it under that name unless no
real mitmproxy is installed (see ``mitm.addons._importer``). Its modules mirror
mitmproxy's names: ``http``, ``ctx``, ``script`` (``concurrent``), ``flowfilter``,
``addonmanager`` (``Loader``), ``connection``, ``websocket``, ``log``,
``exceptions``. What mitmproxy has and this layer does not raises an AttributeError
naming it.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = (
    "http",
    "ctx",
    "script",
    "flowfilter",
    "addonmanager",
    "connection",
    "websocket",
    "log",
    "exceptions",
)

__version__ = "11.0.0"  # the mitmproxy API this layer follows


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(
        f"mitmproxy.{name} is part of mitmproxy's API that mitm's addon host does not "
        "support (see README 'Addons (Python)' for what is)"
    )

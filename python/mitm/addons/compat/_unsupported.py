"""How the ``mitmproxy`` compatibility layer refuses what it does not support."""

from __future__ import annotations

from typing import Any, NoReturn


def missing(owner: str, name: str) -> NoReturn:
    """Raises the AttributeError for ``owner.name``, which mitmproxy has and mitm's
    addon host does not."""
    raise AttributeError(
        f"{owner}.{name} is part of mitmproxy's API that mitm's addon host does not "
        "support (see README 'Addons (Python)' for what is)"
    )


class Refusing:
    """A base whose unknown attributes raise :func:`missing`'s AttributeError."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        missing(type(self).__name__, name)

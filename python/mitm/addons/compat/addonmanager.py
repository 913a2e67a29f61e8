"""``mitmproxy.addonmanager``: the ``Loader`` a script's ``load`` hook gets."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from mitm.addons.compat._unsupported import Refusing


class Loader(Refusing):
    """Passed to ``load(loader)``: ``add_option`` declares an option the script reads
    as ``ctx.options.<name>`` (and the user sets with ``--set name=value``)."""

    __slots__ = ("_options", "_script")

    def __init__(self, options: Any, script: str) -> None:
        self._options = options
        self._script = script

    def add_option(
        self,
        name: str,
        typespec: Any,
        default: Any,
        help: str,
        choices: Optional[Sequence[str]] = None,
    ) -> None:
        """Declares the option ``name`` of type ``typespec`` (``str``, ``int``,
        ``float``, ``bool``, ``Optional[str]``, ``Sequence[str]``) with ``default``."""
        self._options._declare(name, typespec, default, help, choices, self._script)

    def add_command(self, path: str, func: Any) -> None:
        """Commands are not supported: an AttributeError says so."""
        raise AttributeError(
            "Loader.add_command: mitm's addon host has no command console; call the "
            f"function from a hook instead ({path!r})"
        )


__all__ = ["Loader"]

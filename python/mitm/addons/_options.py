"""The options addon scripts declare with ``loader.add_option`` and read as
``ctx.options.<name>``, and the ``--set name=value`` texts that set them."""

from __future__ import annotations

import collections.abc
import threading
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple


class OptionsError(ValueError):
    """An unknown option, or a value its type does not take."""


def _convert(name: str, typespec: Any, text: str) -> Any:
    """``text`` (from ``--set``) as a value of ``typespec``."""
    origin = typing.get_origin(typespec)
    args = typing.get_args(typespec)
    if origin is typing.Union and type(None) in args:
        if text == "":
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, inner[0], text) if len(inner) == 1 else text
    if typespec is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise OptionsError(f"option {name} takes true or false, not {text!r}")
    if typespec is int:
        try:
            return int(text)
        except ValueError:
            raise OptionsError(f"option {name} takes an integer, not {text!r}") from None
    if typespec is float:
        try:
            return float(text)
        except ValueError:
            raise OptionsError(f"option {name} takes a number, not {text!r}") from None
    if origin in (list, tuple, collections.abc.Sequence) or typespec in (list, tuple, Sequence):
        return [part for part in text.split(",") if part] if text else []
    return text


def _check(name: str, typespec: Any, value: Any) -> Any:
    """``value`` if it fits ``typespec`` (as far as plain types tell)."""
    if isinstance(value, str) and typespec is not str and typing.get_origin(typespec) is None and typespec in (
        bool,
        int,
        float,
    ):
        return _convert(name, typespec, value)
    return value


class Options:
    """``ctx.options``: the declared options by name (reading an undeclared one is an
    AttributeError naming it). Values given before a script declares them (``--set``)
    are kept as text and converted when it does."""

    def __init__(self, pending: Optional[Mapping[str, str]] = None) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_specs", {})  # name -> (typespec, default, help, choices, script)
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_pending", dict(pending or {}))
        object.__setattr__(self, "_errors", [])
        object.__setattr__(self, "_fresh", set())  # declared during the load in progress

    def _declare(self, name: str, typespec: Any, default: Any, help: str, choices: Any, script: str) -> None:
        with self._lock:
            known = self._specs.get(name)
            if known is not None and known[4] != script:
                raise OptionsError(f"option {name} is declared by {known[4]} already")
            self._specs[name] = (typespec, default, help, choices, script)
            self._fresh.add(name)
            if name not in self._values:
                self._values[name] = default
            if name in self._pending:
                # A value the user gave that does not fit is reported by the host, not
                # as an error of the script's `load`.
                try:
                    value = _convert(name, typespec, self._pending.pop(name))
                    if choices and value not in choices:
                        raise OptionsError(f"option {name} takes one of {list(choices)}, not {value!r}")
                except OptionsError as e:
                    self._errors.append(str(e))
                else:
                    self._values[name] = value

    def _declared_by(self, script: str) -> Set[str]:
        """The options ``script`` declared (before it is loaded again)."""
        with self._lock:
            return {name for name, spec in self._specs.items() if spec[4] == script}

    def _forget(self, script: str, names: Set[str]) -> None:
        """Drops the declarations ``names`` of ``script`` that its new load did not
        make again (kept meanwhile, so hooks in flight can still read them)."""
        with self._lock:
            for name in names:
                spec = self._specs.get(name)
                if spec is not None and spec[4] == script and name not in self._fresh:
                    del self._specs[name]
            self._fresh.clear()

    def _bad(self) -> List[str]:
        """What was wrong with the values given for declared options."""
        return list(self._errors)

    def _unknown(self) -> Set[str]:
        """Values given for options no script declared."""
        return set(self._pending)

    def keys(self) -> Set[str]:
        """The names of the declared options."""
        return set(self._specs)

    def update(self, **values: Any) -> None:
        """Sets declared options (scripts' ``configure`` hooks see the names later)."""
        for name, value in values.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        specs = object.__getattribute__(self, "_specs")
        if name in specs:
            return values[name]
        raise AttributeError(
            f"No such option: {name} (mitm's addon host knows only the options scripts "
            "declare with loader.add_option)"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._specs:
            raise AttributeError(f"No such option: {name}")
        self._values[name] = _check(name, self._specs[name][0], value)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def items(self) -> Dict[str, Tuple[Any, Any]]:
        """``{name: value}`` of every declared option."""
        return {n: self._values[n] for n in self._specs}

    def __repr__(self) -> str:
        return f"Options({self.items()})"

"""How addon scripts get ``mitmproxy`` (this package's ``compat`` layer) without
shadowing a real mitmproxy for other code.

Two parts:

- every script module runs with builtins of its own whose ``__import__`` maps
  ``mitmproxy`` and ``mitmproxy.*`` to ``mitm.addons.compat`` and ``.compat.*``: the
  imports a script's code makes (at load or later, inside its hooks) get the layer,
  and ``sys.modules['mitmproxy']`` is never touched by them;
- a ``sys.meta_path`` finder, installed when an ``Addons`` is made, serves
  ``mitmproxy*`` to everything else (e.g. a helper module a script imports) only when
  no real mitmproxy can be imported: with one installed it answers nothing.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

_PREFIX = "mitmproxy"
_TARGET = "mitm.addons.compat"
_lock = threading.Lock()
_installed = False


def _mapped(name: str) -> Optional[str]:
    if name == _PREFIX:
        return _TARGET
    if name.startswith(_PREFIX + "."):
        return _TARGET + name[len(_PREFIX) :]
    return None


def _script_import(
    name: str,
    globals: Optional[Dict[str, Any]] = None,
    locals: Optional[Dict[str, Any]] = None,
    fromlist: Sequence[str] = (),
    level: int = 0,
) -> ModuleType:
    """``__import__`` for scripts: ``mitmproxy*`` is the compat layer."""
    target = _mapped(name) if level == 0 else None
    if target is None:
        return builtins.__import__(name, globals, locals, fromlist, level)
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith(_TARGET):
            raise
        missing = _PREFIX + e.name[len(_TARGET) :]
        raise ModuleNotFoundError(
            f"{missing} is part of mitmproxy's API that mitm's addon host does not support "
            "(see README 'Addons (Python)' for what is)",
            name=missing,
        ) from None
    if fromlist:
        for item in fromlist:
            if item != "*" and not hasattr(module, item):
                try:
                    importlib.import_module(f"{target}.{item}")
                except ModuleNotFoundError:
                    pass  # `from x import name` then raises ImportError naming it
        return module
    return importlib.import_module(_TARGET)


def script_builtins() -> Dict[str, Any]:
    """The builtins a script module runs with."""
    own = dict(builtins.__dict__)
    own["__import__"] = _script_import
    return own


class _Alias(importlib.abc.Loader):
    """Loads ``mitmproxy.x`` as the already imported ``mitm.addons.compat.x``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass


class _Fallback(importlib.abc.MetaPathFinder):
    """Serves ``mitmproxy*`` when no real mitmproxy is importable."""

    def __init__(self) -> None:
        self._real: Optional[bool] = None

    def _real_installed(self) -> bool:
        if self._real is None:
            self._real = importlib.machinery.PathFinder.find_spec(_PREFIX) is not None
        return self._real

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        mapped = _mapped(fullname)
        if mapped is None or self._real_installed():
            return None
        try:
            importlib.import_module(mapped)
        except ModuleNotFoundError:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(mapped))


def install() -> None:
    """Installs the fallback finder (once per process)."""
    global _installed
    with _lock:
        if not _installed:
            sys.meta_path.insert(0, _Fallback())
            _installed = True

"""Prints, as JSON, the public surface of the ``mitm`` package this Python imports: its
modules (walked from the package), the public names of each, and for the package's own
classes and functions their public members and parameters.

A name is public when it does not start with ``_`` and is the package's own: a module
of the package, a class or function defined in it, or a plain constant (``int``,
``str``, ``float``, ``bool``). What a module merely imports (``asyncio``, ``Optional``,
pyOpenSSL, ``logger``...) is not part of its surface.
"""

import enum
import importlib
import inspect
import json
import pkgutil
import types

import mitm

CONSTANTS = (int, str, float, bool)


def own(value):
    return (getattr(value, "__module__", None) or "").split(".")[0] == "mitm"


def params(func):
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def kind(value):
    if isinstance(value, types.ModuleType):
        return "module" if value.__name__.startswith("mitm") else None
    if inspect.isclass(value):
        return "class" if own(value) else None
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return "function" if own(value) else None
    if isinstance(value, CONSTANTS) and not isinstance(value, enum.Enum):
        return "constant"
    return None


#: How to make an instance of the classes whose data members are set per instance (a
#: dataclass's fields, or attributes its __init__ sets).
SAMPLES = {
    "Host": lambda: mitm.Host(),
    "Connection": lambda: mitm.Connection(client=mitm.Host(), server=mitm.Host()),
}


def members(cls):
    out = {}
    sample = SAMPLES.get(cls.__name__)
    if sample is not None:
        for name in vars(sample()):
            if not name.startswith("_"):
                out[name] = {"callable": False}
    for klass in reversed(cls.__mro__):
        if not own(klass):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            entry = {"callable": callable(value) or isinstance(value, property)}
            if inspect.isfunction(value):
                entry["params"] = params(value)
                entry["async"] = inspect.iscoroutinefunction(value)
            out[name] = entry
    return out


def surface():
    modules = {"mitm": mitm}
    for info in pkgutil.walk_packages(mitm.__path__, "mitm."):
        if info.name.split(".")[-1].startswith("_"):
            continue
        modules[info.name] = importlib.import_module(info.name)
    result = {}
    for mod_name, module in modules.items():
        names = {}
        for name in dir(module):
            if name.startswith("_"):
                continue
            value = getattr(module, name)
            k = kind(value)
            if k is None:
                continue
            entry = {"kind": k}
            if k == "module":
                entry["module"] = value.__name__
            elif k == "class":
                entry["members"] = members(value)
                entry["params"] = params(value)
                entry["bases"] = [b.__name__ for b in value.__mro__[1:] if own(b)]
            elif k == "function":
                entry["params"] = params(value)
            names[name] = entry
        result[mod_name] = names
    result["mitm"].update(
        {name: {"kind": "dunder"} for name in ("__version__", "__data__", "__all__") if hasattr(mitm, name)}
    )
    return result


if __name__ == "__main__":
    print(json.dumps(surface(), indent=1, sort_keys=True))

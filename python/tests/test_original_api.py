"""Every public name of the original package (mitm 1.5.0) is there in ours, with the
same kind, parameters and ``async``-ness.

The list is not written here: programs/surface.py introspects the original in its own
virtual environment (``MITM_ORIGINAL_PYTHON``), so a name we miss fails the test.
"""

from __future__ import annotations

import json
from typing import Dict, List

from conftest import PROGRAMS, Package

#: Members of the original we do not provide, and why. Nothing a user program calls.
EXEMPT = {
    ("MITM", "mitm"): "the original's per-connection coroutine, documented as not to be "
    "called directly: the engine runs connections",
    ("HTTP", "relay"): "protocol.HTTP's relay loop runs in the engine, not in Python",
}


def surface(package: Package) -> Dict[str, Dict]:
    return json.loads(package.run(open(PROGRAMS / "surface.py").read()))


def missing(theirs: Dict[str, Dict], mine: Dict[str, Dict]) -> List[str]:
    """What of ``theirs`` is not in ``mine``, one line each."""
    problems = []
    for module, names in sorted(theirs.items()):
        if module not in mine:
            problems.append(f"module {module} is missing")
            continue
        for name, entry in sorted(names.items()):
            where = f"{module}.{name}"
            ours = mine[module].get(name)
            if ours is None:
                problems.append(f"{where} ({entry['kind']}) is missing")
                continue
            if ours["kind"] != entry["kind"]:
                problems.append(f"{where} is a {ours['kind']}, the original's a {entry['kind']}")
                continue
            if entry["kind"] == "module" and ours["module"] != entry["module"]:
                # mitm.middleware is mitm.extension.middleware in the original; ours may
                # define it where it likes, as long as it has the same names (below).
                pass
            if entry.get("params") is not None:
                got = ours.get("params") or []
                if got[: len(entry["params"])] != entry["params"]:
                    problems.append(f"{where}{tuple(got)}: the original takes {tuple(entry['params'])}")
            for member, info in sorted(entry.get("members", {}).items()):
                if (name, member) in EXEMPT:
                    continue
                mine_member = ours.get("members", {}).get(member)
                what = f"{where}.{member}"
                if mine_member is None:
                    problems.append(f"{what} is missing")
                    continue
                if info.get("params") is not None:
                    got = mine_member.get("params") or []
                    if got[: len(info["params"])] != info["params"]:
                        problems.append(f"{what}{tuple(got)}: the original takes {tuple(info['params'])}")
                if info.get("async") and not mine_member.get("async"):
                    problems.append(f"{what} is not async def, the original's is")
    return problems


def test_every_public_name_of_the_original_is_in_ours(ours: Package, original: Package) -> None:
    theirs = surface(original)
    # The introspection found the original's surface (a check of the check).
    assert {"MITM", "Middleware", "CertificateAuthority", "Host"} <= set(theirs["mitm"])
    assert "mitm.extension.middleware" in theirs
    problems = missing(theirs, surface(ours))
    assert not problems, "the original has names ours lacks:\n  " + "\n  ".join(problems)


def test_the_issues_names_import(ours: Package) -> None:
    out = ours.run(
        "from mitm import MITM, Middleware, Protocol, InvalidProtocol, CertificateAuthority, Host, Connection, Flow\n"
        "import mitm.core, mitm.crypto, mitm.mitm, mitm.middleware, mitm.protocol, mitm.extension\n"
        "from mitm.middleware import Log, HTTPLog\n"
        "from mitm.protocol import HTTP\n"
        "from mitm import middleware, protocol\n"
        "assert middleware.Log is Log and protocol.HTTP is HTTP\n"
        "assert issubclass(Log, Middleware) and issubclass(HTTP, Protocol)\n"
        "assert issubclass(InvalidProtocol, Exception)\n"
        "assert {f.name for f in Flow} == {'CLIENT_TO_SERVER', 'SERVER_TO_CLIENT'}\n"
        "print(str(Host()))\n"
    )
    assert out.strip() == "<empty host>", "an unconnected Host prints as the original's does"

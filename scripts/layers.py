#!/usr/bin/env python3
"""Checks that every import in `src/` points down the crate's layers, that
`bench/src/` has no import cycle, and that ARCHITECTURE.md names every file of `src/`.

The layers are listed below, lowest first (ARCHITECTURE.md draws the same picture). A
unit is a top-level module of `src/`, or a module one level inside one of the folders
that only group (`net/`, `tls/`, `wire/`, `engine/`); the folder's own `mod.rs` is a
unit too. Every `crate::<path>` in a file (a `use`, or a path written inline) is an edge
from the file's unit to the unit that path names. Doc comments, comments and test
modules (`#[cfg(test)]` to the end of the file, or a file `tests.rs` of its own) are
left out: they do not make the code depend on anything. `lib.rs` (re-exports),
`internals.rs` (hidden entry points for fuzzing and benches) and the binary are roots,
not layers.

It fails when
- a unit uses a unit of a higher layer,
- units of one layer use each other in a circle,
- a unit is in no layer (place a new module in the list below), or a listed one is gone,
- ARCHITECTURE.md's module table leaves out a file of `src/`, or names one that is gone.

Run from the repository root:

    python3 scripts/layers.py          # the layers and what each unit uses
    python3 scripts/layers.py --dot    # the graph as Graphviz input
"""

import re
import sys
from pathlib import Path

SRC = Path("src")
BENCH = Path("bench/src")
ROOTS = {"lib", "internals", "bin"}
GROUPS = {"net", "tls", "wire", "engine"}

# Lowest first. A unit may use units of its own layer (without a circle) and below.
LAYERS = [
    ("foundations", ["core", "error", "decode"]),
    ("net", ["net::io", "net::splice", "net::original_dst", "net"]),
    ("tls", ["tls::ca", "tls::trust", "tls::fail_open", "tls::keylog", "tls"]),
    ("http core", ["http"]),
    ("wire", ["wire::client_hello", "wire::socks5", "wire::websocket", "wire::h1", "wire::h2", "wire"]),
    ("upstream", ["upstream"]),
    ("hooks", ["middleware"]),
    ("filters", ["filter"]),
    ("addons", ["addons"]),
    ("engine", ["engine::context", "engine::relay", "engine::exchange", "engine::tunnel", "engine"]),
    ("protocols", ["protocol"]),
    ("server", ["server"]),
    ("capture", ["capture"]),
    ("web UI", ["web"]),
]


def is_module(parts) -> bool:
    path = SRC.joinpath(*parts)
    return path.with_suffix(".rs").exists() or path.is_dir()


def unit_of_file(path: Path) -> str:
    parts = list(path.relative_to(SRC).parts)
    parts[-1] = parts[-1].removesuffix(".rs")
    if parts[-1] == "mod":
        parts.pop()
    top = parts[0]
    if top in GROUPS and len(parts) > 1:
        return f"{top}::{parts[1]}"
    return top


def unit_of_path(path: list) -> str:
    """The unit `crate::a::b::…` names, or None when `a` is not a module."""
    if not path or not is_module(path[:1]):
        return None
    top = path[0]
    if top in GROUPS and len(path) > 1 and is_module(path[:2]):
        return f"{top}::{path[1]}"
    return top


def code_of(text: str) -> str:
    """The file without doc comments, comments and its trailing test module."""
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("//")]
    return "\n".join(lines)


def reexports() -> dict:
    """Items `lib.rs` re-exports at the root, to the unit they come from."""
    found = {}
    lib = (SRC / "lib.rs").read_text()
    for path, names in re.findall(r"pub use crate::((?:[a-z_0-9]+::)+)\{?([^;]*)", lib):
        unit = unit_of_path(path.strip(":").split("::"))
        for name in re.findall(r"[A-Za-z_0-9]+", names):
            found[name] = unit
    return found


def crate_paths(code: str) -> list:
    """Every `crate::…` path in `code`, as lists of names (groups expanded)."""
    paths = []
    for m in re.finditer(r"\bcrate::((?:[A-Za-z_0-9]+::)*)(\{[^}]*\}|[A-Za-z_0-9]+)", code):
        prefix = [p for p in m.group(1).split("::") if p]
        last = m.group(2)
        if last.startswith("{"):
            for name in re.findall(r"[A-Za-z_0-9]+(?:::[A-Za-z_0-9]+)*", last):
                paths.append(prefix + name.split("::"))
        else:
            paths.append(prefix + [last])
    return paths


def graph() -> dict:
    items = reexports()
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC)
        if rel.parts[0].removesuffix(".rs") in ROOTS or path.name == "tests.rs":
            continue
        unit = unit_of_file(path)
        deps = edges.setdefault(unit, set())
        for p in crate_paths(code_of(path.read_text())):
            target = unit_of_path(p) or items.get(p[0])
            if target and target != unit:
                deps.add(target)
    return edges


def order(edges: dict, units) -> list:
    """`units` in an order where each comes after what it uses; exits on a circle."""
    result, done, visiting = [], set(), []

    def visit(m):
        if m in done:
            return
        if m in visiting:
            cycle = visiting[visiting.index(m):] + [m]
            raise SystemExit("import cycle: " + " -> ".join(cycle))
        visiting.append(m)
        for d in sorted(edges.get(m, ())):
            if d in units:
                visit(d)
        visiting.pop()
        done.add(m)
        result.append(m)

    for m in sorted(units):
        visit(m)
    return result


def check_src() -> list:
    edges = graph()
    level = {u: i for i, (_, units) in enumerate(LAYERS) for u in units}
    errors = []
    for unit in sorted(edges):
        if unit not in level:
            errors.append(f"{unit} is in no layer: add it to LAYERS in scripts/layers.py")
    for unit in sorted(level):
        if unit not in edges:
            errors.append(f"{unit} is listed in LAYERS but has no file in src/")
    for unit, deps in sorted(edges.items()):
        for d in sorted(deps):
            if unit in level and d in level and level[d] > level[unit]:
                errors.append(
                    f"{unit} ({LAYERS[level[unit]][0]}) uses {d}, "
                    f"a higher layer ({LAYERS[level[d]][0]})"
                )
    if errors:
        raise SystemExit("\n".join(errors))
    for _, units in LAYERS:
        order(edges, set(units))
    return edges


def check_bench() -> dict:
    edges = {}
    for path in sorted(BENCH.glob("*.rs")):
        module = path.stem
        if module == "main":
            continue
        deps = edges.setdefault(module, set())
        for p in crate_paths(code_of(path.read_text())):
            if p[0] != module and (BENCH / f"{p[0]}.rs").exists():
                deps.add(p[0])
    order(edges, set(edges))
    return edges


def check_architecture() -> int:
    """ARCHITECTURE.md's module table names every file of `src/` (a folder may stand
    for the files under it, as `src/web/assets/` does), and nothing that is gone."""
    doc = Path("ARCHITECTURE.md").read_text()
    named = set(re.findall(r"^\| `(src/[^`]+)`", doc, re.M))
    files = {p.as_posix() for p in SRC.rglob("*.rs")}
    folders = {n for n in named if n.endswith("/")}
    missing = sorted(
        f for f in files if f not in named and not any(f.startswith(d) for d in folders)
    )
    gone = sorted(n for n in named if not Path(n).exists())
    errors = [f"{f} is not in ARCHITECTURE.md's module table" for f in missing]
    errors += [f"ARCHITECTURE.md's module table names {n}, which does not exist" for n in gone]
    if errors:
        raise SystemExit("\n".join(errors))
    return len(named)


def main() -> None:
    edges = check_src()
    bench = check_bench()
    documented = check_architecture()
    if "--dot" in sys.argv:
        print("digraph modules {")
        for unit, deps in sorted(edges.items()):
            for d in sorted(deps):
                print(f'  "{unit}" -> "{d}";')
        print("}")
        return
    for name, units in LAYERS:
        print(f"-- {name}")
        for u in order(edges, set(units)):
            uses = ", ".join(sorted(edges.get(u, ()))) or "-"
            print(f"   {u:20} uses {uses}")
    print(f"every import of {len(edges)} units points down; no cycle in bench/ ({len(bench)} modules)")
    print(f"ARCHITECTURE.md names every file of src/ ({documented} entries)")


if __name__ == "__main__":
    main()

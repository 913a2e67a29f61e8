#!/usr/bin/env python3
"""Prints the import graph of the crate's top-level modules and fails on a cycle.

Every `crate::<module>` path in a file of `src/` (a `use`, or a path written inline)
is an edge from the file's top-level module to `<module>`. Doc comments and test
modules (`#[cfg(test)]` to the end of the file, or a file `tests.rs` of its own) are
left out: they do not make the code depend on anything. `lib.rs` (re-exports) and
`internals.rs` (hidden entry points for fuzzing and benches) are roots, not layers. Run
from the repository root:

    python3 scripts/layers.py          # the graph, lowest layer first
    python3 scripts/layers.py --dot    # the same as Graphviz input
"""

import re
import sys
from pathlib import Path

SRC = Path("src")
ROOTS = {"lib", "internals", "bin"}


def top_module(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def code_of(text: str) -> str:
    """The file without doc comments, comments and its trailing test module."""
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("//")]
    return "\n".join(lines)


def reexports() -> dict:
    """Items `lib.rs` re-exports at the root, to the module they come from."""
    found = {}
    lib = (SRC / "lib.rs").read_text()
    for module, names in re.findall(r"pub use crate::([a-z_0-9]+)::(?:[a-z_0-9]+::)*\{?([^;]*)", lib):
        for name in re.findall(r"[A-Za-z_0-9]+", names):
            found[name] = module
    return found


def is_module(name: str) -> bool:
    return (SRC / f"{name}.rs").exists() or (SRC / name).is_dir()


def graph() -> dict:
    items = reexports()
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = top_module(path)
        if module in ROOTS or path.name == "tests.rs":
            continue
        deps = edges.setdefault(module, set())
        code = code_of(path.read_text())
        used = re.findall(r"\bcrate::([A-Za-z_0-9]+)", code)
        for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
            used += re.findall(r"[A-Za-z_0-9]+", group)
        for name in used:
            target = name if is_module(name) else items.get(name)
            if target and target != module:
                deps.add(target)
    return edges


def layers(edges: dict) -> list:
    """Modules in order, each after everything it uses; raises on a cycle."""
    order, done, visiting = [], set(), []

    def visit(m):
        if m in done:
            return
        if m in visiting:
            cycle = visiting[visiting.index(m):] + [m]
            raise SystemExit("import cycle: " + " -> ".join(cycle))
        visiting.append(m)
        for d in sorted(edges.get(m, ())):
            visit(d)
        visiting.pop()
        done.add(m)
        order.append(m)

    for m in sorted(edges):
        visit(m)
    return order


def main() -> None:
    edges = graph()
    order = layers(edges)
    if "--dot" in sys.argv:
        print("digraph modules {")
        for m in order:
            for d in sorted(edges.get(m, ())):
                print(f'  "{m}" -> "{d}";')
        print("}")
        return
    for m in order:
        uses = ", ".join(sorted(edges.get(m, ()))) or "-"
        print(f"{m:12} uses {uses}")
    print(f"no cycle among {len(order)} modules")


if __name__ == "__main__":
    main()

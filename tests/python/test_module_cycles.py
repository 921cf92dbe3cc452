"""No module of a Feeder crate depends, through `crate::` paths, on a module that depends
back on it (issue 16: "no module cycles in any crate").

Why a test: a cycle is how an I/O layer grows into a knot (the stream's run.rs and
fleet.rs imported each other before its restructuring), and nothing in rustc or clippy
reports one. The analysis is at file granularity: each `src/**.rs` file is a module, its
`crate::a::b::Item` paths (and `crate::{...}` groups, and names the crate root re-exports)
point at the longest module prefix they name; test modules and comments are ignored. A
module and its own parent or child never count as a cycle (a parent declares its
children).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"

PATH = re.compile(r"crate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)")
GROUP = re.compile(r"crate::\{([^}]*)\}")
REEXPORT = re.compile(
    r"pub use ((?:[a-z_][a-z0-9_]*::)+)(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)\s*;"
)


def module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts and parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def without_tests_and_comments(text: str) -> str:
    i = text.find("#[cfg(test)]\nmod tests")
    if i >= 0:
        text = text[:i]
    return re.sub(r"//[^\n]*", "", text)


def import_graph(src: Path) -> dict[str, set[str]]:
    mods = {
        module_name(src, p): p
        for p in src.rglob("*.rs")
        if "bin" not in p.relative_to(src).parts
    }
    reexported: dict[str, str] = {}
    if "" in mods:
        for g in REEXPORT.finditer(mods[""].read_text()):
            target = g.group(1).rstrip(":").removeprefix("crate::")
            for item in g.group(2).strip("{}").split(","):
                name = item.strip().split(" as ")[-1].strip()
                if name:
                    reexported[name] = target
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        text = without_tests_and_comments(p.read_text())
        refs = {g.group(1) for g in PATH.finditer(text)}
        for g in GROUP.finditer(text):
            refs.update(item.strip() for item in g.group(1).split(",") if item.strip())
        for r in refs:
            parts = r.split("::")
            target = next(
                ("::".join(parts[:k]) for k in range(len(parts), 0, -1) if "::".join(parts[:k]) in mods),
                None,
            )
            if target is None and reexported.get(parts[0]) in mods:
                target = reexported[parts[0]]
            if not target or target == m:
                continue
            if m.startswith(target + "::") or target.startswith(m + "::"):
                continue
            graph[m].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_crate_has_a_module_cycle():
    crates = sorted(p for p in SERVICES.iterdir() if (p / "src").is_dir())
    assert len(crates) >= 8, crates
    report = []
    for crate in crates:
        graph = import_graph(crate / "src")
        for component in cycles(graph):
            edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
            report.append(f"{crate.name}: {', '.join(edges)}")
    assert not report, "module cycles:\n" + "\n".join(report)


def test_the_check_finds_a_cycle_through_a_reexport(tmp_path: Path):
    src = tmp_path / "src"
    (src / "outputs").mkdir(parents=True)
    (src / "lib.rs").write_text("pub mod run;\npub mod outputs;\npub use outputs::produce::send;\n")
    (src / "run.rs").write_text("use crate::send;\npub fn ride_out() {}\n")
    (src / "outputs" / "mod.rs").write_text("pub mod produce;\n")
    (src / "outputs" / "produce.rs").write_text(
        "// crate::nothing in a comment\nuse crate::run::ride_out;\npub fn send() {}\n"
    )
    graph = import_graph(src)
    assert cycles(graph) == [["outputs::produce", "run"]]
    # without the edge back, none
    (src / "outputs" / "produce.rs").write_text("pub fn send() {}\n")
    assert cycles(import_graph(src)) == []

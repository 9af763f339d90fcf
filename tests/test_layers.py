"""Layers import downward only: the import graph of cgen/, targets/ and rpc_agent/,
read with ast (nothing is imported), has no cycle and no reversed edge; and no
module is over the size budget.

An edge is every `import` / `from ... import` in a module, at module level or
inside a function (a lazy import still couples the two modules); `from P import
name` is an edge to P.name when that is a module, else to P.  The one exception
is the lazy import behind the TVM-style `te.create_schedule` convenience (cgen.te
-> cgen.schedule), which exists so te programs read like TVM's.
"""
from __future__ import annotations

import ast
from pathlib import Path
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cgen", "targets", "rpc_agent")
# (importer, imported): the te.create_schedule convenience, a lazy import by design
ALLOWED = {("cgen.te", "cgen.schedule")}
MAX_LINES = 700
LONG_BY_DESIGN = {"rpc_agent/agent.py"}        # shipped to devices as one file


def _modules() -> dict:
    """module name -> file, for every .py under the packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path):
    """(imported module, line, the function it is in or None) for each import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, func, ()) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module
                out.append((mod, child.lineno, func, tuple(a.name for a in child.names)))
            visit(child, inner)
    visit(tree, None)
    return out


def _graph():
    """importer -> {imported: (line, function)}, between modules of the packages, and the
    imports of each module from outside them (by top-level name)."""
    mods = _modules()
    edges, outside = {m: {} for m in mods}, {m: set() for m in mods}
    for m, path in mods.items():
        for target, line, func, names in _imports(m, path):
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            if target in mods and len(hits) < len(names) or not names and target in mods:
                hits.append(target)
            if not hits:
                known = next((p for p in mods if target == p or target.startswith(p + ".")), None)
                if known is None:
                    outside[m].add(target.split(".")[0])
                    continue
                hits = [known]
            for h in hits:
                pkg = ".".join(m.split(".")[:2])
                if func == "create_schedule" and (pkg, ".".join(h.split(".")[:2])) in ALLOWED:
                    continue
                if h != m:
                    edges[m].setdefault(h, (line, func))
    return edges, outside


def _cycles(edges) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def _where(edges, a, b) -> str:
    line, func = edges[a][b]
    return f"{a} -> {b} (line {line}{f', in {func}()' if func else ''})"


def test_the_graph_sees_imports():
    """The walk finds known edges, lazy ones included (or every other check passes vacuously)."""
    edges, outside = _graph()
    assert "cgen.ops.space" in edges["cgen.ops.conv.gemm"]
    assert "targets.target" in edges["targets"]
    assert "numpy" in outside["cgen.ops.common"]
    assert any(func for line, func in edges["cgen.graph.routes"].values())


def _cycle_report(edges, cycles) -> str:
    lines = []
    for comp in cycles:
        inside = set(comp)
        lines.append(" | ".join(_where(edges, a, b) for a in comp for b in edges[a] if b in inside))
    return "import cycles:\n" + "\n".join(lines)


def test_no_import_cycle():
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, _cycle_report(edges, cycles)


def test_a_cycle_is_found():
    """The cycle finder finds a cycle through a lazy import (so a pass means something)."""
    edges = {"a": {"b": (1, None)}, "b": {"c": (2, "f")}, "c": {"a": (3, None)}, "d": {"a": (4, None)}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_packages_import_downward():
    """targets is below cgen (cgen resolves targets; targets never reaches back up)."""
    edges, _ = _graph()
    bad = [_where(edges, a, b) for a in edges if a.startswith("targets")
           for b in edges[a] if b.split(".")[0] == "cgen"]
    assert not bad, "targets imports cgen:\n" + "\n".join(bad)


def _ops_to_tuner(edges) -> list:
    return [(a, b) for a in edges if a == "cgen.ops" or a.startswith("cgen.ops.")
            for b in edges[a] if b == "cgen.autotune" or b.startswith("cgen.autotune.")]


def test_ops_do_not_import_the_tuner():
    edges, _ = _graph()
    bad = [_where(edges, a, b) for a, b in _ops_to_tuner(edges)]
    assert not bad, "cgen.ops imports cgen.autotune:\n" + "\n".join(bad)


def test_te_imports_only_itself():
    edges, _ = _graph()
    bad = [_where(edges, a, b) for a in edges if a == "cgen.te" or a.startswith("cgen.te.")
           for b in edges[a] if not (b == "cgen.te" or b.startswith("cgen.te."))]
    assert not bad, "cgen.te imports outside itself:\n" + "\n".join(bad)


def test_rpc_agent_is_standard_library_only():
    edges, outside = _graph()
    stdlib = sys.stdlib_module_names
    bad = [f"{m} -> {t}" for m in outside if m.startswith("rpc_agent")
           for t in outside[m] if t not in stdlib and t != "__future__"]
    bad += [_where(edges, a, b) for a in edges if a.startswith("rpc_agent")
            for b in edges[a] if not b.startswith("rpc_agent")]
    assert not bad, "rpc_agent imports outside the standard library:\n" + "\n".join(bad)


def _long_modules() -> dict:
    out = {}
    for path in _modules().values():
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LONG_BY_DESIGN:
            out[rel] = n
    return out


def test_no_module_over_the_budget():
    long = _long_modules()
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_template_satisfies_the_protocol():
    from cgen.ops.registry import templates
    from cgen.ops.template import Template
    table = templates()
    assert table and all(isinstance(t, Template) for t in table.values()), \
        [n for n, t in table.items() if not isinstance(t, Template)]

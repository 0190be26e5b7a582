"""The project's modules import each other without cycles, and the NumPy-only ones stay so.

The check reads the source with `ast`, importing nothing, so it sees every import statement:
module level, inside functions and under `if TYPE_CHECKING:`. An edge is an explicit import of a
project module; the parent packages that Python runs first (`import a.b.c` runs `a/__init__.py`
and `a/b/__init__.py`) are not edges, else every `__init__` that re-exports a submodule would
close a false cycle. An `__init__` imported by name (`from a.b import name`) is an edge like any
other module, so a real cycle through one is still reported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ddpcifar", "tui")
SCRIPTS = ("data_prep.py",)  # top-level scripts, checked as modules of their own name


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES,
                 scripts: tuple[str, ...] = SCRIPTS) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of `packages` and each script."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    for script in scripts:
        if (root / script).is_file():
            modules[Path(script).stem] = root / script
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name`'s import statements name, wherever they stand."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .. import x` climbs level - 1 packages
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the submodule; any other name comes from pkg itself.
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports explicitly."""
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, as [a, b, ..., a]."""
    cycles = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        start = min(component)
        # Breadth-first from start inside the component, back to start: a shortest cycle.
        parent: dict[str, str] = {}
        frontier = [start]
        while start not in parent:
            next_frontier = []
            for node in frontier:
                for succ in sorted(graph[node] & component):
                    if succ not in parent:
                        parent[succ] = node
                        next_frontier.append(succ)
            frontier = next_frontier
        path = [start]
        node = parent[start]
        while node != start:
            path.append(node)
            node = parent[node]
        path.append(start)
        cycles.append(path[::-1])
    return sorted(cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iterative (no recursion limit on deep chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            succ = next(successors, None)
            if succ is not None:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                elif succ in on_stack:
                    low[node] = min(low[node], index[succ])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def describe(cycles: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def test_project_has_no_import_cycles():
    cycles = find_cycles(import_graph(find_modules(ROOT)))
    assert not cycles, describe(cycles)


def test_checker_reports_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def late():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")  # imports into the cycle, is not part of it
    graph = import_graph(find_modules(tmp_path, packages=("pkg",), scripts=()))
    assert graph["pkg.b"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_checker_skips_implicit_parent_imports_but_not_explicit_ones(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    # A re-exporting __init__: importing pkg.sub.leaf runs it, but names nothing in it.
    (pkg / "__init__.py").write_text("from pkg.sub.leaf import LEAF\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("LEAF = 1\n")
    assert find_cycles(import_graph(find_modules(tmp_path, packages=("pkg",), scripts=()))) == []
    # The leaf now takes a name from pkg/__init__.py, which imports the leaf: a real cycle.
    (pkg / "sub" / "leaf.py").write_text("from .. import VERSION\nLEAF = VERSION\n")
    graph = import_graph(find_modules(tmp_path, packages=("pkg",), scripts=()))
    assert find_cycles(graph) == [["pkg", "pkg.sub.leaf", "pkg"]]


def test_sample_orders_import_without_torch():
    # A fresh interpreter: this test process may have torch loaded already.
    code = "import ddpcifar.data.orders, sys; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr

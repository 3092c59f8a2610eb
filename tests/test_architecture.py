"""The package's shape (ARCHITECTURE.md): every module imports on its own, the import graph has
no cycle, and no module grows past about 600 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfox_fit"
MAX_LINES = 650  # "about 600": a module past this holds more than one idea


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module):
    """Imports that run when the module is imported (not those inside functions or TYPE_CHECKING)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])


def import_graph() -> dict:
    """module -> set of hfox_fit modules it imports at import time."""
    graph = {}
    for name, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
            edges.update(t for t in targets if t in MODULES and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    graph = import_graph()
    assert "hfox_fit.laws.drift" in graph["hfox_fit.laws"]  # the parser of imports sees real edges


def test_no_module_is_over_about_600_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    big = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them along their seams): {big}"


def test_every_module_has_a_docstring():
    missing = [n for n, p in MODULES.items() if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring saying which idea they hold: {missing}"


_IMPORT_EACH = """
import importlib, os, sys, traceback
import numpy, scipy.stats, pandas, h5py, lmfit, matplotlib  # third-party, loaded once before the forks
try:
    import torch
except ImportError:
    pass
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(name, "|", traceback.format_exc().strip().splitlines()[-1], flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_every_module_imports_on_its_own():
    """Each module in a fresh hfox_fit state (a forked child per module; third-party modules preloaded)."""
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("needs os.fork")
    names = [n for n in MODULES if n != "hfox_fit.__main__"]
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert not out.stdout.strip(), f"modules that fail to import on their own:\n{out.stdout}"

"""Each module of hfox_fit.parsers imports on its own (no import circle) and the built-ins are registered."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hfox_fit.parsers

MODULES = sorted(f"hfox_fit.parsers.{m.name}" for m in pkgutil.iter_modules(hfox_fit.parsers.__path__))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_modules_are_found():
    for name in ("_base", "_common", "_registry", "bench", "b1500", "ramps", "hdf5", "tidy"):
        assert f"hfox_fit.parsers.{name}" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module):
    out = _run(f"import {module}")
    assert out.returncode == 0, out.stderr


def _sibling_imports() -> dict:
    """{module: set of hfox_fit.parsers modules it imports}, read from the source (``__init__`` included)."""
    graph = {}
    for path in Path(hfox_fit.parsers.__file__).parent.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[path.stem] = deps
    return graph


def test_the_package_has_no_import_circle():
    graph = _sibling_imports()
    assert graph["_base"] <= {"_common"} and "_base" not in graph["_common"]  # the contract imports no reader
    assert [m for m, deps in graph.items() if "_registry" in deps] == ["__init__"]
    done, stack = set(), []

    def visit(m):
        assert m not in stack, f"import circle: {' -> '.join(stack + [m])}"
        if m in done or m not in graph:
            return
        stack.append(m)
        for d in sorted(graph[m]):
            visit(d)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        if m != "__init__":  # every module imports the package first; only the siblings' imports can loop
            visit(m)


def test_the_five_builtin_readers_are_registered_in_a_fresh_interpreter():
    code = (
        "from hfox_fit.parsers import BUILTIN_PARSERS, list_formats\n"
        "print(' '.join(p.name for p in BUILTIN_PARSERS))\n"
        "print(' '.join(p.name for p in list_formats()))"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    builtins, listed = out.stdout.splitlines()
    assert builtins.split() == ["bench", "b1500", "ramps", "hdf5", "tidy"]
    assert listed.split()[:5] == builtins.split()

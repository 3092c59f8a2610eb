"""``import hfox_fit`` must load neither torch nor matplotlib (house style: PyTorch export kept apart)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "matplotlib")


def _loaded_after(statement: str) -> list:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_hfox_fit_loads_no_torch_or_matplotlib():
    assert _loaded_after("import hfox_fit") == []


def test_cli_parser_loads_no_torch():
    # Building the command line (every command registered) must not import torch either.
    assert "torch" not in _loaded_after("from hfox_fit.cli import build_parser; build_parser()")


def test_the_check_can_fail():
    pytest.importorskip("torch")
    assert "torch" in _loaded_after("import hfox_fit.torch")

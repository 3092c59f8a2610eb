"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest

from hfox_fit.cli import main


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """One tiny bench file (60 cells x 1 cycle x 61 reads): enough for every step of `run`."""
    out = tmp_path_factory.mktemp("raw")
    assert main(["synth", "-o", str(out), "--format", "bench", "--devices", "60", "--pulses", "60",
                 "--cycles", "1", "--seed", "3"]) == 0
    return out

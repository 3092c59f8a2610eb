"""Fixtures shared by the whole suite."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (real measured data); the test skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real-data checks need ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def crosssim_reset(shared_dir) -> Path:
    path = shared_dir / "external_data" / "crosssim_pulse_ramps" / "reset.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path

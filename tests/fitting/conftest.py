"""Shared synthetic campaigns for the fitting tests (session-scoped: built and fitted once)."""

from __future__ import annotations

import pytest
from fit_helpers import fit_quietly, make_wafer_with_states

from hfox_fit.synth import make_wafer


@pytest.fixture(scope="session")
def paper_wafer():
    """1024 cells x 1000 pulses of the paper preset, with the true RTN states in ``meta['rtn_high']``."""
    wafer, high = make_wafer_with_states("paper", devices=1024, pulses=1000, seed=101)
    wafer.meta["rtn_high"] = high
    return wafer


@pytest.fixture(scope="session")
def paper_fit(paper_wafer):
    """fit_campaign(law='auto') of the paper wafer."""
    return fit_quietly(paper_wafer.dies, law="auto", bootstrap=100)


@pytest.fixture(scope="session")
def wafer_b():
    """1024 cells x 1000 pulses x 2 cycles of the wafer_b preset (other families, C2C, m1-t* correlation)."""
    return make_wafer("wafer_b", devices=1024, pulses=1000, cycles=2, seed=202)


@pytest.fixture(scope="session")
def wafer_b_fit(wafer_b):
    return fit_quietly(wafer_b.dies, law="two_slope", bootstrap=100)


@pytest.fixture(scope="session")
def small_wafer():
    """A small, quick wafer (128 cells x 400 pulses) for API and error-path tests."""
    return make_wafer("paper", devices=128, pulses=400, seed=7)


@pytest.fixture
def first_fit_fails(monkeypatch):
    """The vectorised drift fit fails on the first row it fits and lmfit cannot rescue it."""
    import numpy as np

    from hfox_fit.fitting import _lmfit as lmfit_module
    from hfox_fit.fitting import drift as drift_module

    real = drift_module._fit_law

    def broken(name, *args, **kwargs):
        f = real(name, *args, **kwargs)
        f.beta[0] = np.nan
        f.converged[0] = False
        return f

    def no_lmfit(*args, **kwargs):
        raise RuntimeError("no lmfit in this test")

    monkeypatch.setattr(drift_module, "_fit_law", broken)
    monkeypatch.setattr(lmfit_module, "_lmfit_refit", no_lmfit)

"""Helpers of the fitting tests (imported as ``fit_helpers``)."""

from __future__ import annotations

import warnings

import numpy as np

from hfox_fit import model as model_module
from hfox_fit.fitting import fit_campaign
from hfox_fit.synth import make_wafer


def make_wafer_with_states(*args, **kwargs):
    """``make_wafer`` that also returns the true RTN high/low state of every read, (cells, cycles, pulses)."""
    rec = {}
    orig = model_module.DeviceModel.simulate_rtn

    def spy(self, amplitude, n_pulses, rng):
        out = orig(self, amplitude, n_pulses, rng)
        rec["high"] = out > 0  # U1 U2 A > 0 exactly in the high state
        return out

    model_module.DeviceModel.simulate_rtn = spy
    try:
        wafer = make_wafer(*args, **kwargs)
    finally:
        model_module.DeviceModel.simulate_rtn = orig
    return wafer, rec.get("high")


def truth_for(wafer, cells):
    """Ground-truth rows aligned with a fitted per-(cell, cycle) table."""
    keys = ["wafer", "die", "device", "cycle"]
    left = cells[keys].copy()
    for k in ("wafer", "die", "device"):
        left[k] = left[k].astype(str)
    right = wafer.truth.copy()
    for k in ("wafer", "die", "device"):
        right[k] = right[k].astype(str)
    return left.merge(right, on=keys, how="left")


def fit_quietly(dies, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_campaign(dies, **kwargs)


def median_relerr(est, truth):
    est, truth = np.asarray(est, float), np.asarray(truth, float)
    ok = np.isfinite(est) & np.isfinite(truth)
    return float(np.median(np.abs(est[ok] / truth[ok] - 1.0)))


def small_die_store(path, n_dies: int, first_seed: int):
    """A campaign store of ``n_dies`` dies D01.. (64 cells x 250 pulses of the paper preset, seeds
    ``first_seed``..), ingested as one table; returns ``path``."""
    import pandas as pd

    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore

    parts = []
    for k in range(n_dies):
        table = dies_to_table(make_wafer("paper", devices=64, pulses=250, seed=first_seed + k).dies)
        table["die"] = f"D{k + 1:02d}"
        parts.append(table)
    CampaignStore(path).ingest_table(pd.concat(parts, ignore_index=True), name="simulated")
    return path

"""Population intervals over 20 seeds (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import fit_quietly

from hfox_fit.synth import make_wafer

SEEDS = range(1000, 1020)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper", "wafer_b"])
def test_medians_and_their_intervals_over_20_seeds(preset):
    hits = {p: [] for p in ("r0", "t_star", "m1")}
    close = {p: [] for p in hits}
    family = {p: [] for p in hits}
    for seed in SEEDS:
        wafer = make_wafer(preset, devices=1024, pulses=1000, seed=seed)
        s = fit_quietly(wafer.dies, law="two_slope", bootstrap=200).summary_
        for p in hits:
            truth = wafer.model.d2d[p]
            d = s["d2d"][p]
            lo, hi = d["median_ci90"]
            hits[p].append(lo <= truth.median() <= hi)
            close[p].append(abs(d["median"] / truth.median() - 1) <= 0.05)
            family[p].append(d["family"] == truth.family)
    for p in hits:
        assert np.mean(hits[p]) >= 0.8, (preset, p, hits[p])
        assert np.mean(close[p]) >= 0.8, (preset, p, close[p])
        assert np.mean(family[p]) >= 0.7, (preset, p, family[p])

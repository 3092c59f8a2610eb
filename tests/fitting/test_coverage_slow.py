"""Population laws over 20 seeds (slow: run with ``pytest -m slow``, about 2 minutes on 2 cores)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from fit_helpers import fit_quietly

from hfox_fit.synth import make_wafer

SEEDS = range(1000, 1020)


@functools.lru_cache(maxsize=2)
def _campaigns(preset):
    """Per seed and parameter: (family, fitted median, 90 % interval, true law)."""
    out = []
    for seed in SEEDS:
        wafer = make_wafer(preset, devices=1024, pulses=1000, seed=seed)
        s = fit_quietly(wafer.dies, law="two_slope", bootstrap=200).summary()
        out.append({p: (s["d2d"][p]["family"], s["d2d"][p]["median"], s["d2d"][p]["median_ci90"],
                        wafer.model.d2d[p]) for p in ("r0", "t_star", "m1")})
    return out


CASES = [("paper", "r0"), ("paper", "t_star"), ("paper", "m1"),
         ("wafer_b", "r0"), ("wafer_b", "t_star"), ("wafer_b", "m1")]


@pytest.mark.slow
@pytest.mark.parametrize("preset,param", CASES)
def test_median_intervals_cover_the_truth(preset, param):
    rows = [r[param] for r in _campaigns(preset)]
    truth = rows[0][3]
    covered = [lo <= truth.median() <= hi for _, _, (lo, hi), _ in rows]
    err = np.array([med / truth.median() - 1 for _, med, _, _ in rows])
    family = [fam == truth.family for fam, _, _, _ in rows]
    print(f"{preset} {param}: 90 % interval covers the true median in {np.mean(covered):.0%} of {len(rows)} seeds, "
          f"median |rel err| {np.median(np.abs(err)):.3f}, mean rel err {np.mean(err):+.3f}, "
          f"family {truth.family} chosen in {np.mean(family):.0%}")
    assert np.mean(covered) >= 0.8, covered
    assert abs(np.mean(err)) <= 0.05 and np.median(np.abs(err)) <= 0.05, err
    assert np.mean(family) >= 0.7, [r[0] for r in rows]

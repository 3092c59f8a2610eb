"""Cycle-to-cycle (C2C) laws: how much a parameter moves between the cycles of one cell.

With several cycles per cell, the squared deviations of each cycle's value from
its cell's mean follow a random-effects model with the cycles' own stderr taken
out; the C2C ``scale`` is estimated robustly (medians over cells) and a
``norm(0, scale)`` law is kept when a one-sided sign test says the deviations
exceed the measurement noise (p < 0.01).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ..laws import ParameterLaw
from ._util import robust_sd

__all__ = ["fit_c2c"]


def _c2c_robust(ss, dof, se2):
    """Robust C2C variance: the var for which the median of SS_i / ((var + se2_i) dof_i) is chi2's.

    ``SS_i ~ (var + se2_i) chi2(dof_i)``; matching the median (not the mean) keeps a
    few failed per-cycle fits from inflating the variance.
    """
    target = float(np.median(stats.chi2.median(dof) / dof))

    def med(v):
        return float(np.median(ss / ((v + se2) * dof)))

    if med(0.0) <= target:
        return 0.0
    hi = float(np.max(ss / dof)) * 10 + 1e-300
    return float(optimize.brentq(lambda v: med(v) - target, 0.0, hi, xtol=1e-12 * hi))


def fit_c2c(rows: pd.DataFrame, params, *, bootstrap=200, rng=0, alpha=0.01, max_stderr_ratio=0.5) -> dict:
    """Cycle-to-cycle laws: ``norm(0, scale)`` of each cycle's deviation from its cell's own value.

    Per cell, the sum of squared deviations from the cell's mean over its ``n``
    cycles is ``(scale^2 + stderr^2) chi2(n - 1)`` (a random-effects model, the
    cycles' own stderr taken out); ``scale`` makes the median over the cells of
    the standardised sums match chi2's (robust to a few failed fits). It is
    significant when more standardised sums than chance exceed chi2's median
    at ``scale = 0`` (one-sided sign test). Cells whose stderr exceeds
    ``max_stderr_ratio`` times the spread of the values are left out.

    Returns
    -------
    dict of str to dict
        Per parameter: ``scale`` (its unit), ``scale_ci90`` (bootstrap over cells),
        ``p_value``, ``significant``, ``n_cells``, and ``law`` (a ParameterLaw, only
        when significant).
    """
    rng = np.random.default_rng(rng)
    keys = ["wafer", "die", "device"]
    out = {}
    for p in params:
        if p + "_stderr" not in rows:
            continue
        sub = rows[[*keys, p, p + "_stderr"]].dropna()
        if sub.empty:
            continue
        x = sub[p].to_numpy()
        spread = robust_sd(x) or np.std(x)
        sub = sub[sub[p + "_stderr"].to_numpy() <= max_stderr_ratio * spread]
        cell = pd.factorize(pd.MultiIndex.from_frame(sub[keys]))[0] if len(sub) else np.zeros(0, int)
        if len(sub) == 0:
            continue
        n = np.bincount(cell)
        mean = np.bincount(cell, sub[p].to_numpy()) / n
        dev = sub[p].to_numpy() - mean[cell]
        ss = np.bincount(cell, dev**2)
        se2 = np.bincount(cell, sub[p + "_stderr"].to_numpy() ** 2) / n
        keep = n >= 2
        if keep.sum() < 10:
            continue
        ss, dof, se2 = ss[keep], (n - 1.0)[keep], se2[keep]
        var = _c2c_robust(ss, dof, se2)
        above = int(np.sum(ss / (se2 * dof) > stats.chi2.median(dof) / dof))
        pval = float(stats.binom.sf(above - 1, len(ss), 0.5))
        scale = float(np.sqrt(var))
        ci = None
        m = int(keep.sum())
        if bootstrap and m >= 5:
            reps = []
            for _ in range(min(bootstrap, 100)):
                pick = rng.integers(0, m, m)
                reps.append(np.sqrt(_c2c_robust(ss[pick], dof[pick], se2[pick])))
            ci = [float(np.percentile(reps, 5)), float(np.percentile(reps, 95))]
        entry = {"scale": scale, "scale_ci90": ci, "p_value": pval, "significant": bool(pval < alpha and scale > 0),
                 "n_cells": m}
        if entry["significant"]:
            entry["law"] = ParameterLaw("norm", {"loc": 0.0, "scale": scale}, None)
        out[p] = entry
    return out


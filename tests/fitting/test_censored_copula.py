"""The copula correlation of a value with a right-censored one (t_star beyond its bound)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hfox_fit.fitting import correlations
from hfox_fit.fitting._censored_copula import censored_copula


def _censored_pairs(n, rho, seed, censored_share=0.2):
    """Gaussian pairs (a, t), t censored (NaN, its bound in t_lo) above its (1 - share) quantile, and
    also at random bounds below the true value for some cells (a bound need not be the value)."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)
    a, t = np.exp(z[:, 0]) * 1e-3, 200.0 * np.exp(0.5 * z[:, 1])
    cut = np.quantile(t, 1.0 - censored_share)
    late = t > cut
    t_lo = np.where(late, cut * rng.uniform(0.8, 1.0, n), np.nan)
    return pd.DataFrame({"a": a, "t": np.where(late, np.nan, t), "t_lo": t_lo, "t_true": t})


def test_censored_cells_keep_the_correlation_that_leaving_them_out_pulls_towards_zero():
    old, new = [], []
    for seed in range(4):
        tab = _censored_pairs(3000, -0.6, seed)
        old.append(correlations(tab, ["a", "t"])["copula"][0][1])
        out = correlations(tab, ["a", "t"], censored={"t": "t_lo"})
        new.append(out["copula"][0][1])
        assert out["n_pairs"][0][1] == 3000 and out["n_censored"][0][1] == int(tab["t"].isna().sum())
    # leaving the latest 20 % out: about -0.49; with them as bounds, the truth
    assert np.mean(old) > -0.52
    assert abs(np.mean(new) + 0.6) < 0.02, new


def test_without_censoring_it_is_the_normal_scores_correlation():
    for rho in (-0.5, 0.0, 0.7):
        tab = _censored_pairs(800, rho, 7, censored_share=0.0)
        plain = correlations(tab, ["a", "t"])["copula"][0][1]
        mle = censored_copula(tab["a"], tab["t"], tab["t_lo"])["copula"]
        assert abs(mle - plain) < 0.01, (rho, mle, plain)


def test_censored_pairs_have_an_interval_that_covers_the_truth():
    covered = []
    for seed in range(30):
        tab = _censored_pairs(300, -0.6, 100 + seed, censored_share=0.3)
        out = censored_copula(tab["a"], tab["t"], tab["t_lo"], bootstrap=200, rng=seed)
        lo, hi = out["copula_ci90"]
        assert lo < out["copula"] < hi and 0.02 < out["copula_stderr"] < 0.1
        covered.append(lo <= -0.6 <= hi)
    assert np.mean(covered) >= 0.75, np.mean(covered)


def test_a_value_that_exists_only_past_the_break_stays_pairwise_complete():
    tab = _censored_pairs(500, 0.0, 3)
    tab["m2"] = np.where(tab["t"].notna(), np.random.default_rng(0).normal(size=500), np.nan)
    out = correlations(tab, ["a", "t", "m2"], censored={"t": "t_lo"}, exact_only=("m2",))
    n_exact = int(tab["t"].notna().sum())
    assert out["n_pairs"][0][1] == 500 and out["n_censored"][0][1] == 500 - n_exact
    assert out["n_pairs"][1][2] == n_exact and out["n_censored"][1][2] == 0
    # no censored column in the table: nothing changes
    plain = correlations(tab, ["a", "t"])
    assert correlations(tab.drop(columns="t_lo"), ["a", "t"], censored={"t": "t_lo"})["copula"] == plain["copula"]


def test_too_few_cells_give_no_censored_estimate():
    assert censored_copula([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, np.nan, np.nan], [np.nan, np.nan, 3.0, 3.0]) is None

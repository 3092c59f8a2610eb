"""The copula correlation of a value with a right-censored one (t_star beyond its bound)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def _noisy_pairs(n, seed, rho_err=-0.8):
    """Independent true values seen through errors correlated within each cell (as t_star and m2 of one train)."""
    rng = np.random.default_rng(seed)
    a_true, b_true = rng.gamma(6.0, 60.0, n), rng.exponential(5e-5, n)
    se_a, se_b = rng.uniform(0.2, 0.6, n) * 150.0, rng.uniform(0.2, 0.6, n) * 5e-5
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho_err], [rho_err, 1.0]], n)
    return pd.DataFrame({"a": a_true + se_a * z[:, 0], "b": b_true + se_b * z[:, 1], "a_stderr": se_a,
                         "b_stderr": se_b, "ab_err": np.full(n, rho_err)})


def test_the_correlation_of_each_cells_fit_errors_is_taken_out_of_the_copula():
    plain, taken_out, shifts = [], [], []
    for seed in range(6):
        tab = _noisy_pairs(600, seed)
        plain.append(correlations(tab, ["a", "b"])["copula"][0][1])
        out = correlations(tab, ["a", "b"], error_correlation={("a", "b"): "ab_err"}, bootstrap=100, rng=seed)
        taken_out.append(out["copula"][0][1])
        shifts.append(out["copula_error_shift"][0][1])
        lo, hi = out["copula_ci90"][0][1]
        assert lo < out["copula"][0][1] < hi
    # the truth is 0: the errors alone give about -0.09, and about -0.07 of it is taken out
    assert np.mean(plain) < -0.06, plain
    assert abs(np.mean(taken_out)) < 0.03, taken_out
    assert all(s < 0 for s in shifts)
    # no column, or no stderr: nothing is taken out
    assert correlations(tab.drop(columns="b_stderr"), ["a", "b"], error_correlation={("a", "b"): "ab_err"})[
        "copula"] == correlations(tab, ["a", "b"])["copula"]


def test_the_drift_table_carries_the_fit_error_correlation_of_t_star_and_m2():
    from hfox_fit.fitting import fit_drift_die
    from hfox_fit.synth import make_wafer

    die = make_wafer("wafer_b", devices=64, pulses=400, seed=3).dies[0]
    table = fit_drift_die(die, ("two_slope",)).tables["two_slope"]
    r = table["t_star_m2_err_corr"].to_numpy(float)
    seen = np.isfinite(table["t_star"]) & np.isfinite(table["m2"])
    assert np.isfinite(r[seen]).all() and np.isnan(r[~seen]).all()
    # a later break asks for a steeper slope after it: the errors go against each other
    assert np.all(np.abs(r[seen]) <= 1.0) and np.median(r[seen]) < -0.2


def test_the_drift_table_carries_the_fit_error_correlation_of_m1_and_c1():
    """A steeper first slope asks for a lower start: m1's and c1's errors go against each other, on a train with a
    break (its fit's covariance) and on one without (its straight line's, kept beside for classify_breaks)."""
    from hfox_fit.fitting import fit_drift_die
    from hfox_fit.fitting.breaks import classify_breaks
    from hfox_fit.synth import make_wafer

    die = make_wafer("paper", devices=64, pulses=400, seed=3).dies[0]
    table = fit_drift_die(die, ("two_slope",)).tables["two_slope"]
    r = table["m1_c1_err_corr"].to_numpy(float)
    both = np.isfinite(table["m1"]) & np.isfinite(table["c1"])
    assert np.isfinite(r[both]).all() and np.all(np.abs(r[both]) <= 1.0)
    assert np.median(r[both]) < -0.5
    line = table["m1_c1_line_err_corr"].to_numpy(float)
    no_break = ~np.isfinite(table["t_star"].to_numpy(float)) & both
    assert no_break.any() and np.all(line[no_break] < -0.8)  # -s1 / sqrt(s0 s2) over pulses 1..T: about -0.87
    assert np.isnan(line[np.isfinite(table["t_star"].to_numpy(float))]).all()
    out = classify_breaks(table)
    cens = out["t_star_censored"].to_numpy(bool)
    assert np.array_equal(out["m1_c1_err_corr"].to_numpy()[cens], line[cens])


def test_c1_and_r0_errors_go_against_each_other():
    from hfox_fit.fitting._tables import r0_error_correlation

    tab = pd.DataFrame({"c1_stderr": [0.01, 0.002, np.nan], "r0": [7000.0, 7000.0, 7000.0],
                        "r0_stderr": [7.0, 70.0, 7.0]})
    r = r0_error_correlation(tab)
    # R0 1e-3 off moves c1 by -1e-3: -0.1 of a 0.01 stderr; a c1 stderr all from R0 gives -1 (clipped)
    assert r[0] == pytest.approx(-0.1) and r[1] == -1.0 and np.isnan(r[2])
    assert np.isnan(r0_error_correlation(tab.drop(columns="r0_stderr"))).all()


def test_the_d2d_copula_takes_out_the_errors_of_m1_c1_and_c1_r0():
    from fit_helpers import fit_quietly

    from hfox_fit.synth import make_wafer

    fit = fit_quietly(make_wafer("wafer_b", devices=128, pulses=400, seed=5).dies, law="two_slope", bootstrap=0)
    corr = fit.summary()["correlation"]
    names = corr["names"]
    shift = np.asarray(corr["copula_error_shift"])
    i, j, k = names.index("m1"), names.index("c1"), names.index("r0")
    assert shift[i, j] < 0 and shift[j, k] < 0


def test_a_parameter_mostly_fit_error_is_named_unreliable():
    """Where a parameter's fit errors are most of its spread, its copula pairs can follow how the errors depend on
    the other parameter: the reliability says so, and the note names it (the example campaign's m2: 0.47)."""
    from hfox_fit.fitting.correlation import RELIABLE, copula_note

    rng = np.random.default_rng(2)
    n = 300
    a = rng.normal(0.0, 1.0, n)
    b_true = rng.normal(0.0, 0.3, n)
    b_se = np.full(n, 1.0)
    b = b_true + np.where(a < 0, -1.0, 0.0) + b_se * rng.standard_normal(n) * 0.5  # errors that depend on a
    tab = pd.DataFrame({"a": a, "a_stderr": 0.01, "b": b, "b_stderr": b_se, "c": rng.normal(0, 1, n)})
    out = correlations(tab, ["a", "b", "c"])
    rel = dict(zip(out["names"], out["reliability"]))
    assert rel["a"] > 0.99 and rel["b"] < RELIABLE and rel["c"] is None  # c has no stderr
    assert out["copula"][0][1] > 0.3  # what the errors alone make of a~b (the truth is 0)
    note = copula_note(out["names"], out["reliability"])
    assert f"b {rel['b']:.2f}" in note and "unreliable" in note and "a 1.00" not in note
    assert copula_note(out["names"], [0.99, 0.95, None]) == copula_note(out["names"])

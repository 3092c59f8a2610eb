"""The pieces of the D2D step on their own: correlations, C2C laws, per-cell values, fallback law, checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hfox_fit.fitting import correlations, fit_c2c
from hfox_fit.fitting._law_checks import _km_median
from hfox_fit.fitting._util import _join
from hfox_fit.fitting.d2d import cell_values, fallback_law
from hfox_fit.laws import ParameterLaw

# --------------------------------------------------------------------------------------
# correlation
# --------------------------------------------------------------------------------------


def test_correlations_do_not_depend_on_monotone_transforms():
    """Spearman and the copula use ranks only: a strictly increasing transform of a column changes nothing."""
    rng = np.random.default_rng(11)
    z = rng.multivariate_normal([0, 0], [[1, 0.7], [0.7, 1]], size=500)
    tab = pd.DataFrame({"a": z[:, 0], "b": z[:, 1]})
    out = correlations(tab, ["a", "b"])
    moved = correlations(tab.assign(a=np.exp(3 * tab["a"]), b=tab["b"] ** 3 + 7), ["a", "b"])
    np.testing.assert_allclose(moved["spearman"], out["spearman"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved["copula"], out["copula"], rtol=0, atol=1e-12)
    assert out["copula"][0][1] == pytest.approx(0.7, abs=0.06)
    assert out["names"] == ["a", "b"] and out["n_pairs"] == [[0, 500], [500, 0]]


def test_pairwise_complete_copula_is_projected_to_a_correlation_matrix():
    """Three pairs seen on disjoint cells: +1, +1 and -1 cannot hold together; the copula matrix is made valid."""
    rng = np.random.default_rng(12)
    n = 100
    u, v, w = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    nan = np.full(n, np.nan)
    tab = pd.DataFrame({
        "a": np.concatenate([u, nan, w]),
        "b": np.concatenate([u, v, nan]),
        "c": np.concatenate([nan, v, -w]),
    })
    out = correlations(tab, ["a", "b", "c"])
    sp = np.array(out["spearman"])
    assert sp[0, 1] == pytest.approx(1.0) and sp[1, 2] == pytest.approx(1.0) and sp[0, 2] == pytest.approx(-1.0)
    cop = np.array(out["copula"])
    np.testing.assert_allclose(np.diag(cop), 1.0)
    np.testing.assert_allclose(cop, cop.T)
    assert np.linalg.eigvalsh(cop).min() > 0
    assert np.array(out["n_pairs"]).tolist() == [[0, n, n], [n, 0, n], [n, n, 0]]


def test_correlation_needs_five_pairs():
    tab = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, np.nan, np.nan], "b": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = correlations(tab, ["a", "b"])
    assert out["spearman"][0][1] == 0.0 and out["copula"][0][1] == 0.0
    assert out["n_pairs"][0][1] == 4
    assert correlations(tab, []) == {"names": [], "spearman": [], "copula": [], "n_pairs": [], "reliability": []}


# --------------------------------------------------------------------------------------
# C2C
# --------------------------------------------------------------------------------------


def _cycles(rng, n, c, scale, se, own=1e-3, spread=2e-4):
    return pd.DataFrame({
        "wafer": "W", "die": "D", "device": np.repeat([f"d{i}" for i in range(n)], c),
        "cycle": np.tile(np.arange(c), n),
        "m1": np.repeat(rng.normal(own, spread, n), c) + rng.normal(0, scale, n * c) + rng.normal(0, se, n * c),
        "m1_stderr": se,
    })


def test_c2c_law_is_a_centred_normal_and_robust_to_a_few_failed_cycles():
    rng = np.random.default_rng(21)
    rows = _cycles(rng, 600, 4, 5e-5, 1e-5)
    bad = rng.choice(len(rows), 12, replace=False)  # 0.5 % of the cycles: failed per-cycle fits
    rows.loc[bad, "m1"] += rng.choice([-1, 1], 12) * 3e-3
    out = fit_c2c(rows, ["m1"], bootstrap=30, rng=1)["m1"]
    assert out["significant"] and out["p_value"] < 1e-6
    assert out["scale"] == pytest.approx(5e-5, rel=0.1)
    assert out["n_cells"] == 600
    law = out["law"]
    assert isinstance(law, ParameterLaw) and law.family == "norm"
    assert law.params == {"loc": 0.0, "scale": out["scale"]}


def test_c2c_is_not_fitted_without_repeated_cycles_or_stderr():
    rng = np.random.default_rng(22)
    one_cycle = _cycles(rng, 200, 1, 5e-5, 1e-5)
    assert fit_c2c(one_cycle, ["m1"], bootstrap=0) == {}
    few_cells = _cycles(rng, 9, 3, 5e-5, 1e-5)  # fewer than 10 cells with two cycles or more
    assert fit_c2c(few_cells, ["m1"], bootstrap=0) == {}
    assert fit_c2c(_cycles(rng, 50, 3, 5e-5, 1e-5).drop(columns="m1_stderr"), ["m1"]) == {}


def test_c2c_below_the_measurement_noise_is_not_significant():
    rng = np.random.default_rng(23)
    out = fit_c2c(_cycles(rng, 400, 3, 0.0, 2e-5), ["m1"], bootstrap=20)["m1"]
    assert not out["significant"] and "law" not in out
    assert out["scale"] < 1e-5


# --------------------------------------------------------------------------------------
# per-cell values, fallback law, Kaplan-Meier median, notes
# --------------------------------------------------------------------------------------


def test_cell_values_average_cycles_and_keep_the_larger_stderr():
    rows = pd.DataFrame({
        "wafer": "W", "die": "D", "device": ["a", "a", "a", "b", "c", "c"], "cycle": [0, 1, 2, 0, 0, 1],
        "m1": [1.0, 2.0, 3.0, 5.0, np.nan, np.nan], "m1_stderr": [0.1, 0.1, 0.1, 0.2, np.nan, np.nan],
        "t_star": [10.0, 12.0, 14.0, np.nan, np.nan, np.nan],
        "t_star_stderr": [1.0, 1.0, 1.0, np.nan, np.nan, np.nan],
        "t_star_lo": [np.nan, np.nan, np.nan, 800.0, 600.0, 900.0],
        "t_star_hi": [np.nan, np.nan, np.nan, np.inf, np.inf, np.inf],
    })
    out = cell_values(rows, ["m1", "t_star"]).set_index("device")
    assert out["n_cycles"].tolist() == [3, 1, 2]
    assert out.loc["a", "m1"] == pytest.approx(2.0)
    assert out.loc["a", "m1_stderr"] == pytest.approx(1.0 / np.sqrt(3.0))  # the spread of the cycles
    assert out.loc["b", "m1"] == 5.0 and out.loc["b", "m1_stderr"] == pytest.approx(0.2)  # the fit's own
    assert np.isnan(out.loc["c", "m1"])
    assert out.loc["a", "t_star"] == pytest.approx(12.0)
    assert out.loc["c", "t_star_lo"] == 600.0 and out.loc["c", "t_star_hi"] == np.inf
    assert out.loc["b", "t_star_lo"] == 800.0


def test_fallback_law_is_median_and_mad():
    law, why = fallback_law([1.0, 2.0, 3.0, np.nan, 10.0], "too few cells")
    assert law.family == "norm" and law.bounds is None
    assert law.params["loc"] == pytest.approx(2.5)
    assert law.params["scale"] == pytest.approx(1.4826 * 1.0)
    assert why.startswith("too few cells; ") and "4 value(s)" in why
    law, why = fallback_law([np.nan], "nothing")
    assert law is None and why == "nothing; no value to describe"
    law, _ = fallback_law([4.0, 4.0, 4.0], "equal")
    assert law.params["scale"] == pytest.approx(4e-3)  # a zero MAD gives a small positive scale


def test_kaplan_meier_median():
    times = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    event = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(_km_median(times, event), [4.0, 3.0])
    never = _km_median(times[:1], np.array([[1, 0, 0, 0, 0, 0]], bool))  # survival stays above one half
    assert np.isnan(never[0])


@pytest.mark.parametrize("a,b,expected", [("", "x", "x"), (None, "x", "x"), ("a", "x", "a; x"), ("a; b", "c", "a; b; c")])
def test_join_notes(a, b, expected):
    assert _join(a, b) == expected


def test_cell_values_average_cycles_as_a_groupby_does():
    """The bincount averages equal pandas' per-cell groupby (mean, spread of cycles, stderr, censoring bounds)."""
    import pandas as pd

    from hfox_fit.fitting.d2d import cell_values

    rng = np.random.default_rng(4)
    n = 400
    rows = pd.DataFrame({"wafer": rng.choice(["W1", "W2"], n), "die": rng.choice(["D1", "D2", "D3"], n),
                         "device": rng.choice([f"r{i:02d}" for i in range(20)], n),
                         "m1": rng.normal(1.0, 0.2, n), "m1_stderr": rng.uniform(0.01, 0.1, n),
                         "t_star": rng.normal(300, 50, n), "t_star_stderr": rng.uniform(1, 9, n),
                         "t_star_lo": rng.uniform(0, 100, n), "t_star_hi": rng.uniform(400, 900, n)})
    rows.loc[rng.random(n) < 0.2, "m1"] = np.nan
    rows.loc[rng.random(n) < 0.3, ["t_star_lo", "t_star_hi"]] = np.nan
    out = cell_values(rows, ["m1", "t_star"])
    g = rows.groupby(["wafer", "die", "device"], sort=False)
    order = rows[["wafer", "die", "device"]].drop_duplicates()  # cells in the order of their first row
    assert list(zip(out["wafer"], out["die"], out["device"])) == list(map(tuple, order.to_numpy().tolist()))
    want = g.agg(m1=("m1", "mean"), sd=("m1", "std"), n=("m1", "count"), se2=("m1_stderr", lambda s: (s**2).mean()),
                 lo=("t_star_lo", "min"), hi=("t_star_hi", "max"), cycles=("m1", "size")).reset_index()
    got = out.merge(want, on=["wafer", "die", "device"], suffixes=("", "_want"))
    assert len(got) == g.ngroups
    np.testing.assert_allclose(got["m1"], got["m1_want"], rtol=1e-12, equal_nan=True)
    se_mean = np.sqrt(got["se2"] / got["n"].clip(lower=1))
    se = np.where(got["n"] >= 2, np.maximum(got["sd"] / np.sqrt(got["n"].clip(lower=1)), se_mean), se_mean)
    np.testing.assert_allclose(got["m1_stderr"], se, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["t_star_lo"], got["lo"], rtol=0, equal_nan=True)
    np.testing.assert_allclose(got["t_star_hi"], got["hi"], rtol=0, equal_nan=True)
    assert (got["n_cycles"] == got["cycles"]).all()

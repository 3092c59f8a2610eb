"""Intervals of the population laws: the family's parameters, the correlations, the model-choice bootstrap.

Their coverage over many synthetic wafers is measured by ``test_coverage_slow.py``
(``-m slow``) and ``benchmarks/bench_coverage.py``; here, that they exist, are
consistent with the estimates and have a sane width.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hfox_fit.fitting import correlations, fit_parameter
from hfox_fit.fitting._families import _Data, _fit_candidate
from hfox_fit.fitting._law_checks import _bootstrap_law
from hfox_fit.laws import ParameterLaw


def test_family_parameters_have_intervals_of_sane_width():
    law = ParameterLaw("lognorm", {"s": 0.5, "loc": 0.0, "scale": 8e-4})
    rng = np.random.default_rng(0)
    x = law.sample(400, rng=rng)
    se = 0.05 * x
    fit = fit_parameter("m1", x + se * rng.standard_normal(len(x)), stderr=se, bootstrap=200, rng=1)
    assert fit.law.family == "lognorm"
    assert set(fit.params_ci90) == {"s", "scale"}  # loc = 0 is held fixed: no interval
    for k, (lo, hi) in fit.params_ci90.items():
        value = fit.law.params[k]
        assert lo < value < hi, (k, lo, value, hi)
        # asymptotic standard errors: s / sqrt(2n) for s, scale * s / sqrt(n) for the scale
        expected = {"s": 0.5 / np.sqrt(2 * 400), "scale": 8e-4 * 0.5 / np.sqrt(400)}[k]
        assert 0.6 * expected < fit.params_stderr[k] < 1.8 * expected, (k, fit.params_stderr[k], expected)
        assert 2.5 * fit.params_stderr[k] < hi - lo < 4.5 * fit.params_stderr[k]
    assert 0.0 < fit.family_share <= 1.0
    d = fit.to_dict()
    assert d["params_ci90"]["s"] == list(fit.params_ci90["s"]) and d["params_stderr"]["s"] == fit.params_stderr["s"]


def test_the_bootstrap_chooses_the_family_again_in_each_replicate():
    # gamma(a=25) and lognorm(s=0.2) are hard to tell apart at 150 values: re-choosing the family
    # in each replicate mixes both laws' medians; keeping the chosen one only cannot
    x = ParameterLaw("gamma", {"a": 25.0, "loc": 0.0, "scale": 4.0}).sample(150, rng=np.random.default_rng(5))
    data = _Data(x, np.zeros(0), np.zeros(0))
    cands = {k: _fit_candidate(k, False, data)[:3] for k in ("lognorm", "gamma", "norm")}
    both = _bootstrap_law(cands, list(cands), "lognorm", data, 400, np.random.default_rng(0))
    alone = _bootstrap_law({"lognorm": cands["lognorm"]}, ["lognorm"], "lognorm", data, 400,
                           np.random.default_rng(0))
    assert alone["chosen_share"] == 1.0
    assert 0.05 < both["chosen_share"] < 0.95, both["chosen_share"]
    # same replicates: where another family is chosen its median replaces lognorm's
    assert not np.allclose(both["median"], alone["median"])
    assert np.allclose(both["params"]["s"], alone["params"]["s"])


def test_copula_correlation_has_a_bootstrap_interval():
    rng = np.random.default_rng(3)
    n, rho = 400, -0.6
    z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    table = pd.DataFrame({"a": np.exp(z[:, 0]), "b": 100 + z[:, 1] ** 3, "c": rng.standard_normal(n)})
    c = correlations(table, ["a", "b", "c"], bootstrap=200, rng=0)
    est = c["copula"][0][1]
    lo, hi = c["copula_ci90"][0][1]
    assert lo < est < hi and lo < rho < hi
    # Fisher: sd(r) ~ (1 - r^2) / sqrt(n)
    assert c["copula_stderr"][0][1] == pytest.approx((1 - rho**2) / np.sqrt(n), rel=0.35)
    assert c["copula_ci90"][0][0] is None  # the diagonal has none
    lo, hi = c["spearman_ci90"][1][2]
    assert lo < c["spearman"][1][2] < hi and lo < 0 < hi
    assert "copula_ci90" not in correlations(table, ["a", "b"])  # no bootstrap asked, none given


def test_campaign_summary_and_params_carry_the_intervals(wafer_b_fit):
    s = wafer_b_fit.summary()
    for p in ("m1", "t_star", "r0"):
        d = s["d2d"][p]
        assert d["params_ci90"], p
        for k, (lo, hi) in d["params_ci90"].items():
            assert lo <= d["params"][k] <= hi, (p, k)
            assert d["params_stderr"][k] > 0
        assert 0 < d["family_share"] <= 1
    names = s["correlation"]["names"]
    i, j = names.index("m1"), names.index("t_star")
    lo, hi = s["correlation"]["copula_ci90"][i][j]
    assert lo < s["correlation"]["copula"][i][j] < hi < 0
    m1 = wafer_b_fit.params["d2d.m1"]
    assert m1.params["s"].ci90 is not None and m1.params["s"].stderr > 0
    assert "bootstrap" in m1.params["s"].note
    assert m1.params["loc"].ci90 is None and "fixed" in m1.params["loc"].note
    amp = s["rtn"]["amplitude"]
    assert amp["params_ci90"] and all(lo <= amp["params"][k] <= hi for k, (lo, hi) in amp["params_ci90"].items())

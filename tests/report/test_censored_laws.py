"""Censored laws in the report: the Kaplan-Meier helper and the like-with-like law checks."""

from __future__ import annotations

import numpy as np
import pytest

from hfox_fit.laws import ParameterLaw
from hfox_fit.report._stats import _law_check, kaplan_meier


def test_kaplan_meier_matches_a_hand_computed_example():
    # values 1, 2, 2+, 3, 4+, 5 (+: censored). At risk / events: t=1 6/1, t=2 5/1 (the censored 2
    # is still at risk at 2), t=3 3/1, t=5 1/1. S = 5/6, 5/6*4/5 = 2/3, 2/3*2/3 = 4/9, 0.
    t, cdf, at_risk = kaplan_meier([1, 2, 2, 3, 4, 5], [True, True, False, True, False, True])
    np.testing.assert_array_equal(t, [1, 2, 3, 5])
    np.testing.assert_allclose(cdf, [1 / 6, 1 / 3, 5 / 9, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(at_risk, [6, 5, 3, 1])


def test_kaplan_meier_without_censoring_is_the_ecdf_and_ties_count_once():
    t, cdf, at_risk = kaplan_meier([3.0, 1.0, 3.0, 2.0], [True] * 4)
    np.testing.assert_array_equal(t, [1, 2, 3])
    np.testing.assert_allclose(cdf, [0.25, 0.5, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(at_risk, [4, 3, 2])
    t, cdf, _ = kaplan_meier([1.0, 2.0, np.nan], [False, False, True])
    assert t.size == 0 and cdf.size == 0


def _censored_sample(law, n, cut, rng):
    v = law.rvs(n, rng) if hasattr(law, "rvs") else law.ppf(rng.random(n))
    return v[v < cut], np.full(int((v >= cut).sum()), float(cut))


def test_censored_ks_is_small_for_the_right_law_and_large_for_a_wrong_one():
    rng = np.random.default_rng(5)
    law = ParameterLaw("lognorm", {"s": 0.8, "loc": 0.0, "scale": 600.0}, None)
    x, lo = _censored_sample(law, 3000, 260.0, rng)
    assert len(lo) > 0.75 * 3000  # mostly censored, as in the example campaign
    right = _law_check(x, law, lo=lo, limit=300)
    assert right["method"] == "kaplan-meier" and right["upto"] == pytest.approx(260.0)
    assert right["ks"] < 0.03
    # the old comparison (observed values alone against the whole law) is far off
    naive = _law_check(x, law, limit=300)
    assert naive["ks"] > 0.5
    wrong = ParameterLaw("lognorm", {"s": 0.8, "loc": 0.0, "scale": 300.0}, None)
    assert _law_check(x, wrong, lo=lo)["ks"] > 0.1
    # the law's mass beyond the longest train, and the QQ plot stops where the estimate does
    assert right["mass_beyond"] == pytest.approx(1 - float(law.cdf(300.0)), rel=1e-9)
    assert right["extrapolated"]
    assert right["qq"]["p"].max() <= right["km_at_upto"] + 1e-12 < 0.3
    np.testing.assert_allclose(right["qq"]["measured"], right["qq"]["model"], rtol=0.08)


def test_values_with_large_errors_are_compared_with_the_law_plus_their_errors():
    rng = np.random.default_rng(6)
    law = ParameterLaw("norm", {"loc": 0.0, "scale": 1.0}, None)
    se = np.full(400, 2.0)
    x = law.ppf(rng.random(400)) + se * rng.standard_normal(400)
    chk = _law_check(x, law, se=se)
    assert chk["ks"] < 0.08  # against norm(0, 1) alone the distance is about 0.25
    assert _law_check(x, law)["ks"] > 0.15
    assert "with_errors" in chk
    np.testing.assert_allclose(np.interp(0.5, chk["with_errors"]["cdf"], chk["with_errors"]["x"]), 0.0, atol=0.05)


def test_censored_cdf_panel_draws_the_extrapolated_region():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from hfox_fit.plotting import plot_censored_cdf

    law = ParameterLaw("lognorm", {"s": 0.8, "loc": 0.0, "scale": 600.0}, None)
    x, lo = _censored_sample(law, 500, 260.0, np.random.default_rng(1))
    chk = _law_check(x, law, lo=lo, limit=300)
    fig, ax = plt.subplots()
    plot_censored_cdf(chk["km"]["t"], chk["km"]["cdf"], law, name="t_star", unit="pulse", ks=chk["ks"],
                      upto=chk["upto"], limit=300, mass_beyond=chk["mass_beyond"], n_exact=len(x),
                      n_censored=len(lo), ax=ax)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "extrapolated" in texts and f"{100 * chk['mass_beyond']:.0f} %" in texts
    assert ax.get_xlim()[1] > 300 and "censored" in ax.get_title()
    plt.close(fig)

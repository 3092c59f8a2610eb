"""The D2D family choice: indistinguishable candidates, the stated choice rule, one AIC scale.

The last test (``-m slow``, a few minutes on 2 cores) counts how often the paper preset's
exponential m1 law is chosen over 20 synthetic wafers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fit_helpers import fit_quietly
from scipy import stats

from hfox_fit.fitting._families import _Candidate, _Data
from hfox_fit.fitting.d2d import CHOICE_RULE, INDISTINGUISHABLE_AIC, choose_candidate, fit_parameter
from hfox_fit.laws import ParameterLaw
from hfox_fit.synth import make_wafer

# ---- the rule on constructed scores -------------------------------------------------------------

def test_candidates_within_2_aic_are_listed_and_the_simplest_is_kept():
    aic = {"lognorm_truncated": 100.0, "expon": 100.4, "lognorm": 101.7, "gamma": 109.4}
    n_params = {"lognorm_truncated": 4, "expon": 3, "lognorm": 3, "gamma": 3}
    chosen, tied = choose_candidate(aic, n_params)
    assert tied == ["lognorm_truncated", "expon", "lognorm"]  # in order of AIC, gamma is 9.4 away
    assert chosen == "expon"  # fewest parameters (3), then no shape parameter, before lognorm


def test_a_clear_winner_has_no_indistinguishable_list():
    chosen, tied = choose_candidate({"expon": 10.0, "gamma": 10.0 + INDISTINGUISHABLE_AIC + 0.01},
                                    {"expon": 3, "gamma": 3})
    assert (chosen, tied) == ("expon", [])


def test_the_rule_orders_parameters_then_truncation_then_shape_then_aic():
    # same parameter count: untruncated before truncated, even at a higher AIC
    assert choose_candidate({"expon_truncated": 0.0, "weibull_min": 1.0}, {"expon_truncated": 3, "weibull_min": 3})[0] \
        == "weibull_min"
    # same count, both untruncated: the shape-free family (expon) before gamma, even at a higher AIC
    assert choose_candidate({"gamma": 0.0, "expon": 1.5}, {"gamma": 3, "expon": 3})[0] == "expon"
    # two shape families: the lower AIC
    assert choose_candidate({"gamma": 0.3, "lognorm": 0.0}, {"gamma": 3, "lognorm": 3})[0] == "lognorm"
    # fewer parameters first, whatever the family
    assert choose_candidate({"norm_truncated": 0.0, "lognorm": 1.9}, {"norm_truncated": 4, "lognorm": 3})[0] \
        == "lognorm"


def test_the_summary_says_which_candidates_are_tied_and_by_which_rule():
    # an exponential: its truncation to the data range and shape families near it fit as well
    x = ParameterLaw("expon", {"loc": 0.0, "scale": 3e-5}).sample(800, rng=np.random.default_rng(4))
    fit = fit_parameter("m2", x, bootstrap=0)
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["family"] == "expon"
    assert "expon_truncated" in d["indistinguishable"] and len(d["indistinguishable"]) >= 2
    best = min(v["aic"] for v in d["scores"].values() if v["aic"] is not None)
    assert all(d["scores"][k]["aic"] <= best + INDISTINGUISHABLE_AIC for k in d["indistinguishable"])
    assert d["choice_rule"] == CHOICE_RULE and "same cells" in d["aic_scale"] and "Not exactly" in d["aic_scale"]
    assert "cannot tell them apart" in d["note"]


def test_the_truncated_expon_counts_its_loc_once():
    data = _Data(np.linspace(1.0, 5.0, 50), np.zeros(0), np.zeros(0))
    assert _Candidate("expon", (1.0, 5.0), {"loc": 1.0}).n_params == 3  # scale and two bounds
    assert _Candidate("expon", None, {}).n_params == 2
    assert _Candidate("gamma", (1.0, 5.0), {}).n_params == 4
    assert data.n == 50


# ---- one AIC scale ---------------------------------------------------------------------------

def test_a_window_far_in_a_laws_upper_tail_keeps_its_mass():
    """A normal truncated to a window 8 sigma above its mean: F(hi) - F(lo) underflowed to
    rounding noise, and the log of that noise made a nonsense candidate win by hundreds of AIC."""
    cand = _Candidate("norm", (6e-5, 1e-2), {})
    data = _Data(np.array([1e-4, 5e-4, 2e-3, 8e-3, 3e-4]), np.zeros(0), np.zeros(0))
    kw = {"loc": -0.05, "scale": 6e-3}
    ll = cand.terms(kw, 0.0, data)
    want = stats.truncnorm((6e-5 + 0.05) / 6e-3, (1e-2 + 0.05) / 6e-3, loc=-0.05, scale=6e-3).logpdf(data.x)
    np.testing.assert_allclose(ll, want, rtol=1e-6)


def _noisy_sample(law, n, seed):
    """``n`` values of ``law`` measured with stderrs like the paper preset's per-cell m1 (a few far wider
    than the law)."""
    rng = np.random.default_rng(seed)
    x = law.sample(n, rng=rng)
    med = law.median()
    se = med * np.exp(rng.normal(np.log(0.03), 1.6, n))  # median 3 %, 12 % of cells above 20 %
    return x + se * rng.standard_normal(n), se


@pytest.mark.parametrize("seed", [103])
def test_a_lognormal_parameter_with_noisy_cells_is_lognormal(seed):
    # before: a norm truncated far in its tail won by 40 AIC (its normaliser was rounding noise)
    law = ParameterLaw("lognorm", {"s": 0.9, "loc": 0.0, "scale": 5e-4})
    x, se = _noisy_sample(law, 700, seed)
    fit = fit_parameter("p", x, stderr=se, bootstrap=0)
    assert fit.law.family == "lognorm", {k: v["aic"] for k, v in fit.scores.items()}


# ---- the paper preset over 20 wafers (slow) ---------------------------------------------------

SEEDS = range(1000, 1020)


@pytest.mark.slow
def test_the_paper_m1_law_is_exponential_on_most_wafers():
    rows = []
    for seed in SEEDS:
        wafer = make_wafer("paper", devices=1024, pulses=1000, seed=seed)
        d = fit_quietly(wafer.dies, law="two_slope", bootstrap=0).summary()["d2d"]["m1"]
        rows.append((seed, d["family"], d["indistinguishable"]))
    chosen = sum(fam == "expon" for _, fam, _ in rows)
    tied = sum(fam == "expon" or "expon" in ind or "expon_truncated" in ind for _, fam, ind in rows)
    print(f"paper m1: expon chosen on {chosen} of {len(rows)} wafers, chosen or indistinguishable on {tied}; "
          f"others: {[r for r in rows if r[1] != 'expon']}")
    assert chosen >= 18, rows


def test_the_report_family_cell_names_the_tied_candidates():
    from hfox_fit.report._tables import _family_label

    label = _family_label("expon", None, ["lognorm_truncated", "expon", "lognorm"])
    assert label.startswith("expon (indistinguishable within 2 AIC: lognorm_truncated, lognorm;")
    assert _family_label("expon", None, []) == "expon"
    assert _family_label("gamma", [1.0, 2.0], ["gamma_truncated"]) == "gamma"

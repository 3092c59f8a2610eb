"""Pulse conditions: per-condition D2D laws and the condition law, on campaigns drawn from a known law."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
from fit_helpers import fit_quietly
from scipy import optimize

from hfox_fit.fitting import _families
from hfox_fit.fitting._law_checks import _km_median
from hfox_fit.fitting.d2d import fit_parameter
from hfox_fit.fitting.rtn import (
    _MAX_STAY_LOW,
    _draw_counts,
    _replicate_rates,
    _up_per_block,
    block_to_pulse,
)
from hfox_fit.laws import ParameterLaw
from hfox_fit.model import preset_model
from hfox_fit.synth import make_condition_campaign, make_wafer

SLOPES = {"m1": {"b_v": 2.0, "b_w": 0.5}, "t_star": {"b_v": -1.5, "b_w": -0.4}}


def _tight_model():
    """The paper's model with m1 and t* lognormal (s = 0.25) and t* inside 600 pulses at every condition.

    The fitted median of a law over 128 cells differs from the cells' own median by about
    0.75 s / sqrt(128) (3 % at s = 0.35, the paper's t* spread of 0.8 gives 7 %): the 5 % test
    of the issue needs a spread where that is well under 5 %.
    """
    base = preset_model("paper")
    return replace(base, d2d={**base.d2d,
                              "m1": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 5e-4}, (5e-5, 7.6e-3)),
                              "t_star": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 300.0}, (41.0, 2000.0))})


def _fit(wafer):
    return fit_quietly(wafer.dies, law="two_slope", bootstrap=100)


@pytest.fixture(scope="module")
def amplitude_only():
    """Two amplitudes at one width, 96 cells each: m1 moves by exp(2 * 0.5) = 2.7x between them."""
    wafer = make_condition_campaign(_tight_model(), SLOPES, v_pulses=(1.0, 1.5), pulse_widths=(1e-6,), v_ref=1.0,
                                    devices=96, pulses=400, seed=11)
    return wafer, _fit(wafer)


def test_each_condition_has_its_own_d2d_laws_and_the_pooled_ones_say_so(amplitude_only):
    wafer, fit = amplitude_only
    s = fit.summary()
    conds = s["conditions"]
    assert [(c["v_pulse"], c["pulse_width"]) for c in conds] == [(1.0, 1e-6), (1.5, 1e-6)]
    assert [c["n_cells"] for c in conds] == [96, 96]
    for c in conds:
        assert set(c["d2d"]) == set(s["d2d"]) == {"m1", "t_star", "m2", "c1", "r0"}
        for p, d in c["d2d"].items():
            assert d["family"] == conds[0]["d2d"][p]["family"]  # one family per parameter, other parameters
            assert d["median_ci90"][0] <= d["median"] <= d["median_ci90"][1]
    # the pooled cells are a mixture of two lognormals 2.7x apart: each condition's is found again
    for p in ("m1", "t_star"):  # lognorm, or a family the data cannot tell from it (within 2 AIC)
        d = conds[0]["d2d"][p]
        assert d["family"] == "lognorm" or "lognorm" in d.get("indistinguishable", []), (p, d["family"])
    for c in conds:
        truth = wafer.truth[(wafer.truth["v_pulse"] == c["v_pulse"]) & (wafer.truth["flag"] == "ok")]
        assert c["d2d"]["m1"]["median"] == pytest.approx(truth["m1"].median(), rel=0.1)
    ratio = conds[1]["d2d"]["m1"]["median"] / conds[0]["d2d"]["m1"]["median"]
    assert ratio == pytest.approx(np.e, rel=0.15)
    assert all("pooled over the 2 pulse conditions" in d["note"] for d in s["d2d"].values())
    assert any("2 pulse conditions" in n for n in s["notes"])
    json.dumps(s, allow_nan=False)  # the summary stays strict JSON


def _two_noise_campaign():
    """Two conditions of 96 cells whose pink and RTN laws differ (pink std x2, RTN p_up x3 at 1.5 V)."""
    from hfox_fit.model import PinkNoise, TelegraphNoise

    base = _tight_model()
    models = {1.0: base, 1.5: replace(base, pink=PinkNoise(alpha=0.05, d=0.5, taps=15),
                                      rtn=TelegraphNoise(p_up=2.4e-3, p_down=2e-3))}
    dies = []
    for k, (v, model) in enumerate(models.items()):
        for die in make_wafer(model, devices=96, pulses=800, seed=40 + k, wafer=f"W0{k + 1}").dies:
            dies.append(replace(die, v_pulse=np.full_like(die.v_pulse, v), pulse_width=np.full_like(die.v_pulse, 1e-6)))
    return models, _fit_dies(dies)


def _fit_dies(dies):
    return fit_quietly(dies, law="two_slope", bootstrap=100)


def test_each_condition_has_its_own_pink_and_rtn_laws_with_intervals():
    models, fit = _two_noise_campaign()
    s = fit.summary()
    for c in s["conditions"]:
        truth = models[c["v_pulse"]]
        pink, rtn = c["pink"], c["rtn"]
        assert pink["std"] == pytest.approx(truth.pink.std, rel=0.2), (c["v_pulse"], pink)
        assert pink["std_ci90"][0] < pink["std"] < pink["std_ci90"][1] and pink["std_stderr"] > 0
        assert rtn["p_up"] == pytest.approx(truth.rtn.p_up, rel=0.35), (c["v_pulse"], rtn)
        assert rtn["p_up_ci90"][0] < rtn["p_up"] < rtn["p_up_ci90"][1] and rtn["n_trains"] == 96
    low, high = s["conditions"]
    # the pooled laws sit between the two conditions'
    assert low["pink"]["std_ci90"][1] < s["pink"]["std"] < high["pink"]["std_ci90"][0]
    assert low["rtn"]["p_up_ci90"][1] < high["rtn"]["p_up_ci90"][0]


def test_one_varying_factor_gives_a_law_of_that_factor_alone(amplitude_only):
    wafer, fit = amplitude_only
    law = fit.summary()["condition_law"]
    assert law["factors"] == ["v_pulse"] and "only the pulse amplitude" in law["note"]
    assert law["v_range"] == [1.0, 1.5] and law["width_range"] == [1e-6, 1e-6]
    m1 = law["params"]["m1"]
    assert m1["scale"] == "log" and m1["b_w"] == 0.0 and m1["b_w_stderr"] is None
    assert abs(m1["b_v"] - 2.0) < 3 * m1["b_v_stderr"] and m1["b_v_stderr"] < 0.5
    assert m1["spread"]["choice"] in ("shared", "own")
    assert law["params"]["t_star"]["b_v"] < 0
    text = fit.describe()
    assert "pulse conditions: 2 (the laws above pool them)" in text and "condition law m1" in text
    # each condition's medians with their intervals
    for cond in fit.summary()["conditions"]:
        m1 = cond["d2d"]["m1"]
        lo, hi = m1["median_ci90"]
        assert f"m1 {m1['median']:.4g} [{lo:.4g}, {hi:.4g}]" in text


def test_a_single_condition_adds_nothing():
    wafer = make_wafer("paper", devices=128, pulses=300, seed=3)
    s = _fit(wafer).summary()
    assert "conditions" not in s and "condition_law" not in s
    assert not any("pulse conditions" in n for n in s["notes"])


def test_cells_are_grouped_by_their_stored_condition_across_dies_and_wafers_and_unknown_ones_apart():
    wafer = make_condition_campaign(_tight_model(), SLOPES, v_pulses=(1.0, 1.5), pulse_widths=(1e-6,), v_ref=1.0,
                                    devices=96, pulses=300, seed=5)
    dies = copy.deepcopy(wafer.dies)
    assert len(dies) == 2
    dies[1].wafer = "W02"  # the second condition on another wafer
    dies[1].v_pulse[:20] = 1.0  # 20 of its cells measured at the first condition
    dies[0].v_pulse[:10] = np.nan  # 10 cells of the first die with no amplitude recorded
    s = _fit(type(wafer)(dies=dies, truth=wafer.truth, model=wafer.model, effects=wafer.effects)).summary()
    conds = s["conditions"]
    assert [(c["v_pulse"], c["n_cells"]) for c in conds] == [(1.0, 86 + 20), (1.5, 76), (None, 10)]
    assert conds[-1]["condition"] == "unknown" and "no v_pulse or pulse_width" in conds[-1]["notes"][0]
    assert any("10 train(s) have no v_pulse or pulse_width" in n for n in s["notes"])
    assert s["condition_law"]["n_conditions"] == 2  # the unknown group is no condition of the law


def test_conditions_go_through_the_store_and_the_fit_command(tmp_path, capsys):
    """Ingest the table (v_pulse, pulse_width columns), ``hfox-fit fit``: the saved summary has the conditions."""
    from hfox_fit.cli import main
    from hfox_fit.fitting import CampaignResult
    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore

    wafer = make_condition_campaign(_tight_model(), SLOPES, v_pulses=(1.0, 1.5), pulse_widths=(1e-6,), v_ref=1.0,
                                    devices=48, pulses=300, seed=9)
    path = tmp_path / "c.h5"
    CampaignStore(path).ingest_table(dies_to_table(wafer.dies))
    assert main(["fit", "--calibrate", "0", str(path), "--law", "two_slope", "--quiet"]) == 0
    s = CampaignResult.load(path).summary()
    assert [(c["v_pulse"], c["n_cells"]) for c in s["conditions"]] == [(1.0, 48), (1.5, 48)]
    assert s["condition_law"]["params"]["m1"]["b_v"] > 0


# --------------------------------------------------------------------------------------
# the campaign: 3 amplitudes x 3 widths, 128 cells each, 600 pulses
# --------------------------------------------------------------------------------------


def _grid_fit(seed, devices=128, pulses=600):
    wafer = make_condition_campaign(_tight_model(), SLOPES, devices=devices, pulses=pulses, seed=seed)
    return wafer, _fit(wafer).summary()


def _median_errors(wafer, s):
    """Relative error of each condition's fitted median of m1 and t* against the cells' true sample median."""
    errs = []
    for c in s["conditions"]:
        truth = wafer.truth[(wafer.truth["v_pulse"] == c["v_pulse"]) & (wafer.truth["pulse_width"] == c["pulse_width"])
                            & (wafer.truth["flag"] == "ok")]
        errs += [c["d2d"][p]["median"] / truth[p].median() - 1 for p in ("m1", "t_star")]
    return np.abs(np.array(errs))


def _z(wafer, s):
    law = s["condition_law"]["params"]
    return np.array([(law[p][b] - wafer.condition_law.params[p][b]) / law[p][b + "_stderr"]
                     for p in SLOPES for b in ("b_v", "b_w")])


def test_nine_conditions_small():
    """The 3 x 3 grid at 96 cells: the law is found, the medians follow the truth."""
    wafer, s = _grid_fit(seed=21, devices=96)
    assert len(s["conditions"]) == 9 and s["condition_law"]["factors"] == ["v_pulse", "pulse_width"]
    assert s["condition_law"]["v_ref"] == 1.25 and s["condition_law"]["width_ref"] == pytest.approx(1e-6)
    err = _median_errors(wafer, s)
    # 96 cells: the law's median and the cells' own differ by ~0.75 s / sqrt(n) plus the fit errors
    assert np.all(err < 0.08) and np.mean(err < 0.05) >= 0.85, np.round(err, 3)
    assert np.all(np.abs(_z(wafer, s)) < 3)


@pytest.mark.slow
def test_nine_conditions_full_size_medians_and_slopes():
    wafer, s = _grid_fit(seed=1)
    err = _median_errors(wafer, s)
    assert np.all(err < 0.05), np.round(err, 3)  # the bar, all 18 medians
    assert np.all(np.abs(_z(wafer, s)) < 2)


@pytest.mark.slow
def test_condition_law_stderrs_are_honest_over_seeds():
    """Over 6 seeds, the 4 slopes' errors in standard errors: RMS near 1 (not far above: stderrs too small)."""
    z = np.concatenate([_z(*_grid_fit(seed=100 + k)) for k in range(6)])
    rms = float(np.sqrt(np.mean(z**2)))
    assert 0.4 < rms < 1.6, z
    assert np.mean(np.abs(z) < 2) >= 0.8, z


@pytest.mark.slow
def test_default_condition_law_slopes_do_not_lean():
    """The benchmark's campaign (paper preset, the default condition law, 128 cells x 600 pulses), 6 seeds.

    No slope leans: each one's mean error over the seeds is within 1 standard error. m1's width
    slope leaned (mean z -1.3 over seeds 1-10, about 0.43 against 0.5) while the law followed the
    D2D laws' medians, which weigh the flattest trains little (conditions.condition_location).
    """
    z = np.array([_z(*_default_grid_fit(seed)) for seed in range(1, 7)])
    print(np.round(z, 2))
    assert np.all(np.abs(z.mean(axis=0)) < 1.0), np.round(z.mean(axis=0), 2)
    assert 0.4 < float(np.sqrt(np.mean(z**2))) < 1.6, z


def _default_grid_fit(seed):
    wafer = make_condition_campaign("paper", devices=128, pulses=600, seed=seed)
    assert {p: dict(c) for p, c in wafer.condition_law.params.items()}.keys() == SLOPES.keys()
    s = _fit(wafer).summary()
    assert s["condition_law"]["params"]["m1"]["location"] == "sample_median"
    assert s["condition_law"]["params"]["t_star"]["location"] == "median"  # censored trains
    return wafer, s


# --------------------------------------------------------------------------------------
# the model at a condition, and the checkpoint that carries the condition law
# --------------------------------------------------------------------------------------


def _true_model_at(wafer, v, w):
    law = wafer.condition_law
    return replace(wafer.model, d2d={n: law.law_at(n, lw, v, w) for n, lw in wafer.model.d2d.items()})


def test_the_model_at_a_condition_between_the_fitted_ones_gives_its_median_w(amplitude_only):
    """The issue's check: median w of the model at 1.25 V (between 1.0 and 1.5) within 10 % of the truth's."""
    wafer, fit = amplitude_only
    model = fit.model
    assert model.condition_law is not None and model.condition_law.v_range == (1.0, 1.5)
    at = model.at(v_pulse=1.25, pulse_width=1e-6)
    truth = _true_model_at(wafer, 1.25, 1e-6)
    assert at.d2d["m1"].median() == pytest.approx(truth.d2d["m1"].median(), rel=0.1)
    assert at.meta["pulse_condition"] == {"v_pulse": 1.25, "pulse_width": 1e-6}
    w_fit, _ = at.simulate(4000, 400, rng=1)
    w_true, _ = truth.simulate(4000, 400, rng=2)
    for t in (100, 400):
        assert np.median(w_fit[:, 0, t]) == pytest.approx(np.median(w_true[:, 0, t]), rel=0.1), t
    # moving again from the moved model gives the same laws (the law, not the pooled model, decides)
    assert at.at(1.0, 1e-6).d2d["m1"].median() == pytest.approx(model.at(1.0, 1e-6).d2d["m1"].median(), rel=1e-12)


def test_the_model_warns_outside_the_fitted_range_and_refuses_a_factor_never_varied(amplitude_only):
    from hfox_fit.exceptions import FitError

    _, fit = amplitude_only
    with pytest.warns(UserWarning, match=r"v_pulse 2 V lies outside the fitted range \[1, 1.5\] V: the condition law "
                                         "extrapolates"):
        fit.model.at(v_pulse=2.0, pulse_width=1e-6)
    with pytest.raises(FitError, match=r"fitted at one pulse_width only \(1e-06 s\)"):
        fit.model.at(v_pulse=1.2, pulse_width=2e-6)


def test_a_model_of_one_condition_names_it_when_asked_for_another():
    from hfox_fit.exceptions import FitError
    from hfox_fit.model import DeviceModel

    model = _fit(make_wafer("paper", devices=128, pulses=300, seed=3)).model
    assert model.condition_law is None and model.meta["pulse_condition"] == {"v_pulse": 1.25, "pulse_width": 1e-6}
    assert model.at(1.25, 1e-6).d2d["m1"] == model.d2d["m1"]
    with pytest.raises(FitError, match=r"fitted at one pulse condition, v_pulse 1.25 V and pulse_width 1e-06 s"):
        model.at(v_pulse=1.3, pulse_width=1e-6)
    with pytest.raises(FitError, match="no condition law and no record"):
        DeviceModel.from_dict({**model.to_dict(), "meta": {}}).at(1.25, 1e-6)


def test_the_checkpoint_carries_the_condition_law_and_the_array_takes_a_condition(amplitude_only, tmp_path):
    pytest.importorskip("torch")
    from hfox_fit.model import DeviceModel
    from hfox_fit.torch import WeakResetArray, export_checkpoint, load_checkpoint

    _, fit = amplitude_only
    path = export_checkpoint(fit.model, tmp_path / "model.pt", provenance={"cells_used": 192})
    model, _ = load_checkpoint(path)
    assert model.condition_law.to_dict() == fit.model.condition_law.to_dict()
    assert DeviceModel.from_dict(fit.model.to_dict()).condition_law.to_dict() == model.condition_law.to_dict()
    arr = WeakResetArray.from_checkpoint(path, 8, v_pulse=1.25, pulse_width=1e-6, seed=0)
    assert arr.model.d2d["m1"].median() == pytest.approx(fit.model.at(1.25, 1e-6).d2d["m1"].median(), rel=1e-12)
    from hfox_fit.exceptions import FitError

    with pytest.raises(FitError, match="both v_pulse and pulse_width"):
        WeakResetArray.from_checkpoint(path, 8, v_pulse=1.25)
    # a model without a condition law writes no such key: checkpoints of one condition (and older ones) are unchanged
    plain = export_checkpoint(replace(fit.model, condition_law=None), tmp_path / "plain.pt", provenance={})
    assert load_checkpoint(plain)[0].condition_law is None


def test_a_condition_whose_breaks_are_all_censored_keeps_its_other_laws(amplitude_only):
    """t* (and m2) unknown at one condition: that condition still has its m1, c1, r0 laws and the m1 law moves."""
    import pandas as pd

    from hfox_fit.fitting.campaign import d2d_rows
    from hfox_fit.fitting.conditions import ConditionFitter

    wafer, fit = amplitude_only
    rows = d2d_rows(fit.to_dataframe(), "two_slope").copy()
    def per_cell(a, d):  # one value per cell (the grid holds each cell at one condition)
        return np.asarray(a, float).reshape(len(d.devices), -1)[:, 0]

    conditions = pd.concat([pd.DataFrame({"wafer": d.wafer, "die": d.die, "device": d.devices,
                                          "v_pulse": per_cell(d.v_pulse, d), "pulse_width": per_cell(d.pulse_width, d)})
                            for d in wafer.dies])
    conditions = rows[["wafer", "die", "device", "cycle"]].merge(conditions, on=["wafer", "die", "device"])
    high = rows[["wafer", "die", "device"]].merge(conditions, how="left")["v_pulse"].to_numpy() == 1.5
    for c in [c for c in rows.columns if c.startswith(("t_star", "m2"))]:
        rows[c] = rows[c].where(~high, False if rows[c].dtype == bool else np.nan)
    cf = ConditionFitter(["m1", "t_star", "m2", "c1", "r0"], bootstrap=50).fit(rows, conditions)
    high_group = next(g for g in cf.groups_ if g["v_pulse"] == 1.5)
    assert {"m1", "c1", "r0"} <= set(high_group["d2d"]) and "t_star" not in high_group["d2d"]
    assert any("t_star" in n for n in high_group["notes"])
    law = cf.law_summary_["params"]
    assert "b_v" in law["m1"] and law["m1"]["b_v"] > 0
    assert "b_v" not in law["t_star"] and "note" in law["t_star"]


# ---------------------------------------------------------------------- the cost of the per-condition step
# (its time is measured by benchmarks/bench_conditions.py; these check that the faster paths give the same numbers)


def test_rtn_replicates_all_at_once_are_the_loop_over_replicates():
    rng = np.random.default_rng(5)
    n, block = 150, 8
    shows = rng.random(n) < 0.4
    up = np.where(shows, rng.poisson(3.0, n), 0).astype(float)
    down = np.where(shows, rng.poisson(3.0, n), 0).astype(float)
    tl = rng.uniform(20, 70, n)
    th = np.where(shows, rng.uniform(5, 20, n), 0.0)
    started_high = np.where(shows, rng.random(n), 0.0)
    th[:3] = 0.0  # no high time in a few rows: p_down of a replicate without any is 0, as block_to_pulse has it
    # frequent switches (the quiet-train correction iterates) and rare ones (it does not)
    for rate in (1.0, 0.01):
        assert ((1 - rate * up.sum() / tl.sum()) ** np.mean(tl[~shows]) > _MAX_STAY_LOW) == (rate < 1)
        draws = np.random.default_rng(9).integers(0, n, (40, n))
        want = []
        for idx in draws:
            u, dn, h = rate * up[idx].sum(), down[idx].sum(), th[idx].sum()
            qu = _up_per_block(u, tl[idx], shows[idx], started_high[idx].sum())
            want.append(block_to_pulse(qu, dn / h if h > 0 else 0.0, block))
        got = _replicate_rates(_draw_counts(np.random.default_rng(9), n, 40), rate * up, down, tl, th, shows,
                               started_high, block)
        np.testing.assert_allclose(got, np.array(want), rtol=1e-10, atol=0.0)
    # a replicate without an up switch: p_up 0, p_down undetermined (NaN), as the point estimate
    quiet = _replicate_rates(np.eye(n)[:1] * n, up * 0, down, tl, th, shows, started_high, block)
    assert quiet[0, 0] == 0.0 and np.isnan(quiet[0, 1])


def test_kaplan_meier_median_without_censoring_is_the_order_statistic_the_curve_picks():
    rng = np.random.default_rng(2)
    for n in (5, 6, 127, 128, 1001):
        times = rng.lognormal(size=(50, n))
        times[:, :2] = times[:, 2:4]  # ties
        event = np.ones_like(times, bool)
        # the general path: one censored value far above every other leaves the median where it was
        padded = np.column_stack([times, np.full(50, 1e9)])
        general = _km_median(padded, np.column_stack([event, np.zeros(50, bool)]))
        k = int(np.ceil(n / 2)) - 1  # the survival curve first reaches 1/2 at the ceil(n/2)-th value
        np.testing.assert_array_equal(_km_median(times, event), np.sort(times, axis=1)[:, k])
        assert np.array_equal(general, np.sort(times, axis=1)[:, k]) == (n % 2 == 1)  # (n + 1 cells when even)


def test_a_warm_started_fit_reaches_the_same_optimum_in_fewer_evaluations(monkeypatch):
    rng = np.random.default_rng(4)
    truth = 1e-4 + rng.exponential(5e-4, 128)  # expon with measured errors: its loc is fitted (a scan, cold)
    se = np.full(128, 2e-5)
    values = truth + se * rng.standard_normal(128)
    evaluations = []
    real = optimize.minimize

    def counting(*a, **k):
        r = real(*a, **k)
        evaluations.append(r.nfev)
        return r

    monkeypatch.setattr(_families.optimize, "minimize", counting)
    runs = {}
    for name, starts in (("cold", None), ("warm", {"expon": {"loc": 0.8e-4, "scale": 6e-4}})):
        evaluations.clear()
        fit = fit_parameter("m1", values, stderr=se, families=("expon",), truncate=False, bootstrap=0,
                            guard=False, rng=0, starts=starts)
        runs[name] = (fit, sum(evaluations))
    (cold, n_cold), (warm, n_warm) = runs["cold"], runs["warm"]
    assert abs(warm.scores["expon"]["loglik"] - cold.scores["expon"]["loglik"]) < 1e-5
    assert warm.median == pytest.approx(cold.median, rel=1e-3)
    assert n_warm < 0.7 * n_cold, (n_warm, n_cold)


def test_a_condition_without_a_median_interval_is_left_out_of_the_law_not_the_whole_law():
    """t_star at a slow condition (most trains end before their break) has no interval: the law uses the others."""
    from types import SimpleNamespace

    from hfox_fit.fitting.conditions import ConditionFitter, condition_location
    from hfox_fit.laws import ParameterLaw

    rng = np.random.default_rng(2)
    groups = []
    for v in (1.0, 1.25, 1.5):
        for w in (5e-7, 1e-6, 2e-6):
            med = 500 * np.exp(-1.5 * (v - 1.25) - 0.4 * np.log(w / 1e-6) + 0.02 * rng.standard_normal())
            law = ParameterLaw("lognorm", {"s": 0.5, "loc": 0.0, "scale": med})
            ci = None if (v, w) == (1.0, 5e-7) else [med * 0.92, med * 1.08]
            groups.append({"v_pulse": v, "pulse_width": w, "d2d": {"t_star": {"median": med, "median_ci90": ci,
                                                                               "n_used": 100}},
                           "_fits": SimpleNamespace(laws_={"t_star": law})})
    fitter = ConditionFitter(["t_star"])
    fitter.notes_ = []
    fitter._fit_law(groups, {"t_star": condition_location([g["d2d"]["t_star"] for g in groups])})
    entry = fitter.law_summary_["params"]["t_star"]
    assert entry["n_conditions_used"] == 8
    assert entry["b_v"] == pytest.approx(-1.5, abs=0.1) and entry["b_w"] == pytest.approx(-0.4, abs=0.05)
    assert "fitted on 8 of 9 conditions: v_pulse 1 V, width 5e-07 s left out" in entry["note"]
    assert "t_star" in fitter.law_.params

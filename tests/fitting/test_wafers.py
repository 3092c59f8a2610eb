"""The wafer level: per-wafer D2D medians, the variance decomposition, comparisons of medians."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fit_helpers import fit_quietly

from hfox_fit.exceptions import FitError
from hfox_fit.fitting.wafers import (
    compare_medians,
    compare_summaries,
    variance_components,
    wafer_d2d,
)
from hfox_fit.laws import ParameterLaw
from hfox_fit.model import preset_model
from hfox_fit.synth import make_wafer, make_wafer_campaign


def _tight_model():
    """wafer_b with a narrower m1 law (lognormal s 0.25): a 512-cell median is then known to about 1.5 %."""
    base = preset_model("wafer_b")
    return replace(base, d2d={**base.d2d, "m1": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 8e-4},
                                                                 (2e-4, 3e-3))})


@pytest.fixture(scope="module")
def shifted():
    """4 wafers x 512 cells; W02's median m1 is 20 % above the others' (W01, W03, W04 are draws of one wafer)."""
    camp = make_wafer_campaign(_tight_model(), factors=[1.0, 1.2, 1.0, 1.0], params=("m1",), devices=512,
                               pulses=300, seed=11)
    return camp, fit_quietly(camp.dies, law="two_slope", bootstrap=50)


@pytest.fixture(scope="module")
def spread():
    """4 wafers x 256 cells x 2 cycles with a large known W2W spread of m1 and r0."""
    factors = [0.7, 0.9, 1.1, 1.4]
    camp = make_wafer_campaign("wafer_b", factors=factors, params=("m1", "r0"), devices=256, cycles=2, pulses=300,
                               seed=12)
    return camp, fit_quietly(camp.dies, law="two_slope", bootstrap=20)


def test_synth_records_each_wafers_true_factors_and_medians():
    camp = make_wafer_campaign("paper", wafers=3, w2w_sd=0.3, devices=20, pulses=10, seed=1)
    assert sorted({d.wafer for d in camp.dies}) == ["W01", "W02", "W03"]
    assert set(camp.truth["wafer"]) == {"W01", "W02", "W03"} and len(camp.truth) == 60
    base = preset_model("paper").d2d
    for rec in camp.meta["wafers"]:
        assert set(rec["factors"]) == {"m1", "t_star", "r0"}
        for p, f in rec["factors"].items():
            assert rec["medians"][p] == pytest.approx(f * base[p].median(), rel=1e-9)
    logs = np.log([f for r in camp.meta["wafers"] for f in r["factors"].values()])
    assert np.std(logs) > 0.05  # drawn, not all 1
    assert camp.truth_json()["meta"]["w2w"]["sd"] == 0.3
    # same seed, same campaign; given factors move the medians exactly
    again = make_wafer_campaign("paper", wafers=3, w2w_sd=0.3, devices=20, pulses=10, seed=1)
    assert again.meta["wafers"] == camp.meta["wafers"]
    with pytest.raises(FitError, match="positive factors"):
        make_wafer_campaign("paper", factors=[1.0, -2.0], devices=4, pulses=5)


def test_a_20_percent_shift_in_median_m1_is_recovered_and_significant(shifted):
    camp, fit = shifted
    s = fit.summary()
    assert [w["wafer"] for w in s["wafers"]] == ["W01", "W02", "W03", "W04"]
    assert all(w["n_cells"] == 512 for w in s["wafers"])
    for w in s["wafers"]:
        d = w["d2d"]["m1"]
        assert d["median_ci90"][0] < d["median"] < d["median_ci90"][1]
    out = compare_summaries(s, s, "W01", "W02")["parameters"]["m1"]
    assert abs(out["ratio"] - 1.2) < 0.05, out
    assert out["significant"] is True and out["ratio_ci90"][0] > 1
    # two draws of the same wafer (same model, other seeds) do not differ
    for other in ("W03", "W04"):
        same = compare_summaries(s, s, "W01", other)["parameters"]["m1"]
        assert same["significant"] is False, (other, same)
        assert same["ratio_ci90"][0] < 1 < same["ratio_ci90"][1]


def test_one_wafer_fit_has_no_wafer_level(small_wafer):
    fit = fit_quietly(small_wafer.dies, law="two_slope", bootstrap=10)
    s = fit.summary()
    assert "wafers" not in s and "variance" not in s
    with pytest.raises(FitError, match="no wafer 'W03'"):
        wafer_d2d(s, "W03")


def test_variance_shares_sum_to_one_and_the_wafer_share_is_near_the_truth(spread):
    camp, fit = spread
    var = fit.summary()["variance"]
    truth = variance_components(camp.truth[camp.truth["flag"] == "ok"], ["m1", "r0"])
    for p in ("m1", "r0"):
        v = var[p]
        shares = [v[k] for k in ("wafer", "die", "cell", "cycle") if v[k] is not None]
        assert sum(shares) == pytest.approx(1.0, abs=1e-12)
        assert v["die"] is None  # one die per wafer: not separable from the wafer
        assert v["scale"] == "log" and v["measurement_variance"] > 0
        assert abs(v["wafer"] - truth[p]["wafer"]) < 0.05, (p, v, truth[p])
    # the design: ln factors' variance over the within-wafer spread of ln m1 (lognormal s 0.5, bounded)
    design = np.var(np.log([0.7, 0.9, 1.1, 1.4]), ddof=1)
    within = camp.truth[camp.truth["flag"] == "ok"].groupby("wafer")["m1"].apply(lambda x: np.var(np.log(x))).mean()
    assert abs(var["m1"]["wafer"] - design / (design + within)) < 0.08
    assert var["m1"]["wafer"] > 0.15  # a real W2W share, against r0's much larger one
    assert var["r0"]["wafer"] > 0.8
    # the printed summary: each wafer's medians with their intervals; the shares say they have none
    text = fit.describe()
    for w in fit.summary()["wafers"]:
        m1 = w["d2d"]["m1"]
        lo, hi = m1["median_ci90"]
        assert f"m1 {m1['median']:.4g} [{lo:.4g}, {hi:.4g}]" in text
    assert "moment estimates, no interval" in text


def test_henderson_recovers_known_components_of_an_unbalanced_nested_design():
    rng = np.random.default_rng(0)
    sd = {"wafer": 1.0, "die": 0.5, "cell": 0.7, "cycle": 0.3}
    rows = []
    for w in range(40):
        a = rng.normal(0, sd["wafer"])
        for d in range(rng.integers(2, 6)):
            b = rng.normal(0, sd["die"])
            for c in range(rng.integers(5, 15)):
                e = rng.normal(0, sd["cell"])
                for k in range(rng.integers(1, 4)):
                    rows.append((f"W{w}", f"D{d}", f"c{c}", k, 10 + a + b + e + rng.normal(0, sd["cycle"])))
    table = pd.DataFrame(rows, columns=["wafer", "die", "device", "cycle", "x"]).assign(flag="ok")
    got = variance_components(table, ["x"])["x"]
    assert got["scale"] == "log"
    # on the linear scale (shift the values below 0 so the log is not taken)
    lin = variance_components(table.assign(x=table["x"] - 10), ["x"])["x"]
    assert lin["scale"] == "linear"
    for k, s in sd.items():
        assert lin["variance"][k] == pytest.approx(s**2, rel=0.35, abs=0.02), (k, lin["variance"])
    total = sum(s**2 for s in sd.values())
    assert lin["wafer"] == pytest.approx(1.0 / total, abs=0.12)
    # one wafer: no wafer level; one train per cell: no cycle level
    one = variance_components(table[(table["wafer"] == "W0") & (table["cycle"] == 0)].assign(x=lambda t: t["x"] - 10),
                              ["x"])["x"]
    assert one["wafer"] is None and one["cycle"] is None
    assert one["die"] + one["cell"] == pytest.approx(1.0)


def test_compare_medians_ratio_interval_and_fallbacks():
    out = compare_medians(1.0, [0.9, 1.1], 1.2, [1.1, 1.3])
    assert out["ratio"] == pytest.approx(1.2) and out["significant"] is True
    se = np.hypot(np.log(1.1 / 0.9), np.log(1.3 / 1.1)) / (2 * 1.6448536269514722)
    assert out["ratio_ci90"] == pytest.approx([1.2 * np.exp(-1.6448536269514722 * se),
                                               1.2 * np.exp(1.6448536269514722 * se)])
    assert compare_medians(1.0, [0.8, 1.2], 1.1, [0.9, 1.3])["significant"] is False
    none = compare_medians(1.0, None, 1.2, [1.1, 1.3])
    assert none["significant"] is None and none["ratio"] == pytest.approx(1.2)
    lin = compare_medians(-0.1, [-0.2, 0.0], 0.3, [0.2, 0.4])
    assert lin["scale"] == "linear" and lin["ratio"] is None and lin["significant"] is True
    assert lin["difference"] == pytest.approx(0.4)


def test_a_single_wafer_draw_is_not_a_wafer_campaign():
    # make_wafer is untouched: one wafer, its name, no W2W meta
    w = make_wafer("paper", devices=8, pulses=5, seed=1)
    assert "wafers" not in w.meta and {d.wafer for d in w.dies} == {"W01"}

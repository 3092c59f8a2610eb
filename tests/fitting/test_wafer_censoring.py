"""The wafer share of a censored parameter (t* past the train's end) comes from the wafers' laws, not the seen breaks."""

from __future__ import annotations

import numpy as np
import pytest

from hfox_fit.fitting.wafers import add_wafers, censored_params, variance_components
from hfox_fit.model import preset_model
from hfox_fit.synth import make_wafer_campaign

END = 300.0  # the trains' last pulse: breaks at or after it are censored


def _censored_rows(factors, seed):
    """The truth of 4 wafers x 384 cells of wafer_b (t* median 340, W2W factors on t* only), as a fit's D2D
    table would hold it: every t* >= END missing and censored at END (t_star_lo), a 2 % stderr on the others."""
    camp = make_wafer_campaign("wafer_b", factors=factors, params=("t_star",), devices=384, pulses=5, seed=seed)
    truth = camp.truth[camp.truth["flag"] == "ok"].reset_index(drop=True)
    rows = truth[["wafer", "die", "device", "cycle", "flag", "m1", "t_star"]].copy()
    late = rows["t_star"].to_numpy() >= END
    rows["t_star_stderr"] = 0.02 * rows["t_star"]
    rows["t_star_lo"] = np.where(late, END, rows["t_star"])
    rows["t_star_hi"] = np.where(late, np.inf, rows["t_star"])
    rows.loc[late, ["t_star", "t_star_stderr"]] = np.nan
    rows["m1_stderr"] = 0.02 * rows["m1"]
    return truth, rows


def _add(rows):
    base = preset_model("wafer_b").d2d
    summary = {"d2d": {}}
    add_wafers(summary, rows, ["t_star", "m1"], {"t_star": base["t_star"], "m1": base["m1"]}, bootstrap=40)
    return summary["variance"]


def test_a_real_t_star_shift_is_not_compressed_by_the_censoring():
    truth, rows = _censored_rows([0.7, 0.9, 1.1, 1.4], seed=21)
    assert 0.3 < float(np.isnan(rows["t_star"]).mean()) < 0.7  # a good part of the breaks lie past the train
    assert censored_params(rows, ["t_star", "m1"]) == ["t_star"]
    want = variance_components(truth, ["t_star"])["t_star"]["wafer"]  # every break, uncensored
    v = _add(rows)["t_star"]
    assert v["wafer_from"] == "wafer laws" and v["wafer_laws"]["n_wafers"] == 4
    assert abs(v["wafer"] - want) < 0.08, (v["wafer"], want)
    assert v["wafer_seen"] < want - 0.1, (v["wafer_seen"], want)  # what the seen breaks alone would say
    assert sum(v[lv] for lv in ("wafer", "die", "cell", "cycle") if v[lv] is not None) == pytest.approx(1.0)
    assert "wafer_from" not in _add(rows)["m1"]  # m1 is not censored: its ANOVA share stands


def test_without_a_shift_the_censored_share_stays_small():
    truth, rows = _censored_rows([1.0, 1.0, 1.0, 1.0], seed=22)
    v = _add(rows)["t_star"]
    assert v["wafer_from"] == "wafer laws"
    assert v["wafer"] < 0.04, v

"""Intervals calibrated by simulation (hfox_fit.calibration): small wafers, few replicates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from hfox_fit import calibration as calibration_module
from hfox_fit.calibration import BIAS_RESOLVED, MIN_REPLICATES, calibrate, population_quantities
from hfox_fit.fitting import fit_campaign
from hfox_fit.synth import make_wafer


def _fit(devices=160, pulses=400, seed=7):
    wafer = make_wafer("paper", devices=devices, pulses=pulses, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_campaign(wafer.dies, law="two_slope", bootstrap=40, progress=False)


@pytest.fixture(scope="module")
def fitted():
    return _fit()


@pytest.fixture(scope="module")
def calibrated(fitted):
    return calibrate(fitted, replicates=MIN_REPLICATES, max_devices=64, seed=3)


def test_every_population_quantity_gets_a_row_with_its_bias_spread_and_interval(fitted, calibrated):
    table = calibrated.table.set_index("quantity")
    est = population_quantities(fitted.summary())
    for name in ("median m1", "median t_star", "copula m1~c1", "pink std", "rtn p_up"):
        assert name in table.index
        row = table.loc[name]
        assert row["estimate"] == pytest.approx(est[name])
        assert np.isfinite(row["bias"]) and row["sd"] > 0 and row["bias_stderr"] > 0
        # a bias widens the interval only where the replicates tell it from 0
        assert row["bias_resolved"] == (abs(row["bias"]) > BIAS_RESOLVED * row["bias_stderr"])
        lo, hi = calibrated.interval(name)
        assert lo < row["estimate"] < hi
        if row["bias_resolved"]:  # reaching out towards the truth: estimate - bias
            assert lo < row["estimate"] - row["bias"] < hi
        t = stats.t.ppf(0.95, row["n_replicates"] - 1)
        assert hi - lo >= 2 * t * row["sd"] * (1 - 1e-9)
    # the model's value is the simulated wafers' truth: the fitted model's own law median
    assert table.loc["median m1", "model_value"] == pytest.approx(fitted.model.d2d["m1"].median())
    assert calibrated.devices == 64 and calibrated.replicates == MIN_REPLICATES
    assert calibrated.pulses == 400 and calibrated.cycles == 1


def test_the_spread_is_scaled_to_the_campaigns_cells(fitted, calibrated):
    """64 simulated cells stand for the campaign's: their spread times sqrt(64 / n)."""
    assert calibrated.n_cells > 64
    again = calibrate(fitted, replicates=MIN_REPLICATES, max_devices=64, seed=3)
    assert again.table["sd"].equals(calibrated.table["sd"])  # same seed, same numbers
    cal = calibrated.table.set_index("quantity")
    # the replicates' own spread (sqrt(n) bias_stderr) is the scaled one times sqrt(n / 64)
    ratio = np.sqrt(calibrated.n_cells / 64)
    assert ratio > 1.3
    row = cal.loc["median m1"]
    assert row["bias_stderr"] * np.sqrt(row["n_replicates"]) == pytest.approx(row["sd"] * ratio)


def test_the_replicates_on_worker_processes_give_the_same_numbers(fitted, calibrated):
    """Each replicate has its own seed: two worker processes fit them to the same table as this process."""
    parallel = calibrate(fitted, replicates=MIN_REPLICATES, max_devices=64, seed=3, jobs=2)
    assert parallel.failed == calibrated.failed
    assert parallel.table.equals(calibrated.table)


def test_a_fixed_parameter_and_too_few_replicates_give_no_interval(fitted):
    few = calibrate(fitted, replicates=2, max_devices=48, seed=1)
    table = few.table.set_index("quantity")
    assert not np.isfinite(table.loc["median m1", "calibrated_lo"])
    assert "fewer than" in table.loc["median m1", "note"]
    assert few.interval("median m1") is None
    block = few.to_dict()
    assert block["replicates"] == 2 and block["quantities"]["median m1"]["ci90"] is None


def test_rows_from_replicates_a_fixed_parameter_another_family_and_a_clipped_copula():
    """The table's rules on made-up replicates: a parameter the family holds fixed, replicates that chose
    another family (left out of that family's parameters), a bias that widens the interval on its side, a
    copula interval clipped to [-1, 1]."""
    est = {"t_star.family": "lognorm", "t_star.loc": 0.0, "t_star.s": 0.8, "copula m1~c1": 0.97, "copula m1~m2": 0.5}
    truth = dict(est)
    got = [{"t_star.family": "lognorm", "t_star.loc": 0.0, "t_star.s": 0.8 + d, "copula m1~c1": 0.90 + d,
            "copula m1~m2": 0.57 + d} for d in (-0.02, -0.01, 0.0, 0.01, 0.02)]
    got.append({"t_star.family": "gamma", "t_star.loc": 5.0, "t_star.s": 9.0, "copula m1~c1": 0.90,
                "copula m1~m2": 0.57})
    table = calibration_module._table(est, truth, got, {}, scale=1.0).set_index("quantity")
    assert "held fixed" in table.loc["t_star.loc", "note"] and table.loc["t_star.loc", "n_replicates"] == 0
    # held fixed by its family even where fewer than two replicates chose that family (not "1 replicate gave it")
    one = calibration_module._table(est, truth, got[-2:], {}, scale=1.0).set_index("quantity")
    assert one.loc["t_star.loc", "note"] == "held fixed by the family (not fitted)"
    assert "fewer than" in one.loc["t_star.s", "note"]
    # a bias of 0 within its noise: the interval is the replicates' spread about the estimate
    s_row = table.loc["t_star.s"]
    assert s_row["n_replicates"] == 5 and s_row["bias"] == pytest.approx(0.0) and not s_row["bias_resolved"]
    assert "bias within" in s_row["note"]
    spread = np.std([-0.02, -0.01, 0.0, 0.01, 0.02], ddof=1)
    half = stats.t.ppf(0.95, 4) * spread
    assert (s_row["calibrated_lo"], s_row["calibrated_hi"]) == pytest.approx((0.8 - half, 0.8 + half))
    # +0.07 over six replicates of sd 0.013: resolved; the truth lies below, the interval reaches down by it
    m_row = table.loc["copula m1~m2"]
    assert m_row["n_replicates"] == 6 and m_row["bias_resolved"] and m_row["bias"] == pytest.approx(0.07)
    reps = [0.55, 0.56, 0.57, 0.58, 0.59, 0.57]
    half = stats.t.ppf(0.95, 5) * np.std(reps, ddof=1) * np.sqrt(1 + 1 / 6)
    assert (m_row["calibrated_lo"], m_row["calibrated_hi"]) == pytest.approx((0.5 - 0.07 - half, 0.5 + half))
    assert "bias larger than the spread" in m_row["note"]  # 0.07 against a spread of 0.013
    # -0.07 from 0.97: the interval reaches up past 1 and is clipped there
    c_row = table.loc["copula m1~c1"]
    assert c_row["bias"] == pytest.approx(-0.07) and c_row["calibrated_hi"] == 1.0


def test_an_interval_is_clipped_to_the_values_its_quantity_can_take():
    """A family's scale and shape, the pink std and the telegraph probabilities cannot be negative (nor a
    probability above 1): a spread that reaches past their bounds is clipped there, and the note says so; a
    median and a location are not bounded."""
    est = {"m1.family": "lognorm", "m1.scale": 0.01, "m1.s": 0.05, "m2.family": "norm", "m2.loc": 0.0,
           "median m2": 0.001,
           "pink std": 0.002, "rtn p_up": 0.97, "rtn p_down": 0.01}
    got = [{"m1.family": "lognorm", "m1.scale": 0.01 + d, "m1.s": 0.05 + 3 * d, "m2.family": "norm", "m2.loc": d,
            "median m2": 0.001 + d, "pink std": 0.002 + d / 2, "rtn p_up": 0.97 + d, "rtn p_down": 0.01 + d}
           for d in (-0.02, -0.01, 0.0, 0.01, 0.02)]
    table = calibration_module._table(est, dict(est), got, {}, scale=1.0).set_index("quantity")
    for name in ("m1.scale", "m1.s", "pink std", "rtn p_down"):
        row = table.loc[name]
        assert row["calibrated_lo"] == 0.0 and row["calibrated_hi"] > est[name], name
        assert "clipped to the values it can take" in row["note"], name
    assert table.loc["rtn p_up", "calibrated_hi"] == 1.0 and table.loc["rtn p_up", "calibrated_lo"] < 0.97
    for name in ("median m2", "m2.loc"):  # (no bound: the symmetric interval, below 0)
        assert table.loc[name, "calibrated_lo"] < 0 and "clipped" not in table.loc[name, "note"]
    assert calibration_module._domain("copula m1~m2") == (-1.0, 1.0)
    assert calibration_module._domain("t_star.a") == (0.0, np.inf)


def test_a_copula_interval_is_never_narrower_than_sampling_its_cell_pairs_gives():
    """Replicates that agree more closely than sampling 300 cell pairs allows (wafer_b's c1~r0 covered 72.5 %
    for that) give way to the sampling's own spread, (1 - rho^2) / sqrt(n - 3); a wider spread is kept."""
    summary = {"correlation": {"names": ["m1", "c1", "r0"],
                               "copula": [[1.0, 0.2, 0.0], [0.2, 1.0, -0.1], [0.0, -0.1, 1.0]],
                               "n_pairs": [[0, 300, 4], [300, 0, 300], [4, 300, 0]]}}
    floors = calibration_module._sampling_floors(summary)
    assert floors == pytest.approx({"copula m1~c1": 0.96 / np.sqrt(297), "copula c1~r0": 0.99 / np.sqrt(297)})
    est = {"copula m1~c1": 0.2, "copula c1~r0": -0.1}
    narrow = [{"copula m1~c1": 0.2 + d, "copula c1~r0": -0.1 + 8 * d} for d in (-0.01, -0.005, 0.0, 0.005, 0.01)]
    table = calibration_module._table(est, dict(est), narrow, {}, scale=1.0, floors=floors).set_index("quantity")
    half = stats.t.ppf(0.95, 4)
    floored = table.loc["copula m1~c1"]
    assert floored["sd"] == pytest.approx(floors["copula m1~c1"]) and "sampling" in floored["note"]
    assert (floored["calibrated_lo"], floored["calibrated_hi"]) == pytest.approx(
        (0.2 - half * floors["copula m1~c1"], 0.2 + half * floors["copula m1~c1"]))
    kept = table.loc["copula c1~r0"]  # the replicates' 0.063 is above its floor 0.057
    assert kept["sd"] == pytest.approx(np.std([8 * d for d in (-0.01, -0.005, 0.0, 0.005, 0.01)], ddof=1))
    assert "sampling" not in kept["note"]
    # without floors (a quantity that is no copula, or an older caller) the replicates' spread is the interval's
    bare = calibration_module._table(est, dict(est), narrow, {}, scale=1.0).set_index("quantity")
    assert bare.loc["copula m1~c1", "sd"] < floors["copula m1~c1"] / 2


def test_a_campaign_that_pools_conditions_or_wafers_says_its_replicates_do_not(calibrated):
    """The replicates are one population drawn from the pooled laws: a campaign of several pulse conditions
    (or wafers) is told so in the calibration, its note and the printed summary; one of each is not."""
    from hfox_fit.fitting._result import describe_summary
    from hfox_fit.synth import make_condition_campaign

    assert calibrated.pooled is None and calibrated.to_dict()["pooled"] is None
    assert "pools" not in calibrated.to_dict()["note"]
    camp = make_condition_campaign("paper", v_pulses=(1.15, 1.35), pulse_widths=(1e-6,), devices=48, pulses=200,
                                   seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_campaign(camp.dies, law="two_slope", bootstrap=0, progress=False)
        cal = calibrate(fit, replicates=2, max_devices=32, seed=1)
    assert cal.pooled == "2 pulse conditions"
    block = cal.to_dict()
    assert block["pooled"] == "2 pulse conditions" and "the campaign pools 2 pulse conditions" in block["note"]
    fit.add_calibration(block)
    assert "not the 2 pulse conditions one by one" in describe_summary(fit.summary())
    assert calibration_module._pooled_design({"conditions": [{}], "wafers": [{}, {}, {}]}) == "3 wafers"


@pytest.mark.parametrize("kwargs,match", [({"replicates": 1}, "replicates must be >= 2"),
                                          ({"max_devices": 4}, "max_devices must be >= 16"),
                                          ({"jobs": 0}, "jobs must be >= 1")])
def test_bad_options_are_refused(fitted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibrate(fitted, **kwargs)


def test_fit_calibrate_puts_the_calibration_in_the_summary_the_store_and_the_report(tmp_path, capsys):
    """`hfox-fit fit --calibrate N`: the summary JSON, the saved fit and the report carry the calibration;
    a bad N is refused before anything is fitted."""
    from hfox_fit.cli import main
    from hfox_fit.report import report_store
    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore

    path = tmp_path / "campaign.h5"
    CampaignStore(path).ingest_table(dies_to_table(make_wafer("paper", devices=96, pulses=300, seed=11).dies),
                                     name="simulated")
    assert main(["fit", str(path), "--law", "two_slope", "--calibrate", "4", "--quiet"]) == 2
    assert "--calibrate needs 5" in capsys.readouterr().err
    summary = tmp_path / "summary.json"
    assert main(["fit", str(path), "--law", "two_slope", "--calibrate", str(MIN_REPLICATES), "--summary",
                 str(summary)]) == 0
    out = capsys.readouterr()
    assert f"calibrated by {MIN_REPLICATES} simulated wafers" in out.out and "calibrate" in out.err
    import json

    cal = json.loads(summary.read_text())["calibration"]
    assert cal["replicates"] == MIN_REPLICATES and cal["devices"] <= 96 and cal["pulses"] == 300
    assert cal["quantities"]["median m1"]["ci90"] is not None
    assert CampaignStore(path).load_fit().summary["calibration"] == cal
    rep = report_store(path, tmp_path / "report", figures=False)
    html = rep.html.read_text()
    assert "Calibrated intervals" in html
    # the D2D table gives each median's calibrated interval beside its own
    assert "median 90 % CI, calibrated" in html
    lo, hi = cal["quantities"]["median m1"]["ci90"]
    row = next(r for r in rep.metrics["tables"]["d2d"] if r["param"] == "m1")
    assert row["median_calibrated_ci90"] == [lo, hi]
    assert rep.metrics["tables"]["calibration"]["replicates"] == MIN_REPLICATES


def test_run_refuses_a_bad_calibrate_before_writing(tmp_path, capsys):
    from hfox_fit.cli import main

    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    assert main(["run", str(raw), "-o", str(out), "--calibrate", "3"]) == 2
    assert "--calibrate needs 5" in capsys.readouterr().err
    assert not out.exists()

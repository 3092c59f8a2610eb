"""The report of a campaign measured at several pulse conditions: the medians with the condition law, mean w."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from report_helpers import CONDITION_SLOPES, condition_model

from hfox_fit.report import build_report
from hfox_fit.report._html import _fmt

FIGS = ("condition_medians", "condition_mean_w")


def _markers(ax):
    """The median markers of a panel (not the error bars' caps)."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "None" and ln.get_marker() not in ("_", "|")]


def _key(v, w):
    return round(float(v), 9), round(float(w), 15)


def test_the_condition_figures_and_their_numbers_are_written(condition_report):
    _, fit, res, figs = condition_report
    assert set(FIGS) <= set(figs) and set(FIGS) <= set(res.figures)
    on_disk = json.loads(res.metrics_path.read_text())
    for name in FIGS:
        assert res.figures[name].is_file()
        assert on_disk["figures"][name]["file"] == f"{name}.png"
        assert on_disk["figures"][name]["caption"]
    page = res.html.read_text(encoding="utf-8")
    assert "id='condition_medians'" in page and "id='condition_mean_w'" in page
    conds = fit.summary()["conditions"]
    assert [c["n_cells"] for c in on_disk["figures"]["condition_medians"]["conditions"]] == [c["n_cells"] for c in conds]


def test_the_medians_shown_are_the_summarys(condition_report):
    _, fit, res, figs = condition_report
    s = fit.summary()
    entry = res.metrics["figures"]["condition_medians"]
    assert entry["x_factor"] == "v_pulse" and entry["series_factor"] == "pulse_width"
    assert list(entry["params"]) == ["m1", "t_star", "m2", "c1"]
    # the medians the condition law follows: the cells' own where no cell is censored, else the law's
    location = {p: e["location"] for p, e in s["condition_law"]["params"].items() if "location" in e}
    assert location["m1"] == "sample_median" and location["t_star"] == "median"
    for p, item in entry["params"].items():
        at = location.get(p, "median")
        for k, c in enumerate(s["conditions"]):
            d = c["d2d"][p]
            assert item["median"][k] == d[at]
            assert item["ci90"][k] == (d.get(at + "_ci90") or d.get("sample_median_ci90"))
    # the figure: each panel's markers are the summary's medians (in the panel's power-of-ten unit)
    fig = figs["condition_medians"]
    for ax, p in zip([a for a in fig.axes if a.get_visible()], entry["params"]):
        assert ax.get_title().startswith(p)
        drawn = np.sort(np.concatenate([ln.get_ydata() for ln in _markers(ax)]))
        truth = np.sort([c["d2d"][p][location.get(p, "median")] for c in s["conditions"]])
        ratio = truth / drawn
        assert ratio == pytest.approx(np.full(len(truth), ratio[0]), rel=1e-9)
        assert np.log10(ratio[0]) == pytest.approx(round(np.log10(ratio[0])), abs=1e-9)
    # positive parameters on a log axis, the others linear
    assert entry["params"]["m1"]["log_axis"] and entry["params"]["t_star"]["log_axis"]
    assert fig.axes[0].get_yscale() == "log"
    # the page's table lists every condition's median and interval
    page = res.html.read_text(encoding="utf-8")
    assert "Pulse conditions: each condition" in page
    for c in s["conditions"]:
        m1 = c["d2d"]["m1"]
        m1_ci = m1["sample_median_ci90"]
        assert f"{_fmt(m1['sample_median'])} [{_fmt(m1_ci[0])}, {_fmt(m1_ci[1])}]" in page
    assert "the cells' own (family-free) for m1" in page
    assert "'Pulse conditions' table" in entry["caption"]


def test_the_law_line_passes_through_the_laws_prediction(condition_report):
    _, fit, res, figs = condition_report
    s = fit.summary()
    law = s["condition_law"]
    entry = res.metrics["figures"]["condition_medians"]
    model_law = fit.model.condition_law
    assert model_law is not None
    for p, item in entry["params"].items():
        e = law["params"][p]
        assert item["law"]["b_v"] == e["b_v"] and item["law"]["b_w"] == e["b_w"]
        x = np.asarray(item["line"]["x"])
        for c in s["conditions"]:
            y = np.asarray(item["line"]["y"][{0.5e-6: "500 ns", 2e-6: "2 µs"}[c["pulse_width"]]])
            at = np.flatnonzero(np.isclose(x, c["v_pulse"]))
            assert at.size == 1  # the line has a point at every condition
            assert y[at[0]] == pytest.approx(model_law.median(p, c["v_pulse"], c["pulse_width"]), rel=1e-9)
        # b_v, b_w with their stderrs in the caption
        assert f"b_v = {_fmt(e['b_v'], 3)} ± {_fmt(e['b_v_stderr'], 2)} /V" in entry["caption"]
        assert f"b_w = {_fmt(e['b_w'], 3)} ± {_fmt(e['b_w_stderr'], 2)}" in entry["caption"]
    # the drawn lines of m1 (log scale): through exp(a + b_v (V - V_ref) + b_w ln(w / w_ref))
    ax = figs["condition_medians"].axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    assert len(lines) == 2
    e = law["params"]["m1"]
    scale = entry["params"]["m1"]["median"][0] / _markers(ax)[0].get_ydata()[0]
    assert scale > 0
    for ln in lines:
        gx, gy = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata()) * scale
        # which width: the one whose prediction matches at the first point
        preds = {w: np.exp(e["a"] + e["b_v"] * (gx - law["v_ref"]) + e["b_w"] * np.log(w / law["width_ref"]))
                 for w in (0.5e-6, 2e-6)}
        assert min(np.max(np.abs(gy / pr - 1)) for pr in preds.values()) < 1e-9
    # the fitted slopes are the campaign's: near the truth (a loose check; tests/fitting checks the law)
    assert abs(law["params"]["m1"]["b_v"] - CONDITION_SLOPES["m1"]["b_v"]) < 4 * law["params"]["m1"]["b_v_stderr"]


def test_mean_w_per_condition_measured_against_the_model_at_that_condition(condition_report):
    wafer, fit, res, _ = condition_report
    entry = res.metrics["figures"]["condition_mean_w"]
    assert entry["unmatched_cell_cycles"] == 0
    assert entry["panels"] == "pulse_width"
    cells = fit.cells
    ok = (cells["flag"] == "ok") & np.isfinite(cells[["m1", "c1"]].to_numpy(float)).all(axis=1)
    by_cond = {_key(c["v_pulse"], c["pulse_width"]): c for c in entry["conditions"]}
    assert len(by_cond) == 4
    # measured: recomputed here from the dies' reads and the fit table's r0
    for die in wafer.dies:
        v, w = float(die.v_pulse[0, 0]), float(die.pulse_width[0, 0])
        c = by_cond[_key(v, w)]
        rows = cells[ok & (cells["die"].astype(str) == str(die.die))]
        ci = [list(die.devices.astype(str)).index(d) for d in rows["device"].astype(str)]
        r0 = rows["r0"].to_numpy(float)
        wm = np.log(die.resistance[ci, 0, :] / r0[:, None])
        assert c["n_cell_cycles"] == len(rows)
        assert np.asarray(c["mean_w_measured"]) == pytest.approx(np.nanmean(wm, axis=0), abs=2e-6)
    # simulated: like a large sample of the model at the condition, and close to the measured mean
    tail = slice(-50, None)
    for c in entry["conditions"]:
        sim = np.asarray(c["mean_w_simulated"])
        assert sim.shape == (251,) and sim[0] == 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            big, _ = fit.model.at(c["v_pulse"], c["pulse_width"]).simulate(3000, 250, rng=7)
        se = big[:, 0, tail].mean(axis=1).std() / np.sqrt(c["n_cell_cycles"])
        assert abs(sim[tail].mean() - big[:, 0, tail].mean()) < 4 * se
        assert c["max_abs_diff"] < 0.06  # the model at each condition follows its cells
    # the conditions differ: the figure shows four populations, not one
    finals = [np.mean(np.asarray(c["mean_w_measured"])[tail]) for c in entry["conditions"]]
    assert np.ptp(finals) > 0.02
    assert "DeviceModel.at" in entry["caption"]


def test_a_single_condition_campaign_has_no_condition_figure(small_report):
    res, *_ = small_report
    assert not set(FIGS) & set(res.metrics["figures"])
    assert not set(FIGS) & set(res.figures)
    assert "conditions" not in res.metrics["tables"]
    page = res.html.read_text(encoding="utf-8")
    assert "Pulse conditions" not in page


def test_unknown_condition_is_listed_apart(condition_report, tmp_path):
    wafer, fit, _, _ = condition_report
    summary = fit.summary()
    summary["conditions"].append({"v_pulse": None, "pulse_width": None, "condition": "unknown", "n_cells": 3,
                                  "n_trains": 3, "n_trains_fitted": 3, "d2d": {},
                                  "notes": ["3 train(s) have no v_pulse or pulse_width"]})
    res = build_report(wafer.dies, fit.cells, summary, fit.model, tmp_path, figures=False)
    rows = res.metrics["tables"]["conditions"]["rows"]
    assert rows[-1]["condition"] == "unknown condition" and "no v_pulse" in rows[-1]["note"]
    assert len(res.metrics["figures"]["condition_medians"]["conditions"]) == 4
    assert any("without v_pulse or pulse_width" in n for n in res.notes)


@pytest.fixture(scope="module")
def amplitude_only(tmp_path_factory):
    from hfox_fit.fitting import fit_campaign
    from hfox_fit.synth import make_condition_campaign

    wafer = make_condition_campaign(condition_model(), CONDITION_SLOPES, v_pulses=(1.15, 1.35),
                                    pulse_widths=(1e-6,), devices=48, pulses=200, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_campaign(wafer.dies, law="two_slope", bootstrap=50)
    res = build_report(wafer.dies, fit.cells, fit.summary(), fit.model, tmp_path_factory.mktemp("amp"),
                       figures=False)
    return fit, res


def test_one_varying_factor_is_said(amplitude_only):
    fit, res = amplitude_only
    entry = res.metrics["figures"]["condition_medians"]
    assert entry["factors"] == ["v_pulse"]
    assert "The pulse width did not vary over the conditions: b_w is 0, not fitted." in entry["caption"]
    assert "b_w =" not in entry["caption"]
    assert list(entry["params"]["m1"]["line"]["y"]) == ["1 µs"]
    assert res.metrics["figures"]["condition_mean_w"]["panels"] == "one"


def test_each_condition_is_simulated_from_the_model_at_it_with_its_cells_and_pulses(condition_report, tmp_path,
                                                                                   monkeypatch):
    from hfox_fit.model import DeviceModel

    wafer, fit, _, _ = condition_report
    calls = []
    simulate = DeviceModel.simulate

    def spy(self, n_cells, n_pulses, **kw):
        calls.append((self.meta.get("pulse_condition"), n_cells, n_pulses, kw.get("n_cycles", 1)))
        return simulate(self, n_cells, n_pulses, **kw)

    monkeypatch.setattr(DeviceModel, "simulate", spy)
    res = build_report(wafer.dies, fit.cells, fit.summary(), fit.model, tmp_path, figures=False)
    at = {(c[0]["v_pulse"], c[0]["pulse_width"]): c[1:] for c in calls if c[0]}
    for c in res.metrics["figures"]["condition_mean_w"]["conditions"]:
        assert at[(c["v_pulse"], c["pulse_width"])] == (c["n_cells"], 250, 1)


def test_a_condition_without_laws_and_a_parameter_without_a_law_are_said(condition_report, tmp_path):
    wafer, fit, _, _ = condition_report
    summary = fit.summary()
    summary["conditions"][0]["d2d"] = {}
    summary["conditions"][0]["notes"] = ["no D2D law at v_pulse 1.15 V, width 5e-07 s: no finite t_star"]
    summary["condition_law"]["params"]["m1"] = {"note": "no condition law: no median interval for m1"}
    res = build_report(wafer.dies, fit.cells, summary, fit.model, tmp_path, figures=False)
    entry = res.metrics["figures"]["condition_medians"]
    assert entry["params"]["m1"]["median"][0] is None and entry["params"]["m1"]["law"] is None
    assert entry["params"]["t_star"]["law"] is not None
    assert "No law is drawn for m1." in entry["caption"]
    assert "m1: no condition law: no median interval for m1" in entry["caption"]
    assert "No D2D law (no marker) at 1.15 V, 500 ns" in entry["caption"]
    row = res.metrics["tables"]["conditions"]["rows"][0]
    assert "no finite t_star" in row["note"]
    assert "no finite t_star" in res.html.read_text(encoding="utf-8")


def test_an_interval_that_does_not_contain_its_median_is_drawn_from_its_bounds():
    """A percentile bootstrap interval may miss the point estimate: drawn as it is, never refused."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hfox_fit.plotting import plot_condition_medians

    fig, ax = plt.subplots()
    try:
        plot_condition_medians([1.0, 1.2], median=[1.0, 2.0], lower=[2.0, 1.5], upper=[3.0, 2.5],
                               series=[1e-6, 1e-6], name="m1", dodge=0.0, ax=ax)
        segs = [s for coll in ax.collections for s in coll.get_segments()]
        assert sorted((round(s[0][1], 9), round(s[1][1], 9)) for s in segs) == [(1.5, 2.5), (2.0, 3.0)]
        assert sorted(np.concatenate([ln.get_ydata() for ln in _markers(ax)]).tolist()) == [1.0, 2.0]
    finally:
        plt.close(fig)

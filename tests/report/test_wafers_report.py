"""The report of a campaign of several wafers: each wafer's medians and the variance decomposition."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from report_helpers import caught_report, truth_fit

from hfox_fit.fitting.wafers import add_wafers
from hfox_fit.report import build_report
from hfox_fit.synth import make_wafer_campaign

FIGS = ("wafer_medians", "wafer_variance")
PARAMS = ["m1", "t_star", "m2", "c1", "r0"]


@pytest.fixture(scope="module")
def wafer_campaign():
    """3 wafers x 120 cells x 2 cycles of the paper's model, m1, t* and r0 scaled by 1, 1.3, 0.8; the summary's
    wafer level computed by the fitter's own functions from the truth (no drift fit)."""
    camp = make_wafer_campaign("paper", factors=[1.0, 1.3, 0.8], devices=120, pulses=150, cycles=2, seed=3)
    cells, summary, model = truth_fit(camp)
    add_wafers(summary, cells, PARAMS, dict(model.d2d), bootstrap=20)
    return camp, cells, summary, model


def _markers(ax):
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "None" and ln.get_marker() == "o"]


def test_the_wafer_figures_and_table_appear_with_the_summarys_numbers(wafer_campaign, tmp_path):
    camp, cells, summary, model = wafer_campaign
    res, figs = caught_report(build_report, camp.dies, cells, summary, model, tmp_path, seed=1)
    assert set(FIGS) <= set(res.figures) and set(FIGS) <= set(figs)
    on_disk = json.loads(res.metrics_path.read_text())
    entry = on_disk["figures"]["wafer_medians"]
    assert entry["wafers"] == ["W01", "W02", "W03"] and list(entry["params"]) == PARAMS
    for p in PARAMS:
        for k, w in enumerate(summary["wafers"]):
            assert entry["params"][p]["median"][k] == pytest.approx(w["d2d"][p]["median"], rel=1e-12)
            assert entry["params"][p]["ci90"][k] == pytest.approx(w["d2d"][p]["median_ci90"], rel=1e-12)
        assert entry["params"][p]["pooled_median"] == pytest.approx(summary["d2d"][p]["median"], rel=1e-12)
    # the drawn markers are the wafers' medians (in the panel's power-of-ten unit): W02 above W01 above W03 in m1
    ax = next(a for a in figs["wafer_medians"].axes if a.get_title() == "m1")
    drawn = np.concatenate([ln.get_ydata() for ln in _markers(ax)])
    truth = np.array([w["d2d"]["m1"]["median"] for w in summary["wafers"]])
    ratio = truth / drawn
    assert ratio == pytest.approx(np.full(3, ratio[0]), rel=1e-9)
    assert drawn[1] > drawn[0] > drawn[2]
    var = on_disk["figures"]["wafer_variance"]
    assert var["params"] == PARAMS
    for k, p in enumerate(PARAMS):
        shares = [var["shares"][lv][k] for lv in ("wafer", "die", "cell", "cycle")]
        assert sum(s for s in shares if s is not None) == pytest.approx(1.0, abs=1e-9)
        assert var["shares"]["wafer"][k] == pytest.approx(summary["variance"][p]["wafer"], rel=1e-12)
    assert var["not_separable"]["m1"] == ["die"]  # one die per wafer
    # r0 moves with the wafer (factors 0.8-1.3 against a narrow law): most of its spread is between wafers
    assert var["shares"]["wafer"][PARAMS.index("r0")] > 0.5
    assert var["shares"]["wafer"][PARAMS.index("m2")] < 0.1  # m2 is not scaled
    page = res.html.read_text(encoding="utf-8")
    assert "id='wafer_medians'" in page and "id='wafer_variance'" in page
    assert "Wafers: each wafer's D2D medians" in page and "W02" in page
    assert on_disk["tables"]["wafers"]["rows"][1]["wafer"] == "W02"


def test_a_one_wafer_report_has_no_wafer_section(small_report):
    res, *_ = small_report
    assert not set(FIGS) & set(res.figures)
    assert "wafers" not in res.metrics["tables"]
    assert "wafer_medians" not in res.metrics["figures"]
    assert "each wafer's D2D medians" not in res.html.read_text(encoding="utf-8")


def _overlapping(axis, renderer):
    boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels()
             if t.get_visible() and t.get_text().strip()
             and min(axis.get_view_interval()) <= t.get_position()[0 if axis is axis.axes.xaxis else 1]
             <= max(axis.get_view_interval())]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if min(a.x1, b.x1) - max(a.x0, b.x0) > -2 and min(a.y1, b.y1) - max(a.y0, b.y0) > -2]


@pytest.mark.parametrize("n_wafers", [12, 60])
def test_many_wafers_keep_their_labels_apart(wafer_campaign, tmp_path, n_wafers):
    camp, cells, summary, model = wafer_campaign
    many = copy.deepcopy(summary)
    many["wafers"] = [dict(copy.deepcopy(summary["wafers"][k % 3]), wafer=f"LOT42-W{k + 1:02d}")
                      for k in range(n_wafers)]
    res, figs = caught_report(build_report, camp.dies, cells, many, model, tmp_path, seed=1)
    fig = figs["wafer_medians"]
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if ax.get_visible():
            assert not _overlapping(ax.xaxis, renderer), ax.get_title()
            assert not _overlapping(ax.yaxis, renderer), ax.get_title()
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert 2 <= len(labels) <= 16 and labels[0] == "LOT42-W01"
    assert len(res.metrics["figures"]["wafer_medians"]["wafers"]) == n_wafers

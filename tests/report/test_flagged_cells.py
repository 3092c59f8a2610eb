"""The report lists the flagged cells by name (device, flag, reason), capped, and the goodness of fit."""

from __future__ import annotations

import html

import numpy as np
from report_helpers import truth_fit

from hfox_fit.report import build_report
from hfox_fit.synth import make_wafer


def _fit_with_flags(n_stuck=80, n_poor=2):
    w = make_wafer("paper", devices=200, pulses=60, seed=11)
    cells, summary, model = truth_fit(w)
    cells["flag"] = "ok"
    cells["flag_reason"] = ""
    cells.loc[cells.index[:n_stuck], "flag"] = "stuck"
    cells.loc[cells.index[:n_stuck], "flag_reason"] = "stuck: no drift"
    poor = cells.index[n_stuck:n_stuck + n_poor]
    cells.loc[poor, "flag"] = "poor_fit"
    cells.loc[poor, "flag_reason"] = "poor fit: the fitted law leaves the reads <here>"
    rng = np.random.default_rng(0)
    cells["resid_std"] = 0.01 * (1 + 0.1 * rng.random(len(cells)))
    cells["misfit"] = rng.chisquare(10, len(cells)) / 10
    cells["fit_r2"] = 0.9 + 0.05 * rng.random(len(cells))
    cells["max_gap"] = 0.01 * rng.normal(size=len(cells))
    cells.loc[poor, ["misfit", "fit_r2", "max_gap"]] = [4000.0, -200.0, -0.5]
    return w, cells, summary, model, poor


def test_the_report_names_the_flagged_cells(tmp_path):
    w, cells, summary, model, poor = _fit_with_flags()
    res = build_report(w.dies, cells, summary, model, tmp_path, figures=False)
    flagged = res.metrics["tables"]["flagged"]
    assert flagged["total"] == 82 and flagged["shown"] == flagged["cap"] == 50
    assert flagged["by_flag"] == {"stuck": 80, "poor_fit": 2}
    # the cap is shared: the 2 poor fits are listed although 80 stuck cells come first in the table
    listed = [(r["device"], r["flag"]) for r in flagged["rows"]]
    assert [(d, f) for d, f in listed if f == "poor_fit"] == [(cells.at[i, "device"], "poor_fit") for i in poor]
    row = next(r for r in flagged["rows"] if r["flag"] == "poor_fit")
    assert row["reason"].startswith("poor fit") and row["misfit"] == 4000.0 and row["max_gap"] == -0.5
    page = res.html.read_text(encoding="utf-8")
    table = page[page.index("<h3>Flagged cells</h3>"):]
    table = table[:table.index("</table>")]
    assert "82 flagged cell-cycle(s); the first 50 are listed" in table and "32 more are in the devices table" in table
    assert table.count("<tr>") == 51  # header + 50
    assert html.escape("poor fit: the fitted law leaves the reads <here>") in table
    assert str(cells.at[poor[0], "device"]) in table
    # the goodness of fit of the usable cells, in metrics.json and on the page
    gof = res.metrics["tables"]["goodness_of_fit"]
    usable = cells["flag"].eq("ok").to_numpy() & np.isfinite(cells["m1"].to_numpy())  # ok, with a fitted law
    assert gof["n"] == int(usable.sum()) == res.metrics["cells"]["usable"]
    assert np.isclose(gof["misfit"]["q50"], np.median(cells.loc[usable, "misfit"]))
    assert np.isclose(gof["resid_std"]["q99"], np.quantile(cells.loc[usable, "resid_std"], 0.99))
    assert np.isclose(gof["fit_r2"]["q01"], np.quantile(cells.loc[usable, "fit_r2"], 0.01))
    assert "<h3>Goodness of fit (usable cell-cycles)</h3>" in page


def test_few_flagged_cells_are_all_listed_and_none_is_said(tmp_path):
    w, cells, summary, model, _ = _fit_with_flags(n_stuck=3, n_poor=1)
    res = build_report(w.dies, cells, summary, model, tmp_path / "a", figures=False)
    flagged = res.metrics["tables"]["flagged"]
    assert flagged["total"] == flagged["shown"] == 4
    page = res.html.read_text(encoding="utf-8")
    assert "4 flagged cell-cycle(s)." in page and "more are in the devices table" not in page
    cells["flag"] = "ok"
    cells = cells.drop(columns=["misfit"])
    res = build_report(w.dies, cells, summary, model, tmp_path / "b", figures=False)
    assert res.metrics["tables"]["flagged"]["total"] == 0
    page = res.html.read_text(encoding="utf-8")
    assert "<h3>Flagged cells</h3><p>none</p>" in page
    assert any("no goodness-of-fit column" in n for n in res.metrics.get("notes", []) + [page])

"""Without die positions the report shows an array map (row x column per array) and says how to give positions."""

from __future__ import annotations

import numpy as np
from report_helpers import truth_fit

from hfox_fit import plotting
from hfox_fit.report import build_report
from hfox_fit.synth import make_wafer


def test_no_positions_gives_an_array_map_and_names_the_positions_option(tmp_path):
    w = make_wafer("paper", devices=600, pulses=60, seed=8)  # arrays A1, A2, A3 (256 cells each) on one die
    cells, summary, model = truth_fit(w)
    res = build_report(w.dies, cells, summary, model, tmp_path)
    assert "array_map" in res.figures and "die_map" not in res.figures
    am = res.metrics["figures"]["array_map"]
    assert am["params"] == ["m1", "t_star"] and am["arrays"] == ["A1", "A2", "A3"]
    a1 = am["per_array"]["A1"]
    assert (a1["rows"], a1["cols"], a1["positions"]) == (16, 16, 256)
    in_a1 = cells["device"].str.startswith("A1/")
    ok = in_a1 & (cells["flag"] == "ok")
    assert np.isclose(a1["median_m1"], np.median(cells.loc[ok, "m1"].to_numpy()))  # one cycle: a cell per place
    assert a1["flagged_positions"] == int((in_a1 & (cells["flag"] != "ok")).sum())
    text = " ".join(res.notes) + res.html.read_text(encoding="utf-8")
    assert "--die-positions FILE.csv" in text and "wafer,die,x,y" in text
    assert "DieData" not in text and "attrs" not in text  # no internal names


def test_device_ids_without_rows_and_columns_say_so(tmp_path):
    w = make_wafer("paper", devices=120, pulses=40, seed=9)
    cells, summary, model = truth_fit(w)
    renamed = {d: f"cell{i}" for i, d in enumerate(sorted(cells["device"].unique()))}
    cells["device"] = cells["device"].map(renamed)
    for d in w.dies:
        d.devices = np.array([renamed[x] for x in d.devices])
    res = build_report(w.dies, cells, summary, model, tmp_path, figures=False)
    assert "array_map" not in res.metrics["figures"]
    assert any("device ids do not name a row and column" in n for n in res.notes)


def test_plot_array_map_places_each_cell_at_its_row_and_column():
    import matplotlib

    matplotlib.use("Agg")
    ax = plotting.plot_array_map([0, 0, 2], [0, 3, 1], [1.0, 2.0, 3.0], label="m1")
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (3, 4) and grid[2, 1] == 3.0 and grid[0, 3] == 2.0 and np.ma.is_masked(grid[1, 1])
    ax = plotting.plot_array_map([0, 1], [0, 0], ["ok", "stuck"], flags=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ok (1)", "stuck (1)"]

"""build_report: files, self-containment, numbers against recomputation, bad input."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from report_helpers import truth_fit
from scipy import stats

from hfox_fit import HfoxError, ParameterLaw
from hfox_fit.fitting import FLAG_NAMES
from hfox_fit.laws import get_law
from hfox_fit.report import FIGURES, ReportError, build_report
from hfox_fit.synth import make_wafer

IMG = re.compile(r"<img\b[^>]*>")


def _measured_w(dies, cells):
    """Measured w = ln(R / r0) of every usable row, recomputed independently of the report."""
    law = get_law("two_slope")
    ok = (cells["flag"] == "ok") & np.isfinite(cells[list(law.params)]).all(axis=1)
    rows = []
    for d in dies:
        part = cells[ok & (cells["wafer"] == d.wafer) & (cells["die"] == d.die)]
        dev = {name: i for i, name in enumerate(d.devices)}
        cyc = {c: i for i, c in enumerate(d.cycles)}
        for r in part.itertuples():
            rows.append(np.log(d.resistance[dev[r.device], cyc[r.cycle]] / r.r0))
    return np.array(rows)


def test_every_figure_is_written_embedded_and_listed(small_report):
    res, *_ = small_report
    page = res.html.read_text(encoding="utf-8")
    imgs = IMG.findall(page)
    listed = [re.search(r"data-file='([^']+)'", tag).group(1) for tag in imgs]
    assert sorted(listed) == sorted(p.name for p in res.figures.values())
    assert set(res.figures) == {"traces", "band", "ecdf", "parameters", "pairs", "noise", "die_map"}
    for tag, name in zip(imgs, listed):
        png = (res.out_dir / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        src = re.search(r"src='data:image/png;base64,([^']+)'", tag).group(1)
        assert base64.b64decode(src) == png, f"{name}: the embedded image is not the PNG on disk"
    # Self-contained: nothing to fetch, no script.
    lowered = page.lower()
    for bad in ("<link", "<script", "src='http", 'src="http', "@import", "url("):
        assert bad not in lowered, bad
    assert "no die coordinates" not in page


def test_metrics_json_is_what_the_result_holds(small_report):
    res, *_ = small_report
    on_disk = json.loads(res.metrics_path.read_text())
    assert on_disk["cells"]["usable"] == res.metrics["cells"]["usable"]
    assert on_disk["figures"]["ecdf"] == json.loads(json.dumps(res.metrics["figures"]["ecdf"]))
    for name, path in res.figures.items():
        assert on_disk["figures"][name]["file"] == path.name


def test_population_numbers_match_recomputation(small_report, small_wafer):
    res, cells, *_ = small_report
    m = res.metrics
    w = _measured_w(small_wafer.dies, cells)
    ok = cells["flag"] == "ok"
    assert m["cells"]["usable"] == int(ok.sum()) == len(w)
    assert m["cells"]["by_flag"]["ok"] == int(ok.sum())
    for flag in ("stuck", "abrupt", "open"):
        assert m["cells"]["by_flag"][flag] == int((cells["flag"] == flag).sum())
    band = m["figures"]["band"]
    assert band["n_measured"] == band["n_simulated"] == len(w)
    q = np.nanquantile(w, [0.05, 0.5, 0.95], axis=0)
    np.testing.assert_allclose(band["measured"]["q50"], q[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(band["measured"]["q05"], q[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(band["measured"]["q95"], q[2], rtol=1e-5, atol=1e-6)
    # Simulated cells take the measured missing reads: same counts at every pulse.
    np.testing.assert_array_equal(band["measured"]["n"], band["simulated"]["n"])
    for p, (a, b) in res.samples.items():
        entry = m["figures"]["ecdf"]["pulses"][str(p)]
        col = w[:, p]
        np.testing.assert_allclose(np.sort(a), np.sort(col[np.isfinite(col)]), rtol=1e-6)
        assert entry["ks"] == pytest.approx(stats.ks_2samp(a, b).statistic)
        assert entry["n_measured"] == entry["n_simulated"] == len(a)
    assert sorted(int(p) for p in m["figures"]["ecdf"]["pulses"]) == [10, 100, 300]


def test_parameter_numbers_match_recomputation(small_report):
    res, cells, summary, model = small_report
    params = res.metrics["figures"]["parameters"]["params"]
    ok = cells["flag"] == "ok"
    from hfox_fit.fitting.campaign import d2d_rows

    fitted = d2d_rows(cells, model.law)  # the values the D2D laws are fitted to
    fitted = fitted[fitted["flag"] == "ok"]
    z = np.linspace(-8, 8, 4001)
    for p in ("m1", "t_star", "m2", "c1", "r0"):
        v = cells.loc[ok, p].to_numpy()
        x = fitted[p].to_numpy(float)
        se = fitted[p + "_stderr"].to_numpy(float)[np.isfinite(x)]
        x = x[np.isfinite(x)]
        # each value against the law convolved with its own error, by a dense quadrature
        u = np.trapezoid(model.d2d[p].cdf(x[:, None] - se[:, None] * z) * stats.norm.pdf(z), z, axis=1)
        assert params[p]["ks"] == pytest.approx(stats.kstest(u, "uniform").statistic, abs=1e-6)
        assert params[p]["ks_method"] == "ks" and params[p]["n_ks_exact"] == len(x)
        assert params[p]["median_measured"] == pytest.approx(np.median(v))
        np.testing.assert_allclose(params[p]["qq"]["measured"], np.quantile(v, params[p]["qq"]["p"]))
    pairs = res.metrics["figures"]["pairs"]
    rho = stats.spearmanr(cells.loc[ok, pairs["names"]].to_numpy()).statistic
    np.testing.assert_allclose(pairs["spearman_measured"], rho, atol=1e-12)
    # Tables carry the summary's numbers untouched.
    d2d = {r["param"]: r for r in res.metrics["tables"]["d2d"]}
    assert d2d["m1"]["median_ci90"] == summary["d2d"]["m1"]["median_ci90"]
    assert d2d["t_star"]["ks_summary"] == summary["d2d"]["t_star"]["ks"]
    assert res.metrics["tables"]["scores"]["rows"][0]["law"] == "two_slope"


def test_model_from_the_truth_reproduces_the_population(small_report):
    res, *_ = small_report
    for p, entry in res.metrics["figures"]["ecdf"]["pulses"].items():
        assert entry["ks"] < 0.08, f"pulse {p}: KS {entry['ks']:.3f} between the truth model and its wafer"
    band = res.metrics["figures"]["band"]
    assert band["mean_abs_median_diff"] < 0.01 and band["max_abs_median_diff"] < 0.05
    noise = res.metrics["figures"]["noise"]
    assert noise["residual_std_measured"] == pytest.approx(noise["residual_std_simulated"], rel=0.3)
    assert noise["n_cells"] == res.metrics["cells"]["usable"]


def test_a_wrong_model_shows(small_wafer, tmp_path):
    cells, summary, model = truth_fit(small_wafer)
    wrong = type(model).from_dict(model.to_dict())
    wrong.d2d["m1"] = ParameterLaw("expon", {"loc": 3.74e-5, "scale": 3 * 6.56e-4}, (3.74e-5, 7.6e-3))
    res = build_report(small_wafer.dies, cells, summary, wrong, tmp_path, seed=1, figures=False)
    ecdf = res.metrics["figures"]["ecdf"]["pulses"]
    assert ecdf["300"]["ks"] > 0.2
    assert res.metrics["figures"]["parameters"]["params"]["m1"]["ks"] > 0.2


def test_no_die_coordinates_is_said(tmp_path):
    w = make_wafer("paper", devices=120, pulses=80, seed=5)
    cells, summary, model = truth_fit(w)
    for i, d in enumerate(w.dies):
        d.attrs.update({"die_x": i, "die_y": 2})
    first = build_report(w.dies, cells, summary, model, tmp_path)
    assert "die_map" in first.figures and (tmp_path / "die_map.png").is_file()
    assert first.metrics["figures"]["die_map"]["dies"][0]["x"] == 0.0
    # Without coordinates the page says so, and the map of the earlier report in this folder goes.
    for d in w.dies:
        d.attrs.pop("die_x")
    res = build_report(w.dies, cells, summary, model, tmp_path, figures=False)
    page = res.html.read_text(encoding="utf-8")
    assert "no die coordinates in this campaign" in page
    assert "die_map" not in res.figures and not (tmp_path / "die_map.png").exists()
    assert res.metrics["figures"]["die_map"]["message"] == "no die coordinates in this campaign"


def test_zero_usable_cells_gives_a_report_that_says_so(tmp_path):
    w = make_wafer("paper", devices=60, pulses=40, seed=6)
    cells, summary, model = truth_fit(w)
    cells["flag"] = "failed"
    res = build_report(w.dies, cells, summary, model, tmp_path)
    assert res.n_cells == 0 and res.figures == {}
    page = res.html.read_text(encoding="utf-8")
    assert "no usable cell" in page
    assert "Cells per flag" in page
    m = json.loads(res.metrics_path.read_text())
    assert m["cells"]["usable"] == 0 and m["cells"]["by_flag"]["failed"] == 60
    assert not list(tmp_path.glob("*.png"))


def test_the_flags_counted_are_the_fits_flags(tmp_path):
    # The report's flag names are the fit's (hfox_fit.fitting.FLAG_NAMES): a flag the fit writes
    # is never lumped into "other", and the tables list every one of them in the same order.
    w = make_wafer("paper", devices=60, pulses=40, seed=6)
    cells, summary, model = truth_fit(w)
    names = ("ok", *FLAG_NAMES)
    cells["flag"] = [names[i % len(names)] for i in range(len(cells))]
    res = build_report(w.dies, cells, summary, model, tmp_path, figures=False)
    by_flag = res.metrics["cells"]["by_flag"]
    assert tuple(by_flag) == names
    assert all(by_flag[f] == int((cells["flag"] == f).sum()) > 0 for f in names)
    assert tuple(res.metrics["tables"]["flags"]["summary"]) == ("total", "fitted", *FLAG_NAMES)
    page = res.html.read_text(encoding="utf-8")
    table = page[page.index("<h3>Cells per flag</h3>"):page.index("<h3>Drift-law scores</h3>")]
    assert re.findall(r'<tr><td class="l">(\w+)</td>', table) == [*names, "total"]


def test_empty_summary_and_no_dies_are_reported(tmp_path):
    w = make_wafer("paper", devices=30, pulses=30, seed=7)
    cells, _, model = truth_fit(w)
    res = build_report([], cells, {}, model.to_dict(), tmp_path)
    notes = " ".join(res.notes)
    assert "no measured dies" in notes
    assert "no D2D laws" in notes and "no drift-law scores" in notes
    assert res.metrics["cells"]["unmatched"] == int((cells["flag"] == "ok").sum())


def test_output_path_that_is_a_file(tmp_path, small_wafer):
    target = tmp_path / "report"
    target.write_text("not a folder")
    cells, summary, model = truth_fit(small_wafer)
    with pytest.raises(ReportError, match="exists and is not a directory"):
        build_report(small_wafer.dies, cells, summary, model, target)
    assert issubclass(ReportError, HfoxError)


def test_fit_table_without_law_columns(tmp_path, small_wafer):
    cells, summary, model = truth_fit(small_wafer)
    with pytest.raises(ReportError, match=r"lacks column\(s\) \['t_star'\]"):
        build_report(small_wafer.dies, cells.drop(columns="t_star"), summary, model, tmp_path)
    with pytest.raises(ReportError, match="summary must be the fit summary dict"):
        build_report(small_wafer.dies, cells, [1], model, tmp_path)
    with pytest.raises(ReportError, match="per-cell fit table"):
        build_report(small_wafer.dies, cells.to_dict(), summary, model, tmp_path)


def test_subsampling_is_capped_and_said(tmp_path):
    w = make_wafer("paper", devices=400, pulses=100, seed=8)
    cells, summary, model = truth_fit(w)
    res = build_report(iter(w.dies), cells, summary, model, tmp_path, max_population_cells=150,
                       max_noise_cells=50, pulses=(5, 50, -1), figures=False)
    band = res.metrics["figures"]["band"]
    assert 90 < band["n_measured"] < 220
    assert res.metrics["figures"]["noise"]["n_cells"] <= 90
    assert sorted(int(p) for p in res.metrics["figures"]["ecdf"]["pulses"]) == [5, 50, 100]
    page = res.html.read_text(encoding="utf-8")
    assert "figures were not drawn" in page and not list(tmp_path.glob("*.png"))
    said = f"a random {band['n_measured']:,} of {res.metrics['cells']['usable']:,}"
    assert said in res.metrics["figures"]["band"]["caption"]
    assert said in res.metrics["figures"]["ecdf"]["caption"]
    assert f"{res.metrics['figures']['noise']['n_cells']:,} measured" in res.metrics["figures"]["noise"]["caption"]


def test_same_seed_same_numbers(tmp_path):
    w = make_wafer("paper", devices=100, pulses=60, seed=9)
    cells, summary, model = truth_fit(w)
    a = build_report(w.dies, cells, summary, model, tmp_path / "a", seed=4, figures=False).metrics
    b = build_report(w.dies, cells, summary, model, tmp_path / "b", seed=4, figures=False).metrics
    assert a["figures"]["ecdf"] == b["figures"]["ecdf"]
    np.testing.assert_array_equal(a["figures"]["band"]["simulated"]["q50"], b["figures"]["band"]["simulated"]["q50"])


def test_c2c_figure_with_several_cycles(tmp_path):
    w = make_wafer("wafer_b", devices=150, pulses=60, cycles=3, seed=10)
    cells, summary, model = truth_fit(w)
    res = build_report(w.dies, cells, summary, model, tmp_path, figures=False)
    c2c = res.metrics["figures"]["c2c"]
    assert set(c2c["params"]) == {"m1", "r0"}
    assert c2c["n_cells"] == int((cells["flag"] == "ok").sum())
    assert c2c["params"]["r0"]["std_measured"] == pytest.approx(c2c["params"]["r0"]["std_simulated"], rel=0.3)
    assert "cells with two or more usable cycles" in c2c["caption"]


def test_importing_report_does_not_import_matplotlib():
    code = ("import sys, hfox_fit, hfox_fit.report, hfox_fit.plotting; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_functions_draw_on_new_or_given_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hfox_fit import plotting

    rng = np.random.default_rng(0)
    t = np.arange(20)
    q = {"q05": t * 0.0, "q50": t * 0.01, "q95": t * 0.02}
    ax = plotting.plot_band(t, q, q)
    assert ax.get_xlabel() == "pulses since SET"
    fig, given = plt.subplots()
    assert plotting.plot_ecdf(rng.normal(size=50), rng.normal(size=50), ks=0.1, ax=given) is given
    law = ParameterLaw("expon", {"loc": 0.0, "scale": 1e-3})
    ax = plotting.plot_parameter_hist(law.sample(200, 0), law, name="m1", unit="1/pulse")
    assert ax.get_xlabel() == "m1 (1e-3/pulse)"
    ax = plotting.plot_qq(law.ppf([0.1, 0.5, 0.9]), [1e-4, 7e-4, 2e-3], name="m1", unit="1/pulse")
    assert ax.get_ylabel() == "fitted cells quantile (1e-3/pulse)"
    axes = plotting.plot_pairs(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), ["a", "b", "c"])
    assert axes.shape == (3, 3)
    assert plotting.plot_die_map([0, 1, 0], [0, 0, 1], [1.0, 2.0, np.nan], label="m1") is not None
    assert plotting.plot_traces(t, [t * 0.01], [t * 0.01], ["c"]).get_ylabel() == "w = ln(R/R0)"
    plt.close("all")


def test_truth_helper_is_a_plausible_fit_table(small_wafer):
    cells, summary, model = truth_fit(small_wafer)
    assert isinstance(cells, pd.DataFrame)
    assert cells.loc[cells["flag"] != "ok", "m1"].isna().all()
    assert summary["devices"]["total"] == len(cells)
    assert set(summary["d2d"]) == {"m1", "t_star", "m2", "c1", "r0"}
    assert set(FIGURES) >= {"traces", "band", "ecdf", "parameters", "pairs", "noise", "die_map"}


def test_cells_without_a_break_are_fitted_lines(small_wafer, tmp_path):
    cells, summary, model = truth_fit(small_wafer)
    late = cells["t_star"] > 300  # the break lies beyond the 300-pulse train: a fitter reports none
    cells.loc[late, ["t_star", "m2"]] = np.nan
    res = build_report(small_wafer.dies, cells, summary, model, tmp_path, figures=False)
    m = res.metrics
    assert m["cells"]["usable"] == int((cells["flag"] == "ok").sum())
    assert m["cells"]["law_unset"] == {"params": ["t_star", "m2"], "n": int(late.sum())}
    assert any("no significant break" in n for n in res.notes)
    params = m["figures"]["parameters"]["params"]
    assert params["t_star"]["n"] == int(((cells["flag"] == "ok") & ~late).sum())
    assert params["m1"]["n"] == m["cells"]["usable"]
    # Their law is the line m1 t + c1: before the true break it is the truth, so the traces still fit.
    assert m["figures"]["ecdf"]["pulses"]["100"]["ks"] < 0.08
    ok = (cells["flag"] == "ok") & ~late
    rho = stats.spearmanr(cells.loc[ok, ["m1", "t_star"]].to_numpy()).statistic
    names = m["figures"]["pairs"]["names"]
    assert m["figures"]["pairs"]["spearman_measured"][names.index("m1")][names.index("t_star")] == pytest.approx(rho)


def test_the_laws_notes_are_listed_under_the_d2d_table(small_wafer, tmp_path):
    """What the fit says of a law (families it cannot tell apart, an edge's narrow interval) reaches the page."""
    import copy

    cells, summary, model = truth_fit(small_wafer)
    summary = copy.deepcopy(summary)
    p = next(iter(summary["d2d"]))
    summary["d2d"][p]["note"] = "its loc interval is too narrow <edge>"
    res = build_report(small_wafer.dies, cells, summary, model, tmp_path / "r", seed=1)
    page = res.html.read_text(encoding="utf-8")
    assert f"<li><b>{p}</b>: its loc interval is too narrow &lt;edge&gt;</li>" in page

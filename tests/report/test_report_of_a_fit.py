"""The report of a real fit (hfox_fit.fitting.fit_campaign) of a synthetic wafer."""

from __future__ import annotations

import numpy as np
import pytest

from hfox_fit.report import build_report
from hfox_fit.synth import make_wafer


def _fit_campaign():
    try:
        from hfox_fit.fitting import fit_campaign
    except ImportError as err:
        pytest.skip(f"hfox_fit.fitting.fit_campaign has not landed yet ({err})")
    return fit_campaign


@pytest.fixture(scope="module")
def fitted_report(tmp_path_factory):
    """A paper wafer with 300-pulse trains (most break after them), fitted and reported (no figures)."""
    fit_campaign = _fit_campaign()
    wafer = make_wafer("paper", devices=400, pulses=300, seed=21)
    fit = fit_campaign(wafer.dies, law="auto")
    res = build_report(wafer.dies, fit.cells, fit.summary(), fit.model, tmp_path_factory.mktemp("fit"),
                       store_name="fit", figures=False)
    return wafer, fit, res


def test_report_of_a_fitted_synthetic_wafer(fitted_report):
    wafer, fit, res = fitted_report
    m = res.metrics
    n_ok = int((wafer.truth["flag"] == "ok").sum())
    assert m["cells"]["usable"] >= 0.9 * n_ok
    assert m["cells"]["unmatched"] == 0
    assert {"traces", "band", "ecdf", "parameters", "pairs", "noise"} <= set(m["figures"])
    # A good fit reproduces the population: small KS distances and medians that agree.
    for pulse, entry in m["figures"]["ecdf"]["pulses"].items():
        assert entry["ks"] < 0.15, f"after {pulse} pulses: KS {entry['ks']:.3f}"
    assert m["figures"]["band"]["mean_abs_median_diff"] < 0.03
    # The tables show the summary's numbers.
    law_params = [r["param"] for r in m["tables"]["d2d"] if r["in_summary"]]
    assert set(fit.model.parameter_names) - {"rtn_amplitude"} <= set(law_params) | {"rtn_amplitude"}
    for row in m["tables"]["d2d"]:
        if row["in_summary"]:
            assert row["median"] == fit.summary()["d2d"][row["param"]]["median"]
    assert np.isfinite(m["figures"]["noise"]["residual_std_measured"])


def test_every_fitted_number_in_the_tables_carries_its_interval(fitted_report):
    """Law parameters, correlations and noise figures show the summary's 90 % intervals, not bare values."""
    _, fit, res = fitted_report
    s = fit.summary()
    page = res.html.read_text(encoding="utf-8")
    m1 = s["d2d"]["m1"]
    for name, (lo, hi) in m1["params_ci90"].items():
        assert f"{name}={m1['params'][name]:.4g} [{lo:.3g}, {hi:.3g}]" in page, name
    lo, hi = s["correlation"]["copula_ci90"][0][1]
    assert f"{s['correlation']['copula'][0][1]:.3g} [{lo:.2g}, {hi:.2g}]" in page
    for key, section in (("std", "pink"), ("p_up", "rtn"), ("p_down", "rtn")):
        lo, hi = s[section][key + "_ci90"]
        assert f"{s[section][key]:.4g} [{lo:.4g}, {hi:.4g}]" in page, key
    tables = res.metrics["tables"]
    assert tables["correlation"]["copula_ci90"] == s["correlation"]["copula_ci90"]
    assert tables["rtn"]["p_down_ci90"] == s["rtn"]["p_down_ci90"]


def test_censored_break_law_is_checked_like_with_like(fitted_report):
    """Most trains end before their break: the t_star check is Kaplan-Meier against the fitted law
    below the censoring point (the observed breaks alone against the whole law gave KS ~ 0.8), and
    the law's mass beyond the trains is called extrapolated in the figure's numbers, the D2D table
    and the page."""
    wafer, fit, res = fitted_report
    if fit.model.law != "two_slope":
        pytest.skip(f"the fit chose {fit.model.law!r}: no break to censor")
    m = res.metrics
    ts = m["figures"]["parameters"]["params"]["t_star"]
    assert ts["ks"] < 0.1, ts["ks"]
    assert ts["ks_method"] == "kaplan-meier"
    assert ts["n_ks_censored"] > ts["n_ks_exact"]  # mostly censored
    # the same data and law as the fit's own check
    assert ts["ks"] == pytest.approx(fit.summary()["d2d"]["t_star"]["ks"], abs=1e-9)
    truth_beyond = 1.0 - float(wafer.model.d2d["t_star"].cdf(300.0))
    assert truth_beyond > 0.5
    assert ts["extrapolated"] and ts["mass_beyond"] == pytest.approx(truth_beyond, abs=0.15)
    row = next(r for r in m["tables"]["d2d"] if r["param"] == "t_star")
    assert row["extrapolated"] and row["mass_beyond_trains"] == ts["mass_beyond"]
    # the median of the breaks seen (the early ones) is not shown as the cells' median
    assert row["median_measured"] is None and row["median_measured_note"].startswith(">")
    assert f"{100 * ts['mass_beyond']:.0f} %, extrapolated" in res.html.read_text()
    assert any("extrapolated" in n for n in res.notes)
    assert "Kaplan-Meier" in m["figures"]["parameters"]["caption"]
    # m2 exists only on the cells with a break: compared with the law plus each cell's error
    m2 = m["figures"]["parameters"]["params"]["m2"]
    assert m2["ks"] < 0.2, m2["ks"]
    assert m2["ks"] == pytest.approx(fit.summary()["d2d"]["m2"]["ks"], abs=1e-9)
    assert "with a break" in m2["note"]
    for p in ("m1", "c1", "r0"):
        assert m["figures"]["parameters"]["params"][p]["mass_beyond"] is None

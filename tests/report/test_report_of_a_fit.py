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


def test_report_of_a_fitted_synthetic_wafer(tmp_path):
    fit_campaign = _fit_campaign()
    wafer = make_wafer("paper", devices=400, pulses=300, seed=21)
    fit = fit_campaign(wafer.dies, law="auto")
    res = build_report(wafer.dies, fit.cells, fit.summary(), fit.model, tmp_path, store_name="fit",
                       figures=False)
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

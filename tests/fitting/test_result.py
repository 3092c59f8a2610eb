"""Result objects: ParamEstimate, FitResult, CampaignResult (summary, report, save / load, old names)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from hfox_fit.fitting import CampaignFitter, CampaignResult, FitResult, ParamEstimate, fit_campaign
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.synth import make_wafer


@pytest.fixture(scope="module")
def wafer():
    return make_wafer("paper", devices=160, pulses=300, seed=21)


@pytest.fixture(scope="module")
def fitted(wafer):
    return CampaignFitter(law="two_slope", bootstrap=20).fit(wafer.dies)


def test_param_estimate_unknown_is_none_never_zero():
    p = ParamEstimate(1.5e-3, None, None, "1/pulse", "no interval")
    assert p.stderr is None and p.to_dict()["ci90"] is None
    assert str(p) == "0.0015 1/pulse"
    q = ParamEstimate(2.0, 0.1, (1.8, 2.2), "Ohm")
    assert str(q) == "2 +/- 0.1 [1.8, 2.2] Ohm" and q.to_dict()["ci90"] == [1.8, 2.2]


def test_fitter_returns_self_with_a_campaign_result(fitted, wafer):
    assert isinstance(fitted, CampaignFitter)
    res = fitted.result_
    assert isinstance(res, CampaignResult) and res.law == "two_slope"
    # fit_campaign is the thin wrapper: same numbers
    again = fit_campaign(wafer.dies, law="two_slope", bootstrap=20)
    assert json.dumps(again.summary(), sort_keys=True) == json.dumps(res.summary(), sort_keys=True)
    assert res.summary()["devices"]["total"] == 160
    assert set(res.summary()) >= {"devices", "trains", "drift", "d2d", "correlation", "c2c", "pink", "rtn", "notes"}


def test_params_carry_the_summary_numbers_with_uncertainty(fitted):
    res = fitted.result_
    s, params = res.summary(), res.params
    assert {"d2d.m1", "d2d.t_star", "d2d.r0", "pink", "rtn"} <= set(params)
    m1 = params["d2d.m1"]
    assert isinstance(m1, FitResult) and m1.stats["family"] == s["d2d"]["m1"]["family"]
    assert m1.params["median"].value == s["d2d"]["m1"]["median"]
    assert m1.params["median"].ci90 == tuple(s["d2d"]["m1"]["median_ci90"])
    assert m1.params["median"].unit == "1/pulse"
    pink = params["pink"].params["std"]
    assert pink.value == s["pink"]["std"] and pink.stderr == s["pink"]["std_stderr"] and pink.stderr > 0
    for fit in params.values():
        for est in fit.params.values():
            assert est.stderr is None or (est.stderr > 0 or est.value == 0), (fit.name, est)
            assert est.stderr is None or not math.isnan(est.stderr)
    text = res.report()
    assert "[[Drift law]]" in text and "[[d2d.m1]]" in text and "[[pink]]" in text


def test_describe_is_the_cli_summary(fitted):
    text = fitted.result_.describe("x.h5")
    assert text.splitlines()[0].startswith("fitted ") and "in x.h5" in text and "drift law: two_slope" in text


def test_save_and_load_round_trip(fitted, wafer, tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest_table(dies_to_table(wafer.dies), name="simulated")
    res = fitted.result_
    res.save(store)
    back = CampaignResult.load(tmp_path / "c.h5")
    assert back.law == res.law and back.fitted_at
    assert back.summary() == json.loads(json.dumps(res.summary()))
    pd.testing.assert_frame_equal(back.to_dataframe()[["m1", "r0", "flag"]].reset_index(drop=True),
                                  res.to_dataframe()[["m1", "r0", "flag"]].reset_index(drop=True),
                                  check_dtype=False)
    assert back.model.to_dict() == res.model.to_dict()
    assert back.drift is None and res.drift is not None


def test_old_names_work_for_one_release_with_a_warning(fitted):
    res = fitted.result_
    with pytest.warns(DeprecationWarning, match="summary_"):
        assert res.summary_ is res.summary()
    with pytest.warns(DeprecationWarning, match="cells_"):
        assert res.cells_ is res.cells
    with pytest.warns(DeprecationWarning, match="model_"):
        assert res.model_ is res.model
    with pytest.raises(AttributeError):
        res.no_such_thing  # noqa: B018

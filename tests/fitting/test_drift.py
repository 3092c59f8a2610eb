"""Per-cell drift fits: accuracy, robustness to RTN, standard errors, lmfit agreement, errors."""

from __future__ import annotations

import warnings

import lmfit
import numpy as np
import pandas as pd
import pytest
from fit_helpers import median_relerr, truth_for

from hfox_fit import DieData, FitConvergenceWarning, FitError
from hfox_fit.fitting import DRIFT_MODELS, DriftFitter, DriftOptions, drift_model, fit_drift_die
from hfox_fit.fitting import drift as drift_module
from hfox_fit.laws import DRIFT_LAWS, ParameterLaw
from hfox_fit.model import DeviceModel, PinkNoise, TelegraphNoise


def test_registry_holds_an_lmfit_model_per_law():
    assert set(DRIFT_MODELS) == set(DRIFT_LAWS)
    for name, model in DRIFT_MODELS.items():
        assert isinstance(model, lmfit.Model)
        assert tuple(model.param_names) == DRIFT_LAWS[name].params
    assert drift_model("power") is DRIFT_MODELS["power"]


@pytest.mark.parametrize("bad", ["pow", "", None, "two-slope"])
def test_unknown_law_is_a_clear_error(small_wafer, bad):
    with pytest.raises(FitError, match=r"must be one of \['log', 'power', 'two_slope'"):
        DriftFitter(law=bad).fit(small_wafer.dies)


def test_per_cell_accuracy_paper(paper_wafer, paper_fit):
    cells = paper_fit.drift_.per_law_["two_slope"]
    truth = truth_for(paper_wafer, cells)
    ok = (cells["flag"] == "ok").to_numpy() & (truth["flag"] == "ok").to_numpy()
    inside = ok & (truth["t_star"].to_numpy() < 1000)
    assert median_relerr(cells["m1"][ok], truth["m1"][ok]) <= 0.10
    assert median_relerr(cells["t_star"][inside], truth["t_star"][inside]) <= 0.15
    assert median_relerr(cells["r0"][ok], truth["r0"][ok]) <= 0.01
    # a break is reported for most cells whose break lies inside the train
    assert np.isfinite(cells["t_star"][inside]).mean() > 0.75


def test_per_cell_accuracy_wafer_b(wafer_b, wafer_b_fit):
    cells = wafer_b_fit.cells_
    truth = truth_for(wafer_b, cells)
    ok = (cells["flag"] == "ok").to_numpy() & (truth["flag"] == "ok").to_numpy()
    inside = ok & (truth["t_star"].to_numpy() < 1000)
    assert median_relerr(cells["m1"][ok], truth["m1"][ok]) <= 0.10
    assert median_relerr(cells["t_star"][inside], truth["t_star"][inside]) <= 0.15
    assert median_relerr(cells["r0"][ok], truth["r0"][ok]) <= 0.01


def test_standard_errors_match_the_monte_carlo_spread(paper_wafer, paper_fit):
    """NIST pattern: true values within 2 (3) stderr about as often as a Gaussian says."""
    cells = paper_fit.drift_.per_law_["two_slope"]
    truth = truth_for(paper_wafer, cells)
    brk = (cells["flag"] == "ok").to_numpy() & np.isfinite(cells["t_star"].to_numpy())
    for p in ("m1", "t_star", "m2"):
        z = ((cells[p] - truth[p]) / cells[p + "_stderr"]).to_numpy()[brk]
        z = z[np.isfinite(z)]
        assert len(z) > 300
        assert 0.85 <= np.mean(np.abs(z) < 2) <= 0.99, p
        assert np.mean(np.abs(z) < 3) >= 0.93, p


def test_robust_fit_beats_plain_least_squares_on_strong_rtn(paper_wafer):
    """Telegraph jumps drag a plain least-squares fit; the masked fit is not dragged."""
    die = paper_wafer.dies[0]
    high = paper_wafer.meta["rtn_high"]  # (cells, cycles, pulses) in truth order
    truth = paper_wafer.truth
    order = {d: i for i, d in enumerate(truth["device"])}
    idx = np.array([order[d] for d in die.devices])
    tr = truth.iloc[idx].reset_index(drop=True)
    frac_high = high[idx, 0].mean(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        robust = fit_drift_die(die, ("two_slope",)).tables["two_slope"]
        plain = fit_drift_die(die, ("two_slope",), DriftOptions(robust=False)).tables["two_slope"]
    strong = ((tr["rtn_amplitude"] > 0.3) & (frac_high > 0.2) & (tr["flag"] == "ok")).to_numpy().copy()
    strong &= (robust["flag"] == "ok").to_numpy()
    assert strong.sum() >= 30
    err_robust = median_relerr(robust["m1"][strong], tr["m1"][strong])
    err_plain = median_relerr(plain["m1"][strong], tr["m1"][strong])
    assert err_robust <= 0.10
    assert err_plain >= 3 * err_robust
    # RTN-high reads were masked on those cells
    assert (robust["n_masked"][strong] > 0.5 * frac_high[strong] * 1000).mean() > 0.8


def test_lmfit_agrees_with_the_vectorised_optimum(small_wafer):
    fitter = DriftFitter(law="auto").fit(small_wafer.dies)
    die = small_wafer.dies[0]
    for law in ("two_slope", "power", "log"):
        table = fitter.per_law_[law]
        finite = np.isfinite(table[list(DRIFT_LAWS[law].params)].to_numpy()).all(axis=1)
        rows = np.nonzero((table["flag"] == "ok").to_numpy() & finite)[0]
        for i in rows[:: max(len(rows) // 4, 1)][:4]:
            res = fitter.refine(die, table["device"].iat[i], law=law)
            mask = fitter.die_results_[0].mask()[i]
            w = np.log(die.resistance[i, 0, 1:] / table["r0"].iat[i]) - fitter.die_results_[0].offset
            t = np.arange(1, die.n_pulses, dtype=float)
            ours = np.sum((w[mask] - DRIFT_LAWS[law](t[mask], **{p: table[p].iat[i] for p in DRIFT_LAWS[law].params})) ** 2)
            # lmfit, started at our optimum, finds nothing better
            assert res.chisqr >= ours * (1 - 1e-6), (law, i)


@pytest.mark.parametrize("law", ["power", "log"])
def test_power_and_log_laws_are_recovered(law):
    P = ParameterLaw
    if law == "power":
        d2d = {"a": P("lognorm", {"s": 0.3, "loc": 0, "scale": 1e-2}), "b": P("norm", {"loc": 0.6, "scale": 0.05}),
               "c1": P("norm", {"loc": 0.0, "scale": 0.02})}
    else:
        d2d = {"a": P("lognorm", {"s": 0.3, "loc": 0, "scale": 0.2}), "tau": P("lognorm", {"s": 0.3, "loc": 0, "scale": 80.0}),
               "c1": P("norm", {"loc": 0.0, "scale": 0.02})}
    d2d["r0"] = P("norm", {"loc": 7000.0, "scale": 300.0})
    d2d["rtn_amplitude"] = P("uniform", {"loc": 0.0, "scale": 0.3})
    model = DeviceModel(law=law, d2d=d2d, pink=PinkNoise(alpha=0.025), rtn=TelegraphNoise(8e-4, 2e-3))
    from hfox_fit.synth import make_wafer

    wafer = make_wafer(model, devices=256, pulses=600, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = DriftFitter(law="auto").fit(wafer.dies)
    assert fit.law_ == law, fit.scores_  # (quasi-)AIC picks the true law over two_slope's extra kink
    assert fit.scores_[law]["bic"] == min(v["bic"] for v in fit.scores_.values())
    cells = fit.per_law_[law]
    truth = truth_for(wafer, cells)
    ok = (cells["flag"] == "ok").to_numpy() & (truth["flag"] == "ok").to_numpy()
    for p in DRIFT_LAWS[law].params:
        # every parameter within 3 stderr about as often as a Gaussian says (a and b, or a and tau,
        # trade off against each other, so their relative errors alone say little)
        z = ((cells[p] - truth[p]) / cells[p + "_stderr"]).to_numpy()[ok]
        assert np.mean(np.abs(z) < 3) >= 0.9, p
    shape = "b" if law == "power" else "tau"
    assert median_relerr(cells[shape][ok], truth[shape][ok]) <= 0.15


def test_table_columns_and_units(small_wafer):
    fit = DriftFitter(law="two_slope").fit(small_wafer.dies[0])
    df = fit.per_cell_
    for col in ("wafer", "die", "device", "cycle", "m1", "m1_stderr", "t_star", "t_star_stderr", "m2", "m2_stderr",
                "c1", "c1_stderr", "r0", "r0_stderr", "flag", "flag_reason", "success", "note", "aic", "bic",
                "rtn", "rtn_amplitude", "t_star_lo", "t_star_hi", "t_star_censored"):
        assert col in df, col
    assert len(df) == small_wafer.dies[0].n_cells
    ok = df["flag"] == "ok"
    # every unflagged train has an m1 and an r0 with their uncertainty, and a missing stderr says why
    assert np.isfinite(df.loc[ok, ["m1", "m1_stderr", "r0", "r0_stderr", "c1", "c1_stderr"]]).all().all()
    no_break = ok & df["t_star"].isna()
    assert no_break.any() and df.loc[no_break, "note"].str.contains("no significant break").all()
    assert (df["r0_stderr"][ok] > 0).all()


# ----------------------------------------------------------------------------- bad input


def _die(resistance, devices=None):
    n, c, p = resistance.shape
    devices = np.array(devices or [f"c{i}" for i in range(n)])
    shape = (n, c)
    return DieData("W", "D", devices, np.arange(c), resistance, np.ones(resistance.shape, bool),
                   np.full(shape, 0.1), np.full(shape, 1.0), np.full(shape, 1e-6))


def test_empty_campaign_is_an_error():
    with pytest.raises(FitError, match="no dies to fit"):
        DriftFitter().fit([])


def test_not_a_die_is_an_error():
    with pytest.raises(FitError, match="expected DieData"):
        DriftFitter().fit([pd.DataFrame()])


def test_all_nan_and_short_cells_are_flagged_not_dropped(small_wafer):
    die = small_wafer.dies[0]
    r = die.resistance.copy()
    r[0] = np.nan  # never read
    r[1, :, 8:] = np.nan  # too few reads
    bad = _die(r, list(die.devices))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = DriftFitter().fit(bad).per_cell_
    assert len(df) == die.n_cells
    assert df["flag"].iat[0] == "failed" and "valid read" in df["flag_reason"].iat[0]
    assert df["flag"].iat[1] == "failed" and "at least" in df["flag_reason"].iat[1]
    assert (df["flag"].iloc[2:] != "failed").all()


def test_missing_pulse0_read_extrapolates_r0(small_wafer):
    die = small_wafer.dies[0]
    r = die.resistance.copy()
    r[5, 0, 0] = np.nan
    df = DriftFitter().fit(_die(r, list(die.devices))).per_cell_
    truth = small_wafer.truth.set_index("device").loc[die.devices[5]]
    assert abs(df["r0"].iat[5] / truth["r0"] - 1) < 0.05
    assert "extrapolated" in df["note"].iat[5]


def test_a_fit_that_fails_is_flagged_with_a_warning(small_wafer, monkeypatch):
    real = drift_module._fit_law

    def broken(name, *args, **kwargs):
        f = real(name, *args, **kwargs)
        f.beta[0] = np.nan
        f.converged[0] = False
        return f

    def no_lmfit(*args, **kwargs):
        raise RuntimeError("lmfit unavailable in this test")

    monkeypatch.setattr(drift_module, "_fit_law", broken)
    monkeypatch.setattr(drift_module, "_lmfit_refit", no_lmfit)
    die = small_wafer.dies[0]
    with pytest.warns(FitConvergenceWarning, match=r"did not converge .*flagged 'failed'"):
        df = DriftFitter().fit(die).per_cell_
    first_ok = 0
    assert df["flag"].iat[first_ok] == "failed"
    assert "did not converge" in df["flag_reason"].iat[first_ok]
    assert len(df) == die.n_cells


def test_lmfit_rescues_a_vectorised_failure(small_wafer, monkeypatch):
    real = drift_module._fit_law

    def broken(name, *args, **kwargs):
        f = real(name, *args, **kwargs)
        f.converged[3] = False
        f.beta[3] = np.nan
        return f

    monkeypatch.setattr(drift_module, "_fit_law", broken)
    df = DriftFitter().fit(small_wafer.dies[0]).per_cell_
    assert df["flag"].iat[3] == "ok"  # row 3 of this wafer is a healthy cell
    assert "fitted by lmfit" in df["note"].iat[3]
    assert np.isfinite(df[["m1", "m1_stderr", "t_star", "m2"]].iloc[3]).all()

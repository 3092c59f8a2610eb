"""Per-cell drift fits: accuracy, robustness to RTN, standard errors, lmfit agreement, errors."""

from __future__ import annotations

import dataclasses
import warnings

import lmfit
import numpy as np
import pandas as pd
import pytest
from fit_helpers import median_relerr, truth_for

from hfox_fit import DieData, FitConvergenceWarning, FitError
from hfox_fit.fitting import DRIFT_MODELS, DriftFitter, DriftOptions, drift_model, fit_drift_die
from hfox_fit.fitting import _robust as robust_module
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
    cells = paper_fit.drift.per_law_["two_slope"]
    truth = truth_for(paper_wafer, cells)
    ok = (cells["flag"] == "ok").to_numpy() & (truth["flag"] == "ok").to_numpy()
    inside = ok & (truth["t_star"].to_numpy() < 1000)
    assert median_relerr(cells["m1"][ok], truth["m1"][ok]) <= 0.10
    assert median_relerr(cells["t_star"][inside], truth["t_star"][inside]) <= 0.15
    assert median_relerr(cells["r0"][ok], truth["r0"][ok]) <= 0.01
    # a break is reported for most cells whose break lies inside the train
    assert np.isfinite(cells["t_star"][inside]).mean() > 0.75


def test_per_cell_accuracy_wafer_b(wafer_b, wafer_b_fit):
    cells = wafer_b_fit.cells
    truth = truth_for(wafer_b, cells)
    ok = (cells["flag"] == "ok").to_numpy() & (truth["flag"] == "ok").to_numpy()
    inside = ok & (truth["t_star"].to_numpy() < 1000)
    assert median_relerr(cells["m1"][ok], truth["m1"][ok]) <= 0.10
    assert median_relerr(cells["t_star"][inside], truth["t_star"][inside]) <= 0.15
    assert median_relerr(cells["r0"][ok], truth["r0"][ok]) <= 0.01


def test_standard_errors_match_the_monte_carlo_spread(paper_wafer, paper_fit):
    """NIST pattern: true values within 2 (3) stderr about as often as a Gaussian says."""
    cells = paper_fit.drift.per_law_["two_slope"]
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
            w = fitter.die_results_[0].fitted_w(die, i, law)  # ln(R / r0) - pink offset (- RTN excess)
            mask = np.isfinite(w)
            assert mask.sum() == table["n_reads"].iat[i] + table["n_rtn_corrected"].iat[i]
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


def test_a_fit_that_fails_is_flagged_with_a_warning(small_wafer, first_fit_fails):
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


# ----------------------------------------------------------------------------- RTN high at the start


def _die_truth(wafer):
    """Die 0 of ``wafer``, its truth rows and true RTN states (cycle 0), in the die's row order."""
    die = wafer.dies[0]
    order = {d: i for i, d in enumerate(wafer.truth["device"])}
    idx = np.array([order[d] for d in die.devices])
    return die, wafer.truth.iloc[idx].reset_index(drop=True), wafer.meta["rtn_high"][idx, 0]


def _rtn_high_stretch(die, rows, start, stop, amplitude, seed):
    """A copy of ``die`` whose trains ``rows`` read RTN-high (``U1 U2 A`` on ln R) at pulses start[i]..stop[i] - 1."""
    rng = np.random.default_rng(seed)
    r = die.resistance.copy()
    for i, a, b, amp in zip(rows, start, stop, amplitude):
        r[i, 0, a:b] *= np.exp(rng.random(b - a) * rng.random(b - a) * amp)
    return dataclasses.replace(die, resistance=r)


def test_a_train_rtn_high_from_the_start_is_referred_to_the_low_state(paper_wafer):
    """Real cells can be RTN-high right after SET: R0 and c1 must still refer to the low state."""
    die, tr, high = _die_truth(paper_wafer)
    rng = np.random.default_rng(1)
    k = rng.integers(60, 300, size=len(tr))
    amp = tr["rtn_amplitude"].to_numpy()
    low_start = np.array([not high[i, :k[i]].any() for i in range(len(tr))])
    cand = np.nonzero((tr["flag"] == "ok").to_numpy() & (amp > 0.25) & low_start)[0]
    pick = rng.choice(cand, 30, replace=False)
    # high from the read right after SET (pulse 0) to pulse k - 1
    mod = _rtn_high_stretch(die, pick, np.zeros(30, int), k[pick], amp[pick], seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = fit_drift_die(mod, ("two_slope",)).tables["two_slope"]
    assert (tab["flag"].to_numpy()[pick] == "ok").all()
    r0_err = tab["r0"].to_numpy()[pick] / tr["r0"].to_numpy()[pick] - 1
    read0_err = mod.resistance[pick, 0, 0] / tr["r0"].to_numpy()[pick] - 1  # R0 taken as the (high) read
    c1_err = (tab["c1"] - tr["c1"]).to_numpy()[pick]
    # the read right after SET is recognised as high and its excess removed: R0 no longer biased high
    assert (tab["r0_rtn_high"].to_numpy()[pick] > 0.5).mean() >= 0.8
    assert tab["note"].iloc[pick].str.contains("RTN high from the first reads").mean() >= 0.8
    assert abs(np.median(r0_err)) <= 0.025 < np.median(read0_err)
    assert np.median(np.abs(r0_err)) <= 0.8 * np.median(np.abs(read0_err))
    # c1 as good as that R0 allows (the excess of one high read is known only in law: U1 U2 A)
    assert abs(np.median(c1_err)) <= 0.025
    assert np.median(np.abs(c1_err)) <= np.median(np.abs(np.log1p(r0_err))) + 0.02
    assert median_relerr(tab["m1"].to_numpy()[pick], tr["m1"].to_numpy()[pick]) <= 0.15
    # ... within their (widened) standard errors
    assert np.mean(np.abs(c1_err / tab["c1_stderr"].to_numpy()[pick]) < 3) >= 0.8
    assert np.mean(np.abs(r0_err * tr["r0"].to_numpy()[pick] / tab["r0_stderr"].to_numpy()[pick]) < 3) >= 0.8
    # trains that start low are left alone
    rest = np.setdiff1d(np.nonzero((tab["flag"] == "ok").to_numpy() & (tr["flag"] == "ok").to_numpy())[0], pick)
    assert (tab["r0_rtn_high"].to_numpy()[rest] > 0.5).mean() <= 0.01
    assert median_relerr(tab["r0"].to_numpy()[rest], tr["r0"].to_numpy()[rest]) <= 0.01


def test_a_train_rtn_high_nearly_everywhere_is_fitted_against_its_low_state_and_says_so(paper_wafer):
    """A train high from its first pulses to its end: not fitted silently through the high reads."""
    die, tr, high = _die_truth(paper_wafer)
    rng = np.random.default_rng(3)
    amp = tr["rtn_amplitude"].to_numpy()
    cand = np.nonzero((tr["flag"] == "ok").to_numpy() & (amp > 0.25) & ~high.any(axis=1))[0]
    pick = rng.choice(cand, 16, replace=False)
    first = rng.integers(10, 30, size=16)  # low for a few pulses after SET, then high to the end
    mod = _rtn_high_stretch(die, pick, first, np.full(16, die.n_pulses), amp[pick], seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        robust = fit_drift_die(mod, ("two_slope",)).tables["two_slope"]
        plain = fit_drift_die(mod, ("two_slope",), DriftOptions(robust=False)).tables["two_slope"]
    assert (robust["flag"].to_numpy()[pick] == "ok").all()
    assert robust["note"].iloc[pick].str.contains("RTN high on much of the train").all()
    assert (robust["n_rtn_corrected"].to_numpy()[pick] > 0.8 * (die.n_pulses - first)).all()
    c1_err = np.abs(robust["c1"] - tr["c1"]).to_numpy()[pick]
    # fitted through all its reads with the high ones lowered by A/4: c1 and m1 as for a low train,
    # where every read taken as it is lifts c1 by about A/4
    assert np.median(c1_err) <= 0.03 < np.median(np.abs(plain["c1"] - tr["c1"]).to_numpy()[pick])
    assert np.median(c1_err) <= np.median(amp[pick]) / 4 / 3
    assert median_relerr(robust["m1"].to_numpy()[pick], tr["m1"].to_numpy()[pick]) <= 0.15
    assert np.mean(c1_err / robust["c1_stderr"].to_numpy()[pick] < 3) >= 0.8
    # the read right after SET was low: R0 is left as read
    assert median_relerr(robust["r0"].to_numpy()[pick], tr["r0"].to_numpy()[pick]) <= 0.01


def test_where_a_high_stretch_starts_tells_a_high_start_from_a_later_one():
    """_start_excess: a train high from pulse 1 most likely started high; one low for 8 reads did not."""
    rng = np.random.default_rng(0)
    A, sd, B = 0.4, 0.005, 16
    e = rng.random((2, B)) * rng.random((2, B)) * A  # telegraph excess of reads 1..B
    e[1, :8] = 0.0  # the second train goes high at pulse 9
    w = e + sd / np.sqrt(2) * rng.standard_normal((2, B))
    d = np.diff(w, axis=1)
    p, excess, var = robust_module._start_excess(d, sd, np.full(2, A), p_up=8e-4, n_trains=20, pi0=0.1)
    assert p[0] > 0.5 and p[1] < 0.01
    assert excess[0] == pytest.approx(p[0] * A / 4, rel=0.01)  # no c1 law given: the mean excess
    assert excess[1] < 1e-3 and np.all(var >= 0)


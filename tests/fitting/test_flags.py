"""Broken-cell flags: stuck, abrupt, open, failed."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import truth_for

from hfox_fit.fitting import FlagOptions, detect_flags
from hfox_fit.fitting.flags import drift_evidence
from hfox_fit.model import preset_model
from hfox_fit.synth import MeasurementEffects, make_wafer


@pytest.mark.parametrize("which", ["paper", "wafer_b"])
def test_recall_and_precision_of_broken_cells(which, paper_wafer, paper_fit, wafer_b, wafer_b_fit):
    wafer, fit = (paper_wafer, paper_fit) if which == "paper" else (wafer_b, wafer_b_fit)
    cells = fit.cells
    truth = truth_for(wafer, cells)
    assert len(cells) == len(wafer.truth)  # flagged cells are kept
    flat = _flat_working(wafer, truth)
    for kind in ("stuck", "abrupt", "open"):
        true_pos = ((cells["flag"] == kind) & (truth["flag"] == kind)).sum()
        found, real = (cells["flag"] == kind).sum(), (truth["flag"] == kind).sum()
        assert real > 0
        assert true_pos / real >= 0.95, (kind, true_pos, real)
        # a working cell whose whole train rises by less than 0.02 in w programs about as little as a
        # stuck one: flagging it is not a false flag (test_slow_working_cells_are_not_stuck bounds them)
        excused = ((cells["flag"] == kind) & flat).sum() if kind == "stuck" else 0
        assert true_pos / (found - excused) >= 0.95, (kind, true_pos, found, excused)
    broken = truth["flag"] != "ok"
    # broken-cell flags; poor_fit (a law that leaves a working cell's reads) is measured in test_goodness_of_fit.py
    flagged = cells["flag"].isin(["stuck", "abrupt", "open", "failed"])
    assert (broken & flagged).sum() / broken.sum() >= 0.95
    assert (broken & flagged).sum() / (flagged & ~flat).sum() >= 0.95
    # every flag comes with its reason, and flagged cells stay out of the populations
    any_flag = cells["flag"] != "ok"
    assert (cells.loc[any_flag, "flag_reason"].str.len() > 10).all()
    assert (cells.loc[~any_flag, "flag_reason"] == "").all()


def test_summary_counts_the_flags(paper_fit):
    s = paper_fit.summary()["devices"]
    cells = paper_fit.cells
    for kind in ("stuck", "abrupt", "open", "failed", "poor_fit"):
        assert s["flagged"][kind] == (cells["flag"] == kind).sum()
    assert s["total"] == len(cells)
    assert s["fitted"] == (cells["flag"] == "ok").sum()


def test_abrupt_cut_and_reasons():
    rng = np.random.default_rng(0)
    n, p = 6, 200
    lny = np.log(7000) + np.cumsum(rng.normal(1e-3, 0.005, (n, p)), axis=1)
    lny[:, 0] = np.log(7000)
    lny[1, 80:] = np.log(2e5)  # abrupt RESET at pulse 80
    lny[2] = np.log(5e6) + rng.normal(0, 0.05, p)  # never formed
    lny[3] = np.log(7000) + rng.normal(0, 5e-4, p)  # stuck
    lny[4, 5:] = np.nan  # too few reads
    lny[5, 100] = lny[5, 100] + 1.5  # a single glitch is not an abrupt RESET
    valid = np.isfinite(lny)
    flag, reason, cut, _ = detect_flags(lny, valid, FlagOptions())
    assert list(flag) == ["ok", "abrupt", "open", "stuck", "failed", "ok"]
    assert cut[1] == 80 and "pulse 80" in reason[1]
    assert "never formed" in reason[2] and "stuck" in reason[3] and "valid read" in reason[4]
    assert cut[0] == p and cut[5] == p


def test_abrupt_jump_across_a_failed_read():
    rng = np.random.default_rng(1)
    lny = np.log(7000) + np.cumsum(rng.normal(1e-3, 0.005, (3, 120)), axis=1)
    lny[:, 0] = np.log(7000)
    lny[0, 50] = np.nan
    lny[0, 51:] = np.log(1e5)
    flag, _, cut, _ = detect_flags(lny, np.isfinite(lny))
    assert flag[0] == "abrupt" and cut[0] == 51


# ------------------------------------------------------------------ stuck cells, quiet and noisy
# detect_flags alone (no drift fit) on 2048 cells x 1000 pulses, 5 % stuck cells: either the
# bench's quiet ones (read noise only) or ones that keep their pink noise and RTN (stuck_noise).

_WAFERS = {}


def _wafer(preset, *, noisy=False, stuck=0.05, pulses=1000, devices=2048, seed=303):
    key = (preset, noisy, stuck, pulses, devices, seed)
    if key not in _WAFERS:
        effects = MeasurementEffects(stuck=stuck, stuck_noise=noisy)
        _WAFERS[key] = make_wafer(preset, devices=devices, pulses=pulses, seed=seed, effects=effects)
    return _WAFERS[key]


def _flags(wafer, options=None):
    """detect_flags die by die; flags and reasons in the order of ``wafer.truth``."""
    options = options or FlagOptions()
    flags, reasons = [], []
    for die in wafer.dies:
        r = np.asarray(die.resistance, float).reshape(-1, die.resistance.shape[-1])
        lny = np.log(r)
        f, why, _, _ = detect_flags(lny, np.isfinite(lny), options)
        flags.append(f)
        reasons.append(why)
    return np.concatenate(flags).astype(str), np.concatenate(reasons)


def _scores(wafer, flag, kind="stuck"):
    truth = wafer.truth["flag"].to_numpy()
    tp = ((flag == kind) & (truth == kind)).sum()
    real, found = (truth == kind).sum(), (flag == kind).sum()
    false_ok = ((flag == kind) & (truth == "ok")).sum()
    return tp / real, tp / max(found, 1), false_ok / (truth == "ok").sum()


def _true_rise(wafer, first=17, truth=None):
    """Rise of each train's true drift w_mean from pulse ``first`` to its last pulse (rows of ``truth``,
    default the wafer's)."""
    truth = wafer.truth if truth is None else truth
    model = preset_model(wafer.meta["preset"])
    p = {k: truth[k].to_numpy() for k in model.parameter_names}
    last = np.array(wafer.meta["pulses"])
    return model.mean_w(last, p) - model.mean_w(np.array(first), p)


#: A working train that rises by less than this (twice the default stuck_rise) may be flagged stuck.
FLAT_RISE = 0.02


def _flat_working(wafer, truth=None):
    """Working trains whose true drift rises by less than FLAT_RISE from pulse 17 to the end."""
    truth = wafer.truth if truth is None else truth
    return (truth["flag"].to_numpy() == "ok") & (_true_rise(wafer, truth=truth) < FLAT_RISE)


@pytest.mark.parametrize(("preset", "noisy"), [("paper", False), ("wafer_b", False), ("wafer_b", True)],
                         ids=["paper-quiet", "wafer_b-quiet", "wafer_b-noisy"])
def test_stuck_recall_and_precision(preset, noisy):
    """Quiet stuck cells on both presets and noisy ones on wafer_b (paper: the next test)."""
    wafer = _wafer(preset, noisy=noisy)
    flag, reason = _flags(wafer)
    recall, precision, false_ok = _scores(wafer, flag)
    flat = _flat_working(wafer)
    found = (flag == "stuck").sum()
    # flagged working cells all rise by less than 0.02 (paper: 9 of 2048, see test_slow_working_cells_are_not_stuck)
    assert not ((flag == "stuck") & (wafer.truth["flag"].to_numpy() == "ok") & ~flat).any()
    assert recall >= 0.95 and precision * found / (found - ((flag == "stuck") & flat).sum()) >= 0.95, (recall, precision)
    assert false_ok <= 0.005
    # every other broken cell is still found
    for kind in ("abrupt", "open"):
        r, p, _ = _scores(wafer, flag, kind)
        assert r >= 0.95 and p >= 0.95, (kind, r, p)


def _pooled_scores(seeds, options=None, **wafer_kw):
    """Recall, precision and share of working cells flagged, counted over the wafers of ``seeds`` together."""
    tp = real = found = false_ok = ok = 0
    for seed in seeds:
        wafer = make_wafer("paper", devices=2048, seed=seed, effects=MeasurementEffects(stuck=0.05, stuck_noise=True),
                           **{"pulses": 1000, **wafer_kw})
        flag = _flags(wafer, options)[0]
        truth = wafer.truth["flag"].to_numpy()
        tp += ((flag == "stuck") & (truth == "stuck")).sum()
        real, found = real + (truth == "stuck").sum(), found + (flag == "stuck").sum()
        false_ok += ((flag == "stuck") & (truth == "ok")).sum()
        ok += (truth == "ok").sum()
    return tp / real, tp / found, false_ok / ok


def test_noisy_stuck_on_the_paper_preset():
    """The issue's target, recall >= 0.9 at precision >= 0.95, over 13 wafers of 2048 cells (5 % noisy stuck).

    Measured with the defaults: recall 0.912, precision 0.955 over the 13 together; per wafer (about
    100 stuck cells each) recall 0.885-0.940 and precision 0.90-0.98. What is left is the physics of
    the paper's D2D laws: the working cells flagged rise by 0.003-0.02 in w over their whole train
    (a stuck train's rise scatters by about 0.004). The earlier defaults (stuck_z=1, stuck_power=2)
    found 0.63-0.81 at precision 0.95-1.0.
    """
    recall, precision, false_ok = _pooled_scores(range(303, 316))
    assert recall >= 0.9 and precision >= 0.95 and false_ok <= 0.003, (recall, precision, false_ok)
    # the trade-off is the user's: the earlier, stricter defaults flag fewer stuck cells and fewer working ones
    r2, p2, f2 = _pooled_scores(range(303, 306), FlagOptions(stuck_z=1.0, stuck_power=2.0))
    r1, _, f1 = _pooled_scores(range(303, 306))
    assert r2 < r1 - 0.1 and f2 < f1 and p2 >= 0.95, (r1, r2, f1, f2, p2)


@pytest.mark.parametrize("preset", ["paper", "wafer_b"])
def test_slow_working_cells_are_not_stuck(preset):
    """The working cells of the smallest m1 keep their flag whenever their drift is above the noise."""
    wafer = _wafer(preset)
    flag, _ = _flags(wafer)
    truth = wafer.truth
    ok = (truth["flag"] == "ok").to_numpy()
    m1 = truth["m1"].to_numpy()
    slowest = ok & (m1 <= np.quantile(m1[ok], 0.10))
    assert slowest.sum() > 150
    rise = _true_rise(wafer)
    resolved = slowest & (rise >= 0.02)  # twice stuck_rise, 5 stderr of a stuck train's rise
    assert resolved.sum() > 0.9 * slowest.sum()
    assert not (flag[resolved] == "stuck").any()
    # the ones flagged rise by less than 0.02 over their train (measured: 2.6 % of the slowest tenth on paper)
    assert (flag[slowest] == "stuck").mean() <= 0.04


@pytest.mark.parametrize("pulses", [100, 300])
def test_short_trains_flag_only_quiet_stuck_cells(pulses):
    """Over a short train a slow cell and a noisy stuck one look alike: no flag without the evidence."""
    quiet = _wafer("paper", pulses=pulses)
    recall, precision, _ = _scores(quiet, _flags(quiet)[0])
    assert recall >= 0.95 and precision >= 0.95
    noisy = _wafer("paper", noisy=True, pulses=pulses)
    flag, _ = _flags(noisy)
    assert (flag == "stuck").sum() == 0


def test_noisy_stuck_reason_says_what_was_measured():
    wafer = _wafer("wafer_b", noisy=True)
    flag, reason = _flags(wafer)
    truth = wafer.truth["flag"].to_numpy()
    picked = reason[(flag == "stuck") & (truth == "stuck")]
    assert len(picked) > 50
    for text in picked:
        assert text.startswith("stuck: no drift over pulses 17-1000: w rises by ")
        assert "stderr" in text and "block means" in text and "least rise expected of a working cell" in text
    assert any("RTN blocks corrected" in text for text in picked)


def test_drift_evidence_of_stuck_and_drifting_trains():
    """Rise estimates and their standard errors on pink noise alone, and with a slow drift added."""
    model = preset_model("paper")
    n, t = 400, 1000
    zero = np.zeros(n)
    params = {"m1": zero, "t_star": zero + 500.0, "m2": zero, "c1": zero, "r0": zero + 7000.0,
              "rtn_amplitude": zero}
    w = model.simulate(n, t, rng=np.random.default_rng(4), params=params, rtn=False)[0][:, 0, 1:]
    pulses = np.arange(1, t + 1)
    w[n // 2:] += model.mean_w(pulses, {"m1": 5e-5, "t_star": 500.0, "m2": 2e-5, "c1": 0.0})  # rises by 0.034
    ev = drift_evidence(w, np.isfinite(w), np.ones(n, bool))
    flat, slow = slice(0, n // 2), slice(n // 2, n)
    for key in ("step", "trend"):
        z = ev[key] / ev[key + "_se"]
        assert abs(np.median(z[flat])) < 0.3 and 0.7 < np.std(z[flat]) < 1.4, key
        assert np.median(ev[key][slow]) > 0.02 and (z[slow] > 3).mean() > 0.9, key
    # the long-run (not the read-to-read) noise sets the error: 0.031 per read for the paper's pink noise
    assert np.median(ev["trend_se"][flat]) == pytest.approx(0.031 * np.sqrt(12 / 984), rel=0.3)
    short = drift_evidence(w[:, :150], np.isfinite(w[:, :150]), np.ones(n, bool))
    assert np.isnan(short["step"]).all()  # fewer than 6 blocks of 32 reads after pulse 16: no estimate

"""Noise laws: pink spectrum fit and RTN detection."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import fit_quietly

from hfox_fit import FitError
from hfox_fit.fitting import DriftFitter, fit_pink_spectrum
from hfox_fit.fitting.noise import block_to_pulse, pulse_to_block, segment_periodograms
from hfox_fit.laws import pink_coefficients
from hfox_fit.model import PinkNoise, TelegraphNoise, preset_model
from hfox_fit.synth import make_wafer


def _pink(n, T, alpha, d, white, rng):
    b = pink_coefficients(15, d)
    u = rng.uniform(size=(n, T + 15))
    x = np.zeros((n, T))
    for k, bk in enumerate(b):
        x += bk * u[:, 15 - k : 15 - k + T]
    return alpha * x + white * rng.standard_normal((n, T))


@pytest.mark.parametrize("alpha,d,white", [(0.025, 0.5, 0.002), (0.05, 0.35, 0.0), (0.01, 0.7, 0.004)])
def test_spectrum_fit_recovers_the_generator(alpha, d, white):
    rng = np.random.default_rng(0)
    x = _pink(400, 1000, alpha, d, white, rng)
    x += np.linspace(0, 0.3, 1000)  # a drift left in the residual is removed by the detrending
    stats = segment_periodograms(x, np.ones(x.shape, bool))
    fit = fit_pink_spectrum(stats, bootstrap=30)
    truth = PinkNoise(alpha=alpha, d=d)
    assert fit.std == pytest.approx(truth.std, rel=0.05)
    assert fit.exponent == pytest.approx(2 * d, abs=0.05)
    assert fit.std_ci90[0] <= fit.std <= fit.std_ci90[1]
    assert fit.std_stderr > 0
    if white:
        assert fit.white_std == pytest.approx(white, rel=0.25)


def test_spectrum_needs_segments():
    stats = segment_periodograms(np.zeros((3, 20)), np.ones((3, 20), bool))
    with pytest.raises(FitError, match="no complete residual segment"):
        fit_pink_spectrum(stats)


@pytest.mark.parametrize("which", ["paper", "wafer_b"])
def test_campaign_noise_within_targets(which, paper_wafer, paper_fit, wafer_b, wafer_b_fit):
    wafer, fit = (paper_wafer, paper_fit) if which == "paper" else (wafer_b, wafer_b_fit)
    s, m = fit.summary(), wafer.model
    assert s["pink"]["std"] == pytest.approx(m.pink.std, rel=0.20)
    assert s["pink"]["exponent"] == pytest.approx(m.pink.exponent, abs=0.2)
    assert s["rtn"]["p_up"] == pytest.approx(m.rtn.p_up, rel=0.5)
    assert s["rtn"]["p_down"] == pytest.approx(m.rtn.p_down, rel=0.5)
    amp = m.d2d["rtn_amplitude"].median()
    assert s["rtn"]["amplitude"]["median"] == pytest.approx(amp, rel=0.3)
    # every number carries an uncertainty
    for key in ("std_stderr", "std_ci90", "exponent_stderr", "exponent_ci90"):
        assert s["pink"][key] is not None
    assert s["rtn"]["p_up_ci90"][0] <= s["rtn"]["p_up"] <= s["rtn"]["p_up_ci90"][1]
    assert s["rtn"]["amplitude"]["median_ci90"] is not None


def test_rtn_states_are_found(paper_wafer):
    """The HMM's high blocks match the true telegraph state on cells with a visible amplitude."""
    # the die's own result: a campaign fit's per-die results no longer keep the per-block states
    res = DriftFitter(law="auto").fit(paper_wafer.dies[0]).die_results_[0]
    truth = paper_wafer.truth
    order = {d: i for i, d in enumerate(truth["device"])}
    die = paper_wafer.dies[0]
    idx = np.array([order[d] for d in die.devices])
    high = paper_wafer.meta["rtn_high"][idx, 0]
    B, nb = res.rtn.block, res.rtn.high.shape[1]
    true_blocks = high[:, : nb * B].reshape(len(idx), nb, B).mean(axis=2) > 0.5
    found = res.rtn.high > 0.5
    visible = (truth["rtn_amplitude"].to_numpy()[idx] > 0.1) & (truth["flag"].to_numpy()[idx] == "ok")
    tb, fb = true_blocks[visible], found[visible]
    assert (tb & fb).sum() / tb.sum() > 0.95  # recall of high blocks
    assert (tb & fb).sum() / fb.sum() > 0.9  # precision (misses sit at transitions)


def test_a_wafer_without_rtn_reports_none():
    model = preset_model("paper")
    model.rtn = TelegraphNoise(0.0, 0.0)
    wafer = make_wafer(model, devices=256, pulses=600, seed=4)
    s = fit_quietly(wafer.dies, law="two_slope", bootstrap=20).summary()
    assert s["rtn"]["p_up"] < 2e-4
    assert s["rtn"]["n_showing"] <= 3
    assert s["rtn"]["p_up_ci90"][1] < 1e-3


def test_other_noise_values_are_measured_not_assumed():
    model = preset_model("paper")
    model.pink = PinkNoise(alpha=0.05, d=0.4)
    model.rtn = TelegraphNoise(3e-3, 6e-3)
    wafer = make_wafer(model, devices=256, pulses=800, seed=5)
    s = fit_quietly(wafer.dies, law="two_slope", bootstrap=20).summary()
    assert s["pink"]["std"] == pytest.approx(model.pink.std, rel=0.2)
    assert s["pink"]["exponent"] == pytest.approx(0.8, abs=0.15)
    assert s["rtn"]["p_up"] == pytest.approx(3e-3, rel=0.5)
    assert s["rtn"]["p_down"] == pytest.approx(6e-3, rel=0.5)


def test_block_and_pulse_probabilities_round_trip():
    qu, qd = pulse_to_block(8e-4, 2e-3, 16)
    pu, pd = block_to_pulse(qu, qd, 16)
    assert pu == pytest.approx(8e-4, rel=1e-9) and pd == pytest.approx(2e-3, rel=1e-9)


def _telegraph(n, T, p_up, p_down, start_high, amplitude, rng):
    """RTN term (n, T): two-state chain per row from ``start_high`` (bool, n), U1 U2 A in the high state."""
    state = start_high.copy()
    high = np.empty((n, T), bool)
    for p in range(T):
        u = rng.random(n)
        state = np.where(state, u >= p_down, u < p_up)
        high[:, p] = state
    return np.where(high, rng.random((n, T)) * rng.random((n, T)) * amplitude[:, None], 0.0), high


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_rtn_em_measures_how_often_a_train_starts_high(share):
    """Real cells may be RTN-high right after SET: the HMM estimates the first block's state, not assumes it."""
    from hfox_fit.fitting.noise import block_stats, rtn_em

    rng = np.random.default_rng(1)
    n, T = 600, 1000
    start = rng.random(n) < share
    amp = rng.uniform(0.1, 0.5, n)
    rtn, high = _telegraph(n, T, 2e-3, 5e-3, start, amp, rng)
    x = _pink(n, T, 0.025, 0.5, 0.002, rng) + rtn
    m, lv = block_stats(x - x[~high].mean(), np.ones((n, T), bool), 16)  # residual about the low level
    res = rtn_em(m, lv, 16)
    shows = res.shows
    first_high = high[:, :16].mean(axis=1) > 0.5  # the first block mostly high (a start, or a flip in it)
    assert res.extra["pi0"] == pytest.approx(first_high[shows].mean(), abs=0.05)
    if share:
        assert (res.high[start & shows, 0] > 0.5).mean() > 0.9  # those trains' first blocks are found high
    assert res.p_up == pytest.approx(2e-3, rel=0.3) and res.p_down == pytest.approx(5e-3, rel=0.3)

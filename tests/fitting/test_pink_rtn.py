"""The pieces of the noise step on their own: periodogram sums, pink spectrum, RTN pooling and masks."""

from __future__ import annotations

import numpy as np
import pytest

from hfox_fit.fitting.pink import PinkSpectrum, SpectrumStats, segment_periodograms
from hfox_fit.fitting.rtn import RTNStats, _poisson_ci, _pool_rtn, block_stats


def test_segment_periodograms_count_only_fully_usable_segments():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((3, 15 + 4 * 64))  # 4 segments of 64 (the first 15 reads are skipped)
    usable = np.ones(x.shape, bool)
    usable[1, 15 + 70] = False  # breaks the second segment of row 1
    usable[2, :] = False
    s = segment_periodograms(x, usable, taps=15, length=64)
    assert s.length == 64 and s.freqs[0] == pytest.approx(1 / 64) and s.freqs[-1] == pytest.approx(0.5)
    assert s.count.tolist() == [4.0, 3.0, 0.0]
    assert np.all(s.power_sum[2] == 0) and np.all(s.power_sum[:2] > 0)
    # white noise of unit variance: the averaged periodogram is flat near 1 away from the detrended edge
    assert np.mean(s.mean[4:]) == pytest.approx(1.0, rel=0.2)


def test_spectrum_stats_concat_keeps_the_longest_segments():
    a = SpectrumStats(64, 15, np.arange(1, 33) / 64, np.ones((2, 32)), np.array([1.0, 2.0]))
    b = SpectrumStats(32, 15, np.arange(1, 17) / 32, np.ones((5, 16)), np.ones(5))
    c = SpectrumStats(64, 15, np.arange(1, 33) / 64, 3 * np.ones((1, 32)), np.array([1.0]))
    s = SpectrumStats.concat([a, None, b, c])
    assert s.length == 64 and s.power_sum.shape == (3, 32)
    np.testing.assert_allclose(s.mean, (2 + 3) / 4)
    assert SpectrumStats.concat([None]) is None


def test_long_run_ratio_of_pink_noise_exceeds_one():
    def spectrum(std, exponent, white):
        return PinkSpectrum(std=std, std_stderr=None, exponent=exponent, exponent_stderr=None, white_std=white,
                            white_std_stderr=None, taps=15, n_segments=1, freqs=np.zeros(0),
                            measured=np.zeros(0), fitted=np.zeros(0))

    white_only = spectrum(1e-12, 1.0, 0.01)
    assert white_only.long_run_ratio == pytest.approx(1.0, abs=1e-6)
    pink = spectrum(0.01, 1.0, 0.0)
    g = pink.autocov()
    assert g[0] == pytest.approx(0.01**2, rel=1e-9)
    assert pink.long_run_ratio > 2.0
    assert spectrum(0.01, 0.4, 0.0).long_run_ratio < pink.long_run_ratio  # less memory, smaller ratio


def test_block_stats_mark_short_blocks_missing():
    x = np.tile(np.arange(32, dtype=float), (2, 1))
    usable = np.ones_like(x, bool)
    usable[1, :12] = False  # row 1's first block keeps 4 reads of 16
    m, logv = block_stats(x, usable, 16)
    assert m.shape == (2, 2)
    np.testing.assert_allclose(m[0], [7.5, 23.5])
    np.testing.assert_allclose(logv[0], np.log(0.5))  # unit steps: first-difference variance 1/2
    assert np.isnan(m[1, 0]) and np.isnan(logv[1, 0]) and m[1, 1] == 23.5


def test_poisson_interval():
    lo, hi = _poisson_ci(0)
    assert lo == 0.0 and hi == pytest.approx(-np.log(0.05))
    lo, hi = _poisson_ci(10)
    assert 5.4 < lo < 5.5 and 16.9 < hi < 17.0  # Garwood 90 % interval for 10 counts


def _stats(n, nb, shows, up=0.0, down=0.0, block=16):
    return RTNStats(block, 0.0, 0.0, np.where(shows, 0.2, np.nan), shows, np.zeros(n), np.full(n, up),
                    np.full(n, down), np.full(n, nb - 1.0), np.zeros(n), np.zeros((n, nb)))


def test_pooled_rtn_without_any_rtn_gives_the_rule_of_three():
    est = _pool_rtn([_stats(100, 60, np.zeros(100, bool)), _stats(50, 60, np.zeros(50, bool))], 20, 0)
    assert est.p_up == 0.0 and est.p_down is None and est.n_cells == 150 and est.n_showing == 0
    total = 150 * 59 * 16
    assert est.p_up_ci90 == [0.0, pytest.approx(3.0 / total)]
    assert "no RTN seen in 150 trains" in est.note
    assert np.isnan(est.detection_limit) and est.amplitudes.size == 0
    assert est.telegraph.p_up == 0.0


def _telegraph_rows(n, nb, q_up, q_down, undetectable, rng):
    """Block-level chains starting low, as the RTN step counts them: a row shows RTN when it went high and
    its amplitude is detectable; a quiet row counts as low throughout (nb - 1 block steps)."""
    up, down, t_low, t_high = (np.zeros(n) for _ in range(4))
    shows = np.zeros(n, bool)
    hidden = rng.random(n) < undetectable
    for i in range(n):
        state, counts = 0, np.zeros((2, 2))
        for _ in range(nb - 1):
            r = rng.random()
            new = int(r < q_up) if state == 0 else int(r >= q_down)
            counts[state, new] += 1
            state = new
        shows[i] = counts[0, 1] > 0 and not hidden[i]
        if shows[i]:
            up[i], down[i] = counts[0, 1], counts[1, 0]
            t_low[i], t_high[i] = counts[0].sum(), counts[1].sum()
        else:
            t_low[i] = nb - 1.0
    return RTNStats(16, 0.0, 0.0, np.where(shows, 0.2, np.nan), shows, np.zeros(n), up, down, t_low, t_high,
                    np.zeros((n, nb)))


def test_pooled_p_up_is_not_biased_low_by_amplitudes_too_small_to_see():
    """Quiet trains whose amplitude is below the detection limit switch unseen: their low time must not count."""
    from hfox_fit.fitting.rtn import block_to_pulse, pulse_to_block

    q_up, q_down = pulse_to_block(0.002, 0.005, 16)
    stats = _telegraph_rows(4000, 62, q_up, q_down, undetectable=0.15, rng=np.random.default_rng(5))
    est = _pool_rtn([stats], 100, 0)
    naive = block_to_pulse(stats.up.sum() / stats.time_low.sum(), q_down, 16)[0]
    assert naive < 0.0019  # what counting every quiet train as low gives (about -10 %)
    assert est.p_up == pytest.approx(0.002, rel=0.04)
    assert est.p_up_ci90[0] <= 0.002 <= est.p_up_ci90[1]
    # every amplitude detectable: the correction leaves the rate as it was counted
    full = _telegraph_rows(4000, 62, q_up, q_down, undetectable=0.0, rng=np.random.default_rng(6))
    plain = block_to_pulse(full.up.sum() / full.time_low.sum(), q_down, 16)[0]
    assert _pool_rtn([full], 0, 0).p_up == pytest.approx(plain, rel=0.03)
    # short trains (most detectable ones never switch): the quiet count cannot tell, the rate is counted as is
    q_up, q_down = pulse_to_block(0.0008, 0.002, 16)
    short = _telegraph_rows(2000, 19, q_up, q_down, undetectable=0.15, rng=np.random.default_rng(7))
    counted = block_to_pulse(short.up.sum() / short.time_low.sum(), short.down.sum() / short.time_high.sum(), 16)[0]
    assert _pool_rtn([short], 0, 0).p_up == pytest.approx(counted, rel=1e-12)


def test_rows_of_rtn_stats_keep_their_per_row_extras():
    """A subset (a pulse condition's trains) pools like those rows of the whole: started_high goes along."""
    s = _stats(6, 5, np.array([True, False, True, True, False, True]), up=1.0, down=0.5)
    s.extra["started_high"] = np.array([0.9, 0.0, 0.1, 0.8, 0.0, 0.2])
    s.extra["pi0"] = 0.3
    sub = s.rows(np.array([0, 3, 4]))
    np.testing.assert_array_equal(sub.extra["started_high"], [0.9, 0.8, 0.0])
    np.testing.assert_array_equal(sub.shows, [True, True, False])
    assert sub.extra["pi0"] == 0.3 and sub.high.shape == (3, 5) and sub.block == s.block


def test_read_mask_dilates_high_blocks():
    s = _stats(1, 4, np.ones(1, bool), block=4)
    s.high[0] = [0.0, 0.9, 0.0, 0.0]
    np.testing.assert_array_equal(s.read_mask(18, dilate=0)[0], np.repeat([0, 1, 0, 0], 4).tolist() + [0, 0])
    np.testing.assert_array_equal(s.read_mask(18, dilate=1)[0], np.repeat([1, 1, 1, 0], 4).tolist() + [0, 0])
    s.high[0] = [0.0, 0.0, 0.0, 0.8]
    assert s.read_mask(18, dilate=0)[0, 16:].all()  # the trailing partial block follows the last one

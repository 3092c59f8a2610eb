r"""What the RTN detection misses, measured on the die's own noise: the correction of ``p_down``.

The block HMM of :func:`hfox_fit.fitting.rtn.rtn_em` treats each block of ``B``
pulses as wholly low or wholly high. A high stretch shorter than about a block
leaves too little in any one block to be seen, and a short low gap between two
high stretches merges them: both remove a down transition while the high time
stays nearly as it was. With geometric dwells, the high dwells seen are those
longer than some ``c`` (about ``B``) and, by the lack of memory, their mean
length is ``c + 1 / p_down``: the rate seen is :math:`p_{down} / (1 + c\,p_{down})`,
low by about ``B p_down`` (3 % on the paper preset, 8 % on wafer_b with
``B = 16``; measured: 4-5 % and 5-9 %, the selection of the trains that show RTN
included). ``c`` depends on the amplitude, the noise and the block's alignment,
so it is not computed but measured:

RTN of the die's estimated rates and the amplitudes of its trains that show RTN
is injected into the residuals of the trains that show none (their real pink
and read noise, their drift misfit), several times over; the detection is run on
them as on the die, and per quiet train the true down transitions and high
pulses are counted beside the ones the detection reports. The pooled ratio of
the true to the seen rate is the correction factor (``_detection_factor`` of
:mod:`.rtn`); the injected trains are resampled with the measured ones in the
bootstrap, so the interval carries the factor's own error.

The die's detection reads the residuals of a drift fitted through every read
(one robust round, the default), which takes up part of each train's telegraph
and with it some of the high time, while splitting a few stretches. The injected
telegraph loses its least-squares straight line on the train's reads for the
same reason (the two-slope law's break is left out). Without that step the
factor over-corrected wafer_b (1.061 against the 1.040 needed over seeds
2000-2019 of 512 cells x 1000 pulses; +5 % on 300-pulse trains); with it,
1.040 (wafer_b) and 1.027 against 1.029 (paper); a cubic instead of the line
under-corrects (-2.8 % on 300-pulse trains).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .rtn import RTNStats, block_stats, rtn_em

__all__ = ["detection_check", "with_detection_check"]

#: Injected trains per train of the die (replicates of the quiet trains, at most :data:`MAX_REPLICATES`).
INJECTED_PER_TRAIN = 4
MAX_REPLICATES = 16
#: Fewest quiet trains to measure the detection on (fewer: no correction, the pooled note says so).
MIN_QUIET = 8


def _chain(rng, n: int, T: int, p_up: float, p_down: float, pi0: float) -> np.ndarray:
    """Bool (n, T): the high state of ``n`` two-state chains (high before the first pulse with probability pi0)."""
    jumps = rng.random((n, T))
    state = rng.random(n) < pi0
    high = np.empty((n, T), bool)
    for p in range(T):
        state ^= np.where(state, jumps[:, p] < p_down, jumps[:, p] < p_up)
        high[:, p] = state
    return high


def _line(y, usable) -> np.ndarray:
    """Per row, the least-squares straight line through ``y`` on its usable reads, evaluated at every read."""
    u = np.asarray(usable, float)
    t = np.linspace(-1.0, 1.0, y.shape[1])[None, :]
    yu = np.where(usable, y, 0.0)
    s0, s1, s2 = u.sum(1), u @ t[0], u @ (t[0] ** 2)
    y0, y1 = yu.sum(1), yu @ t[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        det = s0 * s2 - s1**2
        slope = np.where(det > 0, (s0 * y1 - s1 * y0) / det, 0.0)
        level = np.where(s0 > 0, (y0 - slope * s1) / s0, 0.0)
    return level[:, None] + slope[:, None] * t


def detection_check(rtn: RTNStats, resid, usable, *, llr_threshold: float = 8.0, through_rtn: bool = True,
                    seed: int = 0) -> dict | None:
    """Inject RTN into the quiet trains' residuals, detect it, count what was seen; None where it cannot be measured.

    Parameters
    ----------
    rtn : RTNStats
        The die's detection (its rates, first-block share, amplitudes and ``shows``).
    resid, usable : ndarray of shape (N, T)
        The residuals it was run on and the reads it used.
    llr_threshold : float
        The die's threshold for a train to show RTN.
    through_rtn : bool, default=True
        The residuals come from a drift fitted through every read, the telegraph ones included
        (one robust round, the default): the fit took up part of each train's telegraph, so the
        injected telegraph loses its least-squares straight line on the usable reads too.
    seed : int
        Seed of the injected chains (fixed: the same die gives the same factor).

    Returns
    -------
    dict of ndarray, one entry per quiet train (its replicates summed)
        ``down_true``, ``high_true`` (pulse transitions and pulse steps in the high state),
        ``down_seen``, ``high_seen``, ``up_seen``, ``low_seen`` (the detection's block counts).
    """
    block = rtn.block
    usable = np.asarray(usable, bool)
    n, T = usable.shape
    nb = T // block
    amps = rtn.amplitude[rtn.shows & np.isfinite(rtn.amplitude)]
    if nb < 2 or amps.size == 0 or not np.isfinite(rtn.p_down) or rtn.p_down <= 0:
        return None
    base = np.nonzero(~rtn.shows & (usable[:, : nb * block].sum(1) >= nb * block // 2))[0]
    if base.size < MIN_QUIET:
        return None
    reps = int(np.clip(np.ceil(INJECTED_PER_TRAIN * n / base.size), 1, MAX_REPLICATES))
    rng = np.random.default_rng(seed)
    idx = np.tile(base, reps)
    k = idx.size
    high = _chain(rng, k, nb * block, rtn.p_up, rtn.p_down, float(rtn.extra.get("pi0", 0.0)))
    x = np.asarray(resid, float)[idx, : nb * block]
    x = x + np.where(high, rng.random(high.shape) * rng.random(high.shape) * rng.choice(amps, k)[:, None], 0.0)
    if through_rtn:
        x -= _line(x - np.asarray(resid, float)[idx, : nb * block], usable[idx, : nb * block])
    m, lv = block_stats(x, usable[idx, : nb * block], block)
    seen = rtn_em(m, lv, block, llr_threshold=llr_threshold, p_up0=rtn.p_up, p_down0=rtn.p_down)
    seen = rtn_em(m, lv, block, llr_threshold=llr_threshold, init=seen)  # a second round, as the die got
    unit = np.tile(np.arange(base.size), reps)

    def per_train(v):
        return np.bincount(unit, weights=np.asarray(v, float), minlength=base.size)

    return {"down_true": per_train((high[:, :-1] & ~high[:, 1:]).sum(1)),
            "high_true": per_train(high[:, :-1].sum(1)),
            "down_seen": per_train(seen.down), "high_seen": per_train(seen.time_high),
            "up_seen": per_train(seen.up), "low_seen": per_train(seen.time_low)}


def with_detection_check(rtn: RTNStats | None, resid, usable, *, llr_threshold: float = 8.0,
                         through_rtn: bool = True) -> RTNStats | None:
    """``rtn`` with its :func:`detection_check` in ``extra["detection"]`` (pooling corrects ``p_down`` with it)."""
    if rtn is None:
        return None
    check = detection_check(rtn, resid, usable, llr_threshold=llr_threshold, through_rtn=through_rtn)
    return replace(rtn, extra={**rtn.extra, "detection": check})

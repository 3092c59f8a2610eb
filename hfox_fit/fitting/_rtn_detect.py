r"""What the RTN detection misses, measured on the dies' own noise: the correction of ``p_down``.

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
so it is not computed but measured.

Each die keeps a small random sample of the residuals of its trains that show no
RTN (their real pink and read noise, their drift misfit: :func:`detection_sample`,
at most :data:`SAMPLE_PER_DIE` trains and :data:`SAMPLE_READS` reads, float16, with
their usable reads: 97 kB a die at 1000 pulses). It travels with the die's pooled
part and is kept in the store beside it, so a partial refit pools the same sample.
Pooling then injects RTN of the pooled rates and of the amplitudes of the trains
that show RTN into 1024-2048 copies of those residuals (:data:`INJECTED`), once per
pooled group (:func:`pooled_check`), runs the detection on them as the dies ran it
(as many EM rounds), and per injected train counts the true down transitions and
high pulses beside the ones the detection reports. The ratio of the true to the
seen rate is the correction factor (:func:`detection_factor`); the injected trains
are resampled with the measured ones in the bootstrap, so the interval carries the
factor's own error. The die's step pays a copy of a few rows (0.5 ms of a
1024-cell die's 250 ms); the check, 0.1-0.6 s once per pooled group, runs beside
the pooling's other parts. Its EM estimates the low state's noise over the sample
of every pooled die, where each die's detection had its own (checked on the
synthetic wafers, whose dies share one noise; dies of very unlike noise are mixed
here).

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

from .rtn import RTNStats, block_stats, block_to_pulse, rtn_em

__all__ = ["detection_sample", "with_detection_sample", "pooled_check", "detection_factor", "correct_p_down",
           "factor_replicates", "correction_note"]

#: Quiet trains whose residuals a die keeps for the pooled check (float16, the blocks' reads only), at most
#: :data:`SAMPLE_READS` reads in all (longer trains: fewer of them, at least :data:`MIN_SAMPLE`), so that what a
#: die keeps does not grow with its pulses (98 kB at most from 1024 pulses on, 4 trains past 8192 pulses).
SAMPLE_PER_DIE = 32
SAMPLE_READS = 32768
MIN_SAMPLE = 4
#: Injected trains of one pooled check (copies of the sampled residuals, each with its own telegraph): enough for
#: about :data:`TARGET_DOWN` true down transitions at the pooled rates, from :data:`INJECTED` to
#: :data:`MAX_INJECTED` trains and at most :data:`INJECTED_READS` reads (at least 256 trains). The factor's own
#: error: 2-3 % (sd over seeds) from 1024 trains of 1000 pulses at the paper preset's rates (360 transitions),
#: 0.5 % from 4096; 2048 (about 1 %, carried by the bootstrap) keeps the check at about half a second of a
#: 16-die campaign's pooling (bench_fit: 4096 pushed the two-worker fit over its 10 s budget).
TARGET_DOWN = 2000
INJECTED = 1024
MAX_INJECTED = 2048
INJECTED_READS = 1 << 22
#: Fewest sampled quiet trains to measure the detection on (fewer: no correction, the pooled note says so).
MIN_QUIET = 8
#: Fewest down transitions, true and seen, in the injected trains to measure the factor.
MIN_INJECTED_DOWN = 20


def _chain(rng, n: int, T: int, p_up: float, p_down: float, pi0: float) -> np.ndarray:
    """Bool (n, T): the high state of ``n`` two-state chains (high before the first pulse with probability pi0).

    At each pulse a high chain falls with probability ``p_down``, a low one rises with ``p_up``: the
    dwells are geometric, so they are drawn whole and the switches placed by their cumulative sums.
    """
    start = rng.random(n) < pi0
    flips = np.zeros((n, T + 1), np.int32)
    end = np.zeros(n, np.int64)  # pulse index after the last switch placed so far
    j = 0
    mean_dwell = 0.5 * (1.0 / p_up + 1.0 / p_down)
    while (end < T).any():
        k = int(np.ceil(1.5 * T / mean_dwell)) + 4
        par = (np.arange(j, j + k)[None, :] % 2).astype(bool)
        high = start[:, None] ^ par  # the state of each dwell
        dwell = np.minimum(rng.geometric(np.where(high, p_down, p_up)), T + 1)  # a rate near 0: no overflow
        pos = end[:, None] + np.cumsum(dwell, axis=1)  # one past each switch
        end = pos[:, -1]
        rows = np.broadcast_to(np.arange(n)[:, None], pos.shape)
        np.add.at(flips, (rows, np.minimum(pos - 1, T)), 1)
        j += k
    return start[:, None] ^ (np.cumsum(flips[:, :T], axis=1) % 2).astype(bool)


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


def detection_sample(rtn: RTNStats, resid, usable, *, llr_threshold: float = 8.0, through_rtn: bool = True,
                     em_rounds: int = 1, seed: int = 0) -> dict | None:
    """A few quiet trains' residuals and usable reads for the pooled check; None where the die has none.

    Parameters
    ----------
    rtn : RTNStats
        The die's detection.
    resid, usable : ndarray of shape (N, T)
        The residuals it was run on and the reads it used.
    llr_threshold : float
        The die's threshold for a train to show RTN.
    through_rtn : bool, default=True
        The residuals come from a drift fitted through every read, the telegraph ones included
        (one robust round, the default): the fit took up part of each train's telegraph, so the
        injected telegraph loses its least-squares straight line on the usable reads too.
    em_rounds : int, default=1
        EM runs of the die's detection, each from the last (the check runs as many).
    seed : int
        Seed of the sample (fixed: the same die keeps the same trains).

    Returns
    -------
    dict
        ``rows`` (the trains' rows in the die), ``resid`` (float16, 0 where not usable) and
        ``usable`` of shape (k, nb * block), and the settings above.
    """
    block = rtn.block
    usable = np.asarray(usable, bool)
    n, T = usable.shape
    nb = T // block
    L = nb * block
    if nb < 2:
        return None
    base = np.nonzero(~rtn.shows & (usable[:, :L].sum(1) >= L // 2))[0]
    if base.size == 0:
        return None
    keep = int(np.clip(SAMPLE_READS // L, MIN_SAMPLE, SAMPLE_PER_DIE))
    if base.size > keep:
        base = np.sort(np.random.default_rng(seed).choice(base, keep, replace=False))
    u = usable[base, :L]
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.where(u, np.asarray(resid)[base, :L], 0.0).astype(np.float16)
    return {"rows": base, "resid": r, "usable": u, "llr_threshold": float(llr_threshold),
            "through_rtn": bool(through_rtn), "em_rounds": int(em_rounds)}


def with_detection_sample(rtn: RTNStats | None, resid, usable, **kw) -> RTNStats | None:
    """``rtn`` with its :func:`detection_sample` in ``extra["detection_sample"]`` (pooling checks on it)."""
    if rtn is None:
        return None
    return replace(rtn, extra={**rtn.extra, "detection_sample": detection_sample(rtn, resid, usable, **kw)})


def pooled_check(samples, amplitudes, p_up: float, p_down: float, pi0: float, block: int, *,
                 injected: int | None = None, seed: int = 0) -> dict | None:
    """Inject RTN into the sampled quiet trains, detect it as the dies did, count what was seen.

    Parameters
    ----------
    samples : list of dict
        :func:`detection_sample` of the pooled dies (None entries skipped).
    amplitudes : ndarray
        Amplitudes of the pooled trains that show RTN (drawn for the injected ones).
    p_up, p_down, pi0 : float
        Pooled per-pulse rates (uncorrected) and share of trains starting high.
    block : int
    injected : int, optional
        Injected trains (copies of the sampled ones, spread evenly over them); default: enough for
        :data:`TARGET_DOWN` down transitions (see :data:`INJECTED`).
    seed : int
        Seed of the injected chains (fixed: the same pool gives the same factor).

    Returns
    -------
    dict of ndarray, one entry per injected train, or None where it cannot be measured
        ``down_true``, ``high_true`` (pulse transitions and pulse steps in the high state),
        ``down_seen``, ``high_seen``, ``up_seen``, ``low_seen`` (the detection's block counts).
    """
    samples = [s for s in samples if s is not None and len(s["rows"])]
    amps = np.asarray(amplitudes, float)
    amps = amps[np.isfinite(amps)]
    if (sum(len(s["rows"]) for s in samples) < MIN_QUIET or amps.size == 0 or not (p_up > 0)
            or not np.isfinite(p_down) or p_down <= 0):
        return None
    L = max(s["resid"].shape[1] for s in samples)
    if injected is None:
        per_train = max((L - 1) * p_up / (p_up + p_down) * p_down, 1e-9)  # stationary share high x p_down
        most = max(256, min(MAX_INJECTED, INJECTED_READS // L))
        injected = min(max(int(np.ceil(TARGET_DOWN / per_train)), INJECTED), most)
    resid = np.zeros((sum(len(s["rows"]) for s in samples), L))
    usable = np.zeros(resid.shape, bool)
    length = np.concatenate([np.full(len(s["rows"]), s["resid"].shape[1]) for s in samples])
    line = np.concatenate([np.full(len(s["rows"]), s["through_rtn"]) for s in samples])
    a = 0
    for s in samples:
        k, m = s["resid"].shape
        resid[a:a + k, :m] = s["resid"]
        usable[a:a + k, :m] = s["usable"]
        a += k
    rng = np.random.default_rng(seed)
    m = len(resid)
    idx = rng.choice(m, injected, replace=False) if m >= injected else np.resize(rng.permutation(m), injected)
    high = _chain(rng, injected, L, p_up, p_down, pi0)
    high &= np.arange(L)[None, :] < length[idx, None]  # shorter trains: no telegraph past their end
    x = resid[idx]
    x += np.where(high, rng.random(high.shape) * rng.random(high.shape) * rng.choice(amps, injected)[:, None], 0.0)
    if line.any():
        fit = line[idx]
        x[fit] -= _line(x[fit] - resid[idx][fit], usable[idx][fit])
    m_b, lv_b = block_stats(x, usable[idx], block)
    llr = samples[0]["llr_threshold"]
    seen = rtn_em(m_b, lv_b, block, llr_threshold=llr, p_up0=p_up, p_down0=p_down)
    for _ in range(max(int(samples[0]["em_rounds"]), 1) - 1):  # as many rounds as the die got
        seen = rtn_em(m_b, lv_b, block, llr_threshold=llr, init=seen)
    inside = np.arange(1, L)[None, :] < length[idx, None]
    return {"down_true": (high[:, :-1] & ~high[:, 1:] & inside).sum(1).astype(float),
            "high_true": (high[:, :-1] & inside).sum(1).astype(float),
            "down_seen": seen.down, "high_seen": seen.time_high, "up_seen": seen.up, "low_seen": seen.time_low}


def detection_factor(check: dict, counts=None, block: int = 16):
    """True over seen per-pulse ``p_down`` of the injected trains; one per row of ``counts`` (resamples)."""
    def tot(key):
        v = check[key]
        return v.sum() if counts is None else counts @ v
    with np.errstate(divide="ignore", invalid="ignore"):
        seen = block_to_pulse(tot("up_seen") / tot("low_seen"), tot("down_seen") / tot("high_seen"), block)[1]
        factor = tot("down_true") / tot("high_true") / seen
    return np.where(np.isfinite(factor) & (factor > 0), factor, 1.0) if counts is not None else (
        float(factor) if np.isfinite(factor) and factor > 0 else 1.0)


def correct_p_down(stats_list, p_up: float, p_down: float, amplitudes, block: int):
    """``(check, factor, few)`` of the pooled dies: the injected trains' counts (None: not measured), the factor
    of ``p_down`` (1.0 when not measured) and whether too few injected transitions left it unmeasured."""
    samples = [s.extra.get("detection_sample") for s in stats_list]
    n_rows = np.array([len(s.shows) for s in stats_list], float)
    pi0 = float(np.average([float(s.extra.get("pi0", 0.0)) for s in stats_list], weights=n_rows)) \
        if n_rows.sum() > 0 else 0.0
    check = pooled_check(samples, amplitudes, p_up, p_down, pi0, block)
    few = check is not None and min(check["down_true"].sum(), check["down_seen"].sum()) < MIN_INJECTED_DOWN
    check = None if few else check
    return check, (detection_factor(check, block=block) if check is not None else 1.0), few


def factor_replicates(check: dict, bootstrap: int, rng, block: int) -> np.ndarray:
    """The factor of ``bootstrap`` resamples of the injected trains (with replacement)."""
    from .rtn import _draw_counts

    n_cal = len(check["down_true"])
    chunk = max(1, 2_000_000 // n_cal)
    return np.concatenate([detection_factor(check, _draw_counts(rng, n_cal, min(chunk, bootstrap - i)), block)
                           for i in range(0, bootstrap, chunk)])


def correction_note(note: str, factor: float, checked: bool, few: bool, block: int) -> str:
    """The pooled RTN note with what was done to ``p_down``."""
    head = note or "per-pulse probabilities; intervals: bootstrap over trains"
    if checked:
        return (f"{head}; p_down x {factor:.3f}: the high stretches too short to detect, measured by RTN injected "
                "into the quiet trains")
    if few:
        return (f"{head}; p_down not corrected for the high stretches too short to detect (it reads low by up to "
                f"{block} pulses x p_down): too few transitions in the RTN injected into the quiet trains to measure it")
    return note

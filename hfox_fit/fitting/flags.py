"""Broken-cell flags, from the raw reads of one die.

A pulse train (one cell, one cycle) is flagged

* ``open`` when its first read is more than ``open_ratio`` times the die's
  median resistance right after SET (the cell never formed);
* ``abrupt`` when ``ln R`` jumps up by more than ``abrupt_jump`` between two
  consecutive valid reads and stays up (a full RESET); the reads from the jump
  on are left out of the drift fit;
* ``stuck`` when the pulses do nothing (see below);
* ``failed`` when it has fewer than ``min_reads`` valid reads after SET, or
  later when its fit fails (see :mod:`hfox_fit.fitting.drift`);
* ``poor_fit`` when the law as reported leaves the reads (after the fit, over
  the campaign: :func:`flag_poor_fit`).

Flagged trains keep their row and reason; they are left out of the noise and
population fits (a ``poor_fit`` train is judged after the fit: its reads still
feed the die's noise spectrum, whose residuals follow the law's best fit, but
not the D2D laws, correlations and C2C, nor the report's comparisons).

Poor fit
--------
Every fitted train carries ``resid_std``, ``misfit``, ``fit_r2`` and
``max_gap`` (:mod:`hfox_fit.fitting._tables`: the spread of the reads around
the law, the mean square of the residual's block means in units of the noise,
the share of the slow change of ``w`` the law explains, and the largest block
mean residual). A train is ``poor_fit`` when ``misfit > poor_fit_misfit``
(default 25: the block means sit 5 noise standard errors off the law on
average, beyond any noise) *and* ``fit_r2 < poor_fit_r2`` (default 0: the law
does worse than a constant ``w``). Both are needed: a strongly drifting train
may be off the law by many standard errors yet by little compared with its
drift (a slightly curved train under a straight line), and a flat train's
``fit_r2`` is near 0 whatever the law, from the noise alone.

Typical case: a two-slope train whose break is nearly but not significantly
seen reports ``m1``, ``c1`` of its best two-slope fit and no ``t_star``, i.e.
the straight line ``c1 + m1 t`` to the end of the train; when the break was
early the line climbs away from the reads (``max_gap`` of -0.5 in ``w`` at the
end, ``m1`` many times the truth).

Measured with the defaults: working cells (truth ``ok``) flagged ``poor_fit``,
paper preset 1024 cells x 1000 pulses 5 of 997 fitted (seed 101) and 9 of 995
(seed 102); wafer_b 1024 x 1000 x 2 cycles 2 of 1984; paper 1024 x 300 7 of
992 and 15 of 1001; wafer_b 1024 x 300 x 2 24 of 2016; the example campaign
(``data/raw``, 512 x 300) 4 of 503 (0.1 to 1.5 %; no broken cell was among
them). Every one of these 66 trains has its reported law 0.036 to 5.6 away
from its reads in ``w`` where farthest; 44 of them have ``m1`` off the truth by
more than half (negative, or 2 to 49 times it: mostly the 300-pulse trains),
the others (mostly 1000-pulse trains) a right ``m1`` under a line that misses
the early break the data show (``t_star`` undetermined). ``tests/fitting/
test_goodness_of_fit.py`` holds the rate under 1 % on the 1000-pulse presets
and the example campaign.

Stuck trains
------------
Two ways, either suffices:

1. *Quiet and flat*: the read-to-read noise is under ``stuck_noise_ratio``
   times the die's typical noise (no pink noise, no RTN: only the read noise)
   and ``w`` stays within a few noise widths of 0. This works on any train
   length.
2. *No drift*, whatever the noise: a stuck cell may keep its 1/f noise and its
   telegraph noise. The reads after the first ``STUCK_SKIP`` pulses (where the
   pink term's history fills up and its positive offset builds, see
   :meth:`hfox_fit.model.PinkNoise.offset`) are cut into blocks of about
   ``STUCK_BLOCK`` reads, longer than the noise's correlation (15 pulses).
   Blocks whose read-to-read variance shows the RTN high state are kept, with
   the telegraph term's mean taken out: ``A / 4`` times the block's share of
   high reads, ``A`` from the excess variance ``7 A**2 / 144`` of the cell's
   clearly-high blocks (the model's ``U1 U2 A``). Two estimates of the rise of
   ``w`` over the train, each with a standard error from the scatter of the
   block means (successive differences of RTN-free blocks, so a drift does not
   inflate it; pink noise is correlated, so the reads are never treated as
   independent):

   * ``step``: mean of the last third of the blocks minus the first two
     blocks (sees a rise that happened early and stopped, ``t*`` small, ``m2``
     near 0);
   * ``trend``: a weighted straight line through the block means, times the
     span (the most precise for a slow, steady drift).

   The train is stuck when both ``estimate + stuck_z * stderr`` are below
   ``r_min``, the smallest rise expected of a working cell: the larger of
   ``stuck_rise`` (0.01 in ``w``) and ``stuck_fraction`` times the die's
   slow-but-working rise (5th percentile of the rises of its trains that
   clearly drift, when the die's trains are resolved: see
   :func:`_typical_rise`), and when ``r_min`` is at least ``stuck_power``
   (1) standard errors of both estimates. So a flag needs evidence: where
   the noise over the train cannot tell a slow working cell from a stuck
   one, the no-drift test flags nothing and only the quiet path can.

   Train length: the test needs at least 6 blocks (``STUCK_SKIP + 6 *
   STUCK_BLOCK`` = 208 pulses). With the reference model's pink noise (std
   0.01, long-run std 0.031 per read) the standard error of the ``step`` is
   about 0.004 whatever the length (64 reads at the start) and that of the
   ``trend`` about ``0.031 * sqrt(12 / n)`` over ``n`` reads: over 100
   pulses (0.012) a slow cell (``m1 = 3.74e-5`` rises by 0.004) and a stuck
   one cannot be told apart and nothing is flagged; over 300 pulses the
   noisy stuck cells of the ``paper`` preset are not flagged either; the
   test starts to flag around 500 pulses and is meant for trains of about
   1000 pulses or more.

   Limits, measured with the defaults on 2048-cell wafers with 5 % noisy
   stuck cells (``tests/fitting/test_flags.py``; seeds 303-315 at 1000
   pulses, 303-306 otherwise):

   ===========  ======  ===============  ==================  ===========================
   preset       pulses  recall           precision           working cells flagged (max)
   ===========  ======  ===============  ==================  ===========================
   ``paper``    1000    mean 91 %,       mean 95.5 %,        0.47 %
                        worst 88.5 %     worst 90 %
   ``paper``    500     mean 82 %        mean 89 %           0.62 %
   ``paper``    300     0                (none flagged)      0
   ``wafer_b``  1000    100 %            worst 98.8 %        0.05 %
   ===========  ======  ===============  ==================  ===========================

   The ``paper`` D2D laws make some working cells drift less than the noise
   resolves (``t*`` near 100 pulses after an ``m1`` near its lower bound,
   then ``m2`` near 0: their whole rise is 0.003-0.02 in ``w``, while a
   stuck train's rise scatters by about 0.004): those are the working cells
   flagged, and they program almost as little as a stuck cell. ``stuck_z``
   and ``stuck_power`` move the trade-off: the earlier defaults
   (``stuck_z=1, stuck_power=2``) found 63-81 % of the noisy stuck cells at
   1000 pulses with precision 95-99 % (0.05-0.16 % of the working cells
   flagged) and 89-94 % at 2000 pulses. Quiet stuck cells are found at any
   length (recall 100 % on both presets, 100 to 2000 pulses).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._util import nanquantile_rows

__all__ = ["FLAG_NAMES", "FlagOptions", "detect_flags", "drift_evidence", "flag_poor_fit", "STUCK_SKIP",
           "STUCK_BLOCK"]

#: Flags in the order of the summary (``ok`` is no flag).
FLAG_NAMES = ("stuck", "abrupt", "open", "failed", "poor_fit")
#: Goodness-of-fit columns of the per-train table (:data:`hfox_fit.fitting._tables.GOF_COLUMNS`).
_GOF = ("resid_std", "misfit", "fit_r2", "max_gap")

#: Reads after SET left out of the no-drift test (the pink term's history fills up over 15 pulses).
STUCK_SKIP = 16
#: Target block length (reads) of the no-drift test: about twice the pink noise's correlation length.
STUCK_BLOCK = 32
#: Fewest blocks for the no-drift test (shorter trains: the quiet path only).
_MIN_BLOCKS = 6
#: Blocks at the start of the train that make the early level of the ``step`` estimate.
_EARLY_BLOCKS = 2
#: A block is clearly RTN-high when its read-to-read variance exceeds this many times the low state's,
#: and counts as low (no correction) under _LOW_RATIO times.
_HIGH_RATIO, _LOW_RATIO = 4.0, 2.0
#: Variance of U1*U2 (U1, U2 ~ U(0, 1)): the telegraph term is U1 U2 A in the high state.
_VAR_U1U2 = 7.0 / 144.0
#: The die's slow-but-working rise (which ``stuck_fraction`` scales): this quantile of the rises of the
#: trains above _CLEAR_Z standard errors, if at least _MIN_TRAINS of them and at most a share _AMBIGUOUS of
#: the trains between _NULL_Z and _CLEAR_Z.
_SLOW_QUANTILE, _MIN_TRAINS, _CLEAR_Z, _NULL_Z, _AMBIGUOUS = 0.05, 100, 4.0, 2.0, 0.05


@dataclass(frozen=True)
class FlagOptions:
    """Thresholds of the broken-cell flags (see the module doc).

    Attributes
    ----------
    open_ratio : float, default=20
        First read over the die's median R0 (ratio) above which a cell is open.
    abrupt_jump : float, default=1.0
        Jump of ``ln R`` (i.e. a factor e = 2.7 in resistance) between consecutive
        reads that counts as an abrupt RESET.
    stuck_noise_ratio : float, default=0.5
        Read-to-read noise relative to the die's median below which a flat cell is stuck.
    stuck_rise : float, default=0.01
        Rise of ``w`` over the train (after its first ``STUCK_SKIP`` pulses)
        that a train must be confidently below to count as stuck (the no-drift
        test of the module doc); the smallest rise expected of a working cell.
        0.01 is about the reference model's pink noise std and a quarter of
        what its smallest ``m1`` (3.74e-5) gives over 1000 pulses.
    stuck_fraction : float, default=0.25
        The threshold is at least this fraction of the die's slow-but-working
        rise (the 5th percentile of the rises of the trains that clearly
        drift), so a die whose cells all drift fast gets a higher one. 0 turns
        this off.
    stuck_z : float, default=0.25
        Margin of the no-drift test, in standard errors: a train is stuck when
        its rise plus ``stuck_z`` standard errors is below the threshold (0.25:
        a train must sit a quarter of its error below it; 1.0, the earlier
        default, flags about a quarter fewer stuck cells and fewer of the flattest
        working ones). ``inf`` turns the no-drift test off (quiet and flat cells only).
    stuck_power : float, default=1.0
        Evidence needed before the no-drift test may flag a train: the standard
        errors of its rise times this must be at most the threshold (1.0: a
        train whose noise is larger than the rise a working cell shows at
        least is never flagged; 2.0 asks for twice the precision, which leaves
        more of the stuck cells with RTN unflagged).
    min_reads : int, default=12
        Fewest valid reads after SET for a fit.
    poor_fit_misfit : float, default=25
        A train is ``poor_fit`` when its ``misfit`` (mean square of the
        residual's block means over what the noise gives, about 1 for a law
        that follows the reads) exceeds this ...
    poor_fit_r2 : float, default=0
        ... and its ``fit_r2`` (share of the slow change of ``w`` the law
        explains) is below this (see the module doc). ``poor_fit_misfit=inf``
        turns the flag off.
    """

    open_ratio: float = 20.0
    abrupt_jump: float = 1.0
    stuck_noise_ratio: float = 0.5
    stuck_rise: float = 0.01
    stuck_fraction: float = 0.25
    stuck_z: float = 0.25
    stuck_power: float = 1.0
    min_reads: int = 12
    poor_fit_misfit: float = 25.0
    poor_fit_r2: float = 0.0


def _step_diffs(lny, valid):
    """Change of ``ln R`` from the previous valid read at every valid read (NaN where none), (N, P)."""
    n, P = lny.shape
    d = np.full((n, P), np.nan)
    d[:, 1:] = lny[:, 1:] - lny[:, :-1]  # NaN next to a failed read
    gappy = np.nonzero(~valid.all(axis=1))[0]
    if gappy.size:  # only rows with failed reads need the previous *valid* read
        v = valid[gappy]
        idx = np.maximum.accumulate(np.where(v, np.arange(P)[None, :], -1), axis=1)
        before = np.concatenate([np.full((len(gappy), 1), -1), idx[:, :-1]], axis=1)
        rows = np.arange(len(gappy))[:, None]
        x = lny[gappy]
        d[gappy] = np.where(v & (before >= 0), x - x[rows, np.maximum(before, 0)], np.nan)
    return d


def _robust_noise(d):
    """Per-row read-to-read noise: 1.4826 * MAD of the step changes / sqrt(2) (NaN-aware)."""
    med = nanquantile_rows(d, 0.5)
    mad = nanquantile_rows(np.abs(d - med[:, None]), 0.5)
    return 1.4826 * mad / np.sqrt(2.0)


def _block_stats(x, n_blocks):
    """Mean, first-difference variance (/2) and count of valid reads of ``n_blocks`` near-equal blocks of the rows of ``x``."""
    n, m = x.shape
    edges = np.linspace(0, m, n_blocks + 1).astype(int)
    mean = np.full((n, n_blocks), np.nan)
    var = np.full((n, n_blocks), np.nan)
    cnt = np.zeros((n, n_blocks))
    for b in range(n_blocks):
        xb = x[:, edges[b]:edges[b + 1]]
        ok = np.isfinite(xb)
        k = ok.sum(1)
        d = np.diff(xb, axis=1)
        dok = np.isfinite(d)
        dk = dok.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[:, b] = np.where(ok, xb, 0.0).sum(1) / k
            var[:, b] = np.where(dok, d * d, 0.0).sum(1) / dk / 2.0
        bad = (k < (edges[b + 1] - edges[b]) // 2) | (dk < 3)
        mean[bad, b] = np.nan
        var[bad, b] = np.nan
        cnt[:, b] = k
    return mean, var, cnt, edges


def drift_evidence(w, valid, rows):
    """How much each train rises after its first pulses, with standard errors (the no-drift test).

    Parameters
    ----------
    w : ndarray of shape (N, T)
        ``w = ln(R / R0)`` at pulses 1..T (NaN where no valid read).
    valid : ndarray of bool, shape (N, T)
    rows : ndarray of bool, shape (N,)
        Trains that set the die's typical noise (the unflagged ones).

    Returns
    -------
    dict of ndarray of shape (N,)
        ``step`` and ``step_se`` (last third of the blocks minus the first two),
        ``trend`` and ``trend_se`` (weighted straight line times the span),
        ``span`` (pulses), ``blocks`` (blocks used), ``amplitude`` (RTN ``A``
        taken out, NaN for none). NaN where the train is too short or too
        sparse (fewer than ``_MIN_BLOCKS`` blocks after ``STUCK_SKIP`` reads).
    """
    n, T = w.shape
    out = {k: np.full(n, np.nan) for k in ("step", "step_se", "trend", "trend_se", "span", "amplitude")}
    out["blocks"] = np.zeros(n, dtype=int)
    x = np.where(valid, w, np.nan)[:, STUCK_SKIP:]
    n_blocks = x.shape[1] // STUCK_BLOCK
    if n_blocks < _MIN_BLOCKS or n == 0:
        return out
    mean, var, cnt, edges = _block_stats(x, n_blocks)
    pulse = np.arange(STUCK_SKIP + 1, T + 1, dtype=float)
    centre = (pulse[edges[:-1]] + pulse[edges[1:] - 1]) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # RTN: the low state's variance (the train's own median block, at most the die's), the
        # telegraph variance from the clearly-high blocks, each block's share of high reads
        v_die = np.nanmedian(var[rows]) if rows.any() else np.nanmedian(var)
        v0 = np.fmin(nanquantile_rows(var, 0.5), v_die)[:, None]
        excess = var - v0
        var_rtn = np.nanmean(np.where(excess > (_HIGH_RATIO - 1.0) * v0, excess, np.nan), axis=1)[:, None]
        share = np.clip(excess / var_rtn, 0.0, 1.0)
        share = np.where(np.isfinite(share), share, 0.0)
        share = np.where(share > 0.6, 1.0, share)
        share = np.where(excess < (_LOW_RATIO - 1.0) * v0, 0.0, share)
        amp = np.sqrt(var_rtn / _VAR_U1U2)
        level = mean - share * np.nan_to_num(amp) / 4.0
        use = np.isfinite(level)
        y = np.where(use, level, 0.0)
        # scatter of the block means: successive differences of RTN-free blocks (a drift hardly enters)
        low = use & (share == 0)
        pl = low[:, 1:] & low[:, :-1]
        s2_low = np.where(pl, np.diff(y, axis=1) ** 2, 0.0).sum(1) / (2.0 * pl.sum(1))
        pa = use[:, 1:] & use[:, :-1]
        s2_all = np.where(pa, np.diff(y, axis=1) ** 2, 0.0).sum(1) / (2.0 * pa.sum(1))
        s2_die = np.nanmedian(s2_low[rows]) if rows.any() else np.nan
        s2 = np.where(pl.sum(1) >= 8, s2_low, np.fmax(s2_all, s2_die))
        var_b = s2[:, None] + share * np.nan_to_num(var_rtn) / np.maximum(cnt, 1.0)
        wt = np.where(use, 1.0 / var_b, 0.0)
        sw = wt.sum(1)
        cm = (wt * centre).sum(1) / sw
        ym = (wt * y).sum(1) / sw
        dc = np.where(use, centre - cm[:, None], 0.0)
        sxx = (wt * dc * dc).sum(1)
        slope = (wt * dc * (y - ym[:, None])).sum(1) / sxx
        nu = use.sum(1)
        # a curved drift or an RTN left over scatters the blocks more than s2 says: widen the errors
        resid = np.where(use, y - ym[:, None] - slope[:, None] * dc, 0.0)
        widen = np.sqrt(np.maximum((wt * resid * resid).sum(1) / np.maximum(nu - 2, 1), 1.0))
        rank = np.cumsum(use, axis=1)
        n_late = np.maximum(np.floor(nu / 3.0), 2)
        early = use & (np.arange(n_blocks)[None, :] < _EARLY_BLOCKS)
        late = use & (rank > (nu - n_late)[:, None])
        we, wl = (wt * early).sum(1), (wt * late).sum(1)
        step = (wt * late * y).sum(1) / wl - (wt * early * y).sum(1) / we
        first = np.where(use, centre, np.inf).min(1)
        last = np.where(use, centre, -np.inf).max(1)
    span = last - first + (edges[1] - edges[0])
    good = (nu >= _MIN_BLOCKS) & (early.sum(1) >= 1) & (late.sum(1) >= 2) & np.isfinite(s2) & (s2 > 0)
    out["step"] = np.where(good, step, np.nan)
    out["step_se"] = np.where(good, widen * np.sqrt(1.0 / we + 1.0 / wl), np.nan)
    out["trend"] = np.where(good, slope * span, np.nan)
    out["trend_se"] = np.where(good, widen / np.sqrt(sxx) * span, np.nan)
    out["span"] = np.where(good, span, np.nan)
    out["amplitude"] = np.where(good, amp[:, 0], np.nan)
    out["blocks"] = np.where(good, nu, 0)
    return out


def _typical_rise(ev, rows) -> float:
    """The die's slow-but-working rise: 5th percentile of the rises of its trains that clearly drift.

    A train clearly drifts when ``step`` or ``trend`` is above ``_CLEAR_Z`` standard errors. NaN (no
    adaptive threshold) with fewer than ``_MIN_TRAINS`` such trains, or when more than ``_AMBIGUOUS``
    of the trains lie in between (``_NULL_Z`` to ``_CLEAR_Z`` standard errors): then the population
    is not resolved from zero (short or noisy trains) and the percentile would be biased high.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.fmax(ev["step"] / ev["step_se"], ev["trend"] / ev["trend_se"])
    fin = rows & np.isfinite(z)
    clear = fin & (z > _CLEAR_Z)
    between = fin & (z > _NULL_Z) & ~clear
    if clear.sum() < _MIN_TRAINS or between.sum() > _AMBIGUOUS * fin.sum():
        return float("nan")
    rise = np.fmax(ev["step"], ev["trend"])[clear]
    return float(np.quantile(rise, _SLOW_QUANTILE))


def detect_flags(lny, valid, options: FlagOptions = FlagOptions()):
    """Flag the broken pulse trains of one die.

    Parameters
    ----------
    lny : ndarray of shape (N, P)
        ``ln R`` (R in Ohm) at pulses 0..P-1, NaN where no valid read.
    valid : ndarray of bool, shape (N, P)

    Returns
    -------
    flag : ndarray of str, shape (N,)
        ``"ok"`` or one of :data:`FLAG_NAMES`.
    reason : ndarray of object, shape (N,)
        Human-readable reason ("" for ok).
    cut : ndarray of int, shape (N,)
        First pulse not to fit (P for none; the abrupt jump otherwise).
    noise : ndarray of shape (N,)
        Read-to-read noise of each train (in ln R).
    """
    n, P = lny.shape
    flag = np.full(n, "ok", dtype=object)
    reason = np.full(n, "", dtype=object)
    cut = np.full(n, P, dtype=int)
    n_after = valid[:, 1:].sum(axis=1)
    # failed: too few reads
    few = n_after < options.min_reads
    for i in np.nonzero(few)[0]:
        flag[i] = "failed"
        reason[i] = (f"only {int(n_after[i])} valid read(s) after SET; the fit needs at least "
                     f"{options.min_reads}")
    first_idx = np.argmax(valid, axis=1)
    has_any = valid.any(axis=1)
    first = np.where(has_any, lny[np.arange(n), first_idx], np.nan)
    # open: never formed
    r0 = lny[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med_r0 = np.nanmedian(r0) if np.isfinite(r0).any() else np.nanmedian(first)
    if np.isfinite(med_r0):
        is_open = has_any & (first - med_r0 > np.log(options.open_ratio)) & ~few
        for i in np.nonzero(is_open)[0]:
            flag[i] = "open"
            reason[i] = (f"never formed: first read {np.exp(first[i]):.3g} Ohm is "
                         f"{np.exp(first[i] - med_r0):.0f}x the die's median R0 ({np.exp(med_r0):.4g} Ohm)")
    # abrupt: a big upward jump that stays
    jump = _step_diffs(lny, valid)
    with np.errstate(invalid="ignore"):
        big = jump > options.abrupt_jump
    cand = np.nonzero(big.any(axis=1) & (flag == "ok"))[0]
    for i in cand:
        for j in np.nonzero(big[i])[0]:
            after = lny[i, j:][valid[i, j:]][:5]
            pre = lny[i, :j][valid[i, :j]][-5:]
            if len(pre) and np.median(after) - np.median(pre) > 0.8 * options.abrupt_jump:
                flag[i] = "abrupt"
                reason[i] = (f"abrupt RESET at pulse {j}: R jumps x{np.exp(jump[i, j]):.3g} "
                             f"to {np.exp(lny[i, j]):.3g} Ohm; reads from there on are not fitted")
                cut[i] = j
                break
    # stuck (1): quiet and flat, only read noise
    w = lny - np.where(np.isfinite(r0), r0, first)[:, None]
    noise = _robust_noise(jump)
    good = (flag == "ok") & np.isfinite(noise)
    if good.any():
        die_noise = float(np.median(noise[good]))
        wa = np.where(valid, w, np.nan)[:, 1:]
        k = max(min(50, wa.shape[1] // 5), 1)
        early = nanquantile_rows(wa[:, :k], 0.5)
        late = nanquantile_rows(wa[:, -k:], 0.5)
        level = nanquantile_rows(wa, 0.5)
        flat = (np.abs(late - early) < 5 * noise) & (np.abs(level) < 5 * noise)
        quiet = noise < options.stuck_noise_ratio * die_noise
        stuck = good & quiet & flat
        for i in np.nonzero(stuck)[0]:
            flag[i] = "stuck"
            reason[i] = (f"stuck: read-to-read noise {noise[i]:.2g} is {noise[i] / die_noise:.2f}x the die's "
                         f"({die_noise:.2g}) and w moves by {late[i] - early[i]:+.2g} over the train")
        # stuck (2): no drift, whatever the noise
        if np.isfinite(options.stuck_z):
            _no_drift(w[:, 1:], valid[:, 1:], good, flag, reason, options)
    return flag, reason, cut, noise


def _no_drift(w, valid, good, flag, reason, options: FlagOptions) -> None:
    """Flag (in place) the unflagged trains whose rise is confidently below a working cell's."""
    ev = drift_evidence(w, valid, good)
    if not np.isfinite(ev["span"]).any():
        return
    typical = _typical_rise(ev, good) if options.stuck_fraction > 0 else float("nan")
    r_min = float(np.fmax(options.stuck_rise, options.stuck_fraction * typical))
    origin = (f"{options.stuck_fraction:g} x this die's 5th-percentile rise {typical:.3f}"
              if options.stuck_fraction * typical > options.stuck_rise else "stuck_rise")
    with np.errstate(invalid="ignore"):
        hi_step = ev["step"] + options.stuck_z * ev["step_se"]
        hi_trend = ev["trend"] + options.stuck_z * ev["trend_se"]
        resolved = np.fmax(ev["step_se"], ev["trend_se"]) * options.stuck_power <= r_min
        stuck = (flag == "ok") & good & resolved & (hi_step < r_min) & (hi_trend < r_min)
    first = STUCK_SKIP + 1
    last = w.shape[1]
    for i in np.nonzero(stuck)[0]:
        flag[i] = "stuck"
        rtn = (f"; RTN blocks corrected by A/4 (A = {ev['amplitude'][i]:.2g})"
               if np.isfinite(ev["amplitude"][i]) else "")
        reason[i] = (
            f"stuck: no drift over pulses {first}-{last}: w rises by {ev['step'][i]:+.3f} +/- "
            f"{ev['step_se'][i]:.3f} (last third vs first {_EARLY_BLOCKS} blocks) and {ev['trend'][i]:+.3f} +/- "
            f"{ev['trend_se'][i]:.3f} (straight line); both + {options.stuck_z:g} stderr are below {r_min:.3f}, "
            f"the least rise expected of a working cell ({origin}; stderr from the scatter of {ev['blocks'][i]} block "
            f"means of ~{STUCK_BLOCK} reads: the 1/f noise is correlated){rtn}")


def flag_poor_fit(table, options: FlagOptions = FlagOptions()):
    """Flag ``poor_fit`` the unflagged trains whose reported law leaves their reads (see the module doc).

    ``table`` is a per-train table of one law over the campaign (after
    :func:`~hfox_fit.fitting.breaks.classify_breaks`). A train whose ``t_star``
    is censored reports its straight line: its goodness of fit becomes the
    line's (the ``*_line`` columns, which are dropped). Returns a new table.
    """
    table = table.copy()
    if "misfit" not in table or "fit_r2" not in table:
        return table
    line_cols = [c + "_line" for c in _GOF if c + "_line" in table]
    if line_cols and "t_star_censored" in table:
        cens = table["t_star_censored"].fillna(False).astype(bool).to_numpy()
        for c in _GOF:
            if c + "_line" in table:
                table.loc[cens, c] = table.loc[cens, c + "_line"]
    table = table.drop(columns=line_cols)
    misfit = table["misfit"].to_numpy(float)
    r2 = table["fit_r2"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        poor = table["flag"].eq("ok").to_numpy() & (misfit > options.poor_fit_misfit) & (r2 < options.poor_fit_r2)
    if not poor.any():
        return table
    gap = table["max_gap"].to_numpy(float) if "max_gap" in table else np.full(len(table), np.nan)
    spread = table["resid_std"].to_numpy(float) if "resid_std" in table else np.full(len(table), np.nan)
    idx = table.index[poor]
    table.loc[idx, "flag"] = "poor_fit"
    table.loc[idx, "flag_reason"] = [
        (f"poor fit: the fitted law leaves the reads (block means of w - law {np.sqrt(m):.1f}x their noise, misfit "
         f"{m:.0f} > {options.poor_fit_misfit:g}; it explains less of w's slow change than a constant, R^2 {q:.2f} < "
         f"{options.poor_fit_r2:g}); the reads sit {g:+.3f} from the law where it is farthest "
         f"(spread of the reads around it {s:.3f}): its parameters do not describe this train")
        for m, q, g, s in zip(misfit[poor], r2[poor], gap[poor], spread[poor])]
    return table

r"""Drift-law fits of every cell and cycle, vectorised across cells, robust to RTN.

Pipeline for one die (:func:`fit_drift_die`, a pure function of one
:class:`~hfox_fit.schema.DieData`):

1. ``w = ln(R / R0)`` with ``R0`` the read right after SET (pulse 0); when that
   read failed, ``R0`` is extrapolated from the first valid read and the die's
   median ``w`` there.
2. Broken trains are flagged (:mod:`hfox_fit.fitting.flags`).
3. Robust fit: the law is fitted to all reads (the first, masking fit of
   ``two_slope`` on sums over ``prefit_bin`` pulses: it only feeds the residuals
   below); a two-state HMM of RTN runs on blocks of the residuals
   (:func:`hfox_fit.fitting.noise.rtn_em`; it mostly reads the read-to-read
   variance, which the drift does not touch) and every block it finds high is
   masked with its neighbours, as are reads far from the fit (RTN excursions
   above, glitches below); ``robust_rounds`` such rounds. So telegraph jumps do
   not drag the drift (a plain least-squares fit does). The residuals of these
   rounds are float32: they only feed noise statistics.
4. A train the mask would leave with too few reads, or whose start or a long
   stretch RTN hides (``rtn_min_low``, ``rtn_late_start``, ``rtn_max_gap``), is
   fitted on all its reads instead, each high one lowered by the telegraph
   term's mean ``A / 4`` (blocks at a change of state left out); its ``note``
   says so and ``n_rtn_corrected`` counts those reads.
5. The residual spectrum of the die gives the pink and read noise; the pink
   term's non-zero mean (:meth:`hfox_fit.model.PinkNoise.offset`) is taken out
   of ``w`` so that ``c1`` is the law's own intercept, as in the model.
6. Each requested law is fitted on the same reads (so AIC/BIC compare) with
   the vectorised separable solver (:mod:`hfox_fit.fitting._separable`). The
   per-train AIC and BIC are quasi-likelihood criteria: ``-2 log L`` is divided
   by ``kappa`` (below), the overdispersion of the correlated noise.
7. ``R0`` refers to the RTN-low state: a train that is RTN-high from its first
   reads most likely was high at the read right after SET too, and ``r0`` is
   lowered (``c1`` raised) by that read's expected telegraph excess
   (:func:`_start_excess`; ``r0_rtn_high`` is the probability that it was high).

Standard errors come from the Jacobian at the optimum with the residual
variance, multiplied by ``kappa = (sum of the noise autocovariance) / variance``
from the fitted pink + white noise model: the pink noise is correlated over
~15 pulses, so a slope sees ``n / kappa`` effective reads (the long-run
variance, i.e. a HAC sandwich for smooth regressors). For a train fitted
through its corrected high reads, whose telegraph scatter is white, ``kappa``
is the variance-weighted mix of the two.

For ``two_slope``, a break that does not improve the fit significantly over a
straight line (``(SSE_line - SSE) / (sigma^2 kappa) < break_threshold``) is not
reported: ``t_star`` and ``m2`` are NaN, ``m1`` and ``c1`` come from the best
two-slope fit when it is nearly significant (``m1_threshold``: a small early
rise, where a line's slope would be ``m2``), else from a straight line. Such a
train either breaks after its last read or its break is invisible (``m1``
close to ``m2``, or a short first segment); which one is decided over the
whole campaign by :func:`classify_breaks`, which compares the line's slope with
the post-break slopes seen elsewhere.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field

import lmfit
import numpy as np
import pandas as pd

from ..exceptions import FitConvergenceWarning, FitError, NotFittedError
from ..laws import DRIFT_LAWS, get_law
from ..schema import DieData
from . import _separable as sep
from ._util import nanquantile_rows
from .flags import FlagOptions, detect_flags
from .noise import (
    _VAR_U1U2,
    SpectrumStats,
    block_stats,
    fit_pink_spectrum,
    rtn_em,
    segment_periodograms,
)

__all__ = [
    "DRIFT_MODELS",
    "DriftOptions",
    "DieDriftResult",
    "DriftFitter",
    "drift_model",
    "fit_drift_die",
    "check_law",
]

_ID_COLUMNS = ["wafer", "die", "device", "cycle"]


def _make_model(name: str) -> lmfit.Model:
    law = get_law(name)
    model = lmfit.Model(law.func, independent_vars=["t"], name=name)
    for p, (lo, hi) in law.bounds.items():
        model.set_param_hint(p, min=lo, max=hi)
    return model


#: Every registered drift law as an lmfit Model (parameter hints = the law's physical bounds).
DRIFT_MODELS = {name: _make_model(name) for name in DRIFT_LAWS}


def check_law(law: str, *, allow_auto: bool = False) -> str:
    """Return ``law`` if it is a registered drift law (or "auto"), else raise a clear FitError."""
    names = sorted(DRIFT_LAWS) + (["auto"] if allow_auto else [])
    if not isinstance(law, str) or (law not in DRIFT_LAWS and not (allow_auto and law == "auto")):
        raise FitError(f"The 'law' parameter must be one of {names}. Got {law!r} instead.")
    return law


def drift_model(name: str) -> lmfit.Model:
    """The lmfit Model of drift law ``name`` (see :data:`hfox_fit.laws.DRIFT_LAWS`)."""
    return DRIFT_MODELS[check_law(name)]


@dataclass(frozen=True)
class DriftOptions:
    """Options of the per-die drift fit.

    Attributes
    ----------
    robust : bool, default=True
        False gives a plain least-squares fit of every valid read (for
        comparison; RTN is still detected and reported).
    robust_rounds : int, default=1
        Fit / mask rounds before the final fit (each detects RTN on the
        residuals of the previous fit).
    final_rtn : bool, default=False
        Run the RTN detection once more on the final fit's residuals (the
        amplitudes come from the read-to-read variance, which the drift does
        not change, so this rarely matters).
    clip_high, clip_low : float, default=3.0, 6.0
        Reads more than ``clip_high`` (above) or ``clip_low`` (below) robust
        residual standard deviations from the fit are masked.
    rtn_block : int, default=16
        Block length (pulses) of the RTN hidden Markov model.
    rtn_llr : float, default=8.0
        Log-likelihood ratio (nats) above which a train shows RTN.
    break_threshold : float, default=10.0
        Significance (chi-square units, autocorrelation-corrected) a two-slope
        break must reach over a straight line to be reported.
    min_segment : int, default=5
        Fewest fitted reads on each side of a reported break (and at least 1 %
        of the train's reads).
    m1_threshold : float, default=5.0
        For a train without a reported break, ``m1`` and ``c1`` come from the
        best two-slope fit when its significance reaches this (a small early
        rise), else from the straight line.
    prefit_bin : int, default=4
        The first (masking) two-slope fit is made on sums over this many pulses
        (1: on every read); the final fit always uses every read.
    rtn_min_low : float, default=0.1
        A train whose RTN-low reads are fewer than this fraction of its valid
        reads (or than ``flags.min_reads``) is high nearly everywhere: it is
        fitted on all its valid reads, each high one lowered by the telegraph
        term's mean ``A / 4`` (the blocks next to a change of state, and a high
        first block, are left out: they mix both states), and says so in its
        ``note`` (``n_rtn_corrected`` reads).
    rtn_late_start, rtn_max_gap : float, default=0.1, 0.5
        The same when RTN hides the start of the train (the stretch left out at
        its start is longer than ``rtn_late_start`` of the train's span: the
        intercept would be an extrapolation) or a stretch longer than
        ``rtn_max_gap`` of the span (a break could hide in it).
    r0_rtn : bool, default=True
        When a train is RTN-high from its very first reads, the read right after
        SET is most likely high too (RTN persists from pulse to pulse): ``r0``
        is then lowered by the read's expected telegraph excess, so that ``r0``
        and ``c1`` refer to the low state (column ``r0_rtn_high``: the
        probability that the read was high; see :func:`_start_excess`).
    verify : int, default=1
        Trains per die re-fitted with lmfit to verify the vectorised optimum.
    max_traces : int, default=64
        Trains per die kept as example traces (validation plots).
    flags : FlagOptions
    """

    robust: bool = True
    robust_rounds: int = 1
    final_rtn: bool = False
    clip_high: float = 3.0
    clip_low: float = 6.0
    rtn_block: int = 16
    rtn_llr: float = 8.0
    break_threshold: float = 10.0
    min_segment: int = 5
    m1_threshold: float = 5.0
    prefit_bin: int = 4
    rtn_min_low: float = 0.1
    rtn_late_start: float = 0.1
    rtn_max_gap: float = 0.5
    r0_rtn: bool = True
    verify: int = 1
    max_traces: int = 64
    flags: FlagOptions = field(default_factory=FlagOptions)


# --------------------------------------------------------------------------------------
# one law on many rows
# --------------------------------------------------------------------------------------


@dataclass
class _LawFit:
    beta: np.ndarray
    theta: np.ndarray
    sse: np.ndarray
    info: np.ndarray  # J^T W J of (beta, theta)
    converged: np.ndarray
    at_bound: np.ndarray
    coarse: tuple | None = None  # (thetas (N,G), sse (N,G), beta (N,G,3)): the two_slope profile
    line: tuple | None = None  # (sse, beta) of the straight line (two_slope)
    profile: object = None  # TwoSlopeProfile (two_slope)


def _profile_at(law, t, scale, y, w, theta):
    """Closed-form profile (beta, sse) of a 2-coefficient law at per-row theta (N,)."""
    b1 = law.column(t[None, :], scale, theta[:, None])
    wb = w * b1
    s0 = w.sum(1)
    s1 = wb.sum(1)
    s2 = np.einsum("nt,nt->n", wb, b1)
    y0 = np.einsum("nt,nt->n", w, y)
    y1 = np.einsum("nt,nt->n", wb, y)
    yy = np.einsum("nt,nt->n", w * y, y)
    m = np.stack([np.stack([s0, s1], -1), np.stack([s1, s2], -1)], -2)
    r = np.stack([y0, y1], -1)
    beta = sep._batched_solve(m, r)
    return beta, np.maximum(yy - np.einsum("nk,nk->n", beta, r), 0.0)


def _golden_profile(law, t, scale, y, w, a, b, iters: int = 24):
    """Golden-section search of the profile SSE over theta in [a, b] (per row)."""
    gr = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - gr * (b - a), a + gr * (b - a)
    fc, fd = _profile_at(law, t, scale, y, w, c)[1], _profile_at(law, t, scale, y, w, d)[1]
    for _ in range(iters):
        left = fc < fd
        a, b = np.where(left, a, c), np.where(left, d, b)
        new = np.where(left, b - gr * (b - a), a + gr * (b - a))
        fnew = _profile_at(law, t, scale, y, w, new)[1]
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new),
                        np.where(left, fnew, fd), np.where(left, fc, fnew))
        swap = c > d
        c, d, fc, fd = np.where(swap, d, c), np.where(swap, c, d), np.where(swap, fd, fc), np.where(swap, fc, fd)
    # the ends of the bracket are candidates too (a boundary optimum)
    cand = np.stack([a, c, d, b], 1)
    vals = np.stack([_profile_at(law, t, scale, y, w, a)[1], fc, fd, _profile_at(law, t, scale, y, w, b)[1]], 1)
    k = np.argmin(vals, 1)
    theta = cand[np.arange(len(k)), k]
    beta, sse = _profile_at(law, t, scale, y, w, theta)
    return theta, beta, sse


def _theta_window(law, t_lo, t_hi, scale):
    """Per-row search window ``(lo, hi)`` of the law's nonlinear parameter, and the rows without one
    (``bad``: given a tiny window at the midpoint)."""
    lo, hi = law.theta_range(t_lo, t_hi, scale)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    bad = ~(hi > lo)
    lo = np.where(bad, (lo + hi) / 2, lo)
    hi = np.where(bad, lo * (1 + 1e-9) + 1e-12, hi)
    return lo, hi, bad


def _fit_law(name, t, scale, y, w, t_lo, t_hi, buffers=None, y_masked: bool = False) -> _LawFit:
    """Fit law ``name`` to every row (weights ``w``: 0/1 floats or a bool mask) and return internal coefficients.

    ``y_masked``: ``y`` is already 0 wherever ``w`` is (spares the two-slope fit a pass).
    """
    law = sep.SEPARABLE_LAWS[name]
    if name != "two_slope" and w.dtype == bool:
        w = w.astype(float)
    lo, hi, bad = _theta_window(law, t_lo, t_hi, scale)
    n = y.shape[0]
    if name == "two_slope":
        prof = sep.TwoSlopeProfile(t, scale, y, w, buffers, y_masked=y_masked)
        theta, beta, sse, coarse = prof.minimise(lo, hi)
        info = prof.information(beta, theta)
        line = prof.line()
        at_bound = (theta <= lo * (1 + 1e-6)) | (theta >= hi * (1 - 1e-6))
        return _LawFit(beta, theta, sse, info, np.ones(n, bool) & ~bad, at_bound, coarse, line, prof)
    grid = law.theta_grid(1.0, float(t[-1]), scale)
    sse_g, beta_g = sep.grid_profile(law, t, scale, y, w, grid)
    g = np.argmin(sse_g, axis=1)
    # parabolic vertex of the profile through the best grid point and its neighbours
    rows = np.arange(n)
    gi = np.clip(g, 1, len(grid) - 2)
    x0, x1, x2 = grid[gi - 1], grid[gi], grid[gi + 1]
    f0, f1, f2 = sse_g[rows, gi - 1], sse_g[rows, gi], sse_g[rows, gi + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        num = (x1 - x0) ** 2 * (f1 - f2) - (x1 - x2) ** 2 * (f1 - f0)
        den = (x1 - x0) * (f1 - f2) - (x1 - x2) * (f1 - f0)
        vertex = x1 - 0.5 * num / den
    theta = np.where(np.isfinite(vertex) & (vertex > x0) & (vertex < x2), vertex, grid[g])
    theta = np.clip(theta, lo, hi)
    beta, sse = _profile_at(law, t, scale, y, w, theta)
    worse = sse > sse_g[rows, g]
    theta = np.where(worse, np.clip(grid[g], lo, hi), theta)
    beta, sse = _profile_at(law, t, scale, y, w, theta)
    # the grid spans the whole range: a best point on its edge is a boundary optimum
    edge = (g == 0) | (g == len(grid) - 1)
    converged = edge.copy()
    inner = np.nonzero(~edge)[0]
    if inner.size:
        bi, ti, si, ci = sep.lm_refine(law, t, scale, y[inner], w[inner], beta[inner], theta[inner],
                                       lo[inner], hi[inner], max_iter=4)
        beta[inner], theta[inner], sse[inner], converged[inner] = bi, ti, si, ci
    # rows LM has not settled (e.g. creeping along a ridge): minimise the 1-D profile
    # within the grid bracket, solving beta exactly at each theta
    slow = np.nonzero(~converged)[0]
    if slow.size:
        gs = g[slow]
        a = np.clip(grid[np.maximum(gs - 1, 0)], lo[slow], hi[slow])
        b = np.clip(grid[np.minimum(gs + 1, len(grid) - 1)], lo[slow], hi[slow])
        th2, b2, s2 = _golden_profile(law, t, scale, y[slow], w[slow], a, b)
        better = s2 <= sse[slow] * (1 + 1e-9)
        idx = slow[better]
        theta[idx], beta[idx], sse[idx] = th2[better], b2[better], s2[better]
        converged[slow] = True
    col = law.column(t[None, :], scale, theta[:, None])
    dc = beta[:, 1:2] * law.dcolumn(t[None, :], scale, theta[:, None])
    jac = np.stack([np.ones_like(col), col, dc], axis=-1)
    info = np.matmul(np.swapaxes(jac * w[..., None], 1, 2), jac)
    at_bound = edge | (theta <= lo + 1e-9 * np.abs(lo)) | (theta >= hi - 1e-9 * np.abs(hi))
    return _LawFit(beta, theta, sse, info, converged | at_bound, at_bound)


def _span(t, mask, first_t, last_t):
    """First and last pulse of each row's reads in ``mask`` (``first_t``, ``last_t`` where none)."""
    T = len(t)
    anyr = mask.any(1)
    lo = np.where(anyr, t[np.argmax(mask, axis=1)], first_t)
    hi = np.where(anyr, t[T - 1 - np.argmax(mask[:, ::-1], axis=1)], last_t)
    return lo, hi


def _binned_fit(t, scale, y, w, t_lo, t_hi, width: int, buffers=None) -> _LawFit:
    """Two-slope fit of the sums of ``y`` over ``width``-pulse bins (weights: the reads in each bin).

    ``y`` is 0 where ``w`` (bool) is False. Only ``beta`` and ``theta`` are set
    (for residuals); the break is found to within a fraction of a pulse.
    """
    T = len(t)
    starts = np.arange(0, T, width)
    c = np.add.reduceat(w, starts, axis=1, dtype=float)
    yb = np.add.reduceat(y, starts, axis=1)
    np.divide(yb, c, out=yb, where=c > 0)
    tb = np.add.reduceat(t, starts) / np.diff(np.r_[starts, T])
    lo, hi, bad = _theta_window(sep.SEPARABLE_LAWS["two_slope"], t_lo, t_hi, scale)
    prof = sep.TwoSlopeProfile(tb, scale, yb, c, buffers)
    theta, beta, sse, _ = prof.minimise(lo, hi, levels=2)
    n = len(theta)
    return _LawFit(beta, theta, sse, None, ~bad, np.zeros(n, bool))


def _evaluate(name, t, scale, fit: _LawFit):
    """Model values (N, T) of the fitted rows."""
    b, th = fit.beta, fit.theta[:, None]
    tau = (t / scale)[None, :]
    if name == "two_slope":
        return b[:, :1] + b[:, 1:2] * tau + b[:, 2:3] * np.maximum(tau - th, 0.0)
    law = sep.SEPARABLE_LAWS[name]
    return b[:, :1] + b[:, 1:2] * law.column(t[None, :], scale, th)


# --------------------------------------------------------------------------------------
# the per-die result
# --------------------------------------------------------------------------------------


@dataclass
class DieDriftResult:
    """Everything the campaign needs from one die (picklable, no lmfit objects).

    Attributes
    ----------
    tables : dict of str to DataFrame
        Per law, one row per (cell, cycle): ids, the law's parameters and their
        ``_stderr``, ``r0`` and ``r0_stderr`` (Ohm), ``flag``, ``flag_reason``,
        ``success``, ``note``, fit statistics and RTN columns.
    spectrum : SpectrumStats
    rtn : RTNStats
    pink : dict
        The die's own noise fit (``std``, ``exponent``, ``white_std``, ``kappa``).
    traces : ndarray of shape (k, P - 1)
        ``w`` of up to ``max_traces`` unflagged trains (validation plots).
    n_pulses : int
    verify : dict
        lmfit re-fits of a few rows: relative SSE change (negative = lmfit better).
    """

    wafer: str
    die: str
    tables: dict
    spectrum: SpectrumStats
    rtn: object
    pink: dict
    traces: np.ndarray
    n_pulses: int
    n_cells: int
    verify: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    mask_bits: np.ndarray | None = None  # np.packbits of the fitted-read mask (N, T)
    offset: np.ndarray | None = None  # pink offset subtracted from w at pulses 1..T
    #: rows fitted through their RTN-high reads (``rtn_min_low``): row -> excess subtracted at pulses 1..T
    rtn_excess: dict = field(default_factory=dict)

    def fitted_w(self, die: DieData, row: int, law: str | None = None) -> np.ndarray:
        """``w`` of table row ``row`` as its fit saw it (pulses 1..T; NaN where not fitted).

        ``ln(R / r0)`` with the table's ``r0``, less the pink offset and any
        telegraph excess removed from the row (see :class:`DriftOptions`).
        """
        law = law or next(iter(self.tables))
        n_cycles = len(die.cycles)
        r = np.asarray(die.resistance, float)[row // n_cycles, row % n_cycles]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.log(r[1:]) - np.log(self.tables[law]["r0"].iat[row]) - self.offset
        if row in self.rtn_excess:
            w = w - self.rtn_excess[row]
        return np.where(self.mask()[row], w, np.nan)

    def mask(self) -> np.ndarray:
        """The reads each row's fit used, bool (N, n_pulses - 1)."""
        t = self.n_pulses - 1
        return np.unpackbits(self.mask_bits, axis=1, count=t).astype(bool)


def _robust_scale(resid, mask):
    """Per-row noise scale from the residuals below zero (RTN only adds positive ones)."""
    neg = resid < 0
    neg &= mask
    cnt = np.count_nonzero(neg, axis=1)
    r = np.where(neg, resid, resid.dtype.type(0))
    s = np.sqrt(np.einsum("nt,nt->n", r, r).astype(float) / np.maximum(cnt, 1))
    s[cnt < 3] = np.nan
    return s


def _residual32(name, t, scale, fit: _LawFit, y, out):
    """``y - model`` of the fitted rows in float32 into ``out`` (N, T), without float64 temporaries."""
    out[...] = y
    if name != "two_slope":
        out -= _evaluate(name, t, scale, fit)
        return out
    f32 = np.float32
    tau = (t / scale).astype(f32)
    b = fit.beta.astype(f32)
    tmp = np.empty_like(out)
    np.multiply(b[:, 1:2], tau[None, :], out=tmp)
    out -= tmp
    np.subtract(tau[None, :], fit.theta.astype(f32)[:, None], out=tmp)
    np.maximum(tmp, 0, out=tmp)
    tmp *= b[:, 2:3]
    out -= tmp
    out -= b[:, :1]
    return out


def _block_residual_sums(prof, beta, theta, block: int):
    """Sums over ``block``-pulse blocks of ``w (y - model)`` and of ``w``, (N, nb) each, from the prefix sums.

    For the two-slope law: no (N, T) pass (the residual is linear in the data).
    """
    T = len(prof.tau)
    nb = T // block
    edges = np.arange(nb + 1) * block
    pre = prof.prefix
    s0 = np.diff(pre[0][:, edges], axis=1)
    s1 = np.diff(pre[1][:, edges], axis=1)
    y0 = np.diff(pre[3][:, edges], axis=1)
    # hinge (tau - theta)_+ : the part of each block after the break
    jb = np.searchsorted(prof.tau, theta, side="right")
    rows = np.arange(len(theta))[:, None]
    lo = np.clip(jb[:, None], edges[None, :-1], edges[None, 1:])
    hi = edges[None, 1:]
    h = (pre[1][rows, hi] - pre[1][rows, lo]) - theta[:, None] * (pre[0][rows, hi] - pre[0][rows, lo])
    r = y0 - beta[:, :1] * s0 - beta[:, 1:2] * s1 - beta[:, 2:3] * h
    return r, s0


def _long_run_from_blocks(r, c, block: int):
    """Per-row long-run variance from block sums ``r`` of the residual and read counts ``c`` (NaN with < 4 blocks)."""
    n, nb = r.shape
    if nb < 4:
        return np.full(n, np.nan)
    full = c >= block / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lrv = np.where(full, r * r / np.where(full, c, 1.0), 0.0).sum(axis=1) / full.sum(axis=1)
    return np.where(full.sum(axis=1) >= 4, lrv, np.nan)


#: Grid of U1*U2 in (0, 1) (midpoints) with log of its density -ln(u) times the cell width, for the
#: likelihood of a read in the RTN high state (:func:`_start_excess`).
_U_GRID = (np.arange(256) + 0.5) / 256
_U_LOGW = np.log(-np.log(_U_GRID) / 256)


def _start_excess(d, sigma_d, amplitude, p_up, n_trains: int, c1=None, c1_law=None, pi0: float = 0.01,
                  iters: int = 50):
    """Probability that the read right after SET was RTN-high, and its expected excess, for trains high at the start.

    A train that is RTN-high over its first block either started high (the read
    right after SET, which defines ``R0``, was high too: RTN persists from pulse
    to pulse) or went high within the block. The two are told apart by where
    the high stretch begins: the read-to-read changes are small between low
    reads and as wide as the telegraph scatter between high ones, whatever the
    drift, so the changes over the first block place the onset (at pulse 1, or
    after some low reads); and by how often trains start high on this die (a
    rate estimated by EM over the die's ``n_trains`` trains; the others start
    low). The excess of a high read is ``U1 U2 A``; given the train's apparent
    ``c1`` and the die's ``c1`` law, its posterior mean is the correction
    (empirical Bayes: the telegraph law combined with the die's spread of ``c1``).

    Parameters
    ----------
    d : ndarray of shape (K, B - 1)
        Changes from read ``k - 1`` to read ``k`` (pulses 2..B) of the K
        candidate trains, less the fitted law's change (NaN where a read is missing).
    sigma_d : float
        Standard deviation of a change between two low reads.
    amplitude : ndarray of shape (K,)
        Each train's telegraph amplitude ``A``.
    p_up : float
        Per-pulse probability of going high (the die's).
    n_trains : int
        Trains of the die that could have started high (the denominator of the rate).
    c1 : ndarray of shape (K,), optional
        The candidates' fitted ``c1`` (against the read right after SET).
    c1_law : (float, float), optional
        Median and spread of ``c1`` over the die's trains that start low.
    pi0 : float
        Starting value of the rate.

    Returns
    -------
    p_high, excess, var : ndarray of shape (K,)
        Posterior probability that the read at pulse 0 was high; the posterior
        mean of its excess; and the posterior variance of that excess.
    """
    k = d.shape[0]
    if k == 0:
        z = np.zeros(0)
        return z, z, z
    miss = ~np.isfinite(d)
    x = np.where(miss, 0.0, d)
    s2 = sigma_d * sigma_d
    A = amplitude[:, None]
    # both low, low -> high at this change, both high (the difference of two U1 U2 A: its variance)
    ll_ll = -0.5 * x * x / s2 - 0.5 * np.log(2 * np.pi * s2)
    e = A * _U_GRID[None, :]  # (K, G) excess grid, log weights _U_LOGW
    q = -0.5 * (x[..., None] - e[:, None, :]) ** 2 / s2 + _U_LOGW - 0.5 * np.log(2 * np.pi * s2)
    mx = q.max(axis=2)
    ll_lh = mx + np.log(np.exp(q - mx[..., None]).sum(axis=2))
    v_hh = s2 + 2.0 * _VAR_U1U2 * A * A
    ll_hh = -0.5 * x * x / v_hh - 0.5 * np.log(2 * np.pi * v_hh)
    for a in (ll_ll, ll_lh, ll_hh):
        a[miss] = 0.0
    # onset at change j (reads up to j low, from j + 1 on high); column 0 of ll: high from pulse 1
    zero = np.zeros((k, 1))
    before = np.concatenate([zero, np.cumsum(ll_ll, axis=1)], axis=1)[:, :-1]  # sum of ll_ll over changes < j
    after = np.concatenate([np.cumsum(ll_hh[:, ::-1], axis=1)[:, ::-1], zero], axis=1)  # over changes >= j
    ll = np.concatenate([after[:, :1], before + ll_lh + after[:, 1:]], axis=1)
    lk = np.exp(ll - ll.max(axis=1, keepdims=True))
    # the excess given high, from the telegraph law and the apparent c1 (c1_true = c1 + excess)
    logw = np.broadcast_to(_U_LOGW, e.shape)
    if c1 is not None and c1_law is not None and np.isfinite(c1_law[1]) and c1_law[1] > 0:
        mu, sc = c1_law
        cc = np.where(np.isfinite(c1), c1, mu)
        logw = logw - 0.5 * ((cc[:, None] + e - mu) / sc) ** 2
    post = np.exp(logw - logw.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    e1 = (post * e).sum(axis=1)
    e2 = (post * e * e).sum(axis=1)
    p_up = float(np.clip(p_up, 1e-6, 0.5))
    n_trains = max(int(n_trains), k)
    rate = float(np.clip(pi0, 1e-4, 0.5))
    for _ in range(iters):
        started = rate * lk[:, 0]  # high at pulse 0 already, and still at pulse 1
        later = (1.0 - rate) * p_up * lk.sum(axis=1)  # low at pulse 0, up before pulse 1 or later
        p = started / (started + later)
        new = float(p.sum() / n_trains)
        done = abs(new - rate) <= 1e-6 * max(rate, 1e-6)
        rate = new
        if done:
            break
    excess = p * e1
    var = np.maximum(p * e2 - excess**2, 0.0)
    return p, excess, var


_DEFAULT_START = {
    "two_slope": {"m1": 1e-3, "t_star": 100.0, "m2": 1e-4, "c1": 0.0},
    "power": {"a": 1e-2, "b": 0.5, "c1": 0.0},
    "log": {"a": 0.05, "tau": 50.0, "c1": 0.0},
}


def _lmfit_refit(name, t, w_row, mask_row, start: dict):
    """lmfit fit of one train (reads ``mask_row``) from ``start`` (NaN values: defaults)."""
    model = DRIFT_MODELS[name]
    start = {k: (float(v) if np.isfinite(v) else _DEFAULT_START[name][k]) for k, v in start.items()}
    if name == "two_slope" and not (t[mask_row].min() < start["t_star"] < t[mask_row].max()):
        start["t_star"] = float(np.median(t[mask_row]))
    params = model.make_params(**start)
    for k, v in start.items():
        p = params[k]
        if not (p.min < v < p.max):
            p.value = float(np.clip(v, p.min + 1e-12, p.max - 1e-12))
    return model.fit(w_row[mask_row], params, t=t[mask_row], method="leastsq")


def _lmfit_fallback(name, table, flag_before, t, Yc, W, kappa):
    """Re-fit with lmfit the trains whose vectorised fit failed; keep lmfit's result if it converged."""
    law = get_law(name)
    rows = np.nonzero((table["flag"].to_numpy() == "failed") & (flag_before == "ok"))[0]
    for i in rows:
        m = W[i] > 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = _lmfit_refit(name, t, Yc[i], m, {p: table[p].iat[i] for p in law.params})
        except Exception:  # noqa: BLE001 - the train stays flagged 'failed'
            continue
        vals = [r.params[p].value for p in law.params]
        if not (r.success and np.all(np.isfinite(vals))):
            continue
        for p in law.params:
            table.loc[table.index[i], p] = r.params[p].value
            se = r.params[p].stderr
            k_i = kappa[i] if np.ndim(kappa) else kappa
            table.loc[table.index[i], p + "_stderr"] = se * np.sqrt(k_i) if se is not None else np.nan
        table.loc[table.index[i], ["flag", "flag_reason", "success"]] = ["ok", "", True]
        table.loc[table.index[i], "note"] = _join(table["note"].iat[i], "fitted by lmfit (the vectorised fit "
                                                                        "did not converge)")


_WORK = threading.local()
#: Largest work array (bytes) kept between calls of :func:`fit_drift_die` (per thread).
_KEEP_BYTES = 64 * 2**20


def _work_buffers(n: int, T: int, key: str = "fit") -> dict:
    """The two-slope fit's work arrays: kept between calls of one thread when small enough.

    A fresh (5, N, T + 1) array costs its page faults on every die; dies of one
    campaign have the same shape, so a thread keeps one per ``key`` (up to
    ``_KEEP_BYTES`` each).
    """
    if 5 * n * (T + 1) * 8 > _KEEP_BYTES:
        return {}
    kept = getattr(_WORK, "buffers", None)
    if kept is None:
        kept = _WORK.buffers = {}
    return kept.setdefault(key, {})


class _Clock:
    """Wall and CPU seconds per phase into ``timings`` (a dict, or None for no timing)."""

    def __init__(self, timings):
        self.timings = timings
        if timings is not None:
            self.last = (time.perf_counter(), time.process_time())

    def __call__(self, phase: str):
        if self.timings is None:
            return
        now = (time.perf_counter(), time.process_time())
        wall, cpu = self.timings.get(phase, (0.0, 0.0))
        self.timings[phase] = (wall + now[0] - self.last[0], cpu + now[1] - self.last[1])
        self.last = now


def fit_drift_die(die: DieData, laws=("two_slope",), options: DriftOptions | None = None, *,
                  timings: dict | None = None) -> DieDriftResult:
    """Fit the drift laws ``laws`` to every (cell, cycle) of one die (see module doc).

    Parameters
    ----------
    die : DieData
    laws : sequence of str
        Laws to fit on the same reads; the first one drives the robust masking.
    options : DriftOptions, optional
    timings : dict, optional
        Filled with ``phase -> (wall s, CPU s)`` (for benchmarks): ``flags``
        (:func:`~hfox_fit.fitting.flags.detect_flags`), ``noise`` (the die's residual
        spectrum and its pink + white fit), and the drift fit's own phases
        ``prepare``, ``prefit``, ``rtn``, ``fit``, ``tables``.

    Returns
    -------
    DieDriftResult
    """
    clock = _Clock(timings)
    options = options or DriftOptions()
    laws = tuple(check_law(name) for name in laws)
    if not isinstance(die, DieData):
        raise FitError(f"expected a DieData, got {type(die).__name__}.")
    n_cells, n_cycles, P = die.resistance.shape
    n = n_cells * n_cycles
    ids = pd.DataFrame({
        "wafer": np.repeat(str(die.wafer), n),
        "die": np.repeat(str(die.die), n),
        "device": np.repeat(np.asarray(die.devices, dtype=str), n_cycles),
        "cycle": np.tile(np.asarray(die.cycles, dtype="int64"), n_cells),
    })
    res = np.asarray(die.resistance, float).reshape(n, P)
    lny = np.full((n, P), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(res, out=lny, where=res > 0)
    valid = np.isfinite(lny)
    messages = []
    clock("prepare")
    flag, reason, cut, _ = detect_flags(lny, valid, options.flags)
    clock("flags")
    t = np.arange(1, P, dtype=float)
    T = len(t)
    scale = float(max(T, 1))
    # R0 and w
    lnr0 = lny[:, 0].copy()
    r0_from_read = np.isfinite(lnr0)
    vmask = valid[:, 1:]
    if (cut < P).any():
        vmask = vmask & (np.arange(1, P)[None, :] < cut[:, None])
    need = ~r0_from_read & vmask.any(1)
    r0_spread = np.full(n, np.nan)
    if need.any():
        # the die's median w at the first valid read of each train that needs it
        rows_need = np.nonzero(need)[0]
        first_j = np.argmax(vmask[rows_need], axis=1)
        cols = np.unique(first_j)
        ref = vmask[:, cols] & r0_from_read[:, None]
        wref = np.where(ref, lny[:, cols + 1] - lnr0[:, None], np.nan).T
        med_w = nanquantile_rows(wref, 0.5)
        mad_w = nanquantile_rows(np.abs(wref - med_w[:, None]), 0.5)
        for i, j in zip(rows_need, first_j):
            k = int(np.searchsorted(cols, j))
            if np.isfinite(med_w[k]):
                lnr0[i] = lny[i, j + 1] - med_w[k]
                r0_spread[i] = 1.4826 * mad_w[k]
    no_r0 = ~np.isfinite(lnr0)
    for i in np.nonzero(no_r0 & (flag == "ok"))[0]:
        flag[i] = "failed"
        reason[i] = "no read right after SET and none to extrapolate R0 from"
    usable = vmask & ~no_r0[:, None]
    fitrows = np.nonzero(flag != "failed")[0]
    ok = flag == "ok"
    if T < 2 * options.flags.min_reads // 2 or fitrows.size == 0:
        tables = {name: _empty_table(name, ids, flag, reason, lnr0) for name in laws}
        return DieDriftResult(str(die.wafer), str(die.die), tables,
                              segment_periodograms(np.zeros((0, max(T, 1))), np.zeros((0, max(T, 1)), bool)),
                              None, {}, np.zeros((0, T)), P, n_cells, messages=messages)
    # Y: w on the usable reads, 0 elsewhere (it becomes the final fit's data in place further down)
    Y = lny[:, 1:] - lnr0[:, None]
    np.copyto(Y, 0.0, where=~usable)
    del lny
    first_t, last_t = _span(t, usable, 1.0, float(T))
    # traces for validation plots
    ok_rows = np.nonzero(ok)[0]
    step = max(len(ok_rows) // max(options.max_traces, 1), 1)
    trace_rows = ok_rows[::step][: options.max_traces]
    traces = np.where(usable[trace_rows], Y[trace_rows], np.nan)
    B = min(options.rtn_block, T)
    start_w = np.where(usable[:, :B], Y[:, :B], np.nan)  # the first reads: the state of the read right after SET
    w_copy = Y.copy() if options.final_rtn else None
    mask = usable
    main = laws[0]
    # rows to fit: a slice when they are all of them (fancy indexing would copy every array)
    sub = slice(None) if fitrows.size == n else fitrows
    rmask = usable & ok[:, None]
    rounds = max(options.robust_rounds, 1) if options.robust else 1
    buffers = _work_buffers(n, T)
    rtn = None
    # the residual of every round in float32: it only feeds noise statistics (RTN, clipping, spectrum)
    resid = np.zeros((n, T), np.float32)
    thin = np.zeros(n, bool)
    for rnd in range(rounds):
        if rnd == 0 and main == "two_slope" and options.prefit_bin > 1:
            # the first fit only gives the residuals the RTN detection and the clipping read: on sums
            # over a few pulses it costs a fraction of a full one
            f = _binned_fit(t, scale, Y[sub], usable[sub], first_t[sub], last_t[sub], options.prefit_bin,
                            _work_buffers(n, -(-T // options.prefit_bin), "prefit"))
        else:
            lo_t, hi_t = _span(t, mask, first_t, last_t)
            f = _fit_law(main, t, scale, Y[sub], mask[sub], lo_t[sub], hi_t[sub], buffers,
                         y_masked=mask is usable)
        if isinstance(sub, slice):
            _residual32(main, t, scale, f, Y, resid)
        else:
            resid[sub] = _residual32(main, t, scale, f, Y[sub], np.empty((len(fitrows), T), np.float32))
        clock("prefit")
        if rnd >= 1 or rounds == 1:
            # RTN from the second round on (the first fit may still be dragged by it)
            m_b, lv_b = block_stats(resid, rmask, options.rtn_block)
            rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
            high = rtn.read_mask(T)
            high &= ok[:, None]
        else:
            high = np.zeros_like(usable)
        if not options.robust:
            break
        s_row = _robust_scale(resid, mask)
        s32 = s_row.astype(np.float32)[:, None]
        with np.errstate(invalid="ignore"):
            out = resid > options.clip_high * s32
            out |= resid < -options.clip_low * s32
        new_mask = ~out
        new_mask &= usable
        new_mask &= ~high
        # never mask a row below the minimum: a train RTN-high nearly everywhere is fitted on all its
        # valid reads (the high ones lowered by their telegraph excess after the last round)
        n_use = np.count_nonzero(usable, axis=1)
        thin = np.count_nonzero(new_mask, axis=1) < np.maximum(options.flags.min_reads, options.rtn_min_low * n_use)
        # ... or RTN hides its start (c1 would be an extrapolation) or a long stretch of it
        if rtn is not None:
            thin |= _rtn_hides(rtn, ok, first_t, last_t, options)
        new_mask[thin] = usable[thin]
        mask = new_mask
    clock("rtn")
    # noise of this die
    spec_usable = usable & ~high & ok[:, None]
    spectrum = segment_periodograms(resid, spec_usable)
    del resid
    pink_info = {}
    offset = np.zeros(T)
    kappa = 1.0
    white = np.nan
    sigma_read = np.nan
    if spectrum.length and spectrum.count.sum() >= 4:
        try:
            ps = fit_pink_spectrum(spectrum, bootstrap=0)
            pn = ps.pink
            offset = pn.offset(t.astype(int))
            kappa = ps.long_run_ratio
            white = ps.white_std
            sigma_read = float(np.sqrt(ps.std**2 + ps.white_std**2))
            pink_info = {"std": ps.std, "exponent": ps.exponent, "white_std": ps.white_std, "kappa": kappa,
                         "alpha": pn.alpha, "segments": ps.n_segments}
        except FitError as err:  # pragma: no cover - guarded by the count check
            messages.append(str(err))
    else:
        messages.append(
            f"die {die.wafer}/{die.die}: too few complete residual segments for a noise fit; "
            "standard errors assume uncorrelated noise (kappa = 1) and c1 keeps the pink offset."
        )
    clock("noise")
    # Yc: w less the pink offset (and the telegraph excess of the trains fitted through their high
    # reads), 0 where not fitted; W: the fitted reads
    Yc = Y
    Yc -= offset[None, :]
    rtn_excess = {}
    n_rtn = np.zeros(n, int)
    thin_rtn = thin & high.any(1) & np.isfinite(rtn.amplitude) if (options.robust and rtn is not None) else thin & False
    if thin_rtn.any():
        # high reads lowered by A/4; the blocks next to a change of state (and a high first block: the
        # state before it is unknown) hold reads of both states and are left out
        hi_read, keep = _rtn_states(rtn, T)
        for i in np.nonzero(thin_rtn)[0]:
            m_i = usable[i] & keep[i]
            if np.count_nonzero(m_i) >= options.flags.min_reads:
                mask[i] = m_i
            ex = np.where(hi_read[i], np.float32(rtn.amplitude[i] / 4.0), np.float32(0.0))
            Yc[i] -= ex
            rtn_excess[int(i)] = ex
            n_rtn[i] = int(np.count_nonzero(hi_read[i] & mask[i]))
    np.copyto(Yc, 0.0, where=~mask)
    W = mask
    # final fits on the final reads; the main law's residuals give the reported RTN (amplitudes and
    # states from a drift no longer dragged by the telegraph reads)
    # the break lies between fitted reads (not among reads left out at the start or the end)
    lo_t, hi_t = _span(t, W, first_t, last_t)
    fits = {name: _fit_law(name, t, scale, Yc[sub], W[sub], lo_t[sub], hi_t[sub], buffers, y_masked=True)
            for name in laws}
    clock("fit")
    if options.final_rtn:
        resid_main = np.full((n, T), np.nan)
        resid_main[sub] = w_copy[sub] - offset[None, :] - _evaluate(main, t, scale, fits[main])
        m_b, lv_b = block_stats(resid_main, rmask, options.rtn_block)
        rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
    common = {
        "r0": np.exp(lnr0),
        "r0_stderr": np.where(r0_from_read, np.exp(lnr0) * white, np.exp(lnr0) * r0_spread),
        # reads fitted in the RTN-low state, and the other valid reads (left out, or fitted through
        # their telegraph excess: n_rtn_corrected of them)
        "n_reads": np.count_nonzero(mask, axis=1) - n_rtn,
        "last_pulse": np.where(mask.any(1), T - np.argmax(mask[:, ::-1], axis=1), 0),
        "n_masked": np.count_nonzero(usable & ~mask, axis=1) + n_rtn,
        "rtn": rtn.shows & ok,
        "rtn_amplitude": np.where(ok, rtn.amplitude, np.nan),
        "rtn_amplitude_stderr": np.where(ok, rtn.extra.get("amplitude_stderr", np.full(n, np.nan)), np.nan),
        "n_rtn_corrected": n_rtn,
        "r0_rtn_high": np.zeros(n),
    }
    r0_note = np.where(r0_from_read, "", "R0 extrapolated from the first valid read (pulse-0 read failed); ")
    if not np.isfinite(white):
        common["r0_stderr"] = np.where(r0_from_read, np.nan, common["r0_stderr"])
        r0_note = np.where(r0_from_read, "r0_stderr unknown: the read noise was not resolved; ", r0_note)
    r0_note = r0_note.astype(object)
    for i in np.nonzero(thin_rtn)[0]:
        r0_note[i] += (f"RTN high on much of the train ({n_rtn[i]} of {n_rtn[i] + common['n_reads'][i]} fitted reads): "
                       f"fitted on all its reads, the high ones lowered by their mean telegraph excess "
                       f"(A/4 = {rtn.amplitude[i] / 4:.3g}); ")
    # overdispersion per train: the die's (pink noise) except where the white telegraph scatter of the
    # corrected high reads dominates
    kappa_rows = np.full(n, float(kappa))
    if n_rtn.any() and np.isfinite(sigma_read):
        v_low = sigma_read**2
        v_rtn = _VAR_U1U2 * np.nan_to_num(rtn.amplitude) ** 2 * n_rtn / np.maximum(np.count_nonzero(mask, axis=1), 1)
        kappa_rows = np.where(n_rtn > 0, (kappa * v_low + v_rtn) / (v_low + v_rtn), kappa_rows)
    tables = {}
    verify = {}
    for name in laws:
        f = fits[name]
        if name == "two_slope":
            r_b, c_b = _block_residual_sums(f.profile, f.beta, f.theta, 32)
            lrv = _long_run_from_blocks(r_b, c_b, 32)
        else:
            resid_f = np.where(W[sub], Yc[sub] - _evaluate(name, t, scale, f), 0.0)
            lrv = _long_run_variance(resid_f, W[sub])
        tables[name] = _law_table(name, f, sub, ids, flag.copy(), reason.copy(), common, r0_note, t, scale,
                                  W, kappa_rows[sub], options, white, lrv)
        _lmfit_fallback(name, tables[name], flag, t, Yc, W, kappa_rows)
        verify[name] = _verify(name, tables[name], t, Yc, W, options.verify)
        bad = tables[name]["flag"].eq("failed") & pd.Series(flag == "ok")
        if bad.any():
            rows = tables[name].loc[bad]
            shown = "; ".join(f"{r.device} cycle {r.cycle}: {r.flag_reason}" for r in rows.head(3).itertuples())
            warnings.warn(
                f"die {die.wafer}/{die.die}, law {name!r}: {int(bad.sum())} train(s) did not converge "
                f"({shown}{'; ...' if bad.sum() > 3 else ''}). They are flagged 'failed' and kept; "
                "try another law, or check these cells' reads.",
                FitConvergenceWarning,
                stacklevel=3,
            )
    if options.r0_rtn and options.robust and rtn is not None:
        shift = _r0_at_set(tables, main, rtn, start_w, offset[:B], t[:B], ok & r0_from_read)
        if shift is not None:
            rows_in = np.isin(trace_rows, np.nonzero(shift)[0])
            traces[rows_in] += shift[trace_rows[rows_in]][:, None]
    clock("tables")
    return DieDriftResult(str(die.wafer), str(die.die), tables, spectrum, rtn, pink_info, traces, P, n_cells,
                          verify=verify, messages=messages, mask_bits=np.packbits(mask, axis=1), offset=offset,
                          rtn_excess=rtn_excess)


def _rtn_hides(rtn, rows_ok, first_t, last_t, options) -> np.ndarray:
    """Rows (bool, N) whose RTN-high stretches hide the start of the train, or a long stretch of it.

    On the blocks the RTN mask leaves out (high, and their neighbours): the
    stretch hidden at the start is longer than ``rtn_late_start`` of the train's
    span (``c1`` would be an extrapolation), or a hidden stretch anywhere is
    longer than ``rtn_max_gap`` of it (a break could hide in it).
    """
    n, nb = rtn.high.shape
    out = np.zeros(n, bool)
    if nb == 0:
        return out
    hb = rtn.high > 0.5
    hidden = hb.copy()
    hidden[:, 1:] |= hb[:, :-1]
    hidden[:, :-1] |= hb[:, 1:]
    hidden &= rows_ok[:, None]
    rows = np.nonzero(hidden.any(1))[0]
    if rows.size == 0:
        return out
    h = hidden[rows]
    run = np.zeros(rows.size)
    longest = np.zeros(rows.size)
    for b in range(nb):  # length (blocks) of the hidden stretch ending at block b
        run = (run + 1.0) * h[:, b]
        np.maximum(longest, run, out=longest)
    lead = np.where(h.all(1), nb, np.argmin(h, axis=1)) * rtn.block
    span = (last_t - first_t)[rows]
    out[rows] = (lead > options.rtn_late_start * span) | (longest * rtn.block > options.rtn_max_gap * span)
    return out


def _rtn_states(rtn, T: int):
    """Per read (N, T): RTN-high (its block more likely high than low), and away from a change of state.

    ``keep`` is False in the blocks on either side of a change of state (they
    may hold reads of both states) and in a high first block; the trailing
    partial block follows the last one.
    """
    n, nb = rtn.high.shape
    hb = rtn.high > 0.5
    edge = np.zeros((n, nb), bool)
    if nb:
        change = hb[:, 1:] != hb[:, :-1]
        edge[:, 1:] |= change
        edge[:, :-1] |= change
        edge[:, 0] |= hb[:, 0]

    def per_read(b):
        out = np.zeros((n, T), bool)
        if nb:
            out[:, : nb * rtn.block] = np.repeat(b, rtn.block, axis=1)
            out[:, nb * rtn.block:] = b[:, -1:]
        return out

    return per_read(hb), ~per_read(edge)


def _r0_at_set(tables, main, rtn, start_w, offset, t, eligible):
    """Refer ``r0`` and ``c1`` to the RTN-low state for trains that are high from their first reads.

    For the trains whose first RTN block is high, :func:`_start_excess` gives the
    probability that the read right after SET (``R0``) was high too and its
    expected excess; ``r0`` is divided by ``exp(excess)``, ``c1`` (and ``c1_line``)
    raised by it, their standard errors widened by its spread, and a note says
    so. Modifies ``tables`` in place; returns the per-row shift of ``w`` (None if none).
    """
    nb = rtn.high.shape[1]
    if nb == 0 or not rtn.shows.any():
        return None
    cand = np.nonzero(eligible & rtn.shows & (rtn.high[:, 0] > 0.5) & np.isfinite(rtn.amplitude))[0]
    if cand.size == 0:
        return None
    tab = tables[main]
    law = get_law(main)
    params = {p: tab[p].to_numpy(float)[cand] for p in law.params}
    if main == "two_slope":
        # trains without a reported break: the straight line (or best fit) that gave m1 and c1
        ts = params["t_star"]
        params["t_star"] = np.where(np.isfinite(ts), ts, 1e12)
        params["m2"] = np.where(np.isfinite(ts), params["m2"], params["m1"])
    fin = np.all(np.isfinite(np.stack(list(params.values()), axis=1)), axis=1)
    cand, params = cand[fin], {k: v[fin] for k, v in params.items()}
    if cand.size == 0:
        return None
    model = law(t[None, :], **{k: v[:, None] for k, v in params.items()})
    d = np.diff(start_w[cand] - offset[None, :] - model, axis=1)
    # the die's c1 law, from the trains that start low
    c1_all = tab["c1"].to_numpy(float)
    ref = eligible & (tab["flag"].to_numpy() == "ok") & np.isfinite(c1_all)
    ref[cand] = False
    ref &= ~(rtn.high[:, 0] > 0.5)
    c1_law = None
    if ref.sum() >= 10:
        med = float(np.median(c1_all[ref]))
        c1_law = (med, float(1.4826 * np.median(np.abs(c1_all[ref] - med))))
    sigma_d = float(np.sqrt(2.0 * np.exp(rtn.extra.get("mu_v", np.nan))))
    if not np.isfinite(sigma_d) or sigma_d <= 0:
        return None
    p, excess, var = _start_excess(d, sigma_d, rtn.amplitude[cand], rtn.p_up, int(eligible.sum()),
                                   c1=c1_all[cand], c1_law=c1_law, pi0=float(rtn.extra.get("pi0", 0.01)))
    shift = np.zeros(len(tab))
    use = p > 0.01
    cand, p, excess, var = cand[use], p[use], excess[use], var[use]
    if cand.size == 0:
        return None
    shift[cand] = excess
    for df in tables.values():
        idx = df.index[cand]
        r0 = df["r0"].to_numpy(float)[cand]
        r0_se = df["r0_stderr"].to_numpy(float)[cand]
        new_r0 = r0 * np.exp(-excess)
        df.loc[idx, "r0"] = new_r0
        df.loc[idx, "r0_stderr"] = np.sqrt(np.nan_to_num(r0_se / r0) ** 2 + var) * new_r0
        for col in ("c1", "c1_line"):
            if col in df:
                df.loc[idx, col] = df[col].to_numpy(float)[cand] + excess
            if col + "_stderr" in df:
                df.loc[idx, col + "_stderr"] = np.sqrt(df[col + "_stderr"].to_numpy(float)[cand] ** 2 + var)
        df.loc[idx, "r0_rtn_high"] = p
        notes = df["note"].to_numpy(object)[cand]
        df.loc[idx, "note"] = [_join(nt, f"RTN high from the first reads: the read right after SET was high with "
                                         f"probability {pp:.2f}; r0 lowered and c1 raised by its expected "
                                         f"telegraph excess {ex:.3g}") for nt, pp, ex in zip(notes, p, excess)]
    return shift


def _empty_table(name, ids, flag, reason, lnr0):
    law = get_law(name)
    df = ids.copy()
    for p in law.params:
        df[p] = np.nan
        df[p + "_stderr"] = np.nan
    df["r0"] = np.exp(lnr0)
    df["r0_stderr"] = np.nan
    fl = np.where(flag == "ok", "failed", flag)
    rs = np.where(flag == "ok", "pulse train too short to fit", reason)
    for col in ("n_reads", "last_pulse", "n_masked", "rtn_amplitude", "rtn_amplitude_stderr", "sigma", "aic", "bic"):
        df[col] = np.nan
    df["rtn"] = False
    if name == "two_slope":
        for col in ("t_star_lo", "t_star_hi", "break_significance", "m1_line", "m1_line_stderr", "c1_line",
                    "c1_line_stderr"):
            df[col] = np.nan
        df["t_star_censored"] = False
    df["flag"] = fl
    df["flag_reason"] = rs
    df["success"] = False
    df["note"] = "not fitted"
    return df


def _long_run_variance(resid, w, block: int = 32):
    """Per-row long-run variance of the residual from block means (NaN with fewer than 4 blocks)."""
    n, T = resid.shape
    nb = T // block
    if nb < 4:
        return np.full(n, np.nan)
    r = resid[:, : nb * block].reshape(n, nb, block).sum(axis=2)
    c = w[:, : nb * block].reshape(n, nb, block).sum(axis=2)
    full = c >= block / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lrv = np.where(full, r * r / np.where(full, c, 1.0), 0.0).sum(axis=1) / full.sum(axis=1)
    return np.where(full.sum(axis=1) >= 4, lrv, np.nan)


def _law_table(name, f: _LawFit, sub, ids, flag, reason, common, r0_note, t, scale, W, kappa, options,
               white=np.nan, lrv=None):
    law = get_law(name)
    slaw = sep.SEPARABLE_LAWS[name]
    n = len(ids)
    p = len(law.params)
    prof = f.profile
    nn = prof.tot[0] if prof is not None else np.count_nonzero(W[sub], axis=1).astype(float)
    dof = np.maximum(nn - p, 1)
    sigma2 = f.sse / dof
    # the noise seen by a slope: the die's pink + white model (kappa), or the train's own long-run
    # variance when it is larger (e.g. RTN left-overs too small to detect)
    unit = sigma2 * kappa
    if lrv is not None:
        unit = np.fmax(unit, np.where(np.isfinite(lrv), lrv, 0.0))
    params, gjac = slaw.to_params(f.beta, f.theta, scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        try:
            cov_int = np.linalg.inv(f.info)
        except np.linalg.LinAlgError:
            cov_int = np.linalg.pinv(f.info)
    cov_int = cov_int * unit[:, None, None]
    cov = gjac @ cov_int @ np.swapaxes(gjac, 1, 2)
    var = np.einsum("npp->np", cov)
    stderr = np.sqrt(np.where(var >= 0, var, np.nan))
    m_rows = len(f.sse)
    note = np.full(m_rows, "", dtype=object)
    success = f.converged & np.isfinite(f.sse) & np.all(np.isfinite(f.beta), axis=1)
    values = {q: np.asarray(params[q], float).copy() for q in law.params}
    errs = {q: stderr[:, j].copy() for j, q in enumerate(law.params)}
    theta_name = {"two_slope": "t_star", "power": "b", "log": "tau"}[name]
    extra = {}
    if name == "two_slope":
        line_sse, line_beta = f.line
        thr = options.break_threshold
        with np.errstate(invalid="ignore", divide="ignore"):
            # significance and profile intervals in the die's noise model (as calibrated under no break)
            unit0 = sigma2 * kappa
            signif = (line_sse - f.sse) / unit0
            grid_t, grid_sse, grid_beta = f.coarse
            within = (grid_sse - f.sse[:, None]) / unit0[:, None] <= 2.71
        gt = grid_t * scale
        lo_i = np.argmax(within, axis=1)
        hi_i = within.shape[1] - 1 - np.argmax(within[:, ::-1], axis=1)
        t_lo = gt[np.arange(m_rows), np.maximum(lo_i - 1, 0)]
        t_hi = gt[np.arange(m_rows), np.minimum(hi_i + 1, within.shape[1] - 1)]
        # a break needs reads on both sides: min_side on the fitted reads
        n_after = prof._after(f.theta)[0]
        min_side = np.maximum(options.min_segment, 0.01 * nn)
        no_break = ~(signif > thr) | (n_after < min_side) | (nn - n_after < min_side)
        open_hi = no_break | (hi_i >= within.shape[1] - 1)
        t_hi = np.where(open_hi, np.inf, t_hi)
        t_lo = np.where(no_break & (lo_i == 0), gt[:, 0], t_lo)
        # line fallback for m1, c1
        s0, s1, s2 = prof.tot[:3]
        det = s0 * s2 - s1**2
        line_dof = np.maximum(nn - 2, 1)
        lsig = np.fmax(line_sse / line_dof * kappa, unit)
        with np.errstate(invalid="ignore", divide="ignore"):
            var_b0 = lsig * s2 / det
            var_b1 = lsig * s0 / det
        # m1 and c1 of a train without a reported break: from the best two-slope fit when the
        # break is nearly significant (a small, early rise: the line would give m2), otherwise
        # from the straight line, whose slope is m1 when the break lies beyond the last read
        line_se = np.sqrt(var_b1) / scale
        use_line = no_break & ~((signif >= options.m1_threshold) & (nn - n_after >= min_side))
        values["m1"] = np.where(use_line, line_beta[:, 1] / scale, values["m1"])
        # ... and its uncertainty includes an early break the data cannot rule out (99 % profile,
        # first segment of at least 4 % of the train): half the spread of m1 over those breaks
        last_fit = np.asarray(common["last_pulse"], float)[sub]
        m1_grid = grid_beta[..., 1] / scale
        with np.errstate(invalid="ignore", divide="ignore"):
            within99 = (grid_sse - f.sse[:, None]) / unit0[:, None] <= 6.63
        allowed = within99 & (gt >= np.maximum(options.min_segment, 0.04 * last_fit)[:, None])
        with np.errstate(invalid="ignore"):
            m1_hi = np.max(np.where(allowed, m1_grid, -np.inf), axis=1)
            m1_lo = np.min(np.where(allowed, m1_grid, np.inf), axis=1)
        amb = np.where(np.isfinite(m1_hi) & np.isfinite(m1_lo), (m1_hi - m1_lo) / (2 * 1.645), 0.0)
        errs["m1"] = np.where(use_line, np.fmax(line_se, amb), errs["m1"])
        values["c1"] = np.where(use_line, line_beta[:, 0], values["c1"])
        # the same for c1: the line's intercept moves with a break it cannot see
        c1_grid = grid_beta[..., 0]
        with np.errstate(invalid="ignore"):
            c1_hi = np.max(np.where(allowed, c1_grid, -np.inf), axis=1)
            c1_lo = np.min(np.where(allowed, c1_grid, np.inf), axis=1)
        amb_c1 = np.where(np.isfinite(c1_hi) & np.isfinite(c1_lo), (c1_hi - c1_lo) / (2 * 1.645), 0.0)
        errs["c1"] = np.where(use_line, np.fmax(np.sqrt(var_b0), amb_c1), errs["c1"])
        values["t_star"] = np.where(no_break, np.nan, values["t_star"])
        # the SSE is not quadratic in t_star far from the optimum: widen its stderr to what the
        # profile itself says at +/- 2 stderr (secant), on the worse side
        se_t = errs["t_star"]
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.where(np.isfinite(se_t), 2 * se_t, 0.0) / scale
            probe = np.stack([f.theta - step, f.theta + step], axis=1)
            probe = np.clip(probe, grid_t[:, :1], grid_t[:, -1:])
            p_sse, p_beta = f.profile.sse(probe)
            d_sse = p_sse - f.sse[:, None]
            reach = np.abs(probe - f.theta[:, None]) * scale
            se_prof = np.max(np.where(d_sse > 0, reach / np.sqrt(d_sse / unit[:, None]), np.inf), axis=1)
            # slopes move with the break along the profile: at least half their change over +/- 2 stderr
            for q, col in (("m1", p_beta[..., 1]), ("m2", p_beta[..., 1] + p_beta[..., 2])):
                spread = np.abs(col[:, 1] - col[:, 0]) / scale / 4
                errs[q] = np.fmax(errs[q], np.where(np.isfinite(spread), spread, 0.0))
        errs["t_star"] = np.fmax(se_t, np.where(np.isfinite(se_prof), se_prof, se_t))
        errs["t_star"] = np.where(no_break | f.at_bound, np.nan, errs["t_star"])
        values["m2"] = np.where(no_break, np.nan, values["m2"])
        errs["m2"] = np.where(no_break, np.nan, errs["m2"])
        for i in np.nonzero(no_break)[0]:
            src = "a straight line" if use_line[i] else "the best two-slope fit"
            note[i] += (f"no significant break (significance {signif[i]:.1f} < {thr:g}): m1 and c1 from {src}, "
                        "t_star and m2 not identifiable; ")
        extra = {"t_star_lo": t_lo, "t_star_hi": t_hi, "break_significance": signif,
                 "m1_line": np.where(no_break, line_beta[:, 1] / scale, np.nan),
                 "m1_line_stderr": np.where(no_break, line_se, np.nan),
                 "c1_line": np.where(no_break, line_beta[:, 0], np.nan),
                 "c1_line_stderr": np.where(no_break, np.sqrt(var_b0), np.nan)}
    else:
        for i in np.nonzero(f.at_bound)[0]:
            errs[theta_name][i] = np.nan
            note[i] += f"{theta_name} at the bound of its range: stderr unknown; "
    # c1 is measured against R0, whose uncertainty shifts every w of the train: the read noise of
    # the read right after SET, or the spread of the die's w where R0 was extrapolated
    r0_rel = (np.asarray(common["r0_stderr"], float) / np.asarray(common["r0"], float))[sub]
    errs["c1"] = np.sqrt(errs["c1"] ** 2 + np.where(np.isfinite(r0_rel), r0_rel, 0.0) ** 2)
    finite = np.all(np.isfinite(np.stack([v for kk, v in values.items()
                                          if not (name == "two_slope" and kk in ("t_star", "m2"))], 1)), 1)
    success &= finite
    # AIC / BIC of the law's ML fit on the common reads, as quasi-likelihood criteria (QAIC):
    # the pink noise is correlated, so -2 log L is divided by kappa (the overdispersion), else a
    # law with more parameters would be rewarded for following the noise's slow wander
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik_term = nn * np.log(np.maximum(f.sse, 1e-300) / nn) / kappa
    aic = loglik_term + 2 * (p + 1)
    bic = loglik_term + (p + 1) * np.log(nn / kappa)
    def full(v, fill=np.nan):
        col = np.full(n, fill, dtype=float)
        col[sub] = v
        return col

    cols = {}
    for q in law.params:
        cols[q] = full(values[q])
        cols[q + "_stderr"] = full(errs[q])
    cols.update(common)
    notes = np.array(r0_note, dtype=object).copy()
    notes[sub] = notes[sub] + note
    for kk, v in extra.items():
        cols[kk] = full(v)
    if name == "two_slope":
        cols["t_star_censored"] = np.zeros(n, bool)  # decided over the campaign by classify_breaks
    cols["sigma"] = full(np.sqrt(sigma2))
    cols["aic"] = full(aic)
    cols["bic"] = full(bic)
    ok_fit = np.zeros(n, bool)
    ok_fit[sub] = success
    newly = (~ok_fit) & (flag == "ok")
    for i in np.nonzero(newly)[0]:
        flag[i] = "failed"
        reason[i] = f"the {name} fit did not converge or gave non-finite parameters"
    cols["success"] = ok_fit
    cols["flag"] = flag.astype(str)
    cols["flag_reason"] = reason.astype(str)
    cols["note"] = [str(x).rstrip("; ") for x in notes]
    return pd.concat([ids, pd.DataFrame(cols, index=ids.index)], axis=1)


def _verify(name, table, t, Yc, W, k):
    """Re-fit ``k`` unflagged rows with lmfit from the vectorised optimum; relative SSE change."""
    law = get_law(name)
    rows = np.nonzero((table["flag"] == "ok").to_numpy())[0]
    if k <= 0 or rows.size == 0:
        return {}
    pick = rows[np.linspace(0, rows.size - 1, min(k, rows.size)).astype(int)]
    out = {}
    for i in pick:
        start = {p: table[p].iat[i] for p in law.params}
        if not all(np.isfinite(v) for v in start.values()):
            continue
        m = W[i] > 0
        try:
            r = _lmfit_refit(name, t, Yc[i], m, start)
        except Exception:  # noqa: BLE001 - verification is advisory
            continue
        ours = float(np.sum((Yc[i][m] - law.func(t[m], **start)) ** 2))
        out[f"{table['device'].iat[i]}/{table['cycle'].iat[i]}"] = (r.chisqr - ours) / max(ours, 1e-300)
    return out


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------


def _as_dies(data):
    if isinstance(data, DieData):
        return [data]
    dies = list(data) if data is not None else []
    if not dies:
        raise FitError("no dies to fit: got an empty list. Pass one DieData or a non-empty list of them.")
    for d in dies:
        if not isinstance(d, DieData):
            raise FitError(f"expected DieData objects, got {type(d).__name__}.")
    return dies


class DriftFitter:
    """Fit a drift law to every cell and cycle, robust to RTN, with standard errors.

    Parameters
    ----------
    law : str, default="two_slope"
        A registered law (:data:`hfox_fit.laws.DRIFT_LAWS`) or ``"auto"``: fit
        them all on the same reads and keep the one with the lowest total AIC.
    options : DriftOptions, optional

    Attributes
    ----------
    per_cell_ : DataFrame
        One row per (cell, cycle) for the chosen law: ``wafer, die, device, cycle``,
        the law's parameters and ``<name>_stderr``, ``r0``, ``r0_stderr`` (Ohm),
        ``flag``, ``flag_reason``, ``success``, ``note``, ``aic``, ``bic``, RTN columns
        (``n_rtn_corrected``: high reads fitted with their telegraph excess removed;
        ``r0_rtn_high``: probability that the read right after SET was RTN-high).
    per_law_ : dict of str to DataFrame
    scores_ : dict
        Per law, total ``aic`` and ``bic`` over the trains all laws fitted.
    law_ : str
    die_results_ : list of DieDriftResult
    spectrum_stats_, rtn_stats_ : list
        Per-die noise statistics for :class:`~hfox_fit.fitting.NoiseFitter`.

    Examples
    --------
    >>> from hfox_fit.synth import make_wafer
    >>> wafer = make_wafer("paper", devices=64, pulses=300, seed=0)
    >>> fit = DriftFitter(law="two_slope").fit(wafer.dies)
    >>> sorted(fit.per_cell_.columns[:6])
    ['cycle', 'device', 'die', 'm1', 'm1_stderr', 'wafer']
    """

    def __init__(self, law: str = "two_slope", options: DriftOptions | None = None):
        self.law = law
        self.options = options

    def _laws(self):
        law = check_law(self.law, allow_auto=True)
        if law == "auto":
            return ("two_slope", "power", "log")
        return (law,)

    def fit(self, data):
        """Fit one DieData or a list of them; returns self."""
        laws = self._laws()
        dies = _as_dies(data)
        results = [fit_drift_die(d, laws, self.options) for d in dies]
        return self._from_results(results, laws)

    def _from_results(self, results, laws):
        self.die_results_ = results
        self.per_law_ = {name: pd.concat([r.tables[name] for r in results], ignore_index=True) for name in laws}
        self.scores_ = score_laws(self.per_law_)
        self.law_ = choose_law(self.scores_) if len(laws) > 1 else laws[0]
        if self.law_ == "two_slope":
            self.per_law_["two_slope"] = classify_breaks(self.per_law_["two_slope"])
        self.per_cell_ = self.per_law_[self.law_]
        self.spectrum_stats_ = [r.spectrum for r in results]
        self.rtn_stats_ = [r.rtn for r in results]
        return self

    def refine(self, die: DieData, device, cycle=None, law: str | None = None):
        """Re-fit one train with lmfit, on the reads the vectorised fit used, from its optimum.

        Parameters
        ----------
        die : DieData
            The die, one of those passed to :meth:`fit`.
        device : str
        cycle : int, optional
            Default: the die's first cycle.
        law : str, optional
            Default: the chosen law.

        Returns
        -------
        lmfit.model.ModelResult
            Its ``chisqr`` should not be below the vectorised fit's (a check of the optimum).
        """
        if not hasattr(self, "per_cell_"):
            raise NotFittedError("This DriftFitter instance is not fitted yet. Call 'fit' before 'refine'.")
        law = check_law(law or self.law_)
        res = next((r for r in self.die_results_ if (r.wafer, r.die) == (str(die.wafer), str(die.die))), None)
        if res is None or law not in res.tables:
            raise FitError(f"die {die.wafer}/{die.die} (law {law!r}) was not fitted by this DriftFitter.")
        devices = list(np.asarray(die.devices, dtype=str))
        if str(device) not in devices:
            raise FitError(f"die {die.wafer}/{die.die} has no device {device!r}.")
        cycles = list(np.asarray(die.cycles))
        c = cycles[0] if cycle is None else cycle
        if c not in cycles:
            raise FitError(f"die {die.wafer}/{die.die} has no cycle {c!r}; it has {cycles}.")
        i = devices.index(str(device)) * len(cycles) + cycles.index(c)
        w = res.fitted_w(die, i, law)
        t = np.arange(1, len(w) + 1, dtype=float)
        mask = np.isfinite(w)
        start = {p: res.tables[law][p].iat[i] for p in get_law(law).params}
        return _lmfit_refit(law, t, np.where(mask, w, 0.0), mask, start)


def steepest_post_break_slope(table: pd.DataFrame) -> tuple[float, int]:
    """The steepest post-break slope of a campaign, and how many trains it comes from.

    The 99th percentile of ``m2`` over the unflagged trains with a break whose
    ``m2_stderr`` is at most the median (the maximum with fewer than 5 such
    trains; ``-inf`` with none: every train breaks, if ever, after its reads).
    """
    ok = table["flag"].eq("ok").to_numpy()
    has_break = np.isfinite(table["t_star"].to_numpy(float))
    m2 = table["m2"].to_numpy(float)
    m2_se = table["m2_stderr"].to_numpy(float)
    pool = ok & has_break & np.isfinite(m2) & np.isfinite(m2_se)
    n_pool = int(pool.sum())
    if n_pool >= 5:
        precise = pool & (m2_se <= np.median(m2_se[pool]))
        return float(np.percentile(m2[precise], 99)), n_pool
    if n_pool:
        return float(np.max(m2[pool])), n_pool
    return -np.inf, 0


def classify_breaks(table: pd.DataFrame) -> pd.DataFrame:
    """Decide, over a campaign, what a two-slope train without a significant break says about t_star.

    A train whose straight-line slope is clearly steeper than the post-break
    slopes seen on the campaign (``m1 - 2 m1_stderr`` above the 99th percentile
    of the precise ``m2`` of trains with a break) must break after its last
    fitted pulse: ``t_star`` is right-censored (``t_star_censored = True``,
    ``t_star_hi = inf``) at ``t_star_lo = last_pulse`` minus the distance to the
    last read within which breaks are rarely detected (5th percentile over the
    trains with a break) and ``m1``, ``c1`` are the
    line's. For the others (slope in
    the range of ``m2``: ``m1`` close to ``m2``, or a short, small first
    segment) ``t_star`` is undetermined (``t_star_lo``, ``t_star_hi`` NaN).
    Returns a new table.
    """
    table = table.copy()
    if "t_star" not in table or "m1_line" not in table:
        return table
    ok = table["flag"].eq("ok").to_numpy()
    has_break = np.isfinite(table["t_star"].to_numpy())
    m2_hi, _ = steepest_post_break_slope(table)
    line = table["m1_line"].to_numpy()
    line_se = table["m1_line_stderr"].to_numpy()
    nob = ~has_break & np.isfinite(line)
    with np.errstate(invalid="ignore"):
        cens = nob & (line - 2 * np.nan_to_num(line_se, nan=np.inf) > m2_hi)
    undetermined = nob & ~cens
    table["t_star_censored"] = cens
    lo = table["t_star_lo"].to_numpy(float).copy()
    hi = table["t_star_hi"].to_numpy(float).copy()
    last = table["last_pulse"].to_numpy(float)
    lo[cens], hi[cens] = np.maximum(last[cens] - _late_margin(table), 1.0), np.inf
    lo[undetermined], hi[undetermined] = np.nan, np.nan
    table["t_star_lo"], table["t_star_hi"] = lo, hi
    for col in ("m1", "c1"):
        table.loc[cens, col] = table.loc[cens, col + "_line"]
        table.loc[cens, col + "_stderr"] = table.loc[cens, col + "_line_stderr"]
    note = table["note"].to_numpy().astype(object)
    for i in np.nonzero(cens & ok)[0]:
        note[i] = _join(note[i], f"t_star > {lo[i]:.0f} (right-censored near the last fitted pulse: the line "
                                 "is steeper than any post-break slope)")
    for i in np.nonzero(undetermined & ok)[0]:
        note[i] = _join(note[i], "t_star undetermined (slope within the range of post-break slopes)")
    table["note"] = note.astype(str)
    return table


def _late_margin(table) -> float:
    """Distance (pulses) before the last read within which breaks are rarely found.

    The 5th percentile of ``last_pulse - t_star`` over the unflagged trains with a
    break (0 with fewer than 20 of them): a break closer to the end leaves too
    few reads after it to be seen.
    """
    ok = table["flag"].eq("ok").to_numpy()
    gap = (table["last_pulse"].to_numpy(float) - table["t_star"].to_numpy(float))[ok]
    gap = gap[np.isfinite(gap)]
    return float(np.percentile(gap, 5)) if gap.size >= 20 else 0.0


def censor_late_breaks(table: pd.DataFrame) -> pd.DataFrame:
    """The table for the D2D fit of ``t_star``: every break is censored at the same point as a missing one.

    A train is right-censored at ``c = last_pulse - margin`` (:func:`_late_margin`)
    whether its break was seen there or not, so that the censoring does not
    depend on whether a late break happened to be detected (a detected break at
    or after ``c`` becomes "t_star > c"). Returns a new table.
    """
    table = table.copy()
    if "t_star" not in table or "t_star_lo" not in table:
        return table
    c = np.maximum(table["last_pulse"].to_numpy(float) - _late_margin(table), 1.0)
    late = np.isfinite(table["t_star"].to_numpy(float)) & (table["t_star"].to_numpy(float) >= c)
    table.loc[late, "t_star"] = np.nan
    table.loc[late, "t_star_stderr"] = np.nan
    table.loc[late, "t_star_lo"] = c[late]
    table.loc[late, "t_star_hi"] = np.inf
    return table


def _join(a, b):
    a = "" if a is None else str(a)
    return f"{a}; {b}" if a else b


def score_laws(per_law: dict) -> dict:
    """Total AIC and BIC per law over the unflagged trains that every law fitted."""
    names = list(per_law)
    good = None
    for name in names:
        df = per_law[name]
        g = (df["flag"] == "ok").to_numpy() & np.isfinite(df["aic"].to_numpy())
        good = g if good is None else good & g
    scores = {}
    for name in names:
        df = per_law[name]
        scores[name] = {
            "aic": float(df["aic"].to_numpy()[good].sum()),
            "bic": float(df["bic"].to_numpy()[good].sum()),
            "n_trains": int(good.sum()),
        }
    return scores


def choose_law(scores: dict) -> str:
    """The law with the lowest total AIC (ties: the lower BIC)."""
    if not scores:
        raise FitError("no law was scored.")
    return min(scores, key=lambda k: (scores[k]["aic"], scores[k]["bic"]))


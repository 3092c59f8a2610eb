r"""Drift-law fits of every cell and cycle, vectorised across cells, robust to RTN.

Pipeline for one die (:func:`fit_drift_die`, a pure function of one
:class:`~hfox_fit.schema.DieData`):

1. ``w = ln(R / R0)`` with ``R0`` the read right after SET (pulse 0); when that
   read failed, ``R0`` is extrapolated from the first valid read and the die's
   median ``w`` there.
2. Broken trains are flagged (:mod:`hfox_fit.fitting.flags`).
3. Robust fit: the law is fitted to all reads; a two-state HMM of RTN runs on
   blocks of the residuals (:func:`hfox_fit.fitting.noise.rtn_em`; it mostly
   reads the read-to-read variance, which the drift does not touch) and every
   block it finds high is masked with its neighbours, as are reads far from the
   fit (RTN excursions above, glitches below); ``robust_rounds`` such rounds.
   So telegraph jumps do not drag the drift (a plain least-squares fit does).
4. The residual spectrum of the die gives the pink and read noise; the pink
   term's non-zero mean (:meth:`hfox_fit.model.PinkNoise.offset`) is taken out
   of ``w`` so that ``c1`` is the law's own intercept, as in the model.
5. Each requested law is fitted on the same reads (so AIC/BIC compare) with
   the vectorised separable solver (:mod:`hfox_fit.fitting._separable`). The
   per-train AIC and BIC are quasi-likelihood criteria: ``-2 log L`` is divided
   by ``kappa`` (below), the overdispersion of the correlated noise.

Standard errors come from the Jacobian at the optimum with the residual
variance, multiplied by ``kappa = (sum of the noise autocovariance) / variance``
from the fitted pink + white noise model: the pink noise is correlated over
~15 pulses, so a slope sees ``n / kappa`` effective reads (the long-run
variance, i.e. a HAC sandwich for smooth regressors).

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


def _fit_law(name, t, scale, y, w, t_lo, t_hi, buffers=None) -> _LawFit:
    """Fit law ``name`` to every row (weights ``w`` 0/1) and return internal coefficients."""
    law = sep.SEPARABLE_LAWS[name]
    lo, hi = law.theta_range(t_lo, t_hi, scale)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    bad = ~(hi > lo)
    lo = np.where(bad, (lo + hi) / 2, lo)
    hi = np.where(bad, lo * (1 + 1e-9) + 1e-12, hi)
    n = y.shape[0]
    if name == "two_slope":
        prof = sep.TwoSlopeProfile(t, scale, y, w, buffers)
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

    def mask(self) -> np.ndarray:
        """The reads each row's fit used, bool (N, n_pulses - 1)."""
        t = self.n_pulses - 1
        return np.unpackbits(self.mask_bits, axis=1, count=t).astype(bool)


def _robust_scale(resid, mask):
    """Per-row noise scale from the residuals below zero (RTN only adds positive ones)."""
    neg = mask & (resid < 0)
    cnt = neg.sum(1)
    s = np.sqrt(np.where(neg, resid**2, 0.0).sum(1) / np.maximum(cnt, 1))
    s[cnt < 3] = np.nan
    return s


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
            table.loc[table.index[i], p + "_stderr"] = se * np.sqrt(kappa) if se is not None else np.nan
        table.loc[table.index[i], ["flag", "flag_reason", "success"]] = ["ok", "", True]
        table.loc[table.index[i], "note"] = _join(table["note"].iat[i], "fitted by lmfit (the vectorised fit "
                                                                        "did not converge)")


def fit_drift_die(die: DieData, laws=("two_slope",), options: DriftOptions | None = None) -> DieDriftResult:
    """Fit the drift laws ``laws`` to every (cell, cycle) of one die (see module doc).

    Parameters
    ----------
    die : DieData
    laws : sequence of str
        Laws to fit on the same reads; the first one drives the robust masking.
    options : DriftOptions, optional

    Returns
    -------
    DieDriftResult
    """
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
    with np.errstate(divide="ignore", invalid="ignore"):
        lny = np.where(res > 0, np.log(res), np.nan)
    valid = np.isfinite(lny)
    messages = []
    flag, reason, cut, _ = detect_flags(lny, valid, options.flags)
    if P < 2:
        t = np.zeros(0)
    t = np.arange(1, P, dtype=float)
    T = len(t)
    scale = float(max(T, 1))
    # R0 and w
    lnr0 = lny[:, 0].copy()
    r0_from_read = np.isfinite(lnr0)
    vmask = valid[:, 1:] & (np.arange(1, P)[None, :] < cut[:, None])
    need = ~r0_from_read & vmask.any(1)
    r0_spread = np.full(n, np.nan)
    if need.any():
        wref = np.where(vmask & r0_from_read[:, None], lny[:, 1:] - lnr0[:, None], np.nan).T
        med_w = nanquantile_rows(wref, 0.5)
        mad_w = nanquantile_rows(np.abs(wref - med_w[:, None]), 0.5)
        for i in np.nonzero(need)[0]:
            j = int(np.argmax(vmask[i]))
            if np.isfinite(med_w[j]):
                lnr0[i] = lny[i, j + 1] - med_w[j]
                r0_spread[i] = 1.4826 * mad_w[j]
    w_all = lny[:, 1:] - lnr0[:, None]
    no_r0 = ~np.isfinite(lnr0)
    for i in np.nonzero(no_r0 & (flag == "ok"))[0]:
        flag[i] = "failed"
        reason[i] = "no read right after SET and none to extrapolate R0 from"
    usable = vmask & np.isfinite(w_all)
    fitrows = np.nonzero(flag != "failed")[0]
    ok = flag == "ok"
    if T < 2 * options.flags.min_reads // 2 or fitrows.size == 0:
        tables = {name: _empty_table(name, ids, flag, reason, lnr0) for name in laws}
        return DieDriftResult(str(die.wafer), str(die.die), tables,
                              segment_periodograms(np.zeros((0, max(T, 1))), np.zeros((0, max(T, 1)), bool)),
                              None, {}, np.zeros((0, T)), P, n_cells, messages=messages)
    Y = np.where(usable, w_all, 0.0)
    first_t = np.where(usable.any(1), t[np.argmax(usable, axis=1)], 1.0)
    last_t = np.where(usable.any(1), t[T - 1 - np.argmax(usable[:, ::-1], axis=1)], float(T))
    mask = usable.copy()
    main = laws[0]
    # rows to fit: a slice when they are all of them (fancy indexing would copy every array)
    sub = slice(None) if fitrows.size == n else fitrows
    rmask = usable & ok[:, None]
    rounds = max(options.robust_rounds, 1) if options.robust else 1
    buffers = {}
    rtn = None
    for rnd in range(rounds):
        f = _fit_law(main, t, scale, Y[sub], mask[sub].astype(float), first_t[sub], last_t[sub], buffers)
        if isinstance(sub, slice):
            resid = w_all - _evaluate(main, t, scale, f)
        else:
            resid = np.full((n, T), np.nan)
            resid[sub] = w_all[sub] - _evaluate(main, t, scale, f)
        if rnd >= 1 or rounds == 1:
            # RTN from the second round on (the first fit may still be dragged by it)
            m_b, lv_b = block_stats(np.where(rmask, resid, np.nan), rmask, options.rtn_block)
            rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
            high = rtn.read_mask(T) & ok[:, None]
        else:
            high = np.zeros_like(usable)
        if not options.robust:
            break
        s_row = _robust_scale(resid, mask)
        with np.errstate(invalid="ignore"):
            out = (resid > options.clip_high * s_row[:, None]) | (resid < -options.clip_low * s_row[:, None])
        new_mask = usable & ~out & ~high
        # never mask a row below the minimum: fall back to its valid reads
        thin = new_mask.sum(1) < options.flags.min_reads
        new_mask[thin] = usable[thin]
        mask = new_mask
    # noise of this die
    spec_usable = usable & ~high & ok[:, None]
    spectrum = segment_periodograms(np.where(spec_usable, resid, np.nan), spec_usable)
    pink_info = {}
    offset = np.zeros(T)
    kappa = 1.0
    white = np.nan
    if spectrum.length and spectrum.count.sum() >= 4:
        try:
            ps = fit_pink_spectrum(spectrum, bootstrap=0)
            pn = ps.pink
            offset = pn.offset(t.astype(int))
            kappa = ps.long_run_ratio
            white = ps.white_std
            pink_info = {"std": ps.std, "exponent": ps.exponent, "white_std": ps.white_std, "kappa": kappa,
                         "alpha": pn.alpha, "segments": ps.n_segments}
        except FitError as err:  # pragma: no cover - guarded by the count check
            messages.append(str(err))
    else:
        messages.append(
            f"die {die.wafer}/{die.die}: too few complete residual segments for a noise fit; "
            "standard errors assume uncorrelated noise (kappa = 1) and c1 keeps the pink offset."
        )
    Yc = np.where(usable, w_all - offset[None, :], 0.0)
    W = mask.astype(float)
    # traces for validation plots
    ok_rows = np.nonzero(ok)[0]
    step = max(len(ok_rows) // max(options.max_traces, 1), 1)
    traces = np.where(usable, w_all, np.nan)[ok_rows[::step][: options.max_traces]]
    # final fits on the final reads; the main law's residuals give the reported RTN (amplitudes and
    # states from a drift no longer dragged by the telegraph reads)
    fits = {name: _fit_law(name, t, scale, Yc[sub], W[sub], first_t[sub], last_t[sub], buffers) for name in laws}
    if options.final_rtn:
        resid_main = np.full((n, T), np.nan)
        resid_main[sub] = w_all[sub] - offset[None, :] - _evaluate(main, t, scale, fits[main])
        m_b, lv_b = block_stats(np.where(rmask, resid_main, np.nan), rmask, options.rtn_block)
        rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
    common = {
        "r0": np.exp(lnr0),
        "r0_stderr": np.where(r0_from_read, np.exp(lnr0) * white, np.exp(lnr0) * r0_spread),
        "n_reads": mask.sum(1),
        "last_pulse": np.where(mask.any(1), T - np.argmax(mask[:, ::-1], axis=1), 0),
        "n_masked": (usable & ~mask).sum(1),
        "rtn": rtn.shows & ok,
        "rtn_amplitude": np.where(ok, rtn.amplitude, np.nan),
        "rtn_amplitude_stderr": np.where(ok, rtn.extra.get("amplitude_stderr", np.full(n, np.nan)), np.nan),
    }
    r0_note = np.where(r0_from_read, "", "R0 extrapolated from the first valid read (pulse-0 read failed); ")
    if not np.isfinite(white):
        common["r0_stderr"] = np.where(r0_from_read, np.nan, common["r0_stderr"])
        r0_note = np.where(r0_from_read, "r0_stderr unknown: the read noise was not resolved; ", r0_note)
    tables = {}
    verify = {}
    for name in laws:
        f = fits[name]
        resid_f = np.where(W[sub] > 0, Yc[sub] - _evaluate(name, t, scale, f), 0.0)
        tables[name] = _law_table(name, f, sub, ids, flag.copy(), reason.copy(), common, r0_note, t, scale,
                                  W, kappa, options, white, _long_run_variance(resid_f, W[sub]))
        _lmfit_fallback(name, tables[name], flag, t, Yc, W, kappa)
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
    return DieDriftResult(str(die.wafer), str(die.die), tables, spectrum, rtn, pink_info, traces, P, n_cells,
                          verify=verify, messages=messages, mask_bits=np.packbits(mask, axis=1), offset=offset)


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
    nn = W[sub].sum(1)
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
        lw = W[sub]
        n_after = np.einsum("nt,nt->n", lw, (t[None, :] > f.theta[:, None] * scale).astype(float))
        min_side = np.maximum(options.min_segment, 0.01 * nn)
        no_break = ~(signif > thr) | (n_after < min_side) | (nn - n_after < min_side)
        open_hi = no_break | (hi_i >= within.shape[1] - 1)
        t_hi = np.where(open_hi, np.inf, t_hi)
        t_lo = np.where(no_break & (lo_i == 0), gt[:, 0], t_lo)
        # line fallback for m1, c1
        s0 = lw.sum(1)
        tau = t / scale
        s1 = lw @ tau
        s2 = lw @ tau**2
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
        use_line = no_break & ~(signif >= options.m1_threshold)
        values["m1"] = np.where(use_line, line_beta[:, 1] / scale, values["m1"])
        # ... and its uncertainty includes an early break the data cannot rule out (99 % profile,
        # first segment of at least 4 % of the train): half the spread of m1 over those breaks
        last_fit = np.max(np.where(lw > 0, t[None, :], 0.0), axis=1)
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
        errs["c1"] = np.where(use_line, np.sqrt(var_b0), errs["c1"])
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
    # c1 is measured against the read right after SET, whose read noise shifts every w of the train
    if np.isfinite(white):
        errs["c1"] = np.sqrt(errs["c1"] ** 2 + white**2)
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
    df = ids.copy()
    for q in law.params:
        col = np.full(n, np.nan)
        col[sub] = values[q]
        df[q] = col
        col = np.full(n, np.nan)
        col[sub] = errs[q]
        df[q + "_stderr"] = col
    for kk, v in common.items():
        df[kk] = v
    notes = np.array(r0_note, dtype=object).copy()
    notes[sub] = notes[sub] + note
    for kk, v in extra.items():
        col = np.full(n, np.nan)
        col[sub] = v
        df[kk] = col
    if name == "two_slope":
        df["t_star_censored"] = False  # decided over the campaign by classify_breaks
    full_sse = np.full(n, np.nan)
    full_sse[sub] = f.sse
    df["sigma"] = np.nan
    df.loc[df.index[sub], "sigma"] = np.sqrt(sigma2)
    df["aic"] = np.nan
    df["bic"] = np.nan
    df.loc[df.index[sub], "aic"] = aic
    df.loc[df.index[sub], "bic"] = bic
    ok_fit = np.zeros(n, bool)
    ok_fit[sub] = success
    newly = (~ok_fit) & (flag == "ok")
    for i in np.nonzero(newly)[0]:
        flag[i] = "failed"
        reason[i] = f"the {name} fit did not converge or gave non-finite parameters"
    df["success"] = ok_fit
    df["flag"] = flag.astype(str)
    df["flag_reason"] = reason.astype(str)
    df["note"] = [s.rstrip("; ") for s in notes]
    return df


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
        ``flag``, ``flag_reason``, ``success``, ``note``, ``aic``, ``bic``, RTN columns.
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
        r = np.asarray(die.resistance, float)[devices.index(str(device)), cycles.index(c)]
        lnr0 = np.log(res.tables[law]["r0"].iat[i])
        t = np.arange(1, len(r), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.log(r[1:]) - lnr0 - res.offset
        mask = res.mask()[i] & np.isfinite(w)
        start = {p: res.tables[law][p].iat[i] for p in get_law(law).params}
        return _lmfit_refit(law, t, np.where(mask, w, 0.0), mask, start)


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
    m2 = table["m2"].to_numpy()
    m2_se = table["m2_stderr"].to_numpy()
    pool = ok & has_break & np.isfinite(m2) & np.isfinite(m2_se)
    if pool.sum() >= 5:
        precise = pool & (m2_se <= np.median(m2_se[pool]))
        m2_hi = float(np.percentile(m2[precise], 99))
    elif pool.any():
        m2_hi = float(np.max(m2[pool]))
    else:
        m2_hi = -np.inf  # no break anywhere: every train breaks (if ever) after its reads
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


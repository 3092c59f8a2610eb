"""The per-die drift result: one table per law (parameters, standard errors, break significance, AIC/BIC).

:func:`_law_table` turns a vectorised fit (:class:`~hfox_fit.fitting._lawfit._LawFit`)
into the per-(cell, cycle) table of :class:`DieDriftResult`: standard errors in
the die's noise model (``kappa``, or a train's own long-run variance), for a
law with a break the break's significance and the straight-line fallback, the
quasi-likelihood AIC/BIC, and how well the reported law follows the reads
(:func:`goodness_of_fit`).

Goodness of fit
---------------
Each fitted train gets, for the law *as reported* (a two-slope train without a
reported break is the straight line ``c1 + m1 t``; see :meth:`DriftLaw.fill_no_break`),
on the reads its fit used:

* ``resid_std``: the robust standard deviation (interquartile range / 1.349)
  of the residuals ``w - law(t)``, the spread of the reads around the law;
* ``misfit``: the mean square of the residual's block means (blocks of
  ``min(32, T // 8)`` pulses, at least 4), in units of what the noise alone
  gives: the train's read-to-read variance times the die's ratio of the two
  (the median over its unflagged trains, so the pink noise's correlation is
  calibrated on the die itself). About 1 when the law follows the reads; it
  grows with the square of a systematic departure (a departure of ``d`` in
  ``w`` over blocks of ``B`` reads adds about ``B d^2 / (ratio * var)``). A
  smooth departure does not touch the read-to-read changes, so it cannot hide
  in its own noise scale; telegraph scatter does raise them (such trains are
  judged more leniently);
* ``fit_r2``: ``1 - sum(block mean residual^2) / sum((block mean of w - its
  mean)^2)``: the share of the train's slow change of ``w`` the law explains
  (1: all of it; 0 or less: the law does no better than a constant ``w``);
* ``max_gap``: the block mean residual of largest size (``w`` minus the law,
  signed), where the law is farthest from the reads.

A train is flagged ``poor_fit`` when both ``misfit`` and ``fit_r2`` say so
(:func:`hfox_fit.fitting.flags.flag_poor_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..exceptions import FitError
from ..laws import get_law
from ..schema import DieData
from . import _separable as sep
from ._lawfit import _evaluate, _LawFit
from .noise import SpectrumStats

__all__ = ["DieDriftResult", "ERROR_CORRELATION_PAIRS", "GOF_COLUMNS", "LINE_ERROR_CORRELATION",
           "error_correlation_column", "goodness_of_fit", "r0_error_correlation"]

#: The goodness-of-fit columns of the per-train table (see the module doc).
GOF_COLUMNS = ("resid_std", "misfit", "fit_r2", "max_gap")
#: Longest block (pulses) of the goodness of fit, fewest blocks, shortest block.
_GOF_BLOCK, _GOF_MIN_BLOCKS, _GOF_SHORTEST = 32, 8, 4


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
        if self.mask_bits is None:
            raise FitError(f"die {self.wafer}/{self.die}: this result keeps only what pooling needs (a campaign "
                           "fit's); fit the die with DriftFitter to re-fit one of its trains.")
        t = self.n_pulses - 1
        return np.unpackbits(self.mask_bits, axis=1, count=t).astype(bool)


def _long_run_from_blocks(r, c, block: int):
    """Per-row long-run variance from block sums ``r`` of the residual and read counts ``c`` (NaN with < 4 blocks)."""
    n, nb = r.shape
    if nb < 4:
        return np.full(n, np.nan)
    full = c >= block / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lrv = np.where(full, r * r / np.where(full, c, 1.0), 0.0).sum(axis=1) / full.sum(axis=1)
    return np.where(full.sum(axis=1) >= 4, lrv, np.nan)


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
    for col in ("n_reads", "last_pulse", "n_masked", "rtn_amplitude", "rtn_amplitude_stderr", "sigma", "aic", "bic",
                *GOF_COLUMNS):
        df[col] = np.nan
    df["rtn"] = False
    if law.has_break:
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


def goodness_of_fit(y, mask, curve, ref_rows=None, ratio: float | None = None):
    """How well ``curve`` follows the reads ``y`` of each row (see the module doc).

    Parameters
    ----------
    y : ndarray of shape (N, T)
        ``w`` at pulses 1..T (any value where ``mask`` is False).
    mask : ndarray of bool, shape (N, T)
        The reads to judge (those the fit used).
    curve : ndarray of shape (N, T)
        The law's ``w`` at the same pulses.
    ref_rows : ndarray of bool, shape (N,), optional
        Rows that calibrate the die's ratio of block-mean to read-to-read
        variance (its median over them; default all rows).
    ratio : float, optional
        That ratio, when already known (the same die, another curve).

    Returns
    -------
    dict of ndarray of shape (N,)
        :data:`GOF_COLUMNS` (NaN where a row has fewer than 4 full blocks, or no
        reference rows calibrate the ratio).
    ratio : float
        The die's ratio (at least 1: white noise).
    """
    n, T = y.shape
    out = {c: np.full(n, np.nan) for c in GOF_COLUMNS}
    if n == 0 or T < 2:
        return out, ratio if ratio is not None else float("nan")
    with np.errstate(invalid="ignore"):
        r = np.where(mask, y - curve, np.nan)
    out["resid_std"] = _robust_std_rows(r)
    block = max(min(_GOF_BLOCK, T // _GOF_MIN_BLOCKS), _GOF_SHORTEST)
    nb = T // block
    d = np.diff(r, axis=1)
    dok = np.isfinite(d)
    n_d = dok.sum(1)
    var_d = np.where(dok, d * d, 0.0).sum(1) / np.maximum(2 * n_d, 1)  # read-to-read variance
    m = mask[:, : nb * block].reshape(n, nb, block)
    cnt = m.sum(2)
    full = cnt >= block / 2
    n_full = full.sum(1)
    r_sum = np.where(mask, r, 0.0)[:, : nb * block].reshape(n, nb, block).sum(2)
    y_sum = np.where(mask, y, 0.0)[:, : nb * block].reshape(n, nb, block).sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_mean = np.where(full, r_sum / np.maximum(cnt, 1), 0.0)
        y_mean = np.where(full, y_sum / np.maximum(cnt, 1), 0.0)
        raw = (r_mean * r_mean * cnt).sum(1) / n_full / var_d
        centre = y_mean.sum(1) / n_full
        sst = np.where(full, (y_mean - centre[:, None]) ** 2, 0.0).sum(1)
        r2 = 1.0 - (r_mean * r_mean).sum(1) / sst
    usable = (n_full >= 4) & (var_d > 0) & np.isfinite(raw)
    if ratio is None:
        ref = usable & (np.ones(n, bool) if ref_rows is None else np.asarray(ref_rows, bool))
        ratio = max(float(np.median(raw[ref])), 1.0) if ref.any() else float("nan")
    out["misfit"] = np.where(usable, raw / ratio, np.nan)
    out["fit_r2"] = np.where(usable & (sst > 0), r2, np.nan)
    far = np.argmax(np.abs(r_mean), axis=1)
    out["max_gap"] = np.where(usable, r_mean[np.arange(n), far], np.nan)
    return out, ratio


def _robust_std_rows(x):
    """Robust standard deviation of each row of ``x`` ignoring NaN: interquartile range / 1.349 (one sort)."""
    s = np.sort(x.astype(np.float32), axis=1)  # NaN last; float32: a spread to 3 digits, half the sort
    k = np.isfinite(x).sum(axis=1)
    rows = np.arange(x.shape[0])
    q = []
    for level in (0.25, 0.75):
        pos = level * np.maximum(k - 1, 0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
        q.append(s[rows, lo] * (1 - (pos - lo)) + s[rows, hi] * (pos - lo))
    return np.where(k >= 4, (q[1] - q[0]).astype(float) / 1.349, np.nan)


def _law_curve(law, t, values: dict):
    """The law's ``w`` (rows, T) for the reported parameters (no break where ``t_star`` is NaN)."""
    params = {q: np.asarray(values[q], float) for q in law.params}
    if law.has_break:
        params = law.fill_no_break(params)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return law(t[None, :], **{q: v[:, None] for q, v in params.items()})


def _region_stderr(value, lo, hi):
    """Stderr-equivalent of a parameter that may lie anywhere in ``[lo, hi]`` (its values over a 90 % region).

    Half the range over 1.645, and at least the distance from ``value`` to the far end over 1.645 (the
    reported value may sit near one end of the region); 0 where unknown.
    """
    with np.errstate(invalid="ignore"):
        out = np.fmax((hi - lo) / (2 * 1.645), np.fmax(hi - value, value - lo) / 1.645)
    return np.where(np.isfinite(lo) & np.isfinite(hi) & np.isfinite(out), out, 0.0)


#: Pairs of a law's parameters whose per-train error correlation the table carries
#: (:func:`error_correlation_column`): the D2D step's copula of the pair takes it out (fitting.correlation).
#: (Not m1 and m2: under the noise model their errors are uncorrelated, to 1e-14.)
ERROR_CORRELATION_PAIRS = (("t_star", "m2"), ("m1", "c1"))


#: The straight line's correlation of the errors of m1 and c1 (classify_breaks reports the line's m1 and c1
#: of a train whose break it finds censored, and this with them).
LINE_ERROR_CORRELATION = "m1_c1_line_err_corr"


def error_correlation_column(a: str, b: str) -> str:
    """The per-train table's column of the correlation of the fit errors of ``a`` and ``b``."""
    return f"{a}_{b}_err_corr"


def r0_error_correlation(table: pd.DataFrame) -> np.ndarray:
    """Per row, the correlation of the errors of ``c1`` and ``r0``: ``-(r0_stderr / r0) / c1_stderr``.

    ``c1`` is measured on ``w = ln(R / R0)``, so an error ``e`` of R0 moves it by ``-e / R0`` (its stderr
    holds that part); NaN where a column is missing or not finite.
    """
    if not {"c1_stderr", "r0", "r0_stderr"} <= set(table.columns):
        return np.full(len(table), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = -(table["r0_stderr"].to_numpy(float) / table["r0"].to_numpy(float)) / table["c1_stderr"].to_numpy(float)
    return np.where(np.isfinite(r), np.clip(r, -1.0, 0.0), np.nan)


def _error_correlations(law, cov) -> dict:
    """Per train, the correlation of the fit errors of each pair of :data:`ERROR_CORRELATION_PAIRS`.

    From the fit's covariance under the noise model: a later break asks for a steeper slope after
    it on the reads left, so the errors of ``t_star`` and ``m2`` go together on each train (and
    their copula picks that up where the trains' errors are large against the spread of the cells);
    a steeper first slope asks for a lower start, so those of ``m1`` and ``c1`` go against each other
    (about -0.8).
    """
    names = list(law.params)
    out = {}
    for a, b in ERROR_CORRELATION_PAIRS:
        if a in names and b in names:
            i, j = names.index(a), names.index(b)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = cov[:, i, j] / np.sqrt(cov[:, i, i] * cov[:, j, j])
            out[a, b] = np.clip(r, -1.0, 1.0)
    return out


def _block_sandwich_var(g, bread, gjac):
    """Variances of the law's parameters from a sandwich of block score sums ``g`` (Newey-West over blocks).

    Lag-1 blocks at weight 1/2, scaled by ``nb / (nb - 4)``. Under the noise model alone it runs below the
    model's variance (the fitted residuals lose the slow part of the pink noise), so it only counts where
    a train's residuals carry more than the model (taken as the larger of the two).
    """
    nb = g.shape[1]
    gt = np.swapaxes(g, 1, 2)
    meat = gt @ g
    cross = gt[:, :, 1:] @ g[:, :-1]
    meat += 0.5 * (cross + np.swapaxes(cross, 1, 2))
    meat *= nb / max(nb - 4, 1)
    cov = bread @ meat @ bread
    return np.einsum("npp->np", gjac @ cov @ np.swapaxes(gjac, 1, 2))


def _law_table(name, f: _LawFit, sub, ids, flag, reason, common, r0_note, t, scale, W, kappa, options,
               white=np.nan, y=None):
    """The per-train table of law ``name`` from its fit ``f`` on ``y`` (w on the fitted reads ``W``)."""
    law = get_law(name)
    slaw = sep.SEPARABLE_LAWS[name]
    n = len(ids)
    p = len(law.params)
    prof = f.profile
    y_sub = y[sub]
    # the train's own long-run variance of the residual (block sums), for the standard errors below
    if law.has_break:
        scores, counts = prof.block_scores(f.beta, f.theta, 32)
        lrv = _long_run_from_blocks(scores[..., 0], counts, 32)
    else:
        lrv = _long_run_variance(np.where(W[sub], y_sub - _evaluate(name, t, scale, f), 0.0), W[sub])
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
    bread = cov_int
    cov_int = cov_int * unit[:, None, None]
    cov = gjac @ cov_int @ np.swapaxes(gjac, 1, 2)
    var = np.einsum("npp->np", cov)
    err_corr = _error_correlations(law, cov)
    if law.has_break:
        # ... and at least a sandwich of the train's own residuals: a disturbance the noise model does not
        # know (telegraph left-overs next to masked reads) weighs by the leverage of the reads it sits on
        # (a variance the model cannot give, NaN, stays unknown)
        var = np.where(np.isnan(var), var, np.fmax(var, _block_sandwich_var(scores, bread, gjac)))
    stderr = np.sqrt(np.where(var >= 0, var, np.nan))
    m_rows = len(f.sse)
    note = np.full(m_rows, "", dtype=object)
    success = f.converged & np.isfinite(f.sse) & np.all(np.isfinite(f.beta), axis=1)
    values = {q: np.asarray(params[q], float).copy() for q in law.params}
    errs = {q: stderr[:, j].copy() for j, q in enumerate(law.params)}
    theta_name = law.theta
    extra = {}
    # c1 is measured against R0, whose uncertainty shifts every w of the train: the read noise of
    # the read right after SET, or the spread of the die's w where R0 was extrapolated
    r0_rel = (np.asarray(common["r0_stderr"], float) / np.asarray(common["r0"], float))[sub]
    r0_var = np.where(np.isfinite(r0_rel), r0_rel, 0.0) ** 2
    if law.has_break:
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
        # the line's intercept and slope errors: correlation -s1 / sqrt(s0 s2) (about -0.87 over 1..T)
        with np.errstate(invalid="ignore", divide="ignore"):
            line_corr = np.clip(-s1 / np.sqrt(s0 * s2), -1.0, 1.0)
        if ("m1", "c1") in err_corr:
            err_corr["m1", "c1"] = np.where(use_line, line_corr, err_corr["m1", "c1"])
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
        # a profile with several breaks within its 90 % region (the coarse grid): m1 and c1 may take any of
        # their values there, which the curvature at the optimum does not see (not m2: on short trains its
        # range over breaks near the last read dwarfs the law's spread and unsettles the D2D bootstrap)
        in90 = within & ~no_break[:, None]
        for q, col in (("m1", grid_beta[..., 1] / scale), ("c1", grid_beta[..., 0])):
            with np.errstate(invalid="ignore"):
                q_hi = np.max(np.where(in90, col, -np.inf), axis=1)
                q_lo = np.min(np.where(in90, col, np.inf), axis=1)
            errs[q] = np.where(no_break | np.isnan(errs[q]), errs[q],
                               np.fmax(errs[q], _region_stderr(values[q], q_lo, q_hi)))
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
                 # with R0's uncertainty, as c1_stderr below: classify_breaks reports the line's c1 with it
                 "c1_line_stderr": np.where(no_break, np.sqrt(var_b0 + r0_var), np.nan),
                 LINE_ERROR_CORRELATION: np.where(no_break, line_corr, np.nan)}
    else:
        for i in np.nonzero(f.at_bound)[0]:
            errs[theta_name][i] = np.nan
            note[i] += f"{theta_name} at the bound of its range: stderr unknown; "
    errs["c1"] = np.sqrt(errs["c1"] ** 2 + r0_var)
    finite = np.all(np.isfinite(np.stack([v for kk, v in values.items()
                                          if kk not in law.break_params], 1)), 1)
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
    for (a, b), v in err_corr.items():
        # a pair without both values (no break seen: no t_star, m2) has no error correlation
        cols[error_correlation_column(a, b)] = full(np.where(np.isfinite(values[a]) & np.isfinite(values[b]), v,
                                                             np.nan))
    if law.has_break:
        cols["t_star_censored"] = np.zeros(n, bool)  # decided over the campaign by classify_breaks
    cols["sigma"] = full(np.sqrt(sigma2))
    # goodness of fit of the law as reported; for a train without a reported break also of its straight
    # line, which classify_breaks reports instead when it finds the break censored (flag_poor_fit swaps)
    gof, ratio = goodness_of_fit(y_sub, W[sub], _law_curve(law, t, values), flag[sub] == "ok")
    for c in GOF_COLUMNS:
        cols[c] = full(gof[c])
    if law.has_break:
        line = {c: gof[c].copy() for c in GOF_COLUMNS}
        other = np.nonzero(no_break & ~use_line)[0]
        if other.size:
            tt = t[None, :]
            curve = line_beta[other, :1] + line_beta[other, 1:2] * (tt / scale)
            g_line, _ = goodness_of_fit(y_sub[other], W[sub][other], curve, ratio=ratio)
            for c in GOF_COLUMNS:
                line[c][other] = g_line[c]
        for c in GOF_COLUMNS:
            cols[c + "_line"] = full(np.where(no_break, line[c], np.nan))
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

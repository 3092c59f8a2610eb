"""One drift law fitted to many rows at once (vectorised separable least squares), and its residuals.

:func:`_fit_law` fits a registered law to every row of a (rows, pulses) array
with the solvers of :mod:`hfox_fit.fitting._separable` (the profile over the
break of a law with one, else a grid scan, batched Levenberg-Marquardt and a
golden-section fallback) and returns the internal coefficients with their
information matrix. :func:`fit_law_rows` is its public face: the law's
parameters and their variances for rows of ``w``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..laws import get_law
from . import _separable as sep

__all__ = ["fit_law_rows"]


@dataclass
class _LawFit:
    beta: np.ndarray
    theta: np.ndarray
    sse: np.ndarray
    info: np.ndarray  # J^T W J of (beta, theta)
    converged: np.ndarray
    at_bound: np.ndarray
    coarse: tuple | None = None  # (thetas (N,G), sse (N,G), beta (N,G,3)): the profile over the break
    line: tuple | None = None  # (sse, beta) of the straight line (a law with a break)
    profile: object = None  # TwoSlopeProfile (a law with a break)


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

    ``y_masked``: ``y`` is already 0 wherever ``w`` is (spares the profile over a break a pass).
    """
    law = sep.SEPARABLE_LAWS[name]
    has_break = get_law(name).has_break
    if not has_break and w.dtype == bool:
        w = w.astype(float)
    lo, hi, bad = _theta_window(law, t_lo, t_hi, scale)
    n = y.shape[0]
    if has_break:
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


def _binned_fit(name, t, scale, y, w, t_lo, t_hi, width: int, buffers=None) -> _LawFit:
    """Fit of law ``name`` (one with a break) to the sums of ``y`` over ``width``-pulse bins (weights: the reads in each bin).

    ``y`` is 0 where ``w`` (bool) is False. Only ``beta`` and ``theta`` are set
    (for residuals); the break is found to within a fraction of a pulse.
    """
    T = len(t)
    starts = np.arange(0, T, width)
    c = np.add.reduceat(w, starts, axis=1, dtype=float)
    yb = np.add.reduceat(y, starts, axis=1)
    np.divide(yb, c, out=yb, where=c > 0)
    tb = np.add.reduceat(t, starts) / np.diff(np.r_[starts, T])
    lo, hi, bad = _theta_window(sep.SEPARABLE_LAWS[name], t_lo, t_hi, scale)
    prof = sep.TwoSlopeProfile(tb, scale, yb, c, buffers)
    theta, beta, sse, _ = prof.minimise(lo, hi, levels=2)
    n = len(theta)
    return _LawFit(beta, theta, sse, None, ~bad, np.zeros(n, bool))


def _evaluate(name, t, scale, fit: _LawFit):
    """Model values (N, T) of the fitted rows."""
    b, th = fit.beta, fit.theta[:, None]
    tau = (t / scale)[None, :]
    if get_law(name).has_break:
        return b[:, :1] + b[:, 1:2] * tau + b[:, 2:3] * np.maximum(tau - th, 0.0)
    law = sep.SEPARABLE_LAWS[name]
    return b[:, :1] + b[:, 1:2] * law.column(t[None, :], scale, th)


def _residual32(name, t, scale, fit: _LawFit, y, out):
    """``y - model`` of the fitted rows in float32 into ``out`` (N, T), without float64 temporaries."""
    out[...] = y
    if not get_law(name).has_break:
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


_WORK = threading.local()
#: Largest work array (bytes) kept between calls of :func:`~hfox_fit.fitting.fit_drift_die` (per thread).
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


def fit_law_rows(law: str, t, y, weight=None):
    """Least-squares fit of drift law ``law`` to every row of ``y`` at once (vectorised, global in theta).

    A plain fit (no RTN masking, no noise model): the same solver the robust
    per-die fit (:func:`~hfox_fit.fitting.fit_drift_die`) runs on the reads it keeps.

    Parameters
    ----------
    law : str
        A registered drift law (:data:`hfox_fit.laws.DRIFT_LAWS`).
    t : ndarray of shape (T,)
        Pulse numbers, increasing (e.g. ``1..T``).
    y : ndarray of shape (N, T)
        ``w`` of each row; NaN where a read is missing.
    weight : ndarray of shape (N, T), optional
        Non-negative weights of the reads (0: left out); default 1 on every finite read.

    Returns
    -------
    values : ndarray of shape (N, P)
        The law's parameters (in the order of ``get_law(law).params``).
    variance : ndarray of shape (N, P)
        Their variances: the diagonal of the covariance from the Jacobian at the
        optimum, with the residual variance ``SSE / (sum of weights - P)``
        (uncorrelated noise assumed).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(1.0, 201.0)
    >>> y = np.stack([0.3 + 0.02 * np.log1p(t / 40.0), 0.1 + 0.05 * np.log1p(t / 5.0)])
    >>> values, variance = fit_law_rows("log", t, y)
    >>> np.round(values, 3).tolist()
    [[0.02, 40.0, 0.3], [0.05, 5.0, 0.1]]
    """
    dlaw = get_law(law)
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    valid = np.isfinite(y)
    wt = valid.astype(float) if weight is None else np.where(valid, np.asarray(weight, dtype=float), 0.0)
    y = np.where(valid, y, 0.0)
    scale = t[-1]
    first, last = _span(t, wt > 0, t[0], t[-1])
    f = _fit_law(law, t, scale, y, wt, first, last)
    params, jac = sep.SEPARABLE_LAWS[law].to_params(f.beta, f.theta, scale)
    cov = jac @ np.linalg.pinv(f.info) @ np.swapaxes(jac, 1, 2) * (f.sse / (wt.sum(1) - len(dlaw.params)))[:, None, None]
    values = np.stack([params[p] for p in dlaw.params], axis=1)
    return values, np.einsum("npp->np", cov)

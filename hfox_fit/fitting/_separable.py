r"""Vectorised separable least squares for the drift laws (many cells at once).

Every registered drift law is *separable*: given one nonlinear parameter
``theta`` it is linear in the others,

.. math:: w(t) = \sum_j \beta_j B_j(t; \theta).

``two_slope`` (``B = [1, tau, (tau - theta)_+]``): every entry of the normal
equations at any break is a polynomial in ``theta`` of cumulative sums over the
pulses after it, so :class:`TwoSlopeProfile` evaluates the exact profile SSE
of every cell at any break in O(1) and searches the break globally (coarse
grid, then zooms).

``power`` and ``log`` (``B = [1, column(t; theta)]``): :func:`grid_profile`
scans a grid of ``theta`` for all cells with a few matrix products of the
(cells, pulses) weight and data arrays with the (pulses, grid) basis, then
:func:`lm_refine` refines ``(beta, theta)`` of all cells together with a
batched Levenberg-Marquardt loop.

Time is scaled (``tau = t / scale``) to keep the normal equations well
conditioned; :class:`SeparableLaw` maps the internal ``(beta, theta)`` back to
the law's parameters, with the Jacobian of that map for the covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SeparableLaw", "SEPARABLE_LAWS", "TwoSlopeProfile", "grid_profile", "lm_refine"]


@dataclass(frozen=True)
class SeparableLaw:
    """Internal description of a drift law as linear-given-theta (see module doc)."""

    name: str
    k: int  # number of linear coefficients

    def theta_range(self, t_lo, t_hi, scale):
        """(lo, hi) of theta for cells whose valid reads span pulses ``t_lo..t_hi`` (arrays)."""
        raise NotImplementedError

    def theta_grid(self, t_first, t_last, scale):
        """Grid of theta values for the initial scan (1-D array)."""
        raise NotImplementedError

    def to_params(self, beta, theta, scale):
        """Law parameters (dict of arrays) and the Jacobian d(params)/d(beta, theta), (N, P, k+1)."""
        raise NotImplementedError


class _TwoSlope(SeparableLaw):
    # w = b0 + b1 tau + b2 (tau - theta)_+ ; theta = t_star / scale
    def theta_range(self, t_lo, t_hi, scale):
        # keep at least two valid pulses on each side of the break
        return (t_lo + 1.5) / scale, (t_hi - 1.5) / scale

    def to_params(self, beta, theta, scale):
        n = beta.shape[0]
        params = {
            "m1": beta[:, 1] / scale,
            "t_star": theta * scale,
            "m2": (beta[:, 1] + beta[:, 2]) / scale,
            "c1": beta[:, 0].copy(),
        }
        jac = np.zeros((n, 4, 4))
        jac[:, 0, 1] = 1.0 / scale
        jac[:, 1, 3] = scale
        jac[:, 2, 1] = jac[:, 2, 2] = 1.0 / scale
        jac[:, 3, 0] = 1.0
        return params, jac


class _TwoCoef(SeparableLaw):
    """Laws ``b0 + b1 * column(t; theta)``."""

    def column(self, t, scale, theta):
        raise NotImplementedError

    def dcolumn(self, t, scale, theta):
        """d column / d theta."""
        raise NotImplementedError

    def basis(self, t, scale, theta):
        """Basis of shape broadcast(t, theta) + (2,)."""
        col = self.column(t, scale, theta)
        out = np.empty(col.shape + (2,))
        out[..., 0] = 1.0
        out[..., 1] = col
        return out


class _Power(_TwoCoef):
    # w = b0 + b1 tau**theta ; a = b1 scale**-theta, b = theta
    def column(self, t, scale, theta):
        tau = np.asarray(t, float) / scale
        with np.errstate(divide="ignore"):
            return np.exp(theta * np.log(tau))

    def dcolumn(self, t, scale, theta):
        tau = np.asarray(t, float) / scale
        with np.errstate(divide="ignore", invalid="ignore"):
            lt = np.log(tau)
            return np.where(tau > 0, np.exp(theta * lt) * lt, 0.0)

    def theta_range(self, t_lo, t_hi, scale):
        return np.full(np.shape(t_lo), 1e-3), np.full(np.shape(t_lo), 3.0)

    def theta_grid(self, t_first, t_last, scale):
        return np.geomspace(1e-3, 3.0, 64)

    def to_params(self, beta, theta, scale):
        n = beta.shape[0]
        s = np.power(scale, -theta)
        params = {"a": beta[:, 1] * s, "b": theta.copy(), "c1": beta[:, 0].copy()}
        jac = np.zeros((n, 3, 3))
        jac[:, 0, 1] = s
        jac[:, 0, 2] = -beta[:, 1] * s * np.log(scale)
        jac[:, 1, 2] = 1.0
        jac[:, 2, 0] = 1.0
        return params, jac


class _Log(_TwoCoef):
    # w = b0 + b1 ln(1 + t / tau) ; theta = ln(tau / pulse)
    def column(self, t, scale, theta):
        return np.log1p(np.asarray(t, float) * np.exp(-theta))

    def dcolumn(self, t, scale, theta):
        x = np.asarray(t, float) * np.exp(-theta)
        return -x / (1.0 + x)

    def theta_range(self, t_lo, t_hi, scale):
        return np.full(np.shape(t_lo), np.log(1e-2)), np.full(np.shape(t_lo), np.log(1e7))

    def theta_grid(self, t_first, t_last, scale):
        return np.linspace(np.log(1e-2), np.log(1e7), 64)

    def to_params(self, beta, theta, scale):
        n = beta.shape[0]
        tau = np.exp(theta)
        params = {"a": beta[:, 1].copy(), "tau": tau, "c1": beta[:, 0].copy()}
        jac = np.zeros((n, 3, 3))
        jac[:, 0, 1] = 1.0
        jac[:, 1, 2] = tau
        jac[:, 2, 0] = 1.0
        return params, jac



#: The separable form of each registered drift law (same names as laws.DRIFT_LAWS).
SEPARABLE_LAWS = {
    "two_slope": _TwoSlope("two_slope", 3),
    "power": _Power("power", 2),
    "log": _Log("log", 2),
}


def _batched_solve(m, r):
    """Solve m x = r for stacks of small SPD matrices, with a tiny ridge for rank-deficient ones."""
    k = m.shape[-1]
    diag = np.einsum("...ii->...i", m)
    ridge = 1e-10 * np.maximum(diag.max(axis=-1, keepdims=True), 1e-300)
    m = m + ridge[..., None] * np.eye(k)
    return np.linalg.solve(m, r[..., None])[..., 0]


def grid_profile(law: _TwoCoef, t, scale, y, w, thetas):
    """Closed-form weighted least squares of every cell at every grid value of theta.

    Parameters
    ----------
    t : ndarray of shape (T,)
        Pulse numbers.
    y, w : ndarray of shape (N, T)
        Data (any finite value where ``w == 0``) and weights.
    thetas : ndarray of shape (G,)

    Returns
    -------
    sse : ndarray of shape (N, G)
    beta : ndarray of shape (N, G, k)
    """
    basis = law.basis(t[None, :], scale, thetas[:, None])  # (G, T, k)
    k = law.k
    wy = w * y
    n, g = y.shape[0], len(thetas)
    m = np.empty((n, g, k, k))
    r = np.empty((n, g, k))
    for i in range(k):
        r[:, :, i] = wy @ basis[:, :, i].T
        for j in range(i, k):
            m[:, :, i, j] = m[:, :, j, i] = w @ (basis[:, :, i] * basis[:, :, j]).T
    yy = np.einsum("nt,nt->n", wy, y)
    beta = _batched_solve(m, r)
    sse = yy[:, None] - np.einsum("ngk,ngk->ng", beta, r)
    return np.maximum(sse, 0.0), beta


def lm_refine(law: _TwoCoef, t, scale, y, w, beta, theta, theta_lo, theta_hi,
              max_iter: int = 30, tol: float = 1e-6):
    """Batched Levenberg-Marquardt on (beta, theta) of every cell, theta kept in its range.

    Only for two-coefficient laws ``b0 + b1 * column(t; theta)`` (power, log).

    Returns
    -------
    beta, theta, sse, converged : the refined values, weighted SSE, and a bool per cell
        (relative SSE change below ``tol`` on an accepted step, or no damping
        that makes the SSE smaller: a local minimum).
    """
    beta = beta.copy()
    theta = np.clip(theta.copy(), theta_lo, theta_hi)
    n = len(theta)
    tt = t[None, :]
    lam = np.full(n, 1e-3)
    resid = y - (beta[:, :1] + beta[:, 1:2] * law.column(tt, scale, theta[:, None]))
    sse = np.einsum("nt,nt->n", w * resid, resid)
    converged = np.zeros(n, bool)
    active = np.ones(n, bool)
    eye = np.eye(3)
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        b, th, ww, yy = beta[idx], theta[idx], w[idx], y[idx]
        col = law.column(tt, scale, th[:, None])
        dc = b[:, 1:2] * law.dcolumn(tt, scale, th[:, None])
        r = yy - (b[:, :1] + b[:, 1:2] * col)
        wc, wd = ww * col, ww * dc
        a = np.empty((idx.size, 3, 3))
        a[:, 0, 0] = ww.sum(1)
        a[:, 0, 1] = a[:, 1, 0] = wc.sum(1)
        a[:, 0, 2] = a[:, 2, 0] = wd.sum(1)
        a[:, 1, 1] = np.einsum("nt,nt->n", wc, col)
        a[:, 1, 2] = a[:, 2, 1] = np.einsum("nt,nt->n", wc, dc)
        a[:, 2, 2] = np.einsum("nt,nt->n", wd, dc)
        wr = ww * r
        g = np.stack([wr.sum(1), np.einsum("nt,nt->n", wr, col), np.einsum("nt,nt->n", wr, dc)], -1)
        diag = np.einsum("npp->np", a)
        damp = a + (lam[idx, None] * np.maximum(diag, 1e-30))[..., None] * eye
        step = _batched_solve(damp, g)
        nb = b + step[:, :2]
        nth = np.clip(th + step[:, 2], theta_lo[idx], theta_hi[idx])
        nr = yy - (nb[:, :1] + nb[:, 1:2] * law.column(tt, scale, nth[:, None]))
        nsse = np.einsum("nt,nt->n", ww * nr, nr)
        better = np.isfinite(nsse) & (nsse <= sse[idx])
        rel = (sse[idx] - nsse) / np.maximum(sse[idx], 1e-300)
        acc = idx[better]
        beta[acc], theta[acc], sse[acc] = nb[better], nth[better], nsse[better]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-9)
        lam[idx[~better]] *= 4.0
        done = (better & (rel < tol)) | (lam[idx] > 1e8)
        converged[idx[done]] = True
        active[idx[done]] = False
    return beta, theta, sse, converged


# --------------------------------------------------------------------------------------
# two_slope: exact profile over the break by cumulative sums
# --------------------------------------------------------------------------------------


class TwoSlopeProfile:
    """Profile SSE of the two-slope law at any per-cell break, in O(1) per cell.

    With ``h = (tau - theta)_+`` every entry of the 3x3 normal equations is a
    polynomial in ``theta`` of sums over the pulses after the break, which are
    reverse cumulative sums computed once per weight array.
    """

    def __init__(self, t, scale, y, w, buffers=None, *, y_masked: bool = False):
        """Prefix sums of ``w``, ``w tau``, ``w tau^2``, ``w y``, ``w y tau`` of every row.

        ``w`` may be bool (a read mask) or float weights. ``y_masked=True`` says
        that ``y`` is already 0 wherever ``w`` is 0 and ``w`` is 0/1, so ``w y``
        is ``y`` itself (one pass less). ``buffers`` (a dict kept by the caller)
        lets repeated fits of one die reuse the (5, N, T + 1) prefix array.
        """
        self.t = np.asarray(t, float)
        self.scale = float(scale)
        self.tau = self.t / self.scale
        tau = self.tau
        n, T = y.shape
        # prefix[q][:, j] = sum over the first j pulses; "after index j" = total - prefix.
        buffers = {} if buffers is None else buffers
        if buffers.get("shape") != (n, T):
            buffers.clear()
            buffers["shape"] = (n, T)
            buffers["prefix"] = np.empty((5, n, T + 1))
            buffers["prefix"][:, :, 0] = 0.0
        self.prefix = pre = buffers["prefix"]
        body = pre[:, :, 1:]
        # each column is formed in its prefix row, then summed in place
        np.copyto(body[0], w)
        np.multiply(w, tau, out=body[1])
        np.multiply(body[1], tau, out=body[2])
        if y_masked:
            wy = y
        else:
            wy = np.multiply(w, y, out=body[3])
        np.multiply(wy, tau, out=body[4])
        self.yy = np.einsum("nt,nt->n", wy, y)
        if y_masked:
            np.copyto(body[3], y)
        for q in range(5):
            np.cumsum(body[q], axis=1, out=body[q])
        self._tot = self.prefix[:, :, T].copy()
        self.tot = list(self._tot)

    def _after(self, theta):
        j = np.searchsorted(self.tau, theta, side="right")
        rows = np.arange(theta.shape[0]).reshape((-1,) + (1,) * (theta.ndim - 1))
        # np.take on the flattened rows is faster than 2-D fancy indexing
        flat = self.prefix.reshape(5, -1)
        return self._tot.reshape((5,) + rows.shape) - np.take(flat, rows * self.prefix.shape[2] + j, axis=1)

    def normal(self, theta):
        """M (N, ..., 3, 3) and r (N, ..., 3) at per-cell ``theta`` of shape (N, ...)."""
        s0, s1, s2, y0, y1 = self._after(theta)
        t0, t1, t2, yt0, yt1 = (tot.reshape((-1,) + (1,) * (theta.ndim - 1)) for tot in self.tot)
        h0 = s1 - theta * s0
        h1 = s2 - theta * s1
        h2 = s2 - 2 * theta * s1 + theta**2 * s0
        m = np.stack([np.stack([t0 + 0 * theta, t1 + 0 * theta, h0], -1),
                      np.stack([t1 + 0 * theta, t2 + 0 * theta, h1], -1),
                      np.stack([h0, h1, h2], -1)], -2)
        r = np.stack([yt0 + 0 * theta, yt1 + 0 * theta, y1 - theta * y0], -1)
        return m, r

    def _line_parts(self):
        if not hasattr(self, "_lp"):
            t0, t1, t2, yt0, yt1 = self.tot
            det = t0 * t2 - t1 * t1
            tiny = 1e-12 * np.maximum(np.abs(t0 * t2), 1e-300)
            det = np.where(np.abs(det) > tiny, det, np.inf)
            inv = (t2 / det, -t1 / det, t0 / det)  # A^-1 entries (a00, a01, a11)
            b0 = inv[0] * yt0 + inv[1] * yt1
            b1 = inv[1] * yt0 + inv[2] * yt1
            sse = np.maximum(self.yy - (b0 * yt0 + b1 * yt1), 0.0)
            self._lp = inv, (b0, b1), sse
        return self._lp

    def sse(self, theta):
        """Profile SSE (N, ...) and beta (N, ..., 3) at per-cell ``theta`` of shape (N, ...).

        Closed form: the break column ``h`` reduces the straight line's SSE by
        ``(h'r - u'A^-1 r)^2 / (h'h - u'A^-1 u)`` (Schur complement).
        """
        s0, s1, s2, y0, y1 = self._after(theta)
        shape = (-1,) + (1,) * (theta.ndim - 1)
        (a00, a01, a11), (lb0, lb1), lsse = self._line_parts()
        a00, a01, a11 = a00.reshape(shape), a01.reshape(shape), a11.reshape(shape)
        lb0, lb1, lsse = lb0.reshape(shape), lb1.reshape(shape), lsse.reshape(shape)
        h0 = s1 - theta * s0
        h1 = s2 - theta * s1
        h2 = s2 - 2 * theta * s1 + theta * theta * s0
        rh = y1 - theta * y0
        # A^-1 u
        g0 = a00 * h0 + a01 * h1
        g1 = a01 * h0 + a11 * h1
        den = h2 - (h0 * g0 + h1 * g1)
        num = rh - (h0 * lb0 + h1 * lb1)
        ok = den > 1e-12 * np.maximum(h2, 1e-300)
        b2 = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
        sse = np.maximum(lsse - np.where(ok, num * b2, 0.0), 0.0)
        beta = np.stack([lb0 - g0 * b2, lb1 - g1 * b2, b2], axis=-1)
        return sse, beta

    def line(self):
        """SSE and (b0, b1) of the straight line (no break)."""
        _, (b0, b1), sse = self._line_parts()
        return sse, np.stack([b0, b1], axis=-1)

    def information(self, beta, theta):
        """J^T W J (N, 4, 4) of (b0, b1, b2, theta) at the optimum."""
        m, _ = self.normal(theta)
        s0, s1, _, _, _ = self._after(theta)
        b2 = beta[:, 2]
        out = np.zeros((len(theta), 4, 4))
        out[:, :3, :3] = m
        # d model / d theta = -b2 * 1[tau > theta]
        out[:, 0, 3] = out[:, 3, 0] = -b2 * s0
        out[:, 1, 3] = out[:, 3, 1] = -b2 * s1
        out[:, 2, 3] = out[:, 3, 2] = -b2 * (s1 - theta * s0)
        out[:, 3, 3] = b2**2 * s0
        return out

    def block_scores(self, beta, theta, block: int):
        """Sums over ``block``-pulse blocks of the score ``J^T (y - model)`` of (b0, b1, b2, theta), (N, nb, 4),
        and of the weights (N, nb).

        From the prefix sums (no (N, T) pass): the pieces of a sandwich covariance that sees where the
        residuals sit (a disturbance at a read of high leverage, e.g. next to the break, weighs more);
        ``[..., 0]`` is the block sum of the residual.
        """
        T = len(self.tau)
        nb = T // block
        edges = np.arange(nb + 1) * block
        # np.take on the flattened rows (as in _after): faster than fancy indexing of the (5, N, T + 1) sums
        flat = self.prefix.reshape(5, -1)
        row0 = (np.arange(len(theta)) * self.prefix.shape[2])[:, None]
        at_edges = np.take(flat, row0 + edges[None, :], axis=1)
        jb = np.searchsorted(self.tau, theta, side="right")
        cut = np.clip(jb[:, None], edges[None, :-1], edges[None, 1:])  # first read after the break, per block
        # block sums of w, w tau, w tau^2, w y, w y tau: over the block, and over its reads after the break
        s0, s1, s2, y0, y1 = np.diff(at_edges, axis=2)
        a0, a1, a2, ay0, ay1 = at_edges[:, :, 1:] - np.take(flat, row0 + cut, axis=1)
        b0, b1, b2 = (beta[:, k:k + 1] for k in range(3))
        th = theta[:, None]
        h1 = a1 - th * a0  # sum of (tau - theta)_+
        h_tau = a2 - th * a1  # sum of tau (tau - theta)_+
        h2 = a2 - 2 * th * a1 + th**2 * a0  # sum of (tau - theta)_+^2
        out = np.empty(s0.shape + (4,))
        out[..., 0] = y0 - b0 * s0 - b1 * s1 - b2 * h1
        out[..., 1] = y1 - b0 * s1 - b1 * s2 - b2 * h_tau
        out[..., 2] = (ay1 - th * ay0) - b0 * h1 - b1 * h_tau - b2 * h2
        out[..., 3] = -b2 * (ay0 - b0 * a0 - b1 * a1 - b2 * h1)
        return out, s0

    def minimise(self, lo, hi, n_coarse: int = 48, n_fine: int = 16, levels: int = 3):
        """Global search of the break in [lo, hi] (per cell): coarse geometric grid, then zooms.

        Returns theta (N,), beta (N, 3), sse (N,), and the coarse grid profile
        (thetas (N, G), sse (N, G), beta (N, G, 3)).
        """
        n = len(lo)
        u = np.linspace(0.0, 1.0, n_coarse)
        glo, ghi = np.log(lo), np.log(np.maximum(hi, lo * (1 + 1e-9)))
        grid = np.exp(glo[:, None] + (ghi - glo)[:, None] * u[None, :])
        sse, gbeta = self.sse(grid)
        best = np.argmin(sse, axis=1)
        rows = np.arange(n)
        coarse = (grid, sse, gbeta)
        a = grid[rows, np.maximum(best - 1, 0)]
        b = grid[rows, np.minimum(best + 1, n_coarse - 1)]
        for _ in range(levels):
            v = np.linspace(0.0, 1.0, n_fine)
            g = a[:, None] + (b - a)[:, None] * v[None, :]
            s, _ = self.sse(g)
            k = np.argmin(s, axis=1)
            step = (b - a) / (n_fine - 1)
            c = g[rows, k]
            a, b = np.maximum(c - step, lo), np.minimum(c + step, hi)
        theta = c
        s, beta = self.sse(theta[:, None])
        return theta, beta[:, 0], s[:, 0], coarse

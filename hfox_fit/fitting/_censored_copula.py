r"""The Gaussian-copula correlation of a value with a right-censored one (``t_star`` beyond its bound).

A train whose break was not seen has no ``t_star``, only a bound: the break lies
beyond ``t_star_lo``. Leaving such cells out of a pair keeps the cells with the
earliest breaks, and where ``t_star`` is correlated with the other value that
selection pulls the correlation towards 0 (wafer_b's ``m1~t_star``, truth -0.6:
-0.56 pairwise complete over 20 synthetic wafers, 65 % interval coverage). Here
the censored cells enter the likelihood of the correlation ``rho`` through what
they tell: their break lies beyond the bound.

* ``a`` gets the normal scores of its ranks, ``Phi^-1(rank / (n + 1))``, as in
  :func:`~hfox_fit.fitting.correlation.correlations`;
* ``t_star`` gets the normal scores of its Kaplan-Meier CDF (times ``n / (n + 1)``;
  tied values the midpoint of their step, so with nothing censored these are the
  scores of the average ranks), and a censored cell the score ``c`` of the
  Kaplan-Meier CDF at its bound;
* the log-likelihood of ``rho`` sums, over the exact pairs, the bivariate normal
  log-density of the scores (less its margins, constant in ``rho``) and, over the
  censored ones, :math:`\log \Phi((\rho z_a - c) / \sqrt{1 - \rho^2})`, the chance
  that the break's score exceeds ``c`` given ``z_a``;
* it is maximised in ``u = atanh(rho)``: for the estimate on a grid (25 points,
  then 11 around the best, then a parabola); for every replicate of the bootstrap
  over cells (ranks and Kaplan-Meier CDF taken again in each, by counting) by
  parabola steps from the estimate. The replicates give the 90 % percentile interval.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ._ranks import _resample_ranks2, _score_table

__all__ = ["censored_copula", "censored_copulas"]

#: The coarse grid of ``u = atanh(rho)`` (|rho| <= tanh(3) = 0.995) for the estimate, then a fine one around its best.
_COARSE = np.linspace(-3.0, 3.0, 25)
_FINE = np.linspace(-1.0, 1.0, 11) * (_COARSE[1] - _COARSE[0])
#: Bootstrap replicates computed together (memory: rows x 3 x censored cells).
_CHUNK = 50


def _rows_count(keys, weights, n_keys):
    """(B, n_keys): per row, the sum of ``weights`` (B, n) at each key (B, n)."""
    n_rows = keys.shape[0]
    flat = (keys + (np.arange(n_rows) * n_keys)[:, None]).ravel()
    return np.bincount(flat, weights.ravel(), minlength=n_rows * n_keys).reshape(n_rows, n_keys)


def _km_scores(tkeys, n_keys: int, event):
    """Rows (B, n): the normal score of each value's Kaplan-Meier CDF (its bound's, when censored).

    ``tkeys`` are the dense ranks of the times (equal times, one key). By counting, O(n) per row:
    at a time, the events come before the censorings (the Kaplan-Meier convention); an exact value
    gets the midpoint of its time's step (with nothing censored: the average rank over ``n``).
    """
    n = tkeys.shape[1]
    deaths = _rows_count(tkeys, event.astype(float), n_keys)
    leaving = _rows_count(tkeys, np.ones(tkeys.shape), n_keys)
    at_risk = n - (np.cumsum(leaving, axis=1) - leaving)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(np.where(at_risk > 0, 1.0 - deaths / at_risk, 1.0), axis=1)
    after = 1.0 - surv
    before = np.concatenate([np.zeros((len(after), 1)), after[:, :-1]], axis=1)
    cdf_after = np.take_along_axis(after, tkeys, axis=1)
    cdf = np.where(event, (np.take_along_axis(before, tkeys, axis=1) + cdf_after) / 2.0, cdf_after)
    return special.ndtri(np.clip(cdf * n / (n + 1.0), 0.5 / (n + 1.0), 1.0 - 0.5 / (n + 1.0)))


class _LogLikelihood:
    """The log-likelihood of each row's correlation: its sums, and each row's censored cells, gathered once."""

    def __init__(self, za, zt, event):
        e = event.astype(float)
        self.ne = e.sum(1)[:, None]
        self.saa_stt = ((e * za * za).sum(1) + (e * zt * zt).sum(1))[:, None]
        self.sat = (e * za * zt).sum(1)[:, None]
        m = int((~event).sum(1).max())
        self.censored = None
        if m:
            # each row's censored cells moved to the front (rows with fewer are padded, masked)
            front = np.argsort(event, axis=1, kind="stable")[:, :m]
            self.censored = tuple(np.take_along_axis(x, front, axis=1)[:, None, :] for x in (za, zt, ~event))

    def __call__(self, u):
        """(B, G): the log-likelihood of each row at the correlations ``tanh(u)`` (``u`` of shape (B, G))."""
        r = np.tanh(u)
        one = 1.0 - r * r
        ll = -0.5 * self.ne * np.log(one) - (r * r * self.saa_stt - 2.0 * r * self.sat) / (2.0 * one)
        if self.censored is not None:
            ca, cz, cc = self.censored
            arg = (r[:, :, None] * ca - cz) / np.sqrt(one)[:, :, None]
            ll = ll + np.where(cc, special.log_ndtr(arg), 0.0).sum(2)
        return ll


def _parabola_step(ll, u, h):
    """From the log-likelihood at ``u - h, u, u + h`` (B, 3): the parabola's vertex, at most 2 h away."""
    y0, y1, y2 = ll[:, 0], ll[:, 1], ll[:, 2]
    curv = y0 - 2.0 * y1 + y2
    shift = np.where(curv < 0, 0.5 * (y0 - y2) / np.where(curv < 0, curv, -1.0), np.sign(y2 - y0) * 2.0)
    return np.clip(u + np.clip(shift, -2.0, 2.0) * h, _COARSE[0], _COARSE[-1])


def _maximise(za, zt, event, start=None):
    """Per row, the correlation maximising the likelihood.

    Without ``start``: a coarse grid, a fine grid around its best point and a parabola. From
    ``start`` (the estimate; the bootstrap's replicates lie near it): three parabola steps of
    shrinking width, three evaluations each.
    """
    loglik = _LogLikelihood(za, zt, event)
    rows = np.arange(za.shape[0])
    if start is None:
        coarse = np.broadcast_to(_COARSE, (len(rows), len(_COARSE)))
        best = coarse[rows, np.argmax(loglik(coarse), axis=1)]
        fine = np.clip(best[:, None] + _FINE[None, :], _COARSE[0], _COARSE[-1])
        ll = loglik(fine)
        k = np.clip(np.argmax(ll, axis=1), 1, len(_FINE) - 2)
        three = np.stack([ll[rows, k - 1], ll[rows, k], ll[rows, k + 1]], axis=1)
        return np.tanh(_parabola_step(three, fine[rows, k], _FINE[1] - _FINE[0]))
    u = np.full(len(rows), np.arctanh(start))
    h = float(np.clip(1.5 / np.sqrt(max(int(event[0].sum()), 1)), 0.03, 0.5))  # about a standard error
    for _ in range(3):
        u = _parabola_step(loglik(u[:, None] + h * np.array([[-1.0, 0.0, 1.0]])), u, h)
        h /= 4.0
    return np.tanh(u)


def censored_copula(a, t, t_lo, bootstrap: int = 0, rng=None) -> dict | None:
    """Gaussian-copula correlation of ``a`` with ``t``, right-censored at ``t_lo`` where ``t`` is NaN.

    Parameters
    ----------
    a, t, t_lo : array_like of shape (n,)
        The cells' values; a cell enters when ``a`` is finite and ``t`` or ``t_lo`` is.
    bootstrap : int, default=0
        Replicates of the bootstrap over cells (0: no interval).
    rng : int or Generator, optional

    Returns
    -------
    dict or None
        ``copula``, ``n`` (cells used), ``n_censored`` and, with ``bootstrap``,
        ``copula_ci90`` and ``copula_stderr`` (None where fewer than half the
        replicates gave a number); None with fewer than 5 cells or fewer than 3 exact.
    """
    return censored_copulas([a], t, t_lo, bootstrap, rng)[0]


def censored_copulas(partners, t, t_lo, bootstrap: int = 0, rng=None) -> list:
    """:func:`censored_copula` of each of ``partners`` with ``t``: they must pair with ``t`` on the same cells.

    The replicates draw the same cells for every partner, so ``t``'s Kaplan-Meier scores are
    computed once per replicate.
    """
    partners = [np.asarray(a, float) for a in partners]
    t, t_lo = np.asarray(t, float), np.asarray(t_lo, float)
    event = np.isfinite(t)
    known = event | np.isfinite(t_lo)
    use = np.isfinite(partners[0]) & known
    if any(not np.array_equal(np.isfinite(a) & known, use) for a in partners[1:]):
        raise ValueError("censored_copulas: the partners must pair with t on the same cells")
    time, event = np.where(event, t, t_lo)[use], event[use]
    n = len(time)
    if n < 5 or event.sum() < 3:
        return [None] * len(partners)
    keys = [np.unique(a[use], return_inverse=True) for a in partners]
    ut, kt = np.unique(time, return_inverse=True)
    scores = _score_table(n)

    def estimate(idx, start=None):
        zt, ev = _km_scores(kt[idx], len(ut), event[idx]), event[idx]
        return [_maximise(scores[_resample_ranks2(ka, len(ua), idx)], zt, ev, None if start is None else start[j])
                for j, (ua, ka) in enumerate(keys)]

    rhos = [float(r[0]) for r in estimate(np.arange(n)[None, :])]
    outs = [{"copula": rho, "n": n, "n_censored": int((~event).sum())} for rho in rhos]
    if bootstrap > 0:
        rng = np.random.default_rng(rng)
        chunks = [estimate(rng.integers(0, n, (min(_CHUNK, bootstrap - s), n)), rhos)
                  for s in range(0, bootstrap, _CHUNK)]
        for j, out in enumerate(outs):
            reps = np.concatenate([c[j] for c in chunks])
            reps = reps[np.isfinite(reps)]
            ok = len(reps) >= max(10, bootstrap // 2)
            out["copula_ci90"] = [float(np.percentile(reps, 5)), float(np.percentile(reps, 95))] if ok else None
            out["copula_stderr"] = float(np.std(reps, ddof=1)) if ok else None
    return outs

"""How well a fitted D2D law is known and how well it fits: the checks reported beside it.

The law's median's 90 % interval is a bootstrap over cells (one Newton step from
the maximum-likelihood fit per replicate, with the score of each cell). The
cells' own median (Kaplan-Meier under censoring, percentile bootstrap) is a
family-free check on it, and the Kolmogorov-Smirnov distance of the values
(measurement error included) to the law a check on its shape.
"""

from __future__ import annotations

import numpy as np

from ..laws import ParameterLaw
from ._families import _GH_NODES, _Candidate, _Data, _median


def _ks(law: ParameterLaw, data: _Data):
    """Kolmogorov-Smirnov statistic of the values against the law, by the probability integral transform.

    Each value maps to its CDF under the law, convolved with the cell's measurement
    error where that error counts (Gauss-Hermite nodes), and the KS distance to a
    uniform law is returned. With right-censored values, the distance is between
    the law's CDF and the Kaplan-Meier estimate, where 5 % of the values are still
    at risk.
    """
    if len(data.x) < 5:
        return None
    if len(data.lo):
        # right-censored values: Kaplan-Meier estimate of the CDF, compared where at least 5 %
        # of the values are still at risk
        times = np.concatenate([data.x, data.lo])
        event = np.concatenate([np.ones(len(data.x), bool), np.zeros(len(data.lo), bool)])
        order = np.argsort(times, kind="stable")
        times, event = times[order], event[order]
        at_risk = len(times) - np.arange(len(times))
        surv = np.cumprod(np.where(event, 1.0 - 1.0 / at_risk, 1.0))
        keep = event & (at_risk >= 0.05 * len(times))
        if keep.sum() < 5:
            return None
        t_ev = times[keep]
        km_after = 1.0 - surv[keep]
        f = np.asarray(law.cdf(t_ev), float)
        prev = np.concatenate([[0.0], (1.0 - surv)[:-1]])[keep]
        return float(max(np.max(np.abs(km_after - f)), np.max(np.abs(prev - f))))
    u = np.asarray(law.cdf(data.x), float)
    if data.nodes is not None:
        _, wts = np.polynomial.hermite.hermgauss(_GH_NODES)
        u[data.eiv] = np.asarray(law.cdf(data.nodes), float) @ (wts / np.sqrt(np.pi))
    u = np.sort(u)
    i = np.arange(1, len(u) + 1)
    d = max(np.max(i / len(u) - u), np.max(u - (i - 1) / len(u)))
    return float(max(d, 0.0))


def _km_median(times, event):
    """Kaplan-Meier median of right-censored data (rows of ``times``/``event``, shape (B, n)); NaN when
    the survival curve stays above one half."""
    order = np.argsort(times, axis=1, kind="stable")
    t = np.take_along_axis(times, order, 1)
    e = np.take_along_axis(event, order, 1)
    n = times.shape[1]
    at_risk = n - np.arange(n)[None, :]
    surv = np.cumprod(np.where(e, 1.0 - 1.0 / at_risk, 1.0), axis=1)
    below = surv <= 0.5
    k = np.argmax(below, axis=1)
    return np.where(below.any(axis=1), t[np.arange(len(t)), k], np.nan)


def _sample_median(data: _Data, n_boot, rng):
    """Sample median of the cells and its percentile-bootstrap 90 % interval; None when undetermined.

    Right-censored cells enter through the Kaplan-Meier estimate (a cell censored at
    ``lo`` counts as above every value below ``lo``); interval-censored ones by
    their midpoint.
    """
    finite_hi = np.isfinite(data.hi)
    times = np.concatenate([data.x, np.where(finite_hi, (data.lo + data.hi) / 2, data.lo)])
    event = np.concatenate([np.ones(len(data.x), bool), finite_hi])
    if len(times) < 5 or event.sum() < 5:
        return None
    med = float(_km_median(times[None, :], event[None, :])[0])
    if not np.isfinite(med):
        return None
    ci = None
    if n_boot > 0:
        chunk = max(1, 2_000_000 // len(times))
        meds = []
        for i in range(0, n_boot, chunk):
            idx = rng.integers(0, len(times), (min(chunk, n_boot - i), len(times)))
            meds.append(_km_median(times[idx], event[idx]))
        meds = np.concatenate(meds)
        if np.mean(np.isfinite(meds)) >= 0.95:
            lo, hi = np.nanpercentile(meds, [5, 95])
            ci = [float(lo), float(hi)]
    return med, ci


def _bootstrap_median(cand: _Candidate, kw, eps, data: _Data, n_boot, rng):
    """One-step (Newton) bootstrap over observations of the law's median; 90 % interval."""
    if n_boot <= 0:
        return None
    v = cand.pack(kw, eps)
    p = len(v)
    n = data.n
    if p == 0 or n < 5:
        return None
    h = 1e-4 * np.maximum(np.abs(v), 1.0)

    def terms(vv):
        k, e = cand.unpack(vv)
        return cand.terms(k, e, data)

    if not np.all(np.isfinite(terms(v))):
        return None
    score = np.empty((n, p))
    hess = np.empty((p, p))
    # near a boundary of the parameter space a step may overflow exp() or give inf - inf; the
    # non-finite derivatives are caught below (no interval, and the fit's note says so)
    with np.errstate(all="ignore"):
        for a in range(p):
            da = np.zeros(p)
            da[a] = h[a]
            score[:, a] = (terms(v + da) - terms(v - da)) / (2 * h[a])
            for b in range(a, p):
                db = np.zeros(p)
                db[b] = h[b]
                val = (np.sum(terms(v + da + db)) - np.sum(terms(v + da - db)) - np.sum(terms(v - da + db))
                       + np.sum(terms(v - da - db))) / (4 * h[a] * h[b])
                hess[a, b] = hess[b, a] = val
    if not np.all(np.isfinite(score)) or not np.all(np.isfinite(hess)):
        return None
    try:
        hinv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return None
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    steps = -((weights - 1.0) @ score) @ hinv.T
    meds = np.array([_median(cand.family, cand.unpack(v + st)[0], cand.bounds) for st in steps])
    meds = meds[np.isfinite(meds)]
    if len(meds) < max(10, n_boot // 2):
        return None
    return [float(np.percentile(meds, 5)), float(np.percentile(meds, 95))]


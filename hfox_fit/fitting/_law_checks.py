"""How well a fitted D2D law is known and how well it fits: the checks reported beside it.

The intervals of the law's median and parameters are a bootstrap over cells of
the whole D2D step (:func:`_bootstrap_law`: every candidate family refitted by
one Newton step from its maximum-likelihood fit with the score of each cell, and
the family chosen again, in each replicate). The
cells' own median (Kaplan-Meier under censoring, percentile bootstrap) is a
family-free check on it, and the Kolmogorov-Smirnov distance of the values
(measurement error included) to the law a check on its shape.
"""

from __future__ import annotations

import numpy as np

from ..laws import ParameterLaw
from ._families import _GH_NODES_WEIGHTS, _Candidate, _cdf, _Data, _ppf


def _law_cdf(law: ParameterLaw, x):
    """``law.cdf(x)`` by the family functions of :mod:`._families` (a frozen scipy law costs 1 ms to build)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        f = _cdf(law.family, x, law.params)
        if law.bounds is None:
            return f
        lo, hi = _cdf(law.family, np.asarray(law.bounds, float), law.params)
        return np.clip((f - lo) / (hi - lo), 0.0, 1.0)


def _law_ppf(law: ParameterLaw, u) -> np.ndarray:
    """``law.ppf(u)`` by the family functions of :mod:`._families` (as :func:`_law_cdf`)."""
    if law.bounds is None:
        return np.asarray(_ppf(law.family, np.asarray(u, float), law.params), float)
    lo, hi = _cdf(law.family, np.asarray(law.bounds, float), law.params)
    return np.clip(_ppf(law.family, lo + np.asarray(u, float) * (hi - lo), law.params), *law.bounds)


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
        f = np.asarray(_law_cdf(law, t_ev), float)
        prev = np.concatenate([[0.0], (1.0 - surv)[:-1]])[keep]
        return float(max(np.max(np.abs(km_after - f)), np.max(np.abs(prev - f))))
    u = np.asarray(_law_cdf(law, data.x), float)
    if data.nodes is not None:
        _, wts = _GH_NODES_WEIGHTS
        u[data.eiv] = np.asarray(_law_cdf(law, data.nodes), float) @ (wts / np.sqrt(np.pi))
    u = np.sort(u)
    i = np.arange(1, len(u) + 1)
    d = max(np.max(i / len(u) - u), np.max(u - (i - 1) / len(u)))
    return float(max(d, 0.0))


def _km_median(times, event):
    """Kaplan-Meier median of right-censored data (rows of ``times``/``event``, shape (B, n)); NaN when
    the survival curve stays above one half."""
    n = times.shape[1]
    at_risk = n - np.arange(n)[None, :]
    if event.all():  # no censoring: the same survival curve in every row, so one order statistic (no sort)
        below = np.cumprod(1.0 - 1.0 / at_risk[0]) <= 0.5
        k = int(np.argmax(below))
        return np.partition(times, k, axis=1)[:, k] if below.any() else np.full(len(times), np.nan)
    order = np.argsort(times, axis=1, kind="stable")
    t = np.take_along_axis(times, order, 1)
    e = np.take_along_axis(event, order, 1)
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


def _local_fit(cand: _Candidate, kw, eps, data: _Data):
    """Per-observation log-likelihood, scores and inverse Hessian of one candidate at its fit (None if not finite)."""
    v = cand.pack(kw, eps)
    p = len(v)
    if p == 0 or data.n < 5:
        return None
    h = 1e-4 * np.maximum(np.abs(v), 1.0)

    def terms(vv):
        k, e = cand.unpack(vv)
        return cand.terms(k, e, data)

    base = terms(v)
    if not np.all(np.isfinite(base)):
        return None
    score = np.empty((data.n, p))
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
    return v, base, score, hinv


def _vector_median(family, kw, bounds):
    """Median of the (truncated) law for arrays of parameters (one per replicate)."""
    if bounds is None:
        return _ppf(family, 0.5, kw)
    lo, hi = (_cdf(family, np.full(np.shape(kw["scale"]), b, float), kw) for b in bounds)
    return np.clip(_ppf(family, lo + 0.5 * (hi - lo), kw), *bounds)


def _bootstrap_law(candidates: dict, order, chosen: str, data: _Data, n_boot, rng, rule=None):
    """Bootstrap over cells of the whole D2D step: every candidate refitted, the family chosen again.

    Each replicate draws the cells (each with its value, its measurement error and its
    censoring) with replacement; every candidate of ``candidates`` (key -> (candidate,
    kw, eps)) is refitted by one Newton step from its fit with the replicate's weights,
    its AIC is the replicate's log-likelihood at that point (second order), and ``rule``
    (AIC by key, in ``order`` -> chosen key per replicate) picks the family, as the fit
    did. So the spread of the replicates holds the sampling of the cells, their fit
    errors and the choice of the family.

    Returns
    -------
    dict or None
        ``median``: the replicates' medians (chosen family each); ``params``: the
        replicates of the ``chosen`` family's parameters (``{name: array}``), and
        ``chosen_share``, the fraction of replicates that chose it. None when the
        chosen candidate's likelihood cannot be differentiated.
    """
    if n_boot <= 0:
        return None
    keys = [k for k in order if k in candidates]
    local = {}
    for k in keys:
        cand, kw, eps = candidates[k]
        loc = _local_fit(cand, kw, eps, data)
        if loc is not None:
            local[k] = loc
    if chosen not in local:
        return None
    keys = [k for k in keys if k in local]
    n = data.n
    meds = np.full((n_boot, len(keys)), np.nan)
    aic = np.full((n_boot, len(keys)), np.inf)
    chosen_params = {}
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        rows = slice(start, start + size)
        for j, k in enumerate(keys):
            cand = candidates[k][0]
            v, base, score, hinv = local[k]
            grad = weights @ score  # the replicate's score at the fit
            steps = -grad @ hinv.T  # one Newton step
            loglik = weights @ base + 0.5 * np.sum(grad * steps, axis=1)
            with np.errstate(all="ignore"):
                kw, _ = cand.unpack(v[:, None] + steps.T)
                med = np.asarray(_vector_median(cand.family, kw, cand.bounds), float)
            ok = np.isfinite(med) & np.isfinite(loglik)
            meds[rows, j] = np.where(ok, med, np.nan)
            aic[rows, j] = np.where(ok, 2 * cand.n_params - 2 * loglik, np.inf)
            if k == chosen:
                for name, val in kw.items():
                    if name not in cand.fixed and np.ndim(val):
                        chosen_params.setdefault(name, []).append(np.asarray(val, float))
    pick = (rule or _first_within_2)(aic, keys)
    med = meds[np.arange(n_boot), pick]
    med = med[np.isfinite(med)]
    if len(med) < max(10, n_boot // 2):
        return None
    return {"median": med, "params": {k: np.concatenate(v) for k, v in chosen_params.items()},
            "chosen_share": float(np.mean(np.asarray(keys)[pick] == chosen))}


def _first_within_2(aic, keys):
    """Per replicate (row of ``aic``): the first key, in order, within 2 AIC units of the lowest."""
    low = np.min(aic, axis=1, keepdims=True)
    return np.argmax(aic <= low + 2.0, axis=1)


def _percentile_interval(values, level=0.90):
    """Percentile interval and standard deviation of bootstrap replicates (None, None when too few)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 10:
        return None, None
    a = 50 * (1 - level)
    with np.errstate(over="ignore", invalid="ignore"):  # a degenerate law's replicates reach 1e300: sd inf
        sd = float(np.std(values, ddof=1))
    return [float(np.percentile(values, a)), float(np.percentile(values, 100 - a))], sd

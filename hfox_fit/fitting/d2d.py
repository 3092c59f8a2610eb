r"""Device-to-device (D2D) and cycle-to-cycle (C2C) laws of the per-cell parameters.

For each parameter, every candidate family (``norm``, ``lognorm``, ``expon``,
``gamma``, ``weibull_min``, each optionally truncated to the range of the
data, which is the maximum-likelihood truncation) is fitted by maximum
likelihood and the lowest AIC wins. Positive families have ``loc = 0``
(``expon`` keeps a free ``loc``), so every untruncated candidate has two
parameters and a truncated one four.

Cells whose value is only bounded (e.g. a two-slope break beyond the last
pulse) enter as censored observations, ``log(F(hi) - F(lo))``; cells whose
standard error is large against the population's spread are left out (and
counted). Every value with a standard error enters the likelihood convolved
with its Gaussian measurement error (errors in variables). The median's 90 %
interval is a bootstrap over cells (one Newton step from the maximum-likelihood
fit per replicate, with the score of each cell). The cells' own median
(Kaplan-Meier under censoring, percentile bootstrap) is reported beside it as a
family-free check.

Correlations: Spearman's rho and the Gaussian-copula correlation (Pearson
correlation of normal scores ``Phi^-1(rank / (n + 1))``, pairwise complete,
projected to the nearest correlation matrix).

C2C: with several cycles per cell, the deviation of each cycle's value from
its cell's mean is inflated by ``n / (n - 1)`` and the cycles' own stderr is
taken out; a ``norm(0, scale)`` law is kept when a chi-square test says the
deviations exceed the measurement noise (p < 0.01).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from ..exceptions import FitError, NotFittedError
from ..laws import FAMILIES, ParameterLaw

__all__ = [
    "CANDIDATE_FAMILIES",
    "ParamFit",
    "fit_parameter",
    "D2DFitter",
    "correlations",
    "fit_c2c",
    "cell_values",
]

#: Families tried for every parameter (``uniform`` is added for the RTN amplitude).
CANDIDATE_FAMILIES = ("norm", "lognorm", "expon", "gamma", "weibull_min")
_POSITIVE = ("lognorm", "gamma", "weibull_min", "uniform")


@dataclass
class ParamFit:
    """The D2D law of one parameter and how it was chosen.

    Attributes
    ----------
    name : str
    law : ParameterLaw
    median : float
        Median of the fitted law (the parameter's unit).
    median_ci90 : list of float or None
        Bootstrap 90 % interval of the law's median (one Newton step from the
        maximum-likelihood fit per replicate over cells).
    sample_median : float
        The cells' own median, free of any family (Kaplan-Meier where cells are
        right-censored), as a check on the law: NaN where undetermined.
    sample_median_ci90 : list of float or None
        Percentile-bootstrap 90 % interval of ``sample_median`` over cells.
    ks : float or None
        Kolmogorov-Smirnov statistic of the values against the law, measurement
        error included (below most censoring points when there is censoring);
        None with fewer than 5 values.
    scores : dict
        Per candidate ("lognorm", "lognorm_truncated", ...): ``aic``, ``loglik``
        (NaN where it could not be fitted, with the reason in ``note``).
    n_used, n_censored, n_excluded : int
    note : str
    """

    name: str
    law: ParameterLaw
    median: float
    median_ci90: list | None
    ks: float | None
    scores: dict
    n_used: int
    n_censored: int
    n_excluded: int
    note: str = ""
    contamination: float = 0.0
    sample_median: float = np.nan
    sample_median_ci90: list | None = None

    def to_dict(self) -> dict:
        d = self.law.to_dict()
        d.update({
            "median": self.median,
            "median_ci90": self.median_ci90,
            "sample_median": _f(self.sample_median),
            "sample_median_ci90": self.sample_median_ci90,
            "ks": self.ks,
            "n_used": self.n_used,
            "n_censored": self.n_censored,
            "n_excluded": self.n_excluded,
            "contamination": self.contamination,
            "scores": {k: {"aic": _f(v["aic"]), "loglik": _f(v["loglik"])} for k, v in self.scores.items()},
        })
        if self.note:
            d["note"] = self.note
        return d


def _f(x):
    x = float(x)
    return x if np.isfinite(x) else None


# --------------------------------------------------------------------------------------
# fast log-density / cdf / ppf (scipy's frozen distributions cost ~1 ms each to build)
# --------------------------------------------------------------------------------------


def _logpdf(family, x, kw):
    x = np.asarray(x, float)
    with np.errstate(all="ignore"):
        if family == "norm":
            z = (x - kw["loc"]) / kw["scale"]
            return -0.5 * z * z - np.log(kw["scale"] * np.sqrt(2 * np.pi))
        if family == "uniform":
            inside = (x >= kw["loc"]) & (x <= kw["loc"] + kw["scale"])
            return np.where(inside, -np.log(kw["scale"]), -np.inf)
        if family == "expon":
            y = (x - kw["loc"]) / kw["scale"]
            return np.where(y >= 0, -y - np.log(kw["scale"]), -np.inf)
        y = x / kw["scale"]
        pos = y > 0
        ly = np.log(np.where(pos, y, 1.0))
        if family == "lognorm":
            s = kw["s"]
            out = -0.5 * (ly / s) ** 2 - np.log(s * np.sqrt(2 * np.pi)) - ly - np.log(kw["scale"])
        elif family == "gamma":
            a = kw["a"]
            out = (a - 1) * ly - y - special.gammaln(a) - np.log(kw["scale"])
        elif family == "weibull_min":
            c = kw["c"]
            out = np.log(c) + (c - 1) * ly - np.exp(c * ly) - np.log(kw["scale"])
        else:  # pragma: no cover - guarded by FAMILIES
            raise ValueError(family)
        return np.where(pos, out, -np.inf)


def _cdf(family, x, kw):
    x = np.asarray(x, float)
    with np.errstate(all="ignore"):
        if family == "norm":
            return special.ndtr((x - kw["loc"]) / kw["scale"])
        if family == "uniform":
            return np.clip((x - kw["loc"]) / kw["scale"], 0.0, 1.0)
        if family == "expon":
            y = (x - kw["loc"]) / kw["scale"]
            return np.where(y > 0, -np.expm1(-y), 0.0)
        y = np.where(np.isposinf(x), np.inf, x / kw["scale"])
        pos = y > 0
        yy = np.where(pos, y, 1.0)
        if family == "lognorm":
            out = special.ndtr(np.log(yy) / kw["s"])
        elif family == "gamma":
            out = special.gammainc(kw["a"], yy)
        else:
            out = -np.expm1(-np.power(yy, kw["c"]))
        return np.where(pos, out, 0.0)


def _ppf(family, p, kw):
    p = np.asarray(p, float)
    with np.errstate(all="ignore"):
        if family == "norm":
            return kw["loc"] + kw["scale"] * special.ndtri(p)
        if family == "uniform":
            return kw["loc"] + kw["scale"] * p
        if family == "expon":
            return kw["loc"] - kw["scale"] * np.log1p(-p)
        if family == "lognorm":
            return kw["scale"] * np.exp(kw["s"] * special.ndtri(p))
        if family == "gamma":
            return kw["scale"] * special.gammaincinv(kw["a"], p)
        return kw["scale"] * np.power(-np.log1p(-p), 1.0 / kw["c"])


def _median(family, kw, bounds):
    """Median of the (truncated) law without building scipy objects."""
    if bounds is None:
        return float(_ppf(family, 0.5, kw))
    lo, hi = _cdf(family, np.array(bounds, float), kw)
    return float(np.clip(_ppf(family, lo + 0.5 * (hi - lo), kw), *bounds))


# --------------------------------------------------------------------------------------
# one candidate family
# --------------------------------------------------------------------------------------


@dataclass
class _Data:
    x: np.ndarray  # exact values
    lo: np.ndarray  # interval-censored lower ends
    hi: np.ndarray  # interval-censored upper ends (inf = right-censored)
    window: tuple | None = None  # observation window (selection), e.g. a detection limit
    guard: bool = False  # contamination guard on
    se: np.ndarray | None = None  # measurement stderr of x (errors-in-variables where it matters)

    def __post_init__(self):
        self.eiv = np.zeros(len(self.x), bool)
        self.noisy = np.zeros(len(self.x), bool)
        if self.se is not None and len(self.x) >= 5:
            q1, q3 = np.percentile(self.x, [25, 75])
            spread = (q3 - q1) / 1.349 or np.std(self.x) or 1.0
            # every measured value is convolved with its error (it matters near a sharp edge such as
            # expon's loc even when the error is small against the spread); the noisy ones may also
            # stray outside a law's support and do not place truncation bounds or expon's loc
            self.eiv = np.isfinite(self.se) & (self.se > 0)
            self.noisy = np.isfinite(self.se) & (self.se > EIV_THRESHOLD * spread)
        self.nodes = None
        if self.eiv.any():
            z, wts = np.polynomial.hermite.hermgauss(_GH_NODES)
            # theta = x - sqrt(2) se z  (x - theta ~ N(0, se^2))
            self.nodes = self.x[self.eiv, None] - np.sqrt(2.0) * self.se[self.eiv, None] * z[None, :]
            self.log_w = np.log(wts / np.sqrt(np.pi))

    @property
    def n(self):
        return len(self.x) + len(self.lo)

    @property
    def span(self):
        return float(np.min(self.x)), float(np.max(self.x))


#: Largest fraction of values the contamination guard may set aside.
MAX_CONTAMINATION = 0.03
#: A cell's stderr above this fraction of the population's robust spread marks its value as noisy:
#: it may stray outside the law's support and does not place truncation bounds or expon's loc.
#: (Every value with a stderr is convolved with its measurement error in the likelihood.)
EIV_THRESHOLD = 0.05
_GH_NODES = 12


@dataclass
class _Candidate:
    family: str
    bounds: tuple | None
    fixed: dict  # parameters held fixed (expon loc)

    def unpack(self, v):
        """Transformed vector -> (scipy keyword arguments, contamination fraction)."""
        f = self.family
        eps = 0.0
        if self._guarded:
            eps = MAX_CONTAMINATION * special.expit(v[-1])
            v = v[:-1]
        if f == "norm":
            kw = {"loc": v[0], "scale": np.exp(v[1])}
        elif f == "expon":
            if "loc" in self.fixed:
                kw = {"loc": self.fixed["loc"], "scale": np.exp(v[0])}
            else:  # loc in units of a reference scale, for the optimizer
                kw = {"loc": v[0] * self.ref, "scale": np.exp(v[1])}
        elif f == "uniform":
            kw = {"loc": 0.0, "scale": np.exp(v[0])}
        elif f == "gamma":  # (log a, log mean): the shape and the mean are nearly uncorrelated
            kw = {"a": np.exp(v[0]), "loc": 0.0, "scale": np.exp(v[1] - v[0])}
        else:
            kw = {FAMILIES[f][0]: np.exp(v[0]), "loc": 0.0, "scale": np.exp(v[1])}
        return kw, eps

    def pack(self, kw, eps):
        f = self.family
        if f == "norm":
            v = [kw["loc"], np.log(kw["scale"])]
        elif f == "expon" and "loc" not in self.fixed:
            v = [kw["loc"] / self.ref, np.log(kw["scale"])]
        elif f in ("expon", "uniform"):
            v = [np.log(kw["scale"])]
        elif f == "gamma":
            v = [np.log(kw["a"]), np.log(kw["a"] * kw["scale"])]
        else:
            v = [np.log(kw[FAMILIES[f][0]]), np.log(kw["scale"])]
        if self._guarded:
            v.append(special.logit(min(max(eps / MAX_CONTAMINATION, 1e-6), 1 - 1e-6)))
        return np.array(v, float)

    _guarded: bool = False
    ref: float = 1.0  # reference scale of a free expon loc

    @property
    def n_params(self):
        """Free parameters counted by AIC (shape, loc, scale, bounds, contamination)."""
        k = {"norm": 2, "expon": 2, "uniform": 1}.get(self.family, 2)
        return k + (2 if self.bounds is not None else 0) + (1 if self._guarded else 0)

    def _eiv_logpdf(self, kw, data: _Data):
        """Log-density of the noisy values (law convolved with N(0, stderr^2)): closed forms for
        untruncated norm and expon, Gauss-Hermite quadrature otherwise."""
        x, se = data.x[data.eiv], data.se[data.eiv]
        if self.bounds is None and self.family == "norm":
            var = kw["scale"] ** 2 + se**2
            return -0.5 * (x - kw["loc"]) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        if self.bounds is None and self.family == "expon":
            lam = 1.0 / kw["scale"]  # exponentially modified Gaussian
            return (np.log(lam) + lam * (kw["loc"] - x) + 0.5 * (lam * se) ** 2
                    + special.log_ndtr((x - kw["loc"]) / se - lam * se))
        lp = _logpdf(self.family, data.nodes, kw)
        if self.bounds is None:
            return special.logsumexp(lp + data.log_w[None, :], axis=1)
        lo, hi = self.bounds  # the truncated density is zero outside its bounds
        lp = np.where((data.nodes >= lo) & (data.nodes <= hi), lp, -np.inf)
        out = special.logsumexp(lp + data.log_w[None, :], axis=1)
        # a value far outside the bounds: the mass of its error beyond the nearest bound
        near = np.where(x < lo, lo, hi)
        tail = _logpdf(self.family, near, kw) + special.log_ndtr(-np.abs(x - near) / se)
        return np.fmax(out, tail)

    def terms(self, kw, eps, data: _Data):
        """Per-observation log-likelihood (exact values first, then censored)."""
        f = self.family
        with np.errstate(all="ignore"):
            lx = _logpdf(f, data.x, kw)
            if data.nodes is not None:
                lx[data.eiv] = self._eiv_logpdf(kw, data)
            pc = _cdf(f, data.hi, kw) - _cdf(f, data.lo, kw) if len(data.lo) else np.zeros(0)
            lz = 0.0
            lo_b, hi_b = (-np.inf, np.inf) if self.bounds is None else self.bounds
            if data.window is not None:
                lo_b, hi_b = max(lo_b, data.window[0]), min(hi_b, data.window[1])
            if np.isfinite(lo_b) or np.isfinite(hi_b):
                z = float(_cdf(f, hi_b, kw) - _cdf(f, lo_b, kw))
                lz = np.log(z) if z > 0 else -np.inf
                lx = lx - lz
                pc = pc / z if z > 0 else pc * np.nan
                if self.bounds is not None:
                    inside = (data.x >= self.bounds[0]) & (data.x <= self.bounds[1])
                    lx = np.where(inside | data.eiv, lx, -np.inf)
            if eps > 0:
                a, b = data.span
                lg = -np.log(b - a) if b > a else 0.0
                lx = np.logaddexp(np.log1p(-eps) + lx, np.log(eps) + lg)
                if len(data.lo):
                    frac = np.clip((np.minimum(data.hi, b) - np.maximum(data.lo, a)) / max(b - a, 1e-300), 0, 1)
                    pc = (1 - eps) * pc + eps * frac
            lc = np.log(np.maximum(pc, 0.0))
            out = np.concatenate([lx, lc])
        return np.where(np.isnan(out), -np.inf, out)


def _start(family, x):
    """Starting scipy keyword arguments from the exact values (closed forms / moments)."""
    x = np.asarray(x, float)
    m, s = float(np.mean(x)), float(np.std(x)) or 1e-12 * max(abs(float(np.mean(x))), 1e-300)
    if family == "norm":
        return {"loc": m, "scale": s}
    if family == "expon":
        return {"loc": float(np.min(x)), "scale": max(m - float(np.min(x)), 1e-12 * abs(m) + 1e-300)}
    if family == "uniform":
        return {"loc": 0.0, "scale": float(np.max(x))}
    lx = np.log(x)
    if family == "lognorm":
        return {"s": float(np.std(lx)) or 1e-3, "loc": 0.0, "scale": float(np.exp(np.mean(lx)))}
    cv = s / m
    if family == "gamma":
        a = max(1.0 / cv**2, 1e-2)
        return {"a": a, "loc": 0.0, "scale": m / a}
    # weibull_min: c from the coefficient of variation (approximation 1.2 / cv), then the scale
    c = float(np.clip(1.2 / max(cv, 1e-6), 0.05, 1e3))
    return {"c": c, "loc": 0.0, "scale": m / special.gamma(1 + 1 / c)}


def _expon_loc(x, guard):
    """loc of a shifted exponential: the minimum, or (guarded) the order statistic where the bulk starts."""
    xs = np.sort(x)
    if not guard:
        return float(xs[0])
    n = len(xs)
    k = max(int(MAX_CONTAMINATION * n), 1)
    a, b = xs[0], xs[-1]
    lg = -np.log(b - a) if b > a else 0.0
    best, best_ll = xs[0], -np.inf
    csum = np.cumsum(xs[::-1])[::-1]  # sum of xs[j:]
    for j in range(min(k, n - 5) + 1):
        loc = xs[j]
        m = n - j
        scale = max(csum[j] / m - loc, 1e-300)
        eps = min(max(j / n, 1e-6), MAX_CONTAMINATION)
        body = (xs[j:] - loc) / scale
        ll = np.sum(np.logaddexp(np.log1p(-eps) - body - np.log(scale), np.log(eps) + lg)) + j * (np.log(eps) + lg)
        if ll > best_ll:
            best, best_ll = loc, ll
    return float(best)


def _fit_candidate(family, truncated, data: _Data, start_v=None):
    """Maximum-likelihood fit of one candidate. Returns (candidate, kw, eps, loglik) or raises ValueError."""
    x = data.x
    if family in _POSITIVE:
        # a few values <= 0 are failed fits (guard) or noisy ones (errors in variables); many rule it out
        hard = (x <= 0) & ~data.noisy
        if hard.sum() > (MAX_CONTAMINATION / 2 * len(x) if data.guard else 0) or (
                len(data.lo) and np.any(data.hi <= 0)):
            raise ValueError(f"{int((x <= 0).sum())} value(s) <= 0 (the family has support x > 0)")
        x = x[x > 0]  # for the starting values only; the likelihood sees every value
    if len(x) < 5:
        raise ValueError(f"only {len(x)} exact values")
    bounds = None
    if truncated:
        if len(data.lo):
            raise ValueError("not with censored values")
        precise = data.x[~data.noisy]  # noisy values may stray outside the law's range
        if len(precise) < 5:
            raise ValueError("too few precise values to place truncation bounds")
        bounds = (float(np.min(precise)), float(np.max(precise)))
        if not bounds[0] < bounds[1]:
            raise ValueError("all values equal")
    fixed = {}
    if family == "expon":
        loc0 = bounds[0] if truncated else _expon_loc(x, data.guard)
        if truncated or not data.guard:
            fixed["loc"] = loc0  # the maximum-likelihood loc (memoryless: any loc <= the lower bound)
    cand = _Candidate(family, bounds, fixed)
    # the truncation bounds are the range of the values: a uniform contamination over the same
    # range would only trade places with the law's flat parts, so truncated laws go unguarded
    cand._guarded = data.guard and family != "uniform" and bounds is None
    if family == "uniform":
        kw = {"loc": 0.0, "scale": float(np.max(x))}
        return cand, kw, 0.0, float(np.sum(cand.terms(kw, 0.0, data)))
    body = x[x >= loc0] if family == "expon" else x
    start = _start(family, body)
    if family == "expon":
        start["loc"] = loc0
        start["scale"] = max(float(np.mean(body)) - loc0, 1e-12 * max(abs(float(np.mean(body))), 1e-300))
        cand.ref = start["scale"]
    v0 = cand.pack(start, 0.01)

    def nll(v):
        kw, eps = cand.unpack(v)
        s = np.sum(cand.terms(kw, eps, data))
        return -s if np.isfinite(s) else 1e300

    if start_v is not None and len(start_v) == len(v0):
        v0 = np.asarray(start_v, float)
    elif family == "expon" and "loc" not in fixed:
        # the likelihood jumps each time loc passes a value: scan loc over the low values
        # (scale and contamination optimised at each), then polish from the best
        precise = np.sort(x[~data.noisy[: len(x)]] if len(data.noisy) == len(x) else x)
        locs = np.unique(np.concatenate([[loc0], precise[: max(int(MAX_CONTAMINATION * len(precise)), 1) + 1]]))
        if len(locs) > 24:
            locs = locs[np.linspace(0, len(locs) - 1, 24).astype(int)]
        scan = _Candidate(family, bounds, {})
        scan._guarded, scan.ref = cand._guarded, cand.ref
        best_loc, best_val = loc0, np.inf
        for loc in locs:
            sub = _Candidate(family, bounds, {"loc": float(loc)})
            sub._guarded = cand._guarded

            def nll_loc(v, sub=sub):
                kw, eps = sub.unpack(v)
                val = np.sum(sub.terms(kw, eps, data))
                return -val if np.isfinite(val) else 1e300

            scale0 = max(float(np.mean(x[x >= loc]) - loc), 1e-300) if np.any(x >= loc) else start["scale"]
            r = optimize.minimize(nll_loc, sub.pack({"loc": loc, "scale": scale0}, 0.01), method="Nelder-Mead",
                                  options={"xatol": 1e-5, "fatol": 1e-3, "maxfev": 400})
            if r.fun < best_val:
                best_val, best_loc = r.fun, float(loc)
                best_kw, best_eps = sub.unpack(r.x)
        if np.isfinite(best_val):
            v0 = cand.pack({"loc": best_loc, "scale": best_kw["scale"]}, best_eps)
    best = None
    for v in (v0, v0 + 0.1, v0 - 0.1):
        r = optimize.minimize(nll, v, method="Nelder-Mead",
                              options={"xatol": 1e-6, "fatol": 1e-4, "maxfev": 4000})
        if best is None or r.fun < best.fun:
            best = r
        if best.fun < 1e299 and r.success:
            break
    if not best.fun < 1e299:
        raise ValueError("the likelihood is zero everywhere tried")
    kw, eps = cand.unpack(best.x)
    return cand, {k: float(v) for k, v in kw.items()}, float(eps), float(-best.fun)


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


def fit_parameter(name, values, *, stderr=None, lower=None, upper=None, families=CANDIDATE_FAMILIES,
                  truncate=True, window=None, max_stderr_ratio=20.0, guard=True,
                  bootstrap=200, max_select=3000, rng=0) -> ParamFit:
    """Fit the D2D law of one parameter by maximum likelihood and AIC.

    Parameters
    ----------
    name : str
    values : array-like of shape (n,)
        Per-cell values (NaN where only bounded, see ``lower``/``upper``).
    stderr : array-like of shape (n,), optional
        Per-cell standard errors. Cells with ``stderr > max_stderr_ratio *``
        (robust spread of the values) or a NaN stderr are left out; where the
        stderr is positive, the cell's likelihood is the law convolved with its
        Gaussian measurement error (closed forms for norm and expon, Gauss-Hermite
        quadrature otherwise).
    lower, upper : array-like of shape (n,), optional
        Interval of cells whose value is NaN (``upper = inf``: right-censored).
    families : sequence of str
        Candidates, in order of preference: within 2 AIC units of the best, the
        first (untruncated before truncated) is kept.
    truncate : bool, default=True
        Also try each family truncated to the data range.
    window : tuple of float, optional
        Observation window: values outside could not have been seen (selection),
        e.g. ``(detection_limit, inf)``. The returned law is not truncated to it.
    guard : bool, default=True
        Contamination guard (50 values or more): each untruncated candidate is a
        mixture of the family and, with a fitted weight up to
        :data:`MAX_CONTAMINATION`, a uniform law over the data range, so that a
        few failed per-cell fits cannot decide a family or its ``loc``. The law
        returned is the family's.
    bootstrap : int, default=200
    max_select : int, default=3000
        The candidates are compared (AIC) on a random subset of at most this many
        cells; the chosen family is then refitted on all of them. 0 for all cells.
    rng : int or Generator

    Raises
    ------
    FitError
        When fewer than 5 usable values remain or no family can be fitted.
    """
    rng = np.random.default_rng(rng)
    values = np.asarray(values, float)
    n_all = len(values)
    exact = np.isfinite(values)
    excluded = 0
    if stderr is not None:
        se = np.asarray(stderr, float)
        xs = values[exact]
        spread = (np.percentile(xs, 75) - np.percentile(xs, 25)) / 1.349 if xs.size >= 5 else np.inf
        precise = np.isfinite(se) & (se <= max_stderr_ratio * spread)
        excluded = int((exact & ~precise).sum())
        exact = exact & precise
    x = values[exact]
    lo = hi = np.zeros(0)
    cens = np.zeros(n_all, bool)
    if lower is not None:
        lower = np.asarray(lower, float)
        upper = np.asarray(upper if upper is not None else np.full(n_all, np.inf), float)
        cens = ~np.isfinite(values) & np.isfinite(lower)
        lo, hi = lower[cens], upper[cens]
    excluded += int((~np.isfinite(values) & ~cens).sum())
    se_x = np.asarray(stderr, float)[exact] if stderr is not None else None
    data = _Data(x, lo, hi, window, guard=bool(guard and len(x) >= 50), se=se_x)
    if len(x) < 5:
        raise FitError(
            f"parameter {name!r}: only {len(x)} cell(s) with a precise value (of {n_all}); the D2D law "
            "needs at least 5. Fit more cells or relax max_stderr_ratio."
        )
    # candidates are compared on at most max_select cells (a random subset), the winner refitted on all
    sel_data = data
    if max_select and data.n > max_select:
        frac = max_select / data.n
        kx = rng.random(len(x)) < frac
        kc = rng.random(len(lo)) < frac
        sel_data = _Data(x[kx], lo[kc], hi[kc], window, guard=data.guard, se=se_x[kx] if se_x is not None else None,
                         )
    scores, fits, order = {}, {}, []
    for trunc in ((False, True) if truncate else (False,)):
        for fam in families:
            key = fam + ("_truncated" if trunc else "")
            order.append(key)
            start = None
            if trunc and fam in fits and fam != "expon":
                c0, k0, e0 = fits[fam]
                start = c0.pack(k0, e0)
            try:
                cand, kw, eps, ll = _fit_candidate(fam, trunc, sel_data, start_v=start)
            except (ValueError, FloatingPointError) as err:
                scores[key] = {"aic": np.nan, "loglik": np.nan, "note": str(err)}
                continue
            scores[key] = {"aic": 2 * cand.n_params - 2 * ll, "loglik": ll, "contamination": eps}
            fits[key] = (cand, kw, eps)
    finite = {k: v["aic"] for k, v in scores.items() if np.isfinite(v["aic"])}
    if not finite:
        raise FitError(f"parameter {name!r}: no candidate family could be fitted ({scores}).")
    note = ""
    while True:
        low = min(finite.values())
        best = next(k for k in order if k in finite and finite[k] <= low + 2.0)
        cand, kw, eps = fits[best]
        if sel_data is data:
            break
        # chosen on a subset: refit on every cell; a candidate that does not hold there (e.g. a
        # truncation bound at a value <= 0 for a positive family) gives way to the next one
        fam, trunc = best.replace("_truncated", ""), best.endswith("_truncated")
        refit = None
        for start in (cand.pack(kw, eps), None):
            try:
                refit = _fit_candidate(fam, trunc, data, start_v=start)
                break
            except (ValueError, FloatingPointError):
                continue
        if refit is not None:
            cand, kw, eps, _ = refit
            break
        scores[best]["note"] = "chosen on the subset, but not valid on all the cells"
        del finite[best]
        if not finite:
            raise FitError(f"parameter {name!r}: no candidate family holds on all the cells ({scores}).")
    law = ParameterLaw(cand.family, kw, cand.bounds)
    ci = _bootstrap_median(cand, kw, eps, data, bootstrap, rng)
    median = float(law.median())
    if ci is None and bootstrap:
        note = _join(note, "median interval unavailable: the bootstrap could not be computed for this law")
    if eps * len(x) >= 1:
        note = _join(note, f"about {eps * len(x):.0f} value(s) ({100 * eps:.1f} %) set aside as outliers by the "
                           "contamination guard")
    sample = _sample_median(data, bootstrap, rng)
    sample_median, sample_ci = sample if sample is not None else (np.nan, None)
    if sample_ci is not None and not sample_ci[0] <= median <= sample_ci[1]:
        note = _join(note, f"the {law.family} law's median {median:.4g} lies outside the 90 % interval of the "
                           f"cells' own median ({sample_median:.4g}): the family fits the bulk of the cells "
                           "only roughly")
    return ParamFit(name, law, median, ci, _ks(law, data), scores, int(len(x)), int(len(lo)), excluded, note,
                    contamination=float(eps), sample_median=float(sample_median), sample_median_ci90=sample_ci)


def _join(a, b):
    return f"{a}; {b}" if a else b


def fallback_law(values, reason):
    """``norm(median, 1.4826 MAD)`` of the finite values (None when there are none) and why it is used."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, reason + "; no value to describe"
    med = float(np.median(v))
    scale = float(1.4826 * np.median(np.abs(v - med))) or max(abs(med) * 1e-3, 1e-12)
    return ParameterLaw("norm", {"loc": med, "scale": scale}, None), (
        reason + f"; the model uses norm(median, 1.4826 MAD) of the {v.size} value(s) instead")


# --------------------------------------------------------------------------------------
# per-cell values from (cell, cycle) rows
# --------------------------------------------------------------------------------------


def cell_values(rows: pd.DataFrame, params) -> pd.DataFrame:
    """Average each parameter over a cell's unflagged cycles.

    Returns one row per (wafer, die, device) with ``<p>``, ``<p>_stderr`` and, for
    ``t_star``, ``t_star_lo``/``t_star_hi`` when no cycle has an exact value
    (censored cells), plus ``n_cycles``.
    """
    keys = ["wafer", "die", "device"]
    g = rows.groupby(keys, sort=False, observed=True)
    out = g.size().rename("n_cycles").to_frame()
    for p in params:
        v = rows[p]
        se = rows.get(p + "_stderr", pd.Series(np.nan, index=rows.index))
        agg = pd.DataFrame({"v": v, "se2": se**2, "n": v.notna().astype(float)}).groupby(
            [rows[k] for k in keys], sort=False, observed=True)
        mean = agg["v"].mean()
        n = agg["n"].sum()
        sd = agg["v"].std()
        se_mean = np.sqrt(agg["se2"].mean() / n.clip(lower=1))
        se_cell = np.where(n >= 2, sd / np.sqrt(n.clip(lower=1)), se_mean)
        out[p] = mean.to_numpy()
        out[p + "_stderr"] = np.where(n >= 2, np.maximum(se_cell, se_mean), se_mean)
        if p + "_lo" in rows:
            lo = rows.groupby(keys, sort=False, observed=True)[p + "_lo"].min()
            hi = rows.groupby(keys, sort=False, observed=True)[p + "_hi"].max()
            out[p + "_lo"] = lo.to_numpy()
            out[p + "_hi"] = hi.to_numpy()
    return out.reset_index()


# --------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------


def _nearest_correlation(c):
    c = (c + c.T) / 2
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-6, None)
    c = v @ np.diag(w) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


def correlations(table: pd.DataFrame, names) -> dict:
    """Spearman and Gaussian-copula correlation matrices of ``names`` (pairwise complete).

    Returns
    -------
    dict with ``names``, ``spearman``, ``copula`` (lists of lists) and ``n_pairs``.
    """
    names = list(names)
    k = len(names)
    sp = np.eye(k)
    cop = np.eye(k)
    npairs = np.zeros((k, k), int)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = table[names[i]].to_numpy(float), table[names[j]].to_numpy(float)
            m = np.isfinite(a) & np.isfinite(b)
            npairs[i, j] = npairs[j, i] = int(m.sum())
            if m.sum() < 5:
                sp[i, j] = sp[j, i] = 0.0
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = stats.spearmanr(a[m], b[m]).statistic
            sp[i, j] = sp[j, i] = r if np.isfinite(r) else 0.0
            ra = stats.rankdata(a[m]) / (m.sum() + 1)
            rb = stats.rankdata(b[m]) / (m.sum() + 1)
            za, zb = special.ndtri(ra), special.ndtri(rb)
            c = np.corrcoef(za, zb)[0, 1]
            cop[i, j] = cop[j, i] = c if np.isfinite(c) else 0.0
    if k:
        cop = _nearest_correlation(cop)
    return {"names": names, "spearman": sp.tolist(), "copula": cop.tolist(), "n_pairs": npairs.tolist()}


# --------------------------------------------------------------------------------------
# C2C
# --------------------------------------------------------------------------------------


def _c2c_robust(ss, dof, se2):
    """Robust C2C variance: the var for which the median of SS_i / ((var + se2_i) dof_i) is chi2's.

    ``SS_i ~ (var + se2_i) chi2(dof_i)``; matching the median (not the mean) keeps a
    few failed per-cycle fits from inflating the variance.
    """
    target = float(np.median(stats.chi2.median(dof) / dof))

    def med(v):
        return float(np.median(ss / ((v + se2) * dof)))

    if med(0.0) <= target:
        return 0.0
    hi = float(np.max(ss / dof)) * 10 + 1e-300
    return float(optimize.brentq(lambda v: med(v) - target, 0.0, hi, xtol=1e-12 * hi))


def fit_c2c(rows: pd.DataFrame, params, *, bootstrap=200, rng=0, alpha=0.01, max_stderr_ratio=0.5) -> dict:
    """Cycle-to-cycle laws: ``norm(0, scale)`` of each cycle's deviation from its cell's own value.

    Per cell, the sum of squared deviations from the cell's mean over its ``n``
    cycles is ``(scale^2 + stderr^2) chi2(n - 1)`` (a random-effects model, the
    cycles' own stderr taken out); ``scale`` makes the median over the cells of
    the standardised sums match chi2's (robust to a few failed fits). It is
    significant when more standardised sums than chance exceed chi2's median
    at ``scale = 0`` (one-sided sign test). Cells whose stderr exceeds
    ``max_stderr_ratio`` times the spread of the values are left out.

    Returns
    -------
    dict of str to dict
        Per parameter: ``scale`` (its unit), ``scale_ci90`` (bootstrap over cells),
        ``p_value``, ``significant``, ``n_cells``, and ``law`` (a ParameterLaw, only
        when significant).
    """
    rng = np.random.default_rng(rng)
    keys = ["wafer", "die", "device"]
    out = {}
    for p in params:
        if p + "_stderr" not in rows:
            continue
        sub = rows[[*keys, p, p + "_stderr"]].dropna()
        if sub.empty:
            continue
        x = sub[p].to_numpy()
        q1, q3 = np.percentile(x, [25, 75])
        spread = (q3 - q1) / 1.349 or np.std(x)
        sub = sub[sub[p + "_stderr"].to_numpy() <= max_stderr_ratio * spread]
        cell = pd.factorize(pd.MultiIndex.from_frame(sub[keys]))[0] if len(sub) else np.zeros(0, int)
        if len(sub) == 0:
            continue
        n = np.bincount(cell)
        mean = np.bincount(cell, sub[p].to_numpy()) / n
        dev = sub[p].to_numpy() - mean[cell]
        ss = np.bincount(cell, dev**2)
        se2 = np.bincount(cell, sub[p + "_stderr"].to_numpy() ** 2) / n
        keep = n >= 2
        if keep.sum() < 10:
            continue
        ss, dof, se2 = ss[keep], (n - 1.0)[keep], se2[keep]
        var = _c2c_robust(ss, dof, se2)
        above = int(np.sum(ss / (se2 * dof) > stats.chi2.median(dof) / dof))
        pval = float(stats.binom.sf(above - 1, len(ss), 0.5))
        scale = float(np.sqrt(var))
        ci = None
        m = int(keep.sum())
        if bootstrap and m >= 5:
            reps = []
            for _ in range(min(bootstrap, 100)):
                pick = rng.integers(0, m, m)
                reps.append(np.sqrt(_c2c_robust(ss[pick], dof[pick], se2[pick])))
            ci = [float(np.percentile(reps, 5)), float(np.percentile(reps, 95))]
        entry = {"scale": scale, "scale_ci90": ci, "p_value": pval, "significant": bool(pval < alpha and scale > 0),
                 "n_cells": m}
        if entry["significant"]:
            entry["law"] = ParameterLaw("norm", {"loc": 0.0, "scale": scale}, None)
        out[p] = entry
    return out


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------


@dataclass
class _Spec:
    lower: str | None = None
    upper: str | None = None
    families: tuple = CANDIDATE_FAMILIES
    window: tuple | None = None
    truncate: bool = True
    extra: dict = field(default_factory=dict)


class D2DFitter:
    """Fit the D2D law of every per-cell parameter, their correlations and C2C laws.

    Parameters
    ----------
    params : sequence of str
        Columns of the per-cell table to fit (each with ``<p>_stderr``).
    families : sequence of str, default=CANDIDATE_FAMILIES
    truncate : bool, default=True
    bootstrap : int, default=200
    max_stderr_ratio : float, default=20.0
    random_state : int, default=0
    fallback : bool, default=False
        When a parameter's law cannot be fitted (e.g. a single cell), describe it
        by ``norm(median, 1.4826 MAD)`` and say so in ``notes_`` instead of raising.

    Attributes
    ----------
    fits_ : dict of str to ParamFit
        The parameters whose law was fitted.
    laws_ : dict of str to ParameterLaw
        Every parameter's law (fitted, or the fallback).
    notes_ : list of str
    correlation_ : dict (names, spearman, copula)
    c2c_ : dict
    """

    def __init__(self, params, families=CANDIDATE_FAMILIES, truncate=True, bootstrap=200,
                 max_stderr_ratio=20.0, random_state=0, fallback=False):
        self.params = params
        self.fallback = fallback
        self.families = families
        self.truncate = truncate
        self.bootstrap = bootstrap
        self.max_stderr_ratio = max_stderr_ratio
        self.random_state = random_state

    def fit(self, rows: pd.DataFrame):
        """Fit from a per-(cell, cycle) table (unflagged rows only are used); returns self."""
        if not isinstance(rows, pd.DataFrame):
            raise FitError(f"D2DFitter.fit expects a DataFrame of per-cell parameters, got {type(rows).__name__}.")
        params = list(self.params)
        missing = [p for p in params if p not in rows]
        if missing:
            raise FitError(f"D2DFitter: the table has no column(s) {missing}; found {list(rows.columns)}.")
        use = rows
        if "flag" in rows:
            use = rows[rows["flag"] == "ok"]
        if use.empty:
            raise FitError("D2DFitter: no unflagged cell to fit the D2D laws to.")
        cells = cell_values(use, params)
        rng = np.random.default_rng(self.random_state)
        self.cells_ = cells
        self.fits_, self.laws_, self.notes_ = {}, {}, []
        for p in params:
            lower = cells[p + "_lo"].to_numpy() if p + "_lo" in cells else None
            upper = cells[p + "_hi"].to_numpy() if p + "_hi" in cells else None
            try:
                fit = fit_parameter(p, cells[p].to_numpy(), stderr=cells[p + "_stderr"].to_numpy(),
                                    lower=lower, upper=upper, families=self.families, truncate=self.truncate,
                                    max_stderr_ratio=self.max_stderr_ratio, bootstrap=self.bootstrap, rng=rng)
            except FitError as err:
                if not self.fallback:
                    raise
                law, why = fallback_law(cells[p].to_numpy(), str(err))
                self.notes_.append(f"D2D {p}: {why}")
                if law is None:
                    raise FitError(f"no D2D law could be built for {p!r}: no finite value among the "
                                   "unflagged cells.") from err
                self.laws_[p] = law
                continue
            self.fits_[p] = fit
            self.laws_[p] = fit.law
        self.correlation_ = correlations(cells, params)
        self.c2c_ = fit_c2c(use, params, bootstrap=self.bootstrap, rng=rng)
        return self

    def _check(self):
        if not hasattr(self, "fits_"):
            raise NotFittedError("This D2DFitter instance is not fitted yet. Call 'fit' first.")

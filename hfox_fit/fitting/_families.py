r"""The likelihood of one candidate family for a parameter's per-cell values, and its fit.

The machinery under :func:`hfox_fit.fitting.d2d.fit_parameter`: fast log-density,
CDF and quantile function of each family (scipy's frozen distributions cost
about 1 ms each to build), the observations (:class:`_Data`: exact values,
interval-censored ones, an observation window, each value's measurement error),
one candidate (:class:`_Candidate`: a family, optionally truncated to the range
of the values, with or without the contamination guard, its parameters
transformed for the optimizer) and its maximum-likelihood fit
(:func:`_fit_candidate`).

Cells whose value is only bounded enter as censored observations,
``log(F(hi) - F(lo))``. Every value with a standard error enters the likelihood
convolved with its Gaussian measurement error (errors in variables: closed forms
for untruncated ``norm`` and ``expon``, Gauss-Hermite quadrature otherwise).
Positive families have ``loc = 0`` (``expon`` keeps a free ``loc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from ..laws import FAMILIES
from ._util import logsumexp, robust_sd

__all__ = ["MAX_CONTAMINATION", "EIV_THRESHOLD", "GUARD_LRT"]

#: Families with support ``x > 0``.
_POSITIVE = ("lognorm", "gamma", "weibull_min", "uniform")


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
        return np.where(pos, _positive_logpdf(family, y, ly, np.log(kw["scale"]), kw), -np.inf)


def _positive_logpdf(family, y, ly, log_scale, kw):
    """Log-density of a positive family at ``x = y * scale`` (``ly = log y``; y > 0 assumed)."""
    if family == "lognorm":
        s = kw["s"]
        return -0.5 * (ly / s) ** 2 - np.log(s * np.sqrt(2 * np.pi)) - ly - log_scale
    if family == "gamma":
        a = kw["a"]
        return (a - 1) * ly - y - special.gammaln(a) - log_scale
    if family == "weibull_min":
        c = kw["c"]
        return np.log(c) + (c - 1) * ly - np.exp(c * ly) - log_scale
    raise ValueError(family)  # pragma: no cover - guarded by FAMILIES


def _logpdf_at_nodes(family, data, kw):
    """:func:`_logpdf` at ``data.nodes``, whose logarithms are computed once (the positive families)."""
    if family not in ("lognorm", "gamma", "weibull_min"):
        return _logpdf(family, data.nodes, kw)
    with np.errstate(all="ignore"):
        log_scale = np.log(kw["scale"])
        y = data.nodes / kw["scale"] if family == "gamma" else None  # (only gamma's density uses y itself)
        out = _positive_logpdf(family, y, data.log_nodes - log_scale, log_scale, kw)
        return np.where(data.nodes_pos, out, -np.inf)


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


def _sf(family, x, kw):
    """Survival function ``1 - F``, without the cancellation of ``1 - _cdf`` in the upper tail."""
    x = np.asarray(x, float)
    with np.errstate(all="ignore"):
        if family == "norm":
            return special.ndtr(-(x - kw["loc"]) / kw["scale"])
        if family == "uniform":
            return np.clip(1.0 - (x - kw["loc"]) / kw["scale"], 0.0, 1.0)
        if family == "expon":
            y = (x - kw["loc"]) / kw["scale"]
            return np.where(y > 0, np.exp(-y), 1.0)
        y = np.where(np.isposinf(x), np.inf, x / kw["scale"])
        pos = y > 0
        yy = np.where(pos, y, 1.0)
        if family == "lognorm":
            out = special.ndtr(-np.log(yy) / kw["s"])
        elif family == "gamma":
            out = special.gammaincc(kw["a"], yy)
        else:
            out = np.exp(-np.power(yy, kw["c"]))
        return np.where(pos, out, 1.0)


def _mass(family, lo, hi, kw):
    """``F(hi) - F(lo)``, from the survival function where ``lo`` is in the upper half: a window far
    in the upper tail keeps its mass (``1 - 1e-17`` and ``1`` are the same double)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
    f_lo = _cdf(family, lo, kw)
    upper = f_lo > 0.5
    if np.isposinf(hi).all():  # right-censored only: F(inf) = 1 and 1 - F(inf) = 0 exactly, two calls fewer
        return np.where(upper, _sf(family, lo, kw), 1.0 - f_lo)
    return np.where(upper, _sf(family, lo, kw) - _sf(family, hi, kw), _cdf(family, hi, kw) - f_lo)


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
    ambiguous: np.ndarray | None = None  # values that may only bound the cell's own
    ambiguous_weight: float = 0.5  # ... the law's weight in their likelihood (see fit_parameter)

    def __post_init__(self):
        self.eiv = np.zeros(len(self.x), bool)
        self.noisy = np.zeros(len(self.x), bool)
        if self.se is not None and len(self.x) >= 5:
            spread = robust_sd(self.x) or np.std(self.x) or 1.0
            # every measured value is convolved with its error (it matters near a sharp edge such as
            # expon's loc even when the error is small against the spread); the noisy ones may also
            # stray outside a law's support and do not place truncation bounds or expon's loc
            self.eiv = np.isfinite(self.se) & (self.se > 0)
            self.noisy = np.isfinite(self.se) & (self.se > EIV_THRESHOLD * spread)
        amb = np.zeros(len(self.x), bool) if self.ambiguous is None else np.asarray(self.ambiguous, bool)
        self.ambiguous = amb
        self.amb_at = np.flatnonzero(amb)
        if self.amb_at.size:  # where a hidden break's density integrates: m from x to x / HIDDEN_BREAK_MIN_SHARE
            floor = 1e-3 * float(np.median(np.abs(self.x))) or 1e-300  # a line sloping down: near zero
            self.amb_log_x = np.log(np.maximum(self.x[amb], floor))
        self.noisy = self.noisy | amb  # an ambiguous value may lie below the law's edge: it places no bound
        self.plain = ~self.eiv
        # the likelihood is evaluated thousands of times on the same values: its fixed subsets once
        self.any_plain = bool(self.plain.any())
        self.x_plain, self.x_eiv = self.x[self.plain], self.x[self.eiv]
        self.se_eiv = self.se[self.eiv] if self.se is not None else np.zeros(0)
        self.span = (float(np.min(self.x)), float(np.max(self.x))) if len(self.x) else (np.nan, np.nan)
        # log-density of a uniform law over that range (the contamination, an ambiguous value's "nothing known")
        self.log_uniform = -np.log(self.span[1] - self.span[0]) if self.span[1] > self.span[0] else 0.0
        self.nodes = None
        if self.eiv.any():
            z, wts = _GH_NODES_WEIGHTS
            # theta = x - sqrt(2) se z  (x - theta ~ N(0, se^2))
            self.nodes = self.x[self.eiv, None] - np.sqrt(2.0) * self.se[self.eiv, None] * z[None, :]
            self.log_w = np.log(wts / np.sqrt(np.pi))
            self.nodes_pos = self.nodes > 0
            self.log_nodes = np.log(np.where(self.nodes_pos, self.nodes, 1.0))

    @property
    def n(self):
        return len(self.x) + len(self.lo)


#: Largest fraction of values the contamination guard may set aside.
MAX_CONTAMINATION = 0.03
#: A cell's stderr above this fraction of the population's robust spread marks its value as noisy:
#: it may stray outside the law's support and does not place truncation bounds or expon's loc.
#: (Every value with a stderr is convolved with its measurement error in the likelihood.)
EIV_THRESHOLD = 0.05
_GH_NODES = 12
#: A break hidden in a flat train leaves at least this share of its m1 in the line's slope (taken uniform
#: between it and 1). The least-squares slope through a two-slope train is m1 u + m2 (1 - u), u = 3 r^2 - 2 r^3
#: for a break at r = t*/T; on the paper preset 10 % of the hidden breaks left less than 0.29 of m1 (median
#: 0.9; 4162 trains, 12 wafers). Measured on that preset (40 wafers, 512 cells x 1000 pulses): the m1 median
#: +3.0 % at 0.3, +2.1 % at 0.4 (the "nothing known" of before: +6.2 %), but 0.4 chose the exponential law,
#: the true one, on 16 of 20 wafers against 18 at 0.3, and 0.5 took expon's loc 22 % low.
HIDDEN_BREAK_MIN_SHARE = 0.3
#: Share of "nothing known" (uniform over the values' range) in that density: a line no law explains
#: (0.01 already moved the paper preset's expon loc by +10 %)
AMBIGUOUS_FLOOR = 0.001
_AMB_NODES = np.polynomial.legendre.leggauss(8)
#: their nodes and weights, computed once (0.16 ms a call, three calls per fitted parameter)
_GH_NODES_WEIGHTS = np.polynomial.hermite.hermgauss(_GH_NODES)
#: Convergence of a candidate's fit: the spread of the simplex's negative log-likelihoods.
_FATOL = 1e-6
#: ... and the simplex's extent in the transformed parameters (log scale, log shape, a loc in units of
#: the scale): far below any standard error of a fit of 5 or more cells.
_XSPREAD = 1e-3
_RESTARTS = 8
#: The contamination guard is kept only where it raises the log-likelihood by more than this
#: (twice the gain): see :func:`hfox_fit.fitting.d2d._guard_test`.
GUARD_LRT = 16.0
#: Bounds past which a fitted shape is degenerate (see _refuse_degenerate): a lognorm ``s`` of 20 spans
#: e**40 between its 2.5 and 97.5 % points; gamma ``a`` or weibull_min ``c`` of 1e-3 puts half its mass
#: below 1e-150 of its scale.
_MAX_LOG_SPREAD = 20.0
_MIN_SHAPE = 1e-3


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
        # a scale that underflowed to 0 in unpack packs to -inf (a start the likelihood rejects)
        with np.errstate(divide="ignore"):
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
        if self.family == "expon" and self.bounds is not None:
            k = 1  # the truncated expon's loc is its lower bound: the bound is counted, not twice
        return k + (2 if self.bounds is not None else 0) + (1 if self._guarded else 0)

    def _eiv_logpdf(self, kw, data: _Data):
        """Log-density of the noisy values (law convolved with N(0, stderr^2)): closed forms for
        untruncated norm and expon, Gauss-Hermite quadrature otherwise."""
        x, se = data.x_eiv, data.se_eiv
        if self.bounds is None and self.family == "norm":
            var = kw["scale"] ** 2 + se**2
            return -0.5 * (x - kw["loc"]) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        if self.bounds is None and self.family == "expon":
            lam = 1.0 / kw["scale"]  # exponentially modified Gaussian
            return (np.log(lam) + lam * (kw["loc"] - x) + 0.5 * (lam * se) ** 2
                    + special.log_ndtr((x - kw["loc"]) / se - lam * se))
        lp = _logpdf_at_nodes(self.family, data, kw)
        if self.bounds is None:
            return logsumexp(lp + data.log_w[None, :], axis=1)
        lo, hi = self.bounds  # the truncated density is zero outside its bounds
        lp = np.where((data.nodes >= lo) & (data.nodes <= hi), lp, -np.inf)
        out = logsumexp(lp + data.log_w[None, :], axis=1)
        # a value far outside the bounds: the mass of its error beyond the nearest bound
        near = np.where(x < lo, lo, hi)
        tail = _logpdf(self.family, near, kw) + special.log_ndtr(-np.abs(x - near) / se)
        return np.fmax(out, tail)

    def _hidden_break_logpdf(self, kw, data: _Data):
        """Log-density of an ambiguous value x = u m (m from the law, u uniform in [HIDDEN_BREAK_MIN_SHARE,
        1]): the integral of f(m) / m over m in [x, x / HIDDEN_BREAK_MIN_SHARE], by Gauss-Legendre in log m
        on the part of it inside the law's support (its edges would spoil the quadrature)."""
        lo, hi = self.bounds if self.bounds is not None else (-np.inf, np.inf)
        if self.family == "expon":
            lo = max(lo, kw["loc"])
        with np.errstate(all="ignore"):
            a = np.fmax(data.amb_log_x, np.log(lo) if lo > 0 else -np.inf)
            b = np.fmin(data.amb_log_x - np.log(HIDDEN_BREAK_MIN_SHARE), np.log(hi))
            y, wl = _AMB_NODES
            half = np.maximum(b - a, 0.0)[:, None] / 2
            lf = _logpdf(self.family, np.exp(a[:, None] + half * (y[None, :] + 1)), kw)
            out = logsumexp(lf + np.log(wl * half), axis=1) - np.log1p(-HIDDEN_BREAK_MIN_SHARE)
        return np.where(b > a, out, -np.inf)

    def terms(self, kw, eps, data: _Data):
        """Per-observation log-likelihood (exact values first, then censored)."""
        f = self.family
        with np.errstate(all="ignore"):
            if data.nodes is None:
                lx = _logpdf(f, data.x, kw)
            else:  # the plain density only where a value has no error (the others are convolved)
                lx = np.empty(len(data.x))
                if data.any_plain:
                    lx[data.plain] = _logpdf(f, data.x_plain, kw)
                lx[data.eiv] = self._eiv_logpdf(kw, data)
            censored = len(data.lo) > 0
            pc = _mass(f, data.lo, data.hi, kw) if censored else None
            lz = 0.0
            lo_b, hi_b = (-np.inf, np.inf) if self.bounds is None else self.bounds
            if data.window is not None:
                lo_b, hi_b = max(lo_b, data.window[0]), min(hi_b, data.window[1])
            if np.isfinite(lo_b) or np.isfinite(hi_b):
                z = float(_mass(f, lo_b, hi_b, kw))
                lz = np.log(z) if z > 0 else -np.inf
                lx = lx - lz
                if censored:
                    pc = pc / z if z > 0 else pc * np.nan
                if self.bounds is not None:
                    inside = (data.x >= self.bounds[0]) & (data.x <= self.bounds[1])
                    lx = np.where(inside | data.eiv, lx, -np.inf)
            lg = data.log_uniform
            if data.amb_at.size:
                # the law's value with its error, or a break the train could not show mixed it down:
                # x = u m, m from the law, u uniform in [HIDDEN_BREAK_MIN_SHARE, 1]
                at, wt = data.amb_at, data.ambiguous_weight
                lh = self._hidden_break_logpdf(kw, data) - lz
                lh = np.logaddexp(np.log1p(-AMBIGUOUS_FLOOR) + lh, np.log(AMBIGUOUS_FLOOR) + lg)
                lx[at] = np.logaddexp(np.log(wt) + lx[at], np.log1p(-wt) + lh)
            if eps > 0:
                a, b = data.span
                lx = np.logaddexp(np.log1p(-eps) + lx, np.log(eps) + lg)
                if censored:
                    frac = np.clip((np.minimum(data.hi, b) - np.maximum(data.lo, a)) / max(b - a, 1e-300), 0, 1)
                    pc = (1 - eps) * pc + eps * frac
            out = np.concatenate([lx, np.log(np.maximum(pc, 0.0))]) if censored else lx
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


def _fit_candidate(family, truncated, data: _Data, start_v=None, start_kw=None):
    """Maximum-likelihood fit of one candidate. Returns (candidate, kw, eps, loglik) or raises ValueError.

    ``start_v`` (packed) or ``start_kw`` (the family's keyword arguments, e.g. a fit of like cells) start the
    optimizer in place of the moment estimates and of expon's scan over loc."""
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
        if truncated or not (data.guard or data.eiv.any()):
            # the maximum-likelihood loc of exact values (memoryless: any loc <= the lower bound); with
            # measurement errors the edge lies below the lowest value and is fitted (scan below)
            fixed["loc"] = loc0
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
        # the optimizer tries extreme parameters: exp() may overflow and the terms sum to nan
        # (inf - inf); such a point is rejected below, so numpy need not warn about it
        with np.errstate(all="ignore"):
            kw, eps = cand.unpack(v)
            s = np.sum(cand.terms(kw, eps, data))
        return -s if np.isfinite(s) else 1e300

    if start_v is not None and len(start_v) == len(v0):
        v0 = np.asarray(start_v, float)
    elif start_kw is not None:
        v0 = cand.pack({**start, **start_kw}, 0.01)
    elif family == "expon" and "loc" not in fixed:
        # the likelihood jumps each time loc passes a value: scan loc over the low values
        # (scale and contamination optimised at each), then polish from the best
        precise = np.sort(x[~data.noisy[: len(x)]] if len(data.noisy) == len(x) else x)
        # with noisy values the edge is below the lowest value by their error: the moment estimate
        # (mean - sd, the sd without the measurement error) is tried as well
        var_err = float(np.mean(data.se[data.eiv] ** 2)) if data.eiv.any() else 0.0
        loc_m = float(np.mean(x) - np.sqrt(max(float(np.var(x)) - var_err, 0.0)))
        locs = np.unique(np.concatenate([[loc0, loc_m], precise[: max(int(MAX_CONTAMINATION * len(precise)), 1) + 1]]))
        if len(locs) > 24:
            locs = locs[np.linspace(0, len(locs) - 1, 24).astype(int)]
        scan = _Candidate(family, bounds, {})
        scan._guarded, scan.ref = cand._guarded, cand.ref
        best_loc, best_val = loc0, np.inf
        for loc in locs:
            sub = _Candidate(family, bounds, {"loc": float(loc)})
            sub._guarded = cand._guarded

            def nll_loc(v, sub=sub):
                with np.errstate(all="ignore"):  # as in nll: a non-finite point is rejected
                    kw, eps = sub.unpack(v)
                    val = np.sum(sub.terms(kw, eps, data))
                return -val if np.isfinite(val) else 1e300

            scale0 = max(float(np.mean(x[x >= loc]) - loc), 1e-300) if np.any(x >= loc) else start["scale"]
            r = optimize.minimize(nll_loc, sub.pack({"loc": loc, "scale": scale0}, 0.01), method="Nelder-Mead",
                                  options={"xatol": np.inf, "fatol": 1e-3, "maxfev": 400})  # ranks the locs only
            if r.fun < best_val:
                best_val, best_loc = r.fun, float(loc)
                best_kw, best_eps = sub.unpack(r.x)
        if np.isfinite(best_val):
            v0 = cand.pack({"loc": best_loc, "scale": best_kw["scale"]}, best_eps)
    best = None
    for v in (v0, v0 + 0.1, v0 - 0.1):
        # converged when the simplex's log-likelihoods agree to _FATOL: the parameters are then known to
        # about sqrt(2 _FATOL) of their standard errors. No step tolerance: the contamination weight's
        # logit is flat once the weight is ~0 or ~MAX_CONTAMINATION, and the simplex would walk it for
        # hundreds of evaluations to reach one. A simplex that agrees while still spread over the other
        # parameters (a ridge) has not converged: it restarts from its best point, until it has
        options = {"xatol": np.inf, "fatol": _FATOL, "maxfev": 4000}
        r = optimize.minimize(nll, v, method="Nelder-Mead", options=_near(options, v, cand, start_kw))
        for _ in range(_RESTARTS):
            if _settled(r, cand):
                break
            again = optimize.minimize(nll, r.x, method="Nelder-Mead", options=_near(options, r.x, cand, start_kw))
            if not again.fun < r.fun:
                break
            again.nfev += r.nfev
            r = again
        if best is None or r.fun < best.fun:
            best = r
        if best.fun < 1e299 and r.success:
            break
    if not best.fun < 1e299:
        raise ValueError("the likelihood is zero everywhere tried")
    kw, eps = cand.unpack(best.x)
    kw = {k: float(v) for k, v in kw.items()}
    _refuse_degenerate(cand, kw, data)
    return cand, kw, float(eps), float(-best.fun)


def _near(options, v, cand: _Candidate, start_kw):
    """Nelder-Mead ``options`` (with a warm start ``start_kw``: a simplex of 0.05 in each transformed
    parameter, a norm loc's in units of its scale, instead of scipy's 5 % of each value, which for a
    log scale of -11 spans a factor of 1.8 and takes most of the evaluations to shrink)."""
    if start_kw is None:
        return options
    step = np.full(len(v), 0.05)
    if cand.family == "norm":
        step[0] = 0.05 * np.exp(v[1])
        if not (np.isfinite(step[0]) and step[0] > 0):  # a zero (or unbounded) scale: 5 % of the loc, or 0.05
            step[0] = 0.05 * abs(v[0]) or 0.05
    return {**options, "initial_simplex": np.vstack([v, v + np.diag(step)])}


def _refuse_degenerate(cand: _Candidate, kw: dict, data: _Data) -> None:
    """Raise ValueError where the likelihood had no maximum and the fit ran off to a degenerate law.

    With few values, values seen only above a detection limit, or a law truncated to the values, a
    shape family can put nearly all its mass below the values and fit them as its far tail, its shape
    going to 0 (lognorm ``s`` -> inf): the likelihood keeps rising, and the law it ends at (a median of
    1e-308, or its truncated median at a bound) is no description.
    """
    shape = FAMILIES[cand.family][0] if FAMILIES[cand.family] else None
    limits = {"s": (0.0, _MAX_LOG_SPREAD), "a": (_MIN_SHAPE, np.inf), "c": (_MIN_SHAPE, np.inf)}
    if shape is not None:
        lo, hi = limits[shape]
        if not lo < kw[shape] <= hi:
            raise ValueError(f"degenerate fit: {shape} = {kw[shape]:.3g} (the likelihood has no maximum; the "
                             "law runs off to put its mass away from the values)")
    for what, edges in (("observation window", data.window), ("truncation bounds", cand.bounds)):
        if edges is not None and cand.family != "uniform":
            inside = float(_mass(cand.family, edges[0], edges[1], kw))
            if not inside > 1e-6:  # the law's shape there is lost to rounding (its median at a bound)
                raise ValueError(f"degenerate fit: {inside:.1e} of the law's mass within its {what} "
                                 f"{tuple(edges)}")


def _settled(result, cand: _Candidate) -> bool:
    """Whether a Nelder-Mead result's final simplex spans at most _XSPREAD in every parameter, norm's
    loc in units of its scale (the contamination weight's logit apart: it is flat at its ends)."""
    simplex = result.final_simplex[0]
    spread = np.max(np.abs(simplex[1:] - simplex[0]), axis=0)
    if cand.family == "norm":  # (loc, log scale): loc in the data's units
        spread[0] = spread[0] / np.exp(result.x[1])
    return bool(np.all(spread[:-1] <= _XSPREAD if cand._guarded else spread <= _XSPREAD))


def _fit_candidates(data: _Data, families, truncate: bool, starts=None):
    """Every candidate (each family, and truncated too when ``truncate``) fitted to ``data``: (scores, fits).

    ``starts``: family -> keyword arguments to start its untruncated fit from."""
    scores, fits = {}, {}
    for trunc in ((False, True) if truncate else (False,)):
        for fam in families:
            key = fam + ("_truncated" if trunc else "")
            start = None
            if trunc and fam in fits and fam != "expon":
                c0, k0, e0 = fits[fam]
                start = c0.pack(k0, e0)
            try:
                cand, kw, eps, ll = _fit_candidate(fam, trunc, data, start_v=start,
                                                   start_kw=None if trunc else (starts or {}).get(fam))
            except (ValueError, FloatingPointError) as err:
                scores[key] = {"aic": np.nan, "loglik": np.nan, "note": str(err)}
                continue
            scores[key] = {"aic": 2 * cand.n_params - 2 * ll, "loglik": ll, "contamination": eps,
                           "n_params": cand.n_params}
            fits[key] = (cand, kw, eps)
    return scores, fits


def _guarded(data: _Data) -> _Data:
    """The same observations with the contamination guard on."""
    return _Data(data.x, data.lo, data.hi, data.window, guard=True, se=data.se, ambiguous=data.ambiguous,
                 ambiguous_weight=data.ambiguous_weight)

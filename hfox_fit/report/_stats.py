"""The statistics the report's figures show, apart from the drawing.

Quantile bands, normal scores, Spearman correlations (measured, simulated and
the model's), the fitted pink law's spectrum and autocorrelation, residual
spectra (Welch) and autocorrelations, RTN dwell-time runs and their windowed
geometric law, KS distances to a fitted law, and the Kaplan-Meier estimate and
censored KS distance of a right-censored parameter (:func:`kaplan_meier`,
:func:`_law_check`).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import signal, special, stats

from ..laws import pink_autocovariance


def _quantiles(stack):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(stack, [0.05, 0.5, 0.95], axis=0)
    n = np.isfinite(stack).sum(axis=0)
    return {"q05": q[0].astype(float), "q50": q[1].astype(float), "q95": q[2].astype(float), "n": n}


def _normal_scores(x):
    """Phi^-1(rank / (n + 1)) over the finite values; NaN stays NaN."""
    x = np.asarray(x, float)
    out = np.full(len(x), np.nan)
    fin = np.isfinite(x)
    out[fin] = special.ndtri(stats.rankdata(x[fin]) / (fin.sum() + 1))
    return out


def _spearman(mat):
    """Spearman correlation matrix, each pair over the rows where both values are finite.

    Not :func:`hfox_fit.fitting.d2d.correlations`: the fit needs a usable copula
    matrix, so it writes 0 for a pair with fewer than 5 cells or a constant
    column; the report shows what was measured, so such a pair is NaN (under 3
    cells, or undefined) and 3 or 4 cells still give a value. Where both are
    defined they agree (both are the correlation of the ranks).
    """
    k = mat.shape[1]
    rho = np.eye(k)
    fin = np.isfinite(mat)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(k):
            for j in range(i + 1, k):
                both = fin[:, i] & fin[:, j]
                if both.sum() < 3:
                    r = np.nan
                else:
                    r = np.corrcoef(stats.rankdata(mat[both, i]), stats.rankdata(mat[both, j]))[0, 1]
                rho[i, j] = rho[j, i] = r
    return rho


def _model_spearman(model, names):
    k = len(names)
    rho = np.eye(k)
    cn = list(model.correlation_names)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and a in cn and b in cn:
                r = model.correlation[cn.index(a), cn.index(b)]
                rho[i, j] = 6.0 / np.pi * np.arcsin(r / 2.0)
    return rho


def _pink_autocov(pink, alpha):
    """Autocovariance of the pink term at lags ``0 .. taps - 1``, as the pink fit models it.

    :func:`hfox_fit.laws.pink_autocovariance` (what the pink fit models) without its white part.
    """
    return pink_autocovariance(alpha, pink.d, 0.0, pink.taps)


def _pink_psd(model, f):
    """One-sided PSD of the fitted pink term at ``f`` (1/pulse): the Fourier series of its autocovariance.

    ``S(f) = 2 (gamma_0 + 2 sum_k gamma_k cos(2 pi f k))``, i.e.
    ``2 alpha**2 / 12 |sum_k b_k exp(-2 pi i f k)|**2``; one-sided to match :func:`_welch`.
    """
    g = _pink_autocov(model.pink, model.pink.alpha)
    k = np.arange(1, len(g))
    return 2.0 * (g[0] + 2.0 * np.cos(2.0 * np.pi * np.outer(f, k)) @ g[1:])


def _pink_acf(model, lags):
    """Autocorrelation of the fitted pink term at ``lags`` (0 beyond the filter's taps)."""
    g = _pink_autocov(model.pink, 1.0)  # alpha cancels; 1.0 keeps alpha = 0 defined
    g = g / g[0]
    return np.array([g[lag] if lag < len(g) else 0.0 for lag in lags])


def _noise_rows(stack, first):
    x = np.asarray(stack[:, first:], float)
    if x.shape[1] == 0:
        return x
    keep = np.isnan(x).mean(axis=1) <= 0.1
    x = x[keep]
    mean = np.nanmean(x, axis=1, keepdims=True) if len(x) else np.zeros((0, 1))
    x = x - mean
    x[np.isnan(x)] = 0.0
    return x


def _welch(x, nperseg):
    f, p = signal.welch(x, fs=1.0, nperseg=nperseg, axis=-1, detrend="constant")
    return f, p.mean(axis=0)


def _acf(x, maxlag):
    n, length = x.shape
    nfft = 1 << int(np.ceil(np.log2(2 * length)))
    spec = np.fft.rfft(x, nfft, axis=1)
    ac = np.fft.irfft(spec * np.conj(spec), nfft, axis=1)[:, :maxlag + 1]
    good = ac[:, 0] > 0
    return (ac[good] / ac[good, :1]).mean(axis=0), int(good.sum())


def _slope(f, p, lo=0.02, hi=0.2):
    sel = (f >= lo) & (f <= hi) & (p > 0)
    if sel.sum() < 3:
        return None
    return float(-np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0])


def _dwell_runs(x, window, sigma, *, k_spread=6.0, hysteresis=0.2):
    """Complete high/low RTN runs found by a per-cell threshold with hysteresis.

    Each row is smoothed by a ``window``-pulse moving average ``s``. A row whose
    spread ``q98(s) - q25(s)`` exceeds ``k_spread * sigma`` (``sigma``: the
    fitted pink noise after the same averaging) is an RTN cell; it goes high
    above ``mid + hysteresis * spread`` and low again below
    ``mid - hysteresis * spread``, ``mid`` the middle of the two quantiles.
    Runs touching either end of the row are censored and dropped.

    Returns
    -------
    high, low : ndarray of int
        Lengths of complete high and low runs (pulses).
    fraction_high : float
        Fraction of smoothed reads in the high state.
    n_rtn_cells : int
    length : int
        Length of the smoothed rows.
    """
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    s = (c[:, window:] - c[:, :-window]) / window
    n, length = s.shape
    lo, hi = np.quantile(s, [0.25, 0.98], axis=1) if n else (np.zeros(0), np.zeros(0))
    spread = hi - lo
    rtn = spread > k_spread * sigma
    mid = 0.5 * (lo + hi)
    up = np.where(rtn, mid + hysteresis * spread, np.inf)
    down = np.where(rtn, mid - hysteresis * spread, np.inf)
    high = np.zeros((n, length), bool)
    state = np.zeros(n, bool)
    for j in range(length):
        state = np.where(state, s[:, j] > down, s[:, j] > up)
        high[:, j] = state
    change = np.ones_like(high)
    change[:, 1:] = high[:, 1:] != high[:, :-1]
    starts = np.flatnonzero(change.ravel())
    lengths = np.diff(np.append(starts, high.size))
    colstart = starts % max(length, 1)
    complete = (colstart > 0) & (colstart + lengths < length)
    st = high.ravel()[starts]
    frac = float(high.mean()) if high.size else float("nan")
    return lengths[complete & st], lengths[complete & ~st], frac, int(rtn.sum()), length


def _dwell_hist(runs, edges):
    counts, _ = np.histogram(runs, bins=edges)
    total = counts.sum()
    widths = np.diff(edges)
    dens = counts / (total * widths) if total else np.zeros(len(widths))
    return counts, dens


def _geometric_windowed(p, edges, length):
    k = np.arange(int(edges[0]), int(edges[-1]) + 1)
    g = p * (1.0 - p) ** (k - 1) * np.maximum(length - k - 1, 0)
    per_bin = np.array([g[(k >= a) & (k < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    total = per_bin.sum()
    return per_bin / (total * np.diff(edges)) if total > 0 else per_bin


def kaplan_meier(times, observed):
    """Kaplan-Meier estimate of the CDF of right-censored values (numpy only).

    Parameters
    ----------
    times : array-like of shape (n,)
        Each value, or for a censored one the point it is known to exceed.
    observed : array-like of bool, shape (n,)
        True where the value was seen, False where it is only known to exceed ``times``.
        A value censored at an event time counts as at risk at that time.

    Returns
    -------
    t : ndarray
        Distinct observed values, ascending.
    cdf : ndarray
        Estimated ``F(t)`` just after each of them (``1 - S``).
    at_risk : ndarray of int
        Values still at risk (``>= t``) at each of them.
    """
    t = np.asarray(times, float)
    e = np.asarray(observed, bool)
    keep = np.isfinite(t)
    t, e = t[keep], e[keep]
    ut = np.unique(t[e])
    at_risk = len(t) - np.searchsorted(np.sort(t), ut, side="left")
    deaths = np.bincount(np.searchsorted(ut, t[e]), minlength=len(ut))
    surv = np.cumprod(1.0 - deaths / np.maximum(at_risk, 1))
    return ut, 1.0 - surv, at_risk


def _eiv_cdf(law, x, se):
    """The law's CDF at ``x`` convolved with each value's Gaussian error ``se`` (as the D2D fit does).

    Gauss-Hermite quadrature over the error (12 nodes, the fit's); a value with no
    positive finite error maps to the law's own CDF.
    """
    x = np.asarray(x, float)
    u = np.asarray(law.cdf(x), float)
    if se is None:
        return u
    se = np.asarray(se, float)
    noisy = np.isfinite(se) & (se > 0)
    if noisy.any():
        z, w = np.polynomial.hermite.hermgauss(12)
        nodes = x[noisy, None] - np.sqrt(2.0) * se[noisy, None] * z[None, :]
        u[noisy] = np.asarray(law.cdf(nodes), float) @ (w / np.sqrt(np.pi))
    return u


def _law_with_errors(law, x, se, *, min_ratio=0.2, max_cells=400, n_grid=500):
    """CDF and density of the law plus the measurement error of a random cell (mixture over the cells).

    What the values would look like if the law were right. None when the errors are
    small (median error under ``min_ratio`` of the law's robust spread): the law itself is then
    what is seen.
    """
    if se is None or len(x) < 5:
        return None
    se = np.asarray(se, float)
    se = se[np.isfinite(se) & (se > 0)]
    q25, q50, q75 = np.asarray(law.ppf([0.25, 0.5, 0.75]), float)
    spread = (q75 - q25) / 1.349
    if not (se.size and np.isfinite(spread) and spread > 0 and np.median(se) >= min_ratio * spread):
        return None
    if se.size > max_cells:
        se = np.quantile(se, (np.arange(max_cells) + 0.5) / max_cells)
    lo, hi = np.asarray(law.ppf([0.001, 0.999]), float)
    lo, hi = min(lo, np.min(x)) - 4 * se.max(), max(hi, np.max(x)) + 4 * se.max()
    grid = np.linspace(lo, hi, n_grid)
    z, w = np.polynomial.hermite.hermgauss(12)
    nodes = grid[:, None, None] - np.sqrt(2.0) * se[None, :, None] * z[None, None, :]
    cdf = np.maximum.accumulate((np.asarray(law.cdf(nodes), float) @ (w / np.sqrt(np.pi))).mean(axis=1))
    return {"x": grid, "cdf": cdf, "pdf": np.gradient(cdf, grid), "median_error": float(np.median(se)),
            "law_spread": float(spread)}


def _ks_uniform(u):
    u = np.sort(np.asarray(u, float))
    i = np.arange(1, len(u) + 1)
    return float(max(np.max(i / len(u) - u), np.max(u - (i - 1) / len(u)), 0.0))


#: Fraction of a law's mass beyond the longest train above which the law is called extrapolated.
EXTRAPOLATED = 0.5


def _law_check(x, law, *, se=None, lo=None, limit=None, min_at_risk=0.05, probs=None):
    """How the values a D2D law was fitted to compare with it, like with like.

    Without censored values: the KS distance of the exact values ``x`` to the law
    convolved with each value's measurement error ``se`` (probability integral
    transform), and a QQ plot of the values against the law. With right-censored
    values (``lo``: each known only to exceed its point): the Kaplan-Meier CDF
    against the law's untruncated CDF, ``sup |KM - F|`` over ``[0, upto]``,
    ``upto`` the last point where at least ``min_at_risk`` of the values are still at
    risk (the censoring point); the QQ plot stops where the KM estimate does.
    ``limit`` (the longest train, for a parameter in pulses) gives the law's mass
    beyond what any train could show.
    """
    x = np.asarray(x, float)
    lo = np.zeros(0) if lo is None else np.asarray(lo, float)
    probs = np.linspace(0.005, 0.995, 199) if probs is None else probs
    out = {"n_exact": int(len(x)), "n_censored": int(len(lo)), "ks": None, "method": "ks", "upto": None,
           "mass_beyond": None, "extrapolated": False, "limit": limit}
    if limit is not None:
        beyond = 1.0 - float(np.asarray(law.cdf(float(limit)), float))
        out["mass_beyond"] = beyond if np.isfinite(beyond) else None
        out["extrapolated"] = bool(np.isfinite(beyond) and beyond >= EXTRAPOLATED)
    if len(lo) == 0:
        out["ks"] = _ks_uniform(_eiv_cdf(law, x, se)) if len(x) else None
        qm = np.quantile(x, probs) if len(x) else np.full(len(probs), np.nan)
        out["qq"] = {"p": probs, "model": law.ppf(probs), "measured": qm}
        seen = _law_with_errors(law, x, se)
        if seen is not None:
            # like with like: the values carry their errors, so their quantiles are the mixture's
            out["with_errors"] = seen
            out["qq"]["model"] = np.interp(probs, seen["cdf"], seen["x"])
        return out
    times = np.concatenate([x, lo])
    t, cdf, at_risk = kaplan_meier(times, np.r_[np.ones(len(x), bool), np.zeros(len(lo), bool)])
    n = len(times)
    srt = np.sort(times)
    # the last point with enough values at risk: the censoring point of most cells
    upto = float(srt[max(0, n - max(1, int(np.ceil(min_at_risk * n))))])
    keep = t <= upto
    t, cdf = t[keep], cdf[keep]
    out.update({"method": "kaplan-meier", "upto": upto, "km": {"t": t, "cdf": cdf},
                "km_at_upto": float(cdf[-1]) if len(cdf) else 0.0})
    if len(t):
        f = np.asarray(law.cdf(t), float)
        before = np.r_[0.0, cdf[:-1]]
        f_up = float(np.asarray(law.cdf(upto), float))
        out["ks"] = float(max(np.max(np.abs(cdf - f)), np.max(np.abs(before - f)), abs(cdf[-1] - f_up)))
    p_top = out["km_at_upto"]
    pk = probs[probs <= p_top]
    measured = t[np.minimum(np.searchsorted(cdf, pk - 1e-12), len(t) - 1)] if len(pk) else np.zeros(0)
    out["qq"] = {"p": pk, "model": law.ppf(pk), "measured": measured}
    return out

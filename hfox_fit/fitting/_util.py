"""Small vectorised helpers shared by the fitting modules."""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp", "nanquantile_rows", "robust_sd"]


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(sum(exp(a), axis))``, -inf where every entry is -inf (scipy's ``logsumexp`` without
    its array-API checks, which cost more than the sum on the likelihoods' short axes)."""
    top = a.max(axis=axis)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - np.expand_dims(top, axis)).sum(axis=axis)) + top


def robust_sd(x) -> float:
    """Robust standard deviation of the values ``x``: interquartile range / 1.349 (a normal law's sd)."""
    q1, q3 = np.percentile(x, [25, 75])
    return (q3 - q1) / 1.349


def nanquantile_rows(x, q):
    """Quantile ``q`` of each row of ``x`` ignoring NaN (linear interpolation); NaN for empty rows.

    ``np.nanquantile(..., axis=1)`` loops over rows in Python; this sorts once.
    """
    x = np.asarray(x, float)
    s = np.sort(x, axis=1)  # NaN sort last
    k = np.isfinite(x).sum(axis=1)
    pos = q * np.maximum(k - 1, 0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
    rows = np.arange(x.shape[0])
    frac = pos - lo
    out = s[rows, lo] * (1 - frac) + s[rows, hi] * frac
    return np.where(k > 0, out, np.nan)


def _join(a, b):
    """``a; b``, or ``b`` alone when ``a`` is empty or None (appends a sentence to a note)."""
    a = "" if a is None else str(a)
    return f"{a}; {b}" if a else b

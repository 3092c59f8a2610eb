"""Small vectorised helpers shared by the fitting modules."""

from __future__ import annotations

import numpy as np

__all__ = ["nanquantile_rows"]


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
    a = "" if a is None else str(a)
    return f"{a}; {b}" if a else b

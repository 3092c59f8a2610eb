"""JSON-safe copies of nested results (summaries, metrics, ground truth), and reading their numbers back."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def json_safe(obj):
    """A copy of ``obj`` that strict JSON (``allow_nan=False``) takes.

    Dict keys become strings, tuples and arrays lists, numpy scalars Python ones,
    NaN and infinities None, paths strings; anything else is kept as it is.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if np.isfinite(x) else None
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def finite_or_none(x):
    """``x`` as a float, or None when it is not a finite number (a summary's number, which may be missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None

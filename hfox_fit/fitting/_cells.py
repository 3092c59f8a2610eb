"""The per-cell table the D2D laws are fitted to: each cell's average over its cycles, and the weight
of the flat trains' lines (see :func:`hfox_fit.fitting.d2d.fit_parameter`'s ``ambiguous``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["cell_values", "line_weight"]


#: Fewest cells whose break could be seen wherever it lay for :func:`line_weight` to count them.
_MIN_LINE_WEIGHT_CELLS = 20


def parameter_inputs(cells: pd.DataFrame, p: str) -> dict:
    """What a D2D law of parameter ``p`` reads of a :func:`cell_values` table beside its values (arrays, None
    where the table has no such column): ``stderr``, ``lower`` and ``upper`` (a censored value's interval) and
    ``ambiguous`` (a straight line's slope that may only bound the cell's own m1)."""
    def column(name, dtype):
        return cells[name].to_numpy(dtype) if name in cells else None

    return {"stderr": column(p + "_stderr", float), "lower": column(p + "_lo", float),
            "upper": column(p + "_hi", float), "ambiguous": column(p + "_ambiguous", bool)}


def line_weight(cells: pd.DataFrame) -> float:
    """How often a flat train's straight line is its own m1: the share of breaks beyond the trains.

    Among the cells (a :func:`cell_values` table) whose break could be seen wherever it lay (an
    exact ``t_star``, or right-censored beyond the train), the share right-censored: the chance
    that a train's break lies past its end, which for a flat train (``m1_ambiguous``) means that
    its line's slope is its m1 and not a mix of m1 and m2 (``m1`` is independent of ``t_star``
    in the paper's model). 0.5 with fewer than 20 such cells or no ``t_star``.
    """
    if "t_star" not in cells or "t_star_lo" not in cells:
        return 0.5
    exact = np.isfinite(cells["t_star"].to_numpy(float))
    beyond = ~exact & np.isfinite(cells["t_star_lo"].to_numpy(float)) & np.isinf(cells["t_star_hi"].to_numpy(float))
    n = int(exact.sum() + beyond.sum())
    return float(beyond.sum() / n) if n >= _MIN_LINE_WEIGHT_CELLS else 0.5


def cell_values(rows: pd.DataFrame, params) -> pd.DataFrame:
    """Average each parameter over a cell's unflagged cycles.

    Returns one row per (wafer, die, device), in the order of their first row, with ``<p>``,
    ``<p>_stderr`` and, for ``t_star``, ``t_star_lo``/``t_star_hi`` when no cycle has an exact
    value (censored cells), plus ``n_cycles``. A cell's stderr is the larger of its cycles' mean
    stderr over the square root of their count and, with two cycles or more, their spread's.
    """
    keys = ["wafer", "die", "device"]
    # the cells grouped once (string keys hash slowly), then every sum by bincount
    code = rows.groupby(keys, sort=False, observed=True).ngroup().to_numpy()
    n_cells = int(code.max()) + 1 if code.size else 0
    first = np.unique(code, return_index=True)[1]
    out = rows[keys].iloc[first].reset_index(drop=True)
    out["n_cycles"] = np.bincount(code, minlength=n_cells)

    def group_mean(x):
        seen = ~np.isnan(x)
        n = np.bincount(code, seen, minlength=n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(code, np.where(seen, x, 0.0), minlength=n_cells) / n, n

    for p in params:
        v = rows[p].to_numpy(float)
        se = rows[p + "_stderr"].to_numpy(float) if p + "_stderr" in rows else np.full(len(rows), np.nan)
        mean, n = group_mean(v)
        dev = np.where(np.isnan(v), 0.0, v - mean[code])
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.bincount(code, dev * dev, minlength=n_cells) / (n - 1))
            se_mean = np.sqrt(group_mean(se * se)[0] / np.maximum(n, 1))
            se_cell = sd / np.sqrt(np.maximum(n, 1))
        out[p] = mean
        out[p + "_stderr"] = np.where(n >= 2, np.maximum(se_cell, se_mean), se_mean)
        if p + "_ambiguous" in rows:
            amb = rows[p + "_ambiguous"].to_numpy(bool) & ~np.isnan(v)
            out[p + "_ambiguous"] = np.bincount(code, amb, minlength=n_cells) >= 0.5 * np.maximum(n, 1)
        if p + "_lo" in rows:
            lo = np.full(n_cells, np.nan)
            hi = np.full(n_cells, np.nan)
            np.fmin.at(lo, code, rows[p + "_lo"].to_numpy(float))
            np.fmax.at(hi, code, rows[p + "_hi"].to_numpy(float))
            out[p + "_lo"] = lo
            out[p + "_hi"] = hi
    for col in rows.columns:
        if col.endswith("_err_corr"):  # a pair's fit-error correlation: the mean over the cell's cycles
            out[col] = group_mean(rows[col].to_numpy(float))[0]
    return out

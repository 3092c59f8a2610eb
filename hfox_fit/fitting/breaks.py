"""Breaks of two-slope trains over a campaign: censored, undetermined, or seen (for the D2D fit of t_star)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._tables import LINE_ERROR_CORRELATION, error_correlation_column
from ._util import _join

__all__ = ["classify_breaks", "censor_late_breaks", "steepest_post_break_slope"]


def steepest_post_break_slope(table: pd.DataFrame) -> tuple[float, int]:
    """The steepest post-break slope of a campaign, and how many trains it comes from.

    The 99th percentile of ``m2`` over the unflagged trains with a break whose
    ``m2_stderr`` is at most the median (the maximum with fewer than 5 such
    trains; ``-inf`` with none: every train breaks, if ever, after its reads).
    """
    ok = table["flag"].eq("ok").to_numpy()
    has_break = np.isfinite(table["t_star"].to_numpy(float))
    m2 = table["m2"].to_numpy(float)
    m2_se = table["m2_stderr"].to_numpy(float)
    pool = ok & has_break & np.isfinite(m2) & np.isfinite(m2_se)
    n_pool = int(pool.sum())
    if n_pool >= 5:
        precise = pool & (m2_se <= np.median(m2_se[pool]))
        return float(np.percentile(m2[precise], 99)), n_pool
    if n_pool:
        return float(np.max(m2[pool])), n_pool
    return -np.inf, 0


def classify_breaks(table: pd.DataFrame) -> pd.DataFrame:
    """Decide, over a campaign, what a two-slope train without a significant break says about t_star.

    A train whose straight-line slope is clearly steeper than the post-break
    slopes seen on the campaign (``m1 - 2 m1_stderr`` above the 99th percentile
    of the precise ``m2`` of trains with a break) must break after its last
    fitted pulse: ``t_star`` is right-censored (``t_star_censored = True``,
    ``t_star_hi = inf``) at ``t_star_lo = last_pulse`` minus the distance to the
    last read within which breaks are rarely detected (5th percentile over the
    trains with a break) and ``m1``, ``c1`` are the
    line's. For the others (slope in
    the range of ``m2``: ``m1`` close to ``m2``, or a short, small first
    segment) ``t_star`` is undetermined (``t_star_lo``, ``t_star_hi`` NaN).
    Returns a new table.
    """
    table = table.copy()
    if "t_star" not in table or "m1_line" not in table:
        return table
    ok = table["flag"].eq("ok").to_numpy()
    has_break = np.isfinite(table["t_star"].to_numpy())
    m2_hi, _ = steepest_post_break_slope(table)
    line = table["m1_line"].to_numpy()
    line_se = table["m1_line_stderr"].to_numpy()
    nob = ~has_break & np.isfinite(line)
    with np.errstate(invalid="ignore"):
        cens = nob & (line - 2 * np.nan_to_num(line_se, nan=np.inf) > m2_hi)
    undetermined = nob & ~cens
    table["t_star_censored"] = cens
    lo = table["t_star_lo"].to_numpy(float).copy()
    hi = table["t_star_hi"].to_numpy(float).copy()
    last = table["last_pulse"].to_numpy(float)
    lo[cens], hi[cens] = np.maximum(last[cens] - _late_margin(table), 1.0), np.inf
    lo[undetermined], hi[undetermined] = np.nan, np.nan
    table["t_star_lo"], table["t_star_hi"] = lo, hi
    for col in ("m1", "c1"):
        table.loc[cens, col] = table.loc[cens, col + "_line"]
        table.loc[cens, col + "_stderr"] = table.loc[cens, col + "_line_stderr"]
    if LINE_ERROR_CORRELATION in table:  # the line's error correlation with them
        table.loc[cens, error_correlation_column("m1", "c1")] = table.loc[cens, LINE_ERROR_CORRELATION]
    note = table["note"].to_numpy().astype(object)
    for i in np.nonzero(cens & ok)[0]:
        note[i] = _join(note[i], f"t_star > {lo[i]:.0f} (right-censored near the last fitted pulse: the line "
                                 "is steeper than any post-break slope)")
    for i in np.nonzero(undetermined & ok)[0]:
        note[i] = _join(note[i], "t_star undetermined (slope within the range of post-break slopes)")
    table["note"] = note.astype(str)
    return table


def _late_margin(table) -> float:
    """Distance (pulses) before the last read within which breaks are rarely found.

    The 5th percentile of ``last_pulse - t_star`` over the unflagged trains with a
    break (0 with fewer than 20 of them): a break closer to the end leaves too
    few reads after it to be seen.
    """
    ok = table["flag"].eq("ok").to_numpy()
    gap = (table["last_pulse"].to_numpy(float) - table["t_star"].to_numpy(float))[ok]
    gap = gap[np.isfinite(gap)]
    return float(np.percentile(gap, 5)) if gap.size >= 20 else 0.0


def censor_late_breaks(table: pd.DataFrame) -> pd.DataFrame:
    """The table for the D2D fit of ``t_star``: every break is censored at the same point as a missing one.

    A train is right-censored at ``c = last_pulse - margin`` (:func:`_late_margin`)
    whether its break was seen there or not, so that the censoring does not
    depend on whether a late break happened to be detected (a detected break at
    or after ``c`` becomes "t_star > c"). Returns a new table.
    """
    table = table.copy()
    if "t_star" not in table or "t_star_lo" not in table:
        return table
    c = np.maximum(table["last_pulse"].to_numpy(float) - _late_margin(table), 1.0)
    late = np.isfinite(table["t_star"].to_numpy(float)) & (table["t_star"].to_numpy(float) >= c)
    table.loc[late, "t_star"] = np.nan
    table.loc[late, "t_star_stderr"] = np.nan
    table.loc[late, "t_star_lo"] = c[late]
    table.loc[late, "t_star_hi"] = np.inf
    return table

"""The pulse-condition plots of :mod:`hfox_fit.plotting`: medians against the condition, mean w per condition.

Kept apart from :mod:`hfox_fit.plotting` (which re-exports them) to keep each
module short; the same conventions hold: ``ax=None`` opens a new figure, each
returns the Axes it drew on, matplotlib is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_condition_medians", "plot_condition_mean_w", "CONDITION_COLOURS", "format_width", "width_unit"]

#: One colour (and marker) per series of conditions, in order.
CONDITION_COLOURS = ("#1f5fa8", "#e07b00", "#2a9d4b", "#8e44ad", "#c0392b", "#16a085", "#7f6000", "#555555")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def _axes(ax, **kw):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(**kw)
    return ax


def width_unit(seconds) -> tuple[float, str]:
    """``(factor, unit)`` that shows pulse widths of this size (the smallest given) as plain numbers: 1e-6, "µs"."""
    s = np.asarray(seconds, float)
    s = s[np.isfinite(s) & (s > 0)]
    smallest = float(s.min()) if s.size else 1.0
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if smallest >= factor * 0.1 * (1 - 1e-9):
            return factor, unit
    return 1e-9, "ns"


def format_width(seconds: float) -> str:
    """A pulse width as it reads: ``"500 ns"``, ``"2 µs"``, ``"1.5 ms"``."""
    s = float(seconds)
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(s) >= factor * (1 - 1e-9):
            return f"{s / factor:.4g} {unit}"
    return f"{s:.3g} s"


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number ticks (1, 2, 3, 5 times a power of ten) on a log axis spanning [lo, hi]; no minor labels.

    matplotlib's own labels on a log axis of less than a decade are minor labels that crowd or vanish.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        return
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    ticks = []
    for mantissas in ((1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        ticks = sorted(m * 10.0**k for k in decades for m in mantissas if lo <= m * 10.0**k <= hi)
        if len(ticks) >= 3:
            break
    while len(ticks) > 6:
        ticks = ticks[::2]
    if len(ticks) < 2:  # a narrow range: its ends, to two significant digits
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_condition_medians(x, median, lower, upper, series, *, lines=None, series_labels=None, name="",
                           unit="", log=False, xlabel="V_pulse (V)", xlog=False, dodge=0.02, ax=None,
                           title=None, legend_title=None):
    """Plot one parameter's median at each pulse condition, with its 90 % interval, one series per other factor.

    Parameters
    ----------
    x : array-like of shape (n_conditions,)
        The factor along the axis (the pulse amplitude, or the width when the amplitude does not vary).
    median, lower, upper : array-like of shape (n_conditions,)
        Each condition's median and its 90 % interval (NaN bounds: no interval, a hollow marker). The
        interval is drawn from its bounds: it need not contain the median (a percentile bootstrap).
    series : array-like of shape (n_conditions,)
        The other factor: one colour and marker per value.
    lines : dict, optional
        Series value -> ``(x_grid, y_grid)``: the fitted condition law at that value, drawn in its colour.
    series_labels : dict, optional
        Series value -> legend label (default ``str(value)``).
    name, unit : str
        The parameter and its unit (values are shown in a power-of-ten unit when very small or large).
    log : bool, default=False
        Log y axis (a positive parameter, whose law moves ``ln median``).
    xlabel : str
    xlog : bool, default=False
        Log x axis (pulse widths).
    dodge : float, default=0.02
        Each series' markers are offset along x by this fraction of the x span (of ``ln x`` with
        ``xlog``), so that the intervals of one condition do not hide each other; lines are not offset.
    ax : matplotlib Axes, optional
    title, legend_title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    from .plotting import axis_label, scale_unit

    ax = _axes(ax)
    x = np.asarray(x, float)
    med, lo, hi = (np.asarray(a, float) for a in (median, lower, upper))
    series = np.asarray(series)
    lines = lines or {}
    keys = list(dict.fromkeys(series.tolist()))
    shown = np.concatenate([med, lo, hi, *[np.asarray(y, float) for _, y in lines.values()]])
    shown = shown[np.isfinite(shown)]
    factor, shown_unit = scale_unit(shown, unit)
    fx = np.log if xlog else (lambda v: v)
    span = float(np.ptp(fx(x))) if x.size else 0.0
    for k, key in enumerate(keys):
        colour = CONDITION_COLOURS[k % len(CONDITION_COLOURS)]
        marker = _MARKERS[k % len(_MARKERS)]
        label = (series_labels or {}).get(key, str(key))
        at = series == key
        shift = dodge * span * (k - (len(keys) - 1) / 2)
        xs = np.exp(np.log(x[at]) + shift) if xlog else x[at] + shift
        has = np.isfinite(lo[at]) & np.isfinite(hi[at])
        # the interval from its bounds, not as errors about the median: a bootstrap percentile
        # interval need not contain the point estimate, and errorbar refuses negative errors
        ax.vlines(xs[has], lo[at][has] / factor, hi[at][has] / factor, color=colour, lw=1.2)
        ax.plot(np.tile(xs[has], 2), np.concatenate([lo[at][has], hi[at][has]]) / factor, ls="none", marker="_",
                color=colour, ms=7, mew=1.2)
        ax.plot(xs[has], med[at][has] / factor, ls="none", marker=marker, color=colour, ms=6, label=label)
        if (~has).any():
            ax.plot(xs[~has], med[at][~has] / factor, ls="none", marker=marker, mfc="white", color=colour, ms=6)
        if key in lines:
            gx, gy = (np.asarray(a, float) for a in lines[key])
            ax.plot(gx, gy / factor, color=colour, lw=1.3, alpha=0.85)
    if lines:
        ax.plot([], [], color="0.3", lw=1.3, label="condition law")
    if log:
        ax.set_yscale("log")
        pos = shown[shown > 0] / factor
        if pos.size:
            _log_ticks(ax.yaxis, float(pos.min()) / 1.05, float(pos.max()) * 1.05)
            ax.set_ylim(float(pos.min()) / 1.08, float(pos.max()) * 1.08)
    if xlog:
        ax.set_xscale("log")
        if x.size:
            _log_ticks(ax.xaxis, float(x.min()) / 1.2, float(x.max()) * 1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("median " + axis_label(name, shown_unit))
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title=legend_title, title_fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_condition_mean_w(t, curves, *, ax=None, title=None, legend_title=None):
    """Plot the mean ``w`` over pulses of several conditions: measured solid, simulated dashed, one colour each.

    Parameters
    ----------
    t : array-like of shape (n_pulses,)
        Pulse counts since SET.
    curves : list of dict
        Per condition: ``label``, ``measured`` (shape (n_pulses,)), optionally ``simulated`` and
        ``colour`` (an index into :data:`CONDITION_COLOURS`).
    ax : matplotlib Axes, optional
    title, legend_title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    t = np.asarray(t, float)
    for k, c in enumerate(curves):
        colour = CONDITION_COLOURS[int(c.get("colour", k)) % len(CONDITION_COLOURS)]
        ax.plot(t, np.asarray(c["measured"], float), color=colour, lw=1.5, label=c["label"])
        if c.get("simulated") is not None:
            ax.plot(t, np.asarray(c["simulated"], float), color=colour, lw=1.5, ls="--")
    ax.plot([], [], color="0.3", lw=1.5, label="measured")
    if any(c.get("simulated") is not None for c in curves):
        ax.plot([], [], color="0.3", lw=1.5, ls="--", label="model at the condition")
    ax.set_xlabel("pulses since SET")
    ax.set_ylabel("mean w = ln(R/R0)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title=legend_title, title_fontsize=8)
    ax.grid(alpha=0.3)
    return ax

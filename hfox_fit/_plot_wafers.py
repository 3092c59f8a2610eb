"""The wafer-level plots of :mod:`hfox_fit.plotting`: each wafer's median, and the variance shares per level.

Kept apart from :mod:`hfox_fit.plotting` (which re-exports them) to keep each module short;
the same conventions hold: ``ax=None`` opens a new figure, each returns the Axes it drew on,
matplotlib is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_wafer_medians", "plot_variance_shares", "LEVEL_COLOURS", "wafer_tick_stride"]

#: One colour per level of the variance decomposition, outermost first.
LEVEL_COLOURS = {"wafer": "#1f5fa8", "die": "#2a9d4b", "cell": "#e07b00", "cycle": "#8e44ad"}
#: Wafer names labelled along an axis of about 3.5 inches (upright labels, 8.5 pt, a gap between each).
_MAX_LABELS = 16


def _axes(ax, **kw):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(**kw)
    return ax


def wafer_tick_stride(n: int, max_labels: int = _MAX_LABELS) -> int:
    """Label every ``stride``-th wafer so that at most ``max_labels`` names share an axis."""
    return max(1, -(-int(n) // max_labels))


def plot_wafer_medians(wafers, median, lower, upper, *, pooled=None, pooled_ci90=None, name="", unit="",
                       log=False, ax=None, title=None, legend=True):
    """Plot one parameter's median per wafer with its 90 % interval, and the pooled median across them.

    Parameters
    ----------
    wafers : sequence of str
        The wafer names, in the order along the axis.
    median, lower, upper : array-like of shape (n_wafers,)
        Each wafer's median and its 90 % interval (NaN bounds: no interval, a hollow marker).
    pooled, pooled_ci90 : float and (float, float), optional
        The pooled median (a line) and its 90 % interval (a band).
    name, unit : str
    log : bool, default=False
        Log y axis.
    ax : matplotlib Axes, optional
    title : str, optional
    legend : bool, default=True

    Returns
    -------
    matplotlib Axes
    """
    from .plotting import MEASURED, MODEL, axis_label, scale_unit

    ax = _axes(ax)
    names = [str(w) for w in wafers]
    x = np.arange(len(names), dtype=float)
    med, lo, hi = (np.asarray(a, float) for a in (median, lower, upper))
    ref = [pooled] + list(pooled_ci90 or []) if pooled is not None else []
    shown = np.concatenate([med, lo, hi, np.asarray([r for r in ref if r is not None], float)])
    shown = shown[np.isfinite(shown)]
    factor, shown_unit = scale_unit(shown, unit)
    if pooled is not None and np.isfinite(pooled):
        if pooled_ci90 is not None and all(c is not None and np.isfinite(c) for c in pooled_ci90):
            ax.axhspan(pooled_ci90[0] / factor, pooled_ci90[1] / factor, color=MODEL, alpha=0.08, lw=0)
        ax.axhline(pooled / factor, color=MODEL, lw=1.0, ls="--", label="pooled median (90 % band)")
    has = np.isfinite(lo) & np.isfinite(hi)
    yerr = np.vstack([np.where(has, med - lo, 0.0), np.where(has, hi - med, 0.0)]) / factor
    ax.errorbar(x, med / factor, yerr=yerr, fmt="none", ecolor=MEASURED, elinewidth=1.2,
                capsize=3 if len(names) <= 20 else 0)
    ax.plot(x[has], med[has] / factor, ls="none", marker="o", color=MEASURED, ms=5, label="wafer median (90 % CI)")
    if (~has).any():
        ax.plot(x[~has], med[~has] / factor, ls="none", marker="o", mfc="white", color=MEASURED, ms=5,
                label="no interval")
    if log:
        ax.set_yscale("log")
    stride = wafer_tick_stride(len(names))
    ticks = list(range(0, len(names), stride))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90 if len(names) > 4 else 0)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("wafer" + (f" (every {stride}th labelled)" if stride > 1 else ""))
    ax.set_ylabel("median " + axis_label(name, shown_unit))
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_variance_shares(params, shares, *, ax=None, title=None):
    """Stacked bars: per parameter, the share of its variance between wafers, dies, cells and cycles.

    Parameters
    ----------
    params : sequence of str
    shares : dict
        Level (``"wafer"``, ``"die"``, ``"cell"``, ``"cycle"``) -> one share per parameter (None or
        NaN: that level cannot be told apart from its neighbour; drawn as 0, with no label).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    x = np.arange(len(params), dtype=float)
    bottom = np.zeros(len(params))
    for level, colour in LEVEL_COLOURS.items():
        values = np.array([np.nan if v is None else float(v) for v in shares.get(level, [None] * len(params))])
        if not np.isfinite(values).any():
            continue
        height = np.nan_to_num(values, nan=0.0)
        ax.bar(x, height, bottom=bottom, color=colour, width=0.6, label=level, edgecolor="white", lw=0.5)
        for xi, b, h in zip(x, bottom, height):
            if h >= 0.08:
                ax.text(xi, b + h / 2, f"{100 * h:.0f} %", ha="center", va="center", fontsize=8, color="white")
        bottom += height
    ax.set_xticks(x, [str(p) for p in params])
    ax.set_ylim(0, 1.0)
    ax.set_xlim(-0.6, len(params) - 0.4)
    ax.set_ylabel("share of the variance")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="between", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax

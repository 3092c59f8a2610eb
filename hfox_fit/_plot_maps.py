"""The map plots of :mod:`hfox_fit.plotting`: one value per die on the wafer, one per cell on its array.

Kept apart from :mod:`hfox_fit.plotting` (which re-exports them) to keep each
module short; the same conventions hold: ``ax=None`` opens a new figure, each
returns the Axes it drew on, matplotlib is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_die_map", "plot_array_map", "FLAG_COLOURS"]

#: Colour of each cell flag in the array maps (``ok`` light, the failures strong).
FLAG_COLOURS = {"ok": "#dfe9f5", "stuck": "#7f3c8d", "abrupt": "#e73f74", "open": "#f2b701",
                "failed": "#222222", "poor_fit": "#3969ac", "other": "#80ba5a"}


def _axes(ax, **kw):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(**kw)
    return ax


def plot_die_map(x, y, values, *, label="", labels=None, ax=None, cmap="viridis"):
    """Plot one value per die as a square at the die coordinates.

    Parameters
    ----------
    x, y : array-like of shape (n_dies,)
        Die coordinates (die-pitch units, as the campaign gives them).
    values : array-like of shape (n_dies,)
    label : str
        Colour-bar label, with unit.
    labels : list of str, optional
        Die names written in each square.
    ax : matplotlib Axes, optional
    cmap : str

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    ax = _axes(ax)
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    values = np.asarray(values, float)

    def _pitch(c):
        d = np.diff(np.unique(c))
        return float(d.min()) if d.size else 1.0

    px, py = _pitch(x), _pitch(y)
    rects = [Rectangle((xi - 0.46 * px, yi - 0.46 * py), 0.92 * px, 0.92 * py) for xi, yi in zip(x, y)]
    coll = PatchCollection(rects, cmap=cmap, edgecolor="0.3", linewidth=0.5)
    coll.set_array(np.ma.masked_invalid(values))
    ax.add_collection(coll)
    ax.set_xlim(x.min() - px, x.max() + px)
    ax.set_ylim(y.min() - py, y.max() + py)
    if labels is not None:
        norm = coll.norm
        for xi, yi, lab, v in zip(x, y, labels, values):
            dark = np.isfinite(v) and norm(v) < 0.55
            ax.text(xi, yi, lab, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.figure.colorbar(coll, ax=ax, label=label, shrink=0.85)
    ax.set_xlabel("die x")
    ax.set_ylabel("die y")
    ax.set_aspect("equal")
    return ax


def plot_array_map(rows, cols, values, *, label="", ax=None, cmap="viridis", flags=False, title=None,
                   legend_title="flag"):
    """Plot one value per cell of an array at its (row, column); NaN cells are left blank.

    Parameters
    ----------
    rows, cols : array-like of int, shape (n_cells,)
        Row and column of each cell (row 0 at the top, as on the array).
    values : array-like of shape (n_cells,)
        A number per cell, or with ``flags=True`` a flag name per cell
        (coloured by :data:`FLAG_COLOURS`, with a legend of the flags present).
    label : str
        Colour-bar label, with unit.
    ax : matplotlib Axes, optional
    cmap : str
    flags : bool, default=False
    title : str, optional
    legend_title : str, default="flag"
        Title of the flags' legend (its counts are of the entries of ``values``).

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax = _axes(ax)
    rows = np.asarray(rows, int)
    cols = np.asarray(cols, int)
    shape = (int(rows.max()) + 1, int(cols.max()) + 1) if rows.size else (1, 1)
    grid = np.full(shape, np.nan)
    if flags:
        names = [str(v) for v in values]
        present = [f for f in FLAG_COLOURS if f in names] + sorted(set(names) - set(FLAG_COLOURS))
        code = {f: i for i, f in enumerate(present)}
        grid[rows, cols] = [code[n] for n in names]
        colours = [FLAG_COLOURS.get(f, FLAG_COLOURS["other"]) for f in present]
        ax.imshow(np.ma.masked_invalid(grid), cmap=ListedColormap(colours or ["white"]), vmin=-0.5,
                  vmax=max(len(present), 1) - 0.5, interpolation="nearest", aspect="auto")
        counts = {f: names.count(f) for f in present}
        ax.legend(handles=[Patch(facecolor=FLAG_COLOURS.get(f, FLAG_COLOURS["other"]), edgecolor="0.5",
                                 label=f"{f} ({counts[f]:,})") for f in present],
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title=legend_title)
    else:
        grid[rows, cols] = np.asarray(values, float)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest", aspect="auto")
        ax.figure.colorbar(image, ax=ax, label=label)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    if title:
        ax.set_title(title)
    return ax

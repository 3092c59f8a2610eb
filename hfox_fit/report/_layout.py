"""The report's figures made readable as the page shows them: fonts no smaller than 8 pt, legends off the data.

Applied by :func:`~hfox_fit.report._html._render` to every figure after it is
drawn, whichever plot function made it, so each plot function keeps its own
defaults when used alone. matplotlib is imported by the caller.
"""

from __future__ import annotations

import numpy as np

#: The smallest font of a figure (points, at the size the page shows it).
MIN_FONT_PT = 8.0
#: A legend may hide at most this fraction of an axes' plotted points.
MAX_COVERED = 0.01
_LOCS = ("upper left", "upper right", "lower right", "lower left", "center right", "center left",
         "upper center", "lower center", "center")


def legible(fig) -> None:
    """Raise every text below :data:`MIN_FONT_PT` to it (small legends and annotations)."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if text.get_fontsize() < MIN_FONT_PT:
            text.set_fontsize(MIN_FONT_PT)


def _points(ax) -> np.ndarray:
    """The display coordinates of the points plotted in ``ax`` (lines and markers) that lie inside it."""
    pts = []
    for line in ax.get_lines():
        xy = np.asarray(line.get_xydata(), float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy):
            pts.append(line.get_transform().transform(xy))
    for coll in ax.collections:
        offsets = np.asarray(coll.get_offsets(), float)
        if offsets.ndim == 2 and len(offsets) > 1:
            offsets = offsets[np.isfinite(offsets).all(axis=1)]
            pts.append(coll.get_offset_transform().transform(offsets))
    from matplotlib.patches import Rectangle

    bars = [p.get_bbox() for p in ax.patches if isinstance(p, Rectangle) and p.get_height() != 0]
    if bars:  # a histogram: the top and the middle of each bar
        xy = np.array([((b.x0 + b.x1) / 2, y) for b in bars for y in (b.y1, (b.y0 + b.y1) / 2)])
        pts.append(ax.transData.transform(xy[np.isfinite(xy).all(axis=1)]))
    if not pts:
        return np.zeros((0, 2))
    pts = np.concatenate(pts)
    box = ax.get_window_extent()
    inside = (pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)
    return pts[inside]


def _covered(legend, pts, texts, renderer) -> float:
    """The fraction of ``pts`` under the legend; 1 when it hides a text of the axes (a KS box, say)."""
    b = legend.get_window_extent(renderer)
    if any(b.overlaps(t) for t in texts):
        return 1.0
    if not len(pts):
        return 0.0
    hit = (pts[:, 0] > b.x0) & (pts[:, 0] < b.x1) & (pts[:, 1] > b.y0) & (pts[:, 1] < b.y1)
    return float(hit.mean())


def _set_loc(legend, loc) -> None:
    if hasattr(legend, "set_loc"):  # matplotlib >= 3.8
        legend.set_loc(loc)
    else:  # pragma: no cover - matplotlib 3.7
        legend._loc = legend.codes[loc]


def legends_off_data(fig) -> None:
    """Move each axes legend to the corner where it hides the fewest points, or outside the axes.

    A legend that hides more than :data:`MAX_COVERED` of its axes' points in
    every corner goes to the right of the axes (the layout makes room for it).
    """
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    for _ in range(2):  # once more after a legend moved out: the others' axes moved with the layout
        if not legends or not _place(fig, legends):
            return


def _place(fig, legends) -> bool:
    """One pass of :func:`legends_off_data`; True when a legend moved."""
    fig.draw_without_rendering()  # the layout: axes and legends where the PNG will have them
    renderer = fig.canvas.get_renderer()
    moved = False
    for ax, legend in legends:
        if legend.get_bbox_to_anchor() is not ax.bbox and legend.get_bbox_to_anchor().bounds != ax.bbox.bounds:
            continue  # already placed outside (by the plot, or by the first pass)
        pts = _points(ax)
        texts = [t.get_window_extent(renderer) for t in [*ax.texts, ax.title, ax._left_title, ax._right_title]
                 if t.get_visible() and t.get_text().strip()]
        wide = legend.get_window_extent(renderer).width > 0.6 * ax.get_window_extent(renderer).width
        if not wide and _covered(legend, pts, texts, renderer) <= MAX_COVERED:
            continue
        scores = []
        for loc in _LOCS:
            _set_loc(legend, loc)
            scores.append((_covered(legend, pts, texts, renderer), loc))
        best, loc = min(scores, key=lambda s: s[0])
        moved = True
        if best <= MAX_COVERED and not wide:
            _set_loc(legend, loc)
        elif legend.get_window_extent(renderer).width < 0.4 * ax.get_window_extent(renderer).width:
            _set_loc(legend, "upper left")  # beside the axes: the layout makes room
            legend.set_bbox_to_anchor((1.02, 1.0), transform=ax.transAxes)
        else:  # too wide to sit beside a narrow panel: under it, below its axis label
            _set_loc(legend, "upper center")
            legend.set_bbox_to_anchor((0.5, -0.22), transform=ax.transAxes)
    return moved


def ticks_apart(fig) -> None:
    """Fewer ticks on each linear axis whose tick labels overlap (a narrow panel, long numbers)."""
    from matplotlib.ticker import MaxNLocator

    for attempt in range(4):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        crowded = [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                   if axis.get_scale() == "linear" and _overlapping(axis, renderer)]
        if not crowded:
            return
        for axis in crowded:
            shown = [t for t in axis.get_ticklabels() if t.get_text().strip() and _in_view(axis, t)]
            if attempt < 3:
                axis.set_major_locator(MaxNLocator(nbins=max(1, len(shown) - 2), min_n_ticks=2))
            elif axis is axis.axes.xaxis:  # still crowded with two ticks: slant them
                axis.set_tick_params(labelrotation=30)
                for t in axis.get_ticklabels():
                    t.set_horizontalalignment("right")


def _in_view(axis, label) -> bool:
    lo, hi = sorted(axis.get_view_interval())
    value = label.get_position()[0 if axis is axis.axes.xaxis else 1]
    return lo <= value <= hi


def _overlapping(axis, renderer) -> bool:
    # a gap of at least 4 px (about half a character) between neighbours
    boxes = [t.get_window_extent(renderer).padded(2.0) for t in axis.get_ticklabels()
             if t.get_visible() and t.get_text().strip() and _in_view(axis, t)]
    boxes.sort(key=lambda b: (b.x0, b.y0))
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


#: Parameters side by side in a figure of per-parameter panels; more wrap to the next block of rows.
MAX_PARAM_COLUMNS = 3


def parameter_axes(fig, rows: int, n: int):
    """A ``(rows, n)`` array of axes, one column per parameter, wrapped after :data:`MAX_PARAM_COLUMNS`.

    Parameter ``j`` has its ``rows`` panels stacked in column ``j % 3`` of block ``j // 3``, so
    six parameters make two blocks of three instead of six columns too narrow for their labels.
    """
    cols = min(n, MAX_PARAM_COLUMNS)
    blocks = -(-n // cols)
    grid = fig.subplots(rows * blocks, cols, squeeze=False)
    out = np.empty((rows, n), dtype=object)
    for j in range(n):
        b, c = divmod(j, cols)
        out[:, j] = grid[b * rows:(b + 1) * rows, c]
    for b in range(blocks):  # the empty places of the last block
        for c in range(n - b * cols, cols):
            for r in range(rows):
                grid[b * rows + r, c].set_visible(False)
    return out


def parameter_figsize(n: int, block_height: float, min_width: float = 8.0) -> tuple[float, float]:
    """The size of a :func:`parameter_axes` figure: at most the page's width, ``block_height`` per block."""
    cols = min(n, MAX_PARAM_COLUMNS)
    return (max(min_width, 3.6 * cols + 0.4), block_height * -(-n // cols))

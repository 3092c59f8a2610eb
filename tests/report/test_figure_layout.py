"""Every report figure, drawn as the page embeds it: tick labels apart, legends off the data, fonts legible.

The figures are caught as the report saves them (Agg), then measured with the
renderer that drew them: tick-label boxes on each axis must not overlap, a
legend must cover few of the plotted points, and every text must be at least
8 pt once the page scales the PNG down to its column (1128 px wide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_helpers import truth_fit

from hfox_fit.report import build_report
from hfox_fit.synth import make_wafer

PAGE_WIDTH_PX = 1128  # the page's column: main's max-width less its padding (report/_html.py _CSS)
MIN_FONT_PT = 8.0


def _caught_figures(monkeypatch, *args, **kwargs) -> dict:
    """The figures ``build_report(*args, **kwargs)`` saves, caught as it saves them."""
    from matplotlib.figure import Figure

    caught = {}
    save = Figure.savefig

    def spy(self, fname, *a, **k):
        save(self, fname, *a, **k)
        caught[Path(fname).stem] = self

    monkeypatch.setattr(Figure, "savefig", spy)
    build_report(*args, **kwargs)
    monkeypatch.undo()
    return caught


@pytest.fixture(scope="module")
def report_figures(tmp_path_factory, condition_report):
    """The figures of three reports: dies with positions (die map), without (array map), at 4 pulse conditions."""
    out = {f"conditions:{k}": v for k, v in condition_report[3].items()}
    for name, coords in (("with_coords", True), ("no_coords", False)):
        w = make_wafer("paper", devices=1100, pulses=300, seed=3)
        if coords:
            for i, d in enumerate(w.dies):
                d.attrs.update({"x": i, "y": 0})
        cells, summary, model = truth_fit(w)
        figs = _caught_figures(pytest.MonkeyPatch(), w.dies, cells, summary, model, tmp_path_factory.mktemp(name),
                               seed=1)
        out.update({f"{name}:{k}": v for k, v in figs.items()})
    return out


def _tick_boxes(axis, renderer):
    boxes = []
    lo, hi = sorted(axis.get_view_interval())
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if not lo <= tick.get_loc() <= hi:  # outside the view: not drawn
            continue
        for label in (tick.label1, tick.label2):
            if label.get_visible() and label.get_text().strip():
                boxes.append((label.get_text(), label.get_window_extent(renderer)))
    return boxes


def _overlaps(boxes, gap=2.0):
    """Pairs of labels closer than ``gap`` px (touching labels read as one number: "65007000")."""
    bad = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (ta, a), (tb, b) = boxes[i], boxes[j]
            if (min(a.x1, b.x1) - max(a.x0, b.x0) > -gap) and (min(a.y1, b.y1) - max(a.y0, b.y0) > -gap):
                bad.append((ta, tb))
    return bad


def test_the_reports_have_the_figures_measured_here(report_figures):
    names = {k.split(":")[1] for k in report_figures}
    assert {"traces", "band", "ecdf", "parameters", "pairs", "noise", "die_map", "array_map", "condition_medians",
            "condition_mean_w"} <= names


def test_no_tick_labels_overlap(report_figures):
    bad = {}
    for name, fig in report_figures.items():
        renderer = fig.canvas.get_renderer()
        for k, ax in enumerate(fig.axes):
            for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                clash = _overlaps(_tick_boxes(axis, renderer))
                if clash:
                    bad[f"{name} axes {k} ({ax.get_title() or ax.get_xlabel()}) {which}"] = clash[:3]
    assert not bad, "; ".join(f"{k}: {v}" for k, v in bad.items())


def test_legends_cover_few_plotted_points(report_figures):
    bad = {}
    for name, fig in report_figures.items():
        renderer = fig.canvas.get_renderer()
        for k, ax in enumerate(fig.axes):
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            inside = total = 0
            for line in ax.get_lines():
                xy = np.asarray(line.get_xydata(), float)
                xy = xy[np.isfinite(xy).all(axis=1)]
                if not len(xy):
                    continue
                px = line.get_transform().transform(xy)
                clip = ax.get_window_extent(renderer)
                seen = (px[:, 0] >= clip.x0) & (px[:, 0] <= clip.x1) & (px[:, 1] >= clip.y0) & (px[:, 1] <= clip.y1)
                px = px[seen]
                total += len(px)
                inside += int(((px[:, 0] > box.x0) & (px[:, 0] < box.x1) & (px[:, 1] > box.y0)
                               & (px[:, 1] < box.y1)).sum())
            if total and inside / total > 0.02:
                bad[f"{name} axes {k} ({ax.get_title() or ax.get_xlabel()})"] = f"{inside}/{total} points"
    assert not bad, "; ".join(f"{k}: {v}" for k, v in bad.items())


def test_fonts_are_legible_at_the_embedded_size(report_figures):
    from matplotlib.text import Text

    bad = {}
    for name, fig in report_figures.items():
        width_px = fig.get_figwidth() * fig.dpi
        scale = min(1.0, PAGE_WIDTH_PX / width_px)
        small = set()
        for t in fig.findobj(Text):
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() * scale < MIN_FONT_PT - 1e-6:
                small.add((t.get_text()[:30], round(t.get_fontsize() * scale, 1)))
        if small:
            bad[name] = sorted(small)[:6]
    assert not bad, "; ".join(f"{k}: {v}" for k, v in bad.items())

"""The report's wafer section: each wafer's medians with their 90 % intervals, and the variance decomposition.

Shown when the fit summary has ``wafers`` with two or more entries (a campaign of several
wafers, :mod:`hfox_fit.fitting.wafers`):

* ``wafer_medians``: one panel per parameter (the drift law's and ``r0``), each wafer's
  median with its 90 % interval (the summary's ``wafers[k]["d2d"][p]``: the wafer's law, or
  its cells' median where the law misses it), wafers along x, the pooled median and its
  interval as a dashed line and a band;
* ``wafer_variance``: per parameter, stacked bars of the shares of its variance between
  wafers, dies, cells and cycles (the summary's ``variance``).

Both go to ``metrics["tables"]["wafers"]`` (the page's "Wafers" table).
"""

from __future__ import annotations

import numpy as np

from ._layout import parameter_axes, parameter_figsize
from ._tables import _num

__all__ = ["summary_wafers", "wafers_section", "TABLE_NAME"]

#: Where the page lists each wafer's medians (the captions point there).
TABLE_NAME = "Wafers"
_LEVELS = ("wafer", "die", "cell", "cycle")


def summary_wafers(summary) -> list:
    """The summary's ``wafers`` when it has two or more, else ``[]``."""
    wafers = summary.get("wafers") if isinstance(summary, dict) else None
    return list(wafers) if isinstance(wafers, list) and len(wafers) >= 2 else []


def _ci(d: dict):
    ci = d.get("median_ci90")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(c is not None and np.isfinite(c) for c in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def wafers_section(summary, pnames, units, metrics, figs, tables, notes) -> None:
    """Add the two wafer figures and the table (nothing for a one-wafer fit)."""
    wafers = summary_wafers(summary)
    if not wafers:
        return
    params = [p for p in [*pnames, "r0"] if any(p in (w.get("d2d") or {}) for w in wafers)]
    pooled = summary.get("d2d") or {}
    variance = summary.get("variance") if isinstance(summary.get("variance"), dict) else {}
    names = [str(w["wafer"]) for w in wafers]
    entry = {"wafers": names, "n_cells": [w.get("n_cells") for w in wafers], "params": {}}
    for p in params:
        rows = [(w.get("d2d") or {}).get(p) or {} for w in wafers]
        med = [_num(d.get("median")) for d in rows]
        ci = [_ci(d) for d in rows]
        ref = pooled.get(p) or {}
        values = [m for m in med if m is not None] + [c for i in ci if i for c in i]
        positive = bool(values) and min(values) > 0
        entry["params"][p] = {
            "unit": units.get(p, ""), "median": med, "ci90": ci,
            "median_from": [d.get("median_from", "law") if d else None for d in rows],
            "pooled_median": _num(ref.get("median")), "pooled_ci90": _ci(ref),
            # a log axis where the wafers span a factor of 3 or more (r0 across a fab's wafers, say)
            "log_axis": positive and max(values) / min(values) >= 3.0,
        }
    metrics["figures"]["wafer_medians"] = entry
    missing = {p: [n for n, m in zip(names, entry["params"][p]["median"]) if m is None] for p in params}
    missing = {p: v for p, v in missing.items() if v}
    if missing:
        notes.append("wafers: no median for " + "; ".join(f"{p} at {', '.join(v)}" for p, v in missing.items())
                     + " (see the summary's notes).")
    from_sample = sorted({p for p in params for s in entry["params"][p]["median_from"] if s == "sample"})

    def draw_medians(fig):
        from ..plotting import plot_wafer_medians

        axes = parameter_axes(fig, 1, len(params))[0]
        for ax, p in zip(axes, params):
            it = entry["params"][p]
            lo = [c[0] if c else np.nan for c in it["ci90"]]
            hi = [c[1] if c else np.nan for c in it["ci90"]]
            med = [m if m is not None else np.nan for m in it["median"]]
            plot_wafer_medians(names, med, lo, hi, pooled=it["pooled_median"], pooled_ci90=it["pooled_ci90"],
                               name=p, unit=it["unit"], log=it["log_axis"], ax=ax, title=p,
                               legend=False)
        # one legend for all panels, below them: under a panel it would meet its slanted wafer names
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)

    caption = (f"Median of each parameter's D2D law on each of the {len(names)} wafers (markers; bars: the 90 % "
               "interval of the median from the summary's 'wafers', bootstrap over the wafer's cells; a hollow marker "
               "where it has none), the wafers along x; dashed line and band: the pooled median of all wafers and its "
               "90 % interval."
               + (f" For {', '.join(from_sample)} the law of some wafer missed its own cells' median: the cells' median "
                  "and its interval are shown there (the table says which)." if from_sample else "")
               + f" Each wafer's medians are listed in the '{TABLE_NAME}' table under Fit tables and in metrics.json.")
    figs["wafer_medians"] = (draw_medians, parameter_figsize(len(params), 3.6), caption)
    _variance_figure(params, variance, metrics, figs, notes)
    tables["wafers"] = {"name": TABLE_NAME, "params": params, "units": {p: units.get(p, "") for p in params},
                        "rows": [{"wafer": n, "n_cells": w.get("n_cells"), "n_trains_fitted": w.get("n_trains_fitted"),
                                  "medians": {p: {"median": entry["params"][p]["median"][k],
                                                  "ci90": entry["params"][p]["ci90"][k],
                                                  "from": entry["params"][p]["median_from"][k]} for p in params},
                                  "note": "; ".join(w.get("notes") or [])}
                                 for k, (n, w) in enumerate(zip(names, wafers))],
                        "variance": [{"param": p, **{lv: (variance.get(p) or {}).get(lv) for lv in _LEVELS},
                                      "scale": (variance.get(p) or {}).get("scale"),
                                      "n_trains": (variance.get(p) or {}).get("n_trains"),
                                      "note": (variance.get(p) or {}).get("note")}
                                     for p in params if p in variance]}


def _variance_figure(params, variance, metrics, figs, notes) -> None:
    shown = [p for p in params if isinstance(variance.get(p), dict)
             and any(_num(variance[p].get(lv)) is not None for lv in _LEVELS)]
    if not shown:
        notes.append("wafers: the summary has no variance decomposition ('variance'): no variance figure.")
        return
    shares = {lv: [_num(variance[p].get(lv)) for p in shown] for lv in _LEVELS}
    merged = {p: [lv for lv in _LEVELS if _num(variance[p].get(lv)) is None] for p in shown}
    from_laws = [p for p in shown if variance[p].get("wafer_from") == "wafer laws"]
    metrics["figures"]["wafer_variance"] = {"params": shown, "shares": shares,
                                            "scale": {p: variance[p].get("scale") for p in shown},
                                            "not_separable": merged, "wafer_share_from_laws": from_laws}

    def draw(fig):
        from ..plotting import plot_variance_shares

        plot_variance_shares(shown, shares, ax=fig.subplots(), title="where each parameter's spread lies")

    merged_text = "; ".join(f"{p}: {', '.join(v)}" for p, v in merged.items() if v)
    scales = sorted({str(variance[p].get("scale")) for p in shown})
    caption = ("Share of each parameter's variance between wafers, between dies within a wafer, between cells within "
               "a die and between cycles of one cell (nested random-effects ANOVA, method of moments, on the "
               f"{' / '.join(scales)} scale; the read noise's share, from the trains' standard errors, is taken out "
               "of the finest level). Shares within a bar sum to 1; labels give those of 8 % or more."
               + (f" Levels that cannot be told apart from their neighbour (one group within each parent; their "
                  f"variance is in the neighbour's bar): {merged_text}." if merged_text else "")
               + (f" {', '.join(from_laws)} has values censored at the train's end: its wafer share is from the "
                  "wafers' fitted laws (which count the censored trains), the rest split as its seen values split "
                  "it." if from_laws else "")
               + f" The shares and each parameter's note are in the '{TABLE_NAME}' table and in metrics.json.")
    figs["wafer_variance"] = (draw, (max(6.0, 1.2 * len(shown) + 3.0), 3.6), caption)

r"""The report's pulse-condition section: each condition's medians with the condition law, and its mean w.

Shown when the fit summary has ``conditions`` (a campaign measured at two or more
pulse conditions, :mod:`hfox_fit.fitting.conditions`):

* ``condition_medians``: each drift parameter's median at each condition (with its
  90 % interval, as the summary gives them) against the pulse amplitude, one series
  per pulse width (against the width when the amplitude does not vary), with the
  fitted condition law :math:`\ln m = a + b_v (V - V_{ref}) + b_w \ln(w / w_{ref})`
  (summary ``condition_law``) drawn through each series;
* ``condition_mean_w``: the mean of ``w = ln(R/R0)`` over pulses at each condition,
  measured (the usable cells of that condition, as the report collected them)
  against the fitted model at that condition (:meth:`DeviceModel.at`) simulated
  for the same cells, cycles, pulse counts and missing reads.

The per-condition medians also go to ``metrics["tables"]["conditions"]`` (the page's
"Pulse conditions" table). Each train's condition is recorded from the dies as the
report reads them (:class:`hfox_fit.fitting.conditions.ConditionRecorder`), so the dies are still
read once.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._plot_conditions import format_width, width_unit
from ..exceptions import FitError
from ._collect import _pad
from ._html import _fmt
from ._layout import parameter_axes, parameter_figsize

#: Where the page lists the per-condition medians (the captions point there).
TABLE_NAME = "Pulse conditions"
#: Points of each drawn law line (the conditions' own x values are added to them).
_LINE_POINTS = 60
#: Simulated values per chunk (bounds the memory of a large condition).
_CHUNK = 4_000_000
#: The child of the report's seed that draws the simulated cells of each condition
#: (build_report spawns 0-2; a child of its own leaves every other figure's numbers unmoved).
_SEED_CHILD = 3


def summary_conditions(summary) -> list:
    """The summary's ``conditions`` when it has two or more, else ``[]``."""
    conds = summary.get("conditions") if isinstance(summary, dict) else None
    return list(conds) if isinstance(conds, list) and len(conds) >= 2 else []


def _name(v, w) -> str:
    return "unknown condition" if v is None or w is None else f"{v:g} V, {format_width(w)}"


def _interval(d: dict, location: str = "median"):
    """A condition's 90 % interval of the median and where it comes from (as the condition law reads it)."""
    for key in (location + "_ci90", "sample_median_ci90"):
        ci = d.get(key)
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(c is not None for c in ci):
            return [float(ci[0]), float(ci[1])], key
    return None, None


def _location(law: dict, p: str) -> str:
    """The median of each condition that the condition law of ``p`` follows (the law's where it has none)."""
    return ((law.get("params") or {}).get(p) or {}).get("location") or "median"


def _law_text(p, e: dict, factors) -> str:
    if "a" not in e:
        return f"{p}: {e.get('note', 'no condition law')}"
    parts = []
    for b, factor, unit in (("b_v", "v_pulse", " /V"), ("b_w", "pulse_width", "")):
        if factor in factors and e.get(b + "_stderr") is not None:
            parts.append(f"{b} = {_fmt(e[b], 3)} ± {_fmt(e[b + '_stderr'], 2)}{unit}")
    scale = "" if e.get("scale") == "log" else " (on the median itself)"
    return f"{p}{scale}: {', '.join(parts)}"


def conditions_section(watch, col, summary, model, pnames, units, seed, metrics, figs, tables, notes) -> None:
    """Add the two pulse-condition figures and the table (nothing for a single-condition campaign)."""
    conds = summary_conditions(summary)
    if not conds:
        return
    law = summary.get("condition_law") if isinstance(summary.get("condition_law"), dict) else {}
    params = [p for p in pnames if any(p in (c.get("d2d") or {}) for c in conds)]
    _table(conds, [*params, *(["r0"] if any("r0" in (c.get("d2d") or {}) for c in conds) else [])], units, law,
           tables)
    known = [c for c in conds if c.get("v_pulse") is not None and c.get("pulse_width") is not None]
    if len(known) < len(conds):
        notes.append(f"pulse conditions: {len(conds) - len(known)} group(s) of trains without v_pulse or "
                     "pulse_width are listed in the table but left out of the condition figures.")
    if len(known) < 2:
        notes.append("pulse conditions: fewer than two known conditions; no condition figures.")
        return
    _medians_figure(known, law, params, units, metrics, figs, notes)
    _mean_w_figure(watch, col, known, model, params, seed, metrics, figs, notes)


# ---------------------------------------------------------------------------------------- the table
def _table(conds, params, units, law, tables) -> None:
    rows = []
    for c in conds:
        d2d = c.get("d2d") or {}
        row = {"condition": _name(c.get("v_pulse"), c.get("pulse_width")), "v_pulse": c.get("v_pulse"),
               "pulse_width": c.get("pulse_width"), "n_cells": c.get("n_cells"),
               "n_trains_fitted": c.get("n_trains_fitted"), "medians": {}}
        for p in params:
            d = d2d.get(p) or {}
            location = _location(law, p)
            ci, source = _interval(d, location)
            row["medians"][p] = {"median": d.get(location), "ci90": ci, "ci_source": source, "location": location}
        if not d2d:
            row["note"] = "; ".join(c.get("notes") or []) or "no D2D law at this condition"
        rows.append(row)
    law_rows = []
    for p, e in (law.get("params") or {}).items():
        law_rows.append({"param": p, **{k: e.get(k) for k in ("scale", "a", "a_stderr", "b_v", "b_v_stderr", "b_w",
                                                               "b_w_stderr", "birge_ratio", "note", "location")},
                         "spread": (e.get("spread") or {}).get("choice")})
    tables["conditions"] = {"name": TABLE_NAME, "params": params, "units": {p: units.get(p, "") for p in params},
                            "rows": rows, "law": law_rows, "v_ref": law.get("v_ref"), "width_ref": law.get("width_ref"),
                            "reference": (f"V_ref = {law['v_ref']:g} V, w_ref = {format_width(law['width_ref'])}"
                                          if law.get("v_ref") is not None and law.get("width_ref") else None),
                            "factors": law.get("factors"), "law_note": law.get("note")}


# ---------------------------------------------------------------------------------------- medians
def _medians_figure(known, law, params, units, metrics, figs, notes) -> None:
    v = np.array([c["v_pulse"] for c in known], float)
    w = np.array([c["pulse_width"] for c in known], float)
    vary_v, vary_w = len(np.unique(v)) > 1, len(np.unique(w)) > 1
    # along the axis: the amplitude; the width when only the width varies
    x, series = (v, w) if vary_v else (w, v)
    x_factor, series_factor = ("v_pulse", "pulse_width") if vary_v else ("pulse_width", "v_pulse")
    label_of = (lambda s: format_width(s)) if vary_v else (lambda s: f"{s:g} V")
    factors = law.get("factors") or [f for f, on in (("v_pulse", vary_v), ("pulse_width", vary_w)) if on]
    v_ref, w_ref = law.get("v_ref"), law.get("width_ref")
    entry = {"x_factor": x_factor, "series_factor": series_factor, "factors": factors, "v_ref": v_ref,
             "width_ref": w_ref, "conditions": [{"v_pulse": c["v_pulse"], "pulse_width": c["pulse_width"],
                                                 "n_cells": c.get("n_cells")} for c in known], "params": {}}
    for p in params:
        med, ci, source = [], [], []
        location = _location(law, p)
        for c in known:
            d = (c.get("d2d") or {}).get(p) or {}
            med.append(d.get(location))
            i, s = _interval(d, location)
            ci.append(i)
            source.append(s)
        e = (law.get("params") or {}).get(p) or {}
        vals = np.array([m if m is not None else np.nan for m in med], float)
        lows = np.array([i[0] if i else np.nan for i in ci], float)
        log = e.get("scale") == "log" if "a" in e else bool(np.all(vals[np.isfinite(vals)] > 0)
                                                              and np.all(lows[np.isfinite(lows)] > 0))
        item = {"unit": units.get(p, ""), "log_axis": log, "median": med, "ci90": ci, "ci_source": source,
                "law": None, "law_note": e.get("note"), "line": None}
        if "a" in e and v_ref is not None and w_ref is not None:
            item["law"] = {k: e.get(k) for k in ("scale", "a", "a_stderr", "b_v", "b_v_stderr", "b_w", "b_w_stderr",
                                                 "birge_ratio")}
            grid = np.union1d(np.linspace(x.min(), x.max(), _LINE_POINTS) if x_factor == "v_pulse"
                              else np.geomspace(x.min(), x.max(), _LINE_POINTS), x)
            ys = {}
            for s in dict.fromkeys(series.tolist()):
                vv, ww = (grid, np.full_like(grid, s)) if x_factor == "v_pulse" else (np.full_like(grid, s), grid)
                y = e["a"] + e.get("b_v", 0.0) * (vv - v_ref) + e.get("b_w", 0.0) * np.log(ww / w_ref)
                ys[label_of(s)] = (np.exp(y) if e.get("scale") == "log" else y).tolist()
            item["line"] = {"x": grid.tolist(), "y": ys}
        entry["params"][p] = item
    metrics["figures"]["condition_medians"] = entry
    no_law = [p for p in params if entry["params"][p]["law"] is None]
    bare = [c for c in known if not c.get("d2d")]
    if not law:
        notes.append("pulse conditions: the summary has no condition_law (see its notes): the medians are drawn "
                     "without a law through them.")

    def draw(fig):
        from ..plotting import axis_label, plot_condition_medians

        axes = parameter_axes(fig, 1, len(params))[0]
        # widths along the axis in a unit that reads (µs rather than 1e-06 s)
        xf, xunit = (1.0, "V") if x_factor == "v_pulse" else width_unit(x)
        xlabel = "V_pulse (V)" if x_factor == "v_pulse" else axis_label("pulse width", xunit)
        labels = {s: label_of(s) for s in dict.fromkeys(series.tolist())}
        for ax, p in zip(axes, params):
            it = entry["params"][p]
            lo = [i[0] if i else np.nan for i in it["ci90"]]
            hi = [i[1] if i else np.nan for i in it["ci90"]]
            lines = None
            if it["line"] is not None:
                lines = {s: (np.asarray(it["line"]["x"]) / xf, it["line"]["y"][labels[s]]) for s in labels}
            med = [m if m is not None else np.nan for m in it["median"]]
            plot_condition_medians(x / xf, med, lo, hi, series, lines=lines, series_labels=labels, name=p,
                                   unit=it["unit"], log=it["log_axis"], xlabel=xlabel,
                                   xlog=x_factor == "pulse_width", ax=ax,
                                   title=p + ("" if it["law"] is not None else " (no condition law)"),
                                   legend_title="width" if x_factor == "v_pulse" else "V_pulse")

    if not vary_w or not vary_v:
        still = "pulse width" if not vary_w else "pulse amplitude"
        zero = "b_w" if not vary_w else "b_v"
        fixed = f" The {still} did not vary over the conditions: {zero} is 0, not fitted."
    else:
        fixed = ""
    laws = "; ".join(_law_text(p, (law.get("params") or {}).get(p) or {"note": "no condition law"}, factors)
                     for p in params)
    ref = (f"V_ref = {v_ref:g} V, w_ref = {format_width(w_ref)}" if v_ref is not None and w_ref is not None
           else "no reference: no condition law")
    against = "the pulse amplitude V_pulse, one colour per pulse width" if x_factor == "v_pulse" else \
        "the pulse width, one colour per amplitude"
    cells_own = [p for p in params if _location(law, p) == "sample_median"]
    caption = (f"Median of each drift parameter at each of the {len(known)} pulse conditions (markers: the D2D law's"
               + (f"; the cells' own, family-free, for {', '.join(cells_own)}, whose condition law follows them "
                  "(no censored cell)" if cells_own else "") + "; "
               f"bars: the 90 % interval of that median from the summary, a hollow marker where it has none) against "
               f"{against} (markers offset slightly along x so that the bars do not hide each other); lines: the "
               f"fitted condition law ln median = a + b_v (V - V_ref) + b_w ln(w / w_ref) ({ref}; on the median "
               f"itself for a parameter that may be <= 0, linear axis). Slopes ± one standard error (scaled by the "
               f"Birge ratio where the medians scatter more than their intervals): {laws}.{fixed}"
               + (f" No law is drawn for {', '.join(no_law)}." if no_law else "")
               + (f" No D2D law (no marker) at {'; '.join(_name(c['v_pulse'], c['pulse_width']) for c in bare)}: see "
                  "the table's notes." if bare else "")
               + f" Each condition's medians and intervals are listed in the '{TABLE_NAME}' table under Fit "
               "tables and in metrics.json.")
    figs["condition_medians"] = (draw, parameter_figsize(len(params), 3.5), caption)


# ---------------------------------------------------------------------------------------- mean w
def _mean_w_figure(watch, col, known, model, params, seed, metrics, figs, notes) -> None:
    if watch is None or not col.w_meas:
        notes.append("pulse conditions: no usable cell to compare: no mean-w figure.")
        return
    P = col.n_pulses
    wm = _pad(col.w_meas, P)
    ids = pd.concat(col.ids, ignore_index=True).astype({"wafer": str, "die": str, "device": str})
    ids["cycle"] = pd.to_numeric(ids["cycle"], errors="coerce")
    table = watch.table().drop_duplicates(["wafer", "die", "device", "cycle"])
    table["cycle"] = table["cycle"].astype(float)
    cond = ids.merge(table, on=["wafer", "die", "device", "cycle"], how="left", validate="many_to_one")
    v = cond["v_pulse"].to_numpy(float)
    w = cond["pulse_width"].to_numpy(float)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SEED_CHILD,)))
    t = np.arange(P)
    widths = sorted({c["pulse_width"] for c in known})
    amps = sorted({c["v_pulse"] for c in known})
    by_width = len(widths) > 1 and len(amps) > 1  # one panel per width; else one panel
    entry = {"pulses": t, "panels": "pulse_width" if by_width else "one", "seed_child": _SEED_CHILD,
             "conditions": []}
    n_matched = 0
    for c in known:
        at = np.isclose(v, c["v_pulse"], rtol=1e-9, atol=1e-12) & np.isclose(
            w, c["pulse_width"], rtol=1e-9, atol=0.0)
        rows = np.flatnonzero(at)
        n_matched += len(rows)
        item = {"v_pulse": c["v_pulse"], "pulse_width": c["pulse_width"], "label": _name(c["v_pulse"], c["pulse_width"]),
                "n_cell_cycles": int(len(rows)),
                "n_cells": int(ids.iloc[rows][["wafer", "die", "device"]].drop_duplicates().shape[0]),
                "mean_w_measured": None, "mean_w_simulated": None, "max_abs_diff": None, "final_diff": None}
        entry["conditions"].append(item)
        if not len(rows):
            item["note"] = "no usable cell of this condition among the report's cells"
            continue
        meas = wm[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            item["mean_w_measured"] = np.nanmean(meas, axis=0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # inside the fitted range: no extrapolation
                at_model = model.at(c["v_pulse"], c["pulse_width"])
        except FitError as err:
            item["note"] = f"not simulated: {err}"
            notes.append(f"pulse conditions: {item['label']} not simulated: {err}")
            continue
        sim = _simulate_like(at_model, ids.iloc[rows], P, rng)
        sim[np.isnan(meas)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            item["mean_w_simulated"] = np.nanmean(sim, axis=0)
            diff = item["mean_w_measured"][1:] - item["mean_w_simulated"][1:]
        if np.isfinite(diff).any():
            item["max_abs_diff"] = float(np.nanmax(np.abs(diff)))
            last = np.flatnonzero(np.isfinite(diff))[-1]
            item["final_diff"] = float(diff[last])
    unmatched = len(ids) - n_matched
    entry["unmatched_cell_cycles"] = int(unmatched)
    law = model.condition_law
    entry["moved_by_condition_law"] = [p for p in params if law is not None and "a" in law.params.get(p, {})]
    if unmatched:
        notes.append(f"pulse conditions: {unmatched:,} usable cell-cycle(s) of the report have no known condition "
                     "among the summary's and are left out of the mean-w figure.")
    metrics["figures"]["condition_mean_w"] = entry
    shown = [it for it in entry["conditions"] if it["mean_w_measured"] is not None]
    if not shown:
        return

    def draw(fig):
        from ..plotting import plot_condition_mean_w

        groups = [[it for it in shown if it["pulse_width"] == wd] for wd in widths] if by_width else [shown]
        groups = [g for g in groups if g]
        axes = parameter_axes(fig, 1, len(groups))[0]
        for ax, g in zip(axes, groups):
            curves = [{"label": f"{it['v_pulse']:g} V" if by_width else it["label"],
                       "measured": it["mean_w_measured"], "simulated": it["mean_w_simulated"],
                       "colour": amps.index(it["v_pulse"]) if by_width else shown.index(it)} for it in g]
            plot_condition_mean_w(t, curves, ax=ax, legend_title="V_pulse" if by_width else "condition",
                                  title=f"width {format_width(g[0]['pulse_width'])}" if by_width else None)

    worst = max((it for it in shown if it["max_abs_diff"] is not None), key=lambda it: it["max_abs_diff"],
                default=None)
    n = sum(it["n_cell_cycles"] for it in shown)
    caption = (f"Mean w = ln(R/R0) over pulses at each pulse condition: measured (solid; the {n:,} usable "
               "cell-cycles of the report, each with the condition it was measured at) against the fitted model at "
               "that condition (dashed; DeviceModel.at, its laws moved by the condition law, simulated for the same "
               "cells, cycles, pulse counts and missing reads)"
               + ("; one panel per pulse width, one colour per amplitude." if by_width else ".")
               + _moved_text(entry["moved_by_condition_law"], params)
               + (f" Largest |measured - simulated| of the mean: {_fmt(worst['max_abs_diff'], 3)} at {worst['label']}."
                  if worst else "")
               + " The curves and each condition's differences are in metrics.json.")
    figs["condition_mean_w"] = (draw, parameter_figsize(len(widths) if by_width else 1, 3.8), caption)


def _moved_text(moved, params) -> str:
    if len(moved) == len(params):
        return ""
    if not moved:
        return (" The condition law moves none of the drift laws (see the notes of 'condition_law'): the model is the "
                "same pooled one at every condition.")
    return (f" The condition law moves {', '.join(moved)}; the laws of {', '.join(p for p in params if p not in moved)} "
            "are the same at every condition.")


def _simulate_like(model, ids: pd.DataFrame, n_pulses: int, rng) -> np.ndarray:
    """``w`` of the fitted model for the cell-cycles ``ids`` (same cells, same cycles): shape (len(ids), n_pulses)."""
    cell = pd.MultiIndex.from_frame(ids[["wafer", "die", "device"]]).factorize()[0]
    cyc_values, cyc = np.unique(ids["cycle"].to_numpy(float), return_inverse=True)
    n_cells, n_cycles = int(cell.max()) + 1, len(cyc_values)
    out = np.full((len(ids), n_pulses), np.nan)
    chunk = max(1, _CHUNK // max(1, n_cycles * n_pulses))
    for s0 in range(0, n_cells, chunk):
        sel = (cell >= s0) & (cell < s0 + chunk)
        wsim, _ = model.simulate(min(chunk, n_cells - s0), n_pulses - 1, n_cycles=n_cycles, rng=rng)
        out[sel] = wsim[cell[sel] - s0, cyc[sel], :]
    return out

"""The report's maps: the die map when the dies have positions, else an array map (row x column per array).

Die positions come from the store (``hfox-fit ingest ... --die-positions FILE.csv``,
columns ``wafer,die,x,y``; see :mod:`hfox_fit.store`). Without them the cells
are still placed: a device id ``{array}/r{row}c{col}`` (every reader writes
them so) gives each cell its array, row and column, and the array map shows
the fitted m1, t* and the flags at each position.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ._collect import _NO_COORDS

#: How to give die positions, as the page and the notes say it.
POSITIONS_HINT = ("give them with `hfox-fit ingest --store STORE.h5 --die-positions FILE.csv` (a CSV with columns "
                  "wafer,die,x,y; the wafer column may be left out when every wafer has the same layout)")
#: Arrays drawn in the array map (the others are counted in a note).
MAX_ARRAYS = 4
_DEVICE = re.compile(r"^(?P<array>.+)/r(?P<row>\d+)c(?P<col>\d+)$")


def _die_map_section(col, model, pnames, units, metrics, figs, notes, cells=None, usable=None, flag=None):
    """The die map, or the array map when no die has a position (``cells``, ``usable``, ``flag``: the fit table)."""
    mkey = "m1" if "m1" in pnames else pnames[0]
    dies = col.dies
    known = [d for d in dies if d["coords"] is not None and d["n_cells"] > 0]
    entry = {"param": mkey, "dies": [{"wafer": d["wafer"], "die": d["die"], "n_cells": d["n_cells"],
                                      "x": d["coords"][0] if d["coords"] else None,
                                      "y": d["coords"][1] if d["coords"] else None,
                                      f"median_{mkey}": d[f"median_{mkey}"], "median_r0": d["median_r0"]}
                                     for d in dies]}
    metrics["figures"]["die_map"] = entry
    if not any(d["coords"] is not None for d in dies):
        entry["message"] = _NO_COORDS
        shown = cells is not None and _array_map_section(cells, usable, flag, pnames, units, metrics, figs, notes)
        instead = "; the array map shows the cells by row and column instead" if shown else ""
        entry["hint"] = f"{POSITIONS_HINT}{instead}"
        notes.append(f"{_NO_COORDS}: no die map; {POSITIONS_HINT}{instead}.")
        return
    if not known:
        entry["message"] = "no die with coordinates has usable cells"
        notes.append("no die map: the dies with coordinates have no usable cells.")
        return
    if len(known) < len(dies):
        notes.append(f"die map: {len(dies) - len(known)} die(s) without coordinates or usable cells are not "
                     f"shown; {POSITIONS_HINT}.")
    wafers = sorted({d["wafer"] for d in known})

    def draw_map(fig):
        from ..plotting import plot_die_map

        axes = fig.subplots(1, 2)
        x = [d["coords"][0] for d in known]
        y = [d["coords"][1] for d in known]
        lab = [d["die"] for d in known]
        plot_die_map(x, y, [d[f"median_{mkey}"] for d in known], ax=axes[0], labels=lab,
                     label=f"median {mkey} ({units.get(mkey, '')})")
        plot_die_map(x, y, [d["median_r0"] if d["median_r0"] is not None else np.nan for d in known],
                     ax=axes[1], labels=lab, label="median R0 (Ohm)", cmap="magma")
        axes[0].set_title(f"median {mkey} per die")
        axes[1].set_title("median R0 per die")

    n = sum(d["n_cells"] for d in known)
    figs["die_map"] = (draw_map, (11, 4.6),
                       f"Die maps of the median fitted {mkey} and R0 over {len(known)} dies ({n:,} usable "
                       f"cell-cycles; wafer{'s' if len(wafers) > 1 else ''} {', '.join(wafers)}).")


def _majority_flag(flags: pd.Series) -> str:
    """The flag of a position: its most frequent flag when at least half its cell-cycles are flagged, else ok."""
    bad = flags[flags != "ok"]
    if len(bad) * 2 >= len(flags) and len(bad):
        return str(bad.value_counts().index[0])
    return "ok"


def _array_map_section(cells, usable, flag, pnames, units, metrics, figs, notes) -> bool:
    """Add the array map (``figs["array_map"]``); False when the device ids give no row and column."""
    if not np.any(usable):
        notes.append("no array map: no usable cell.")
        return False
    parsed = cells["device"].astype(str).str.extract(_DEVICE)
    placed = parsed["array"].notna().to_numpy()
    if not placed.any():
        notes.append("no array map either: the device ids do not name a row and column "
                     "(expected ARRAY/rROWcCOL, e.g. A1/r03c07).")
        return False
    shown = [p for p in ("m1", "t_star") if p in pnames] or list(pnames[:2])
    table = pd.DataFrame({"array": parsed["array"], "row": pd.to_numeric(parsed["row"]),
                          "col": pd.to_numeric(parsed["col"]), "flag": pd.Series(flag, index=cells.index)})[placed]
    for p in shown:
        table[p] = np.where(usable, cells[p].to_numpy(float), np.nan)[placed]
    arrays = sorted(table["array"].unique())
    drawn = arrays[:MAX_ARRAYS]
    per_array = {}
    for a in drawn:
        g = table[table["array"] == a].groupby(["row", "col"], sort=True)
        pos = g.agg({p: "median" for p in shown}).reset_index()
        pos["flag"] = g["flag"].agg(_majority_flag).to_numpy()
        per_array[a] = pos
    n_dies = int(cells.loc[placed, ["wafer", "die"]].drop_duplicates().shape[0])
    metrics["figures"]["array_map"] = {
        "params": shown, "arrays": arrays, "drawn": drawn, "n_dies": n_dies,
        "unplaced_rows": int((~placed).sum()),
        "per_array": {a: {"rows": int(pos["row"].max()) + 1, "cols": int(pos["col"].max()) + 1,
                          "positions": int(len(pos)), "flagged_positions": int((pos["flag"] != "ok").sum()),
                          **{f"median_{p}": _median(pos[p]) for p in shown}}
                      for a, pos in per_array.items()},
    }
    if len(arrays) > len(drawn):
        notes.append(f"array map: {len(arrays) - len(drawn)} of {len(arrays)} arrays are not drawn "
                     f"({', '.join(arrays[len(drawn):][:5])}{' ...' if len(arrays) - len(drawn) > 5 else ''}).")
    if (~placed).any():
        notes.append(f"array map: {int((~placed).sum()):,} row(s) of the fit table have device ids without a "
                     "row and column and are not in it.")

    def draw(fig):
        from ..plotting import plot_array_map

        axes = np.atleast_2d(fig.subplots(len(drawn), len(shown) + 1, squeeze=False))
        for i, a in enumerate(drawn):
            pos = per_array[a]
            for j, p in enumerate(shown):
                unit = units.get(p, "")
                plot_array_map(pos["row"], pos["col"], pos[p], ax=axes[i, j],
                               label=f"{p} ({unit})" if unit and unit != "1" else p, title=f"{a}: median {p}")
            plot_array_map(pos["row"], pos["col"], pos["flag"], ax=axes[i, -1], flags=True, title=f"{a}: flag",
                           legend_title="flag (positions)")

    where = f"over {n_dies} dies and their cycles" if n_dies > 1 else "over its cycles"
    caption = (f"Array maps (row x column) of the median fitted {' and '.join(shown)} of the usable cells at each "
               f"position ({where}; blank: no usable cell) and of the flag of each position (its most frequent "
               "flag when at least half its cell-cycles are flagged). The dies have no positions, so there is no "
               f"die map; {POSITIONS_HINT}.")
    figs["array_map"] = (draw, (11, 3.3 * len(drawn) + 0.4), caption)
    return True


def _median(values) -> float | None:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None

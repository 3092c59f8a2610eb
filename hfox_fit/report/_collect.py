"""Reading the report's inputs: measured w and simulated w of the same cells.

:func:`_check_inputs` checks the fit table, summary and model; :func:`_collect`
walks the measured dies once and, for every usable cell-cycle (flag ``"ok"``,
finite fitted parameters), keeps ``w = ln(R/R0)``, its residual from the fitted
drift law, and the same cell simulated from the fitted model (same cycles, same
pulse count, same missing reads), subsampled to the report's caps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import ReportError
from ..laws import get_law
from ..model import DeviceModel

#: What the page and ``metrics.json`` say when no die has coordinates.
_NO_COORDS = "no die coordinates in this campaign"


def die_coordinates(die) -> tuple[float, float] | None:
    """Return the (x, y) coordinates of a die from its attrs (``x``/``y`` or ``die_x``/``die_y``)."""
    attrs = getattr(die, "attrs", None) or {}
    for kx, ky in (("x", "y"), ("die_x", "die_y")):
        if kx in attrs and ky in attrs:
            try:
                x, y = float(attrs[kx]), float(attrs[ky])
            except (TypeError, ValueError):
                continue
            if np.isfinite(x) and np.isfinite(y):
                return x, y
    return None


def _prepare_out_dir(out_dir, *, create=True) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(
            f"output path {str(out)!r} exists and is not a directory; give a directory for "
            "report.html, the PNGs and metrics.json (it is created when missing)."
        )
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create the output directory {str(out)!r}: {err.strerror or err}.") from err
    return out


def _check_inputs(cells, summary, model):
    if isinstance(model, dict):
        model = DeviceModel.from_dict(model)
    if not isinstance(model, DeviceModel):
        raise ReportError(f"model must be a DeviceModel or its to_dict(); got {type(model).__name__}.")
    if not isinstance(cells, pd.DataFrame):
        raise ReportError(f"cells must be the per-cell fit table (a DataFrame); got {type(cells).__name__}.")
    needed = ["wafer", "die", "device", "cycle", *get_law(model.law).params]
    missing = [c for c in needed if c not in cells.columns]
    if missing:
        raise ReportError(
            f"the fit table lacks column(s) {missing} needed for law {model.law!r}; "
            f"found {list(cells.columns)}."
        )
    if summary is None:
        summary = {}
    if not isinstance(summary, dict):
        raise ReportError(f"summary must be the fit summary dict; got {type(summary).__name__}.")
    return cells, summary, model


@dataclass
class _Collected:
    n_pulses: int = 0
    w_meas: list = field(default_factory=list)
    w_sim: list = field(default_factory=list)
    r_meas: list = field(default_factory=list)
    r_sim: list = field(default_factory=list)
    params: list = field(default_factory=list)
    sim_params: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    rms: list = field(default_factory=list)
    dies: list = field(default_factory=list)
    unmatched: int = 0
    n_dies: int = 0
    n_cell_cycles: int = 0
    wafers: set = field(default_factory=set)
    pulse_counts: set = field(default_factory=set)


def _pad(blocks, width, dtype=np.float32):
    n = sum(len(b) for b in blocks)
    out = np.full((n, width), np.nan, dtype)
    i = 0
    for b in blocks:
        out[i:i + len(b), :b.shape[1]] = b
        i += len(b)
    return out


#: Parameters a law may leave unset for a good cell, and what stands in for them:
#: a two-slope fit without a significant break reports no t_star / m2 (a straight line).
_OPTIONAL = {"two_slope": {"t_star": 1e30, "m2": 0.0}}


def _essential(law_name, pnames):
    return [p for p in pnames if p not in _OPTIONAL.get(law_name, {})]


def _evaluable(law_name, par):
    """Fitted parameters with the stand-ins of :data:`_OPTIONAL` where a cell has none."""
    stand = _OPTIONAL.get(law_name, {})
    if not stand:
        return par
    missing = np.zeros(len(next(iter(par.values()))), bool)
    for p in stand:
        missing |= ~np.isfinite(par[p])
    out = dict(par)
    for p, v in stand.items():
        out[p] = np.where(missing, v, par[p])
    return out


def _collect(dies, cells, model, *, rng_sub, rng_sim, max_population_cells, max_noise_cells):
    law = get_law(model.law)
    pnames = law.params
    keys_all = pnames + ("r0", "rtn_amplitude")
    extra = [k for k in ("r0", "rtn_amplitude") if k in cells.columns]
    flag = cells["flag"].astype(str).to_numpy() if "flag" in cells.columns else np.full(len(cells), "ok")
    pmat = np.column_stack([cells[p].to_numpy(dtype=float) for p in pnames]) if len(cells) else np.empty((0, len(pnames)))
    ess = [pnames.index(p) for p in _essential(model.law, pnames)]
    usable = (flag == "ok") & np.isfinite(pmat[:, ess]).all(axis=1)
    r0col = cells["r0"].to_numpy(dtype=float) if "r0" in cells.columns else np.full(len(cells), np.nan)
    n_usable = int(usable.sum())
    f_pop = min(1.0, max_population_cells / n_usable) if n_usable else 1.0
    f_noise = min(1.0, max_noise_cells / max(1.0, n_usable * f_pop))
    idx = np.flatnonzero(usable)
    groups = {}
    if idx.size:
        key = pd.DataFrame({"wafer": cells["wafer"].astype(str).to_numpy()[idx],
                            "die": cells["die"].astype(str).to_numpy()[idx]})
        for (wf, dn), pos in key.groupby(["wafer", "die"], sort=False).indices.items():
            groups[(wf, dn)] = idx[pos]
    device = cells["device"].astype(str).to_numpy()
    cycle = pd.to_numeric(cells["cycle"], errors="coerce").to_numpy()
    col = _Collected()
    mkey = "m1" if "m1" in pnames else pnames[0]
    for d in dies:
        col.n_dies += 1
        col.wafers.add(str(d.wafer))
        col.n_cell_cycles += d.n_cells * d.n_cycles
        col.pulse_counts.add(int(d.n_pulses) - 1)
        rows = groups.pop((str(d.wafer), str(d.die)), np.empty(0, int))
        ci = pd.Index(d.devices.astype(str)).get_indexer(device[rows])
        yi = pd.Index(d.cycles).get_indexer(cycle[rows])
        ok = (ci >= 0) & (yi >= 0)
        col.unmatched += int((~ok).sum())
        rows, ci, yi = rows[ok], ci[ok], yi[ok]
        info = {"wafer": str(d.wafer), "die": str(d.die), "n_cells": int(len(rows)),
                "coords": die_coordinates(d),
                f"median_{mkey}": float(np.median(pmat[rows, pnames.index(mkey)])) if len(rows) else None,
                "median_r0": float(np.nanmedian(r0col[rows])) if len(rows) and np.isfinite(r0col[rows]).any() else None}
        col.dies.append(info)
        if not len(rows):
            continue
        if f_pop < 1.0:
            keep = rng_sub.random(len(rows)) < f_pop
            rows, ci, yi = rows[keep], ci[keep], yi[keep]
            if not len(rows):
                continue
        n_p = int(d.n_pulses)
        col.n_pulses = max(col.n_pulses, n_p)
        t = np.arange(n_p)
        res = d.resistance[ci, yi, :]
        r0 = r0col[rows].copy()
        bad = ~(np.isfinite(r0) & (r0 > 0))
        r0[bad] = res[bad, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.log(res / r0[:, None])
        w[~np.isfinite(w)] = np.nan
        par = {p: pmat[rows, j] for j, p in enumerate(pnames)}
        par["r0"] = r0
        for k in extra:
            if k != "r0":
                par[k] = cells[k].to_numpy(dtype=float)[rows]
        law_par = _evaluable(model.law, {p: par[p] for p in pnames})
        fitted = model.mean_w(t, {p: law_par[p][:, None] for p in pnames})
        resid = w - fitted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rms = np.sqrt(np.nanmean(resid[:, 1:] ** 2, axis=1)) if n_p > 1 else np.full(len(rows), np.nan)
        # Simulate the same cells (same cycles, same pulse count), in chunks to bound memory.
        ws = np.empty_like(w)
        sim_par = {k: np.empty(len(rows)) for k in keys_all}
        ucell, inv = np.unique(ci, return_inverse=True)
        chunk = max(1, int(4_000_000 // max(1, d.n_cycles * n_p)))
        for s0 in range(0, len(ucell), chunk):
            sel = (inv >= s0) & (inv < s0 + chunk)
            wsim, cyc = model.simulate(min(chunk, len(ucell) - s0), n_p - 1, n_cycles=d.n_cycles, rng=rng_sim)
            ws[sel] = wsim[inv[sel] - s0, yi[sel], :]
            for k in keys_all:
                sim_par[k][sel] = cyc[k][inv[sel] - s0, yi[sel]]
        ws[np.isnan(w)] = np.nan
        resid_sim = ws - model.mean_w(t, {p: sim_par[p][:, None] for p in pnames})
        noise = rng_sub.random(len(rows)) < f_noise
        col.w_meas.append(w.astype(np.float32))
        col.w_sim.append(ws.astype(np.float32))
        col.r_meas.append(resid[noise].astype(np.float32))
        col.r_sim.append(resid_sim[noise].astype(np.float32))
        col.params.append(par)
        col.sim_params.append(sim_par)
        col.ids.append(pd.DataFrame({"wafer": str(d.wafer), "die": str(d.die), "device": device[rows],
                                     "cycle": cycle[rows]}))
        col.rms.append(rms)
    for rows in groups.values():
        col.unmatched += len(rows)
    return col, usable, flag


def _law_inputs(cells, model, names, *, max_stderr_ratio=20.0):
    """The values each D2D law was fitted to, per cell, as the fit's D2D step saw them.

    The fit table goes through :func:`hfox_fit.fitting.campaign.d2d_rows` (breaks censored
    at one point, unidentifiable ones blanked) and :func:`hfox_fit.fitting.d2d.cell_values`
    (unflagged cycles averaged per cell); values whose standard error exceeds
    ``max_stderr_ratio`` times the robust spread are left out, as the fit leaves them out.
    Returns ``({name: {"x", "se", "lo", "n_left_out"}}, note)``; ``({}, why)`` when the
    table cannot be read that way (the report then uses the usable cell-cycles as they are).
    """
    from ..fitting.campaign import d2d_rows  # here: hfox_fit.fitting loads lmfit (and matplotlib)
    from ..fitting.d2d import cell_values

    try:
        rows = d2d_rows(cells, model.law)
        if "flag" in rows:
            rows = rows[rows["flag"].astype(str) == "ok"]
        per_cell = cell_values(rows, names) if len(rows) else None
    except (KeyError, ValueError) as err:
        return {}, f"the fit table lacks what the D2D step reads ({err}): law checks use the usable cell-cycles"
    if per_cell is None:
        return {}, "no unflagged row in the fit table"
    out = {}
    for p in names:
        v = per_cell[p].to_numpy(float)
        se = per_cell[p + "_stderr"].to_numpy(float)
        exact = np.isfinite(v)
        if exact.sum() >= 5:
            q1, q3 = np.percentile(v[exact], [25, 75])
            spread = (q3 - q1) / 1.349
            if spread > 0 and np.isfinite(se[exact]).any():
                exact &= np.isfinite(se) & (se <= max_stderr_ratio * spread)
        lo = np.zeros(0)
        if p + "_lo" in per_cell:
            lo_all = per_cell[p + "_lo"].to_numpy(float)
            hi_all = per_cell[p + "_hi"].to_numpy(float)
            cens = ~np.isfinite(v) & np.isfinite(lo_all) & np.isposinf(hi_all)
            lo = lo_all[cens]
        out[p] = {"x": v[exact], "se": se[exact], "lo": lo, "n_cells": int(len(v)),
                  "n_left_out": int(len(v) - exact.sum() - len(lo))}
    return out, None

"""The validation report: a fitted campaign's measurements against its model.

:func:`build_report` takes the measured dies, the per-cell fit table, the fit
summary and the fitted :class:`~hfox_fit.model.DeviceModel`, simulates the
fitted population for the same cells and pulse counts, and writes

* ``report.html``: one self-contained page (figures embedded as base64 PNG,
  inline CSS, no script, no external file), readable offline;
* one PNG per figure beside it;
* ``metrics.json``: every number the figures and tables show.

:func:`report_store` does the same from a campaign store (CLI ``hfox-fit report``).

Conventions: ``w = ln(R/R0)`` with ``R0`` each cell-cycle's fitted ``r0``
(the read at pulse 0 where the fit gives none); residual = measured ``w``
minus the cell's fitted drift law (:meth:`DeviceModel.mean_w`). Only cells
flagged ``"ok"`` with finite fitted parameters are compared with the model;
flagged cells are counted in the tables. matplotlib is imported only when
figures are drawn.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal, special, stats

from ._json import json_safe
from ._version import __version__
from .exceptions import ReportError
from .laws import get_law
from .model import DeviceModel

__all__ = ["ReportError", "ReportResult", "build_report", "report_store", "FIGURES", "die_coordinates"]

#: Figure names (PNG file stems) in page order.
FIGURES = ("traces", "band", "ecdf", "parameters", "pairs", "c2c", "noise", "die_map")

_FLAGS = ("ok", "stuck", "abrupt", "open", "failed")
_NO_COORDS = "no die coordinates in this campaign"


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
    html : pathlib.Path
        The self-contained page.
    metrics_path : pathlib.Path
        ``metrics.json``.
    figures : dict of str to pathlib.Path
        PNG file of each figure drawn (names from :data:`FIGURES`).
    metrics : dict
        The content of ``metrics.json``.
    notes : list of str
        What the report says is missing or was left out.
    n_cells : int
        Cell-cycles compared with the model (flag ``"ok"``, finite parameters).
    elapsed_s : float
        Wall time of the whole build, in s.
    samples : dict
        The measured and simulated ``w`` behind each ECDF panel
        (``{pulse: (measured, simulated)}``), for checks.
    """

    out_dir: Path
    html: Path
    metrics_path: Path
    figures: dict
    metrics: dict
    notes: list
    n_cells: int
    elapsed_s: float
    samples: dict = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- inputs


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


# --------------------------------------------------------------------------- collection


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


# --------------------------------------------------------------------------- statistics


def _quantiles(stack):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(stack, [0.05, 0.5, 0.95], axis=0)
    n = np.isfinite(stack).sum(axis=0)
    return {"q05": q[0].astype(float), "q50": q[1].astype(float), "q95": q[2].astype(float), "n": n}


def _normal_scores(x):
    """Phi^-1(rank / (n + 1)) over the finite values; NaN stays NaN."""
    x = np.asarray(x, float)
    out = np.full(len(x), np.nan)
    fin = np.isfinite(x)
    out[fin] = special.ndtri(stats.rankdata(x[fin]) / (fin.sum() + 1))
    return out


def _spearman(mat):
    """Spearman correlation matrix, each pair over the rows where both values are finite."""
    k = mat.shape[1]
    rho = np.eye(k)
    fin = np.isfinite(mat)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(k):
            for j in range(i + 1, k):
                both = fin[:, i] & fin[:, j]
                if both.sum() < 3:
                    r = np.nan
                else:
                    r = np.corrcoef(stats.rankdata(mat[both, i]), stats.rankdata(mat[both, j]))[0, 1]
                rho[i, j] = rho[j, i] = r
    return rho


def _model_spearman(model, names):
    k = len(names)
    rho = np.eye(k)
    cn = list(model.correlation_names)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and a in cn and b in cn:
                r = model.correlation[cn.index(a), cn.index(b)]
                rho[i, j] = 6.0 / np.pi * np.arcsin(r / 2.0)
    return rho


def _pink_psd(model, f):
    b = model.pink.coefficients
    k = np.arange(len(b))
    h = np.exp(-2j * np.pi * np.outer(f, k)) @ b
    return 2.0 * model.pink.alpha**2 / 12.0 * np.abs(h) ** 2


def _pink_acf(model, lags):
    b = model.pink.coefficients
    full = np.correlate(b, b, mode="full")[len(b) - 1:]
    full = full / full[0]
    return np.array([full[lag] if lag < len(full) else 0.0 for lag in lags])


def _noise_rows(stack, first):
    x = np.asarray(stack[:, first:], float)
    if x.shape[1] == 0:
        return x
    keep = np.isnan(x).mean(axis=1) <= 0.1
    x = x[keep]
    mean = np.nanmean(x, axis=1, keepdims=True) if len(x) else np.zeros((0, 1))
    x = x - mean
    x[np.isnan(x)] = 0.0
    return x


def _welch(x, nperseg):
    f, p = signal.welch(x, fs=1.0, nperseg=nperseg, axis=-1, detrend="constant")
    return f, p.mean(axis=0)


def _acf(x, maxlag):
    n, length = x.shape
    nfft = 1 << int(np.ceil(np.log2(2 * length)))
    spec = np.fft.rfft(x, nfft, axis=1)
    ac = np.fft.irfft(spec * np.conj(spec), nfft, axis=1)[:, :maxlag + 1]
    good = ac[:, 0] > 0
    return (ac[good] / ac[good, :1]).mean(axis=0), int(good.sum())


def _slope(f, p, lo=0.02, hi=0.2):
    sel = (f >= lo) & (f <= hi) & (p > 0)
    if sel.sum() < 3:
        return None
    return float(-np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0])


def _dwell_runs(x, window, sigma, *, k_spread=6.0, hysteresis=0.2):
    """Complete high/low RTN runs found by a per-cell threshold with hysteresis.

    Each row is smoothed by a ``window``-pulse moving average ``s``. A row whose
    spread ``q98(s) - q25(s)`` exceeds ``k_spread * sigma`` (``sigma``: the
    fitted pink noise after the same averaging) is an RTN cell; it goes high
    above ``mid + hysteresis * spread`` and low again below
    ``mid - hysteresis * spread``, ``mid`` the middle of the two quantiles.
    Runs touching either end of the row are censored and dropped.

    Returns
    -------
    high, low : ndarray of int
        Lengths of complete high and low runs (pulses).
    fraction_high : float
        Fraction of smoothed reads in the high state.
    n_rtn_cells : int
    length : int
        Length of the smoothed rows.
    """
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    s = (c[:, window:] - c[:, :-window]) / window
    n, length = s.shape
    lo, hi = np.quantile(s, [0.25, 0.98], axis=1) if n else (np.zeros(0), np.zeros(0))
    spread = hi - lo
    rtn = spread > k_spread * sigma
    mid = 0.5 * (lo + hi)
    up = np.where(rtn, mid + hysteresis * spread, np.inf)
    down = np.where(rtn, mid - hysteresis * spread, np.inf)
    high = np.zeros((n, length), bool)
    state = np.zeros(n, bool)
    for j in range(length):
        state = np.where(state, s[:, j] > down, s[:, j] > up)
        high[:, j] = state
    change = np.ones_like(high)
    change[:, 1:] = high[:, 1:] != high[:, :-1]
    starts = np.flatnonzero(change.ravel())
    lengths = np.diff(np.append(starts, high.size))
    colstart = starts % max(length, 1)
    complete = (colstart > 0) & (colstart + lengths < length)
    st = high.ravel()[starts]
    frac = float(high.mean()) if high.size else float("nan")
    return lengths[complete & st], lengths[complete & ~st], frac, int(rtn.sum()), length


def _dwell_hist(runs, edges):
    counts, _ = np.histogram(runs, bins=edges)
    total = counts.sum()
    widths = np.diff(edges)
    dens = counts / (total * widths) if total else np.zeros(len(widths))
    return counts, dens


def _geometric_windowed(p, edges, length):
    k = np.arange(int(edges[0]), int(edges[-1]) + 1)
    g = p * (1.0 - p) ** (k - 1) * np.maximum(length - k - 1, 0)
    per_bin = np.array([g[(k >= a) & (k < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    total = per_bin.sum()
    return per_bin / (total * np.diff(edges)) if total > 0 else per_bin


def _ks_law(values, law):
    if len(values) == 0:
        return None
    return float(stats.kstest(values, law.cdf).statistic)


# --------------------------------------------------------------------------- report content


def _units(model):
    units = dict(get_law(model.law).units)
    units.update({"r0": "Ohm", "rtn_amplitude": "1"})
    return units


def _fmt(x, digits=4):
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return html.escape(str(x))
    if not np.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"


def build_report(dies, cells, summary, model, out_dir, *, store_name="campaign", seed=0,
                 pulses=(10, 100, -1), max_population_cells=50_000, max_noise_cells=2048,
                 max_scatter_points=1500, fitted_at=None, dpi=100, figures=True) -> ReportResult:
    """Write the validation report of a fitted campaign.

    Parameters
    ----------
    dies : iterable of DieData
        The measured dies (read once; a generator is fine).
    cells : pandas.DataFrame
        Per-cell-cycle fit table: ``wafer, die, device, cycle``, one column per
        drift-law parameter (and ``<param>_stderr``), ``r0`` (Ohm), ``flag``.
    summary : dict
        The fit summary (devices, drift, d2d, correlation, pink, rtn); missing
        parts are reported as missing.
    model : DeviceModel or dict
        The fitted model (or its ``to_dict()``).
    out_dir : str or path-like
        Directory for ``report.html``, the PNGs and ``metrics.json`` (created).
    store_name : str, default="campaign"
        Name shown in the title.
    seed : int, default=0
        Seed of the simulated population and of the cell subsamples.
    pulses : tuple of int, default=(10, 100, -1)
        Pulse counts of the distribution panels (-1 = the last pulse).
    max_population_cells : int, default=50000
        Cap on the cell-cycles in the band and distribution figures (a random
        subsample above it).
    max_noise_cells : int, default=2048
        Cap on the cell-cycles in the noise figures and the traces' pool.
    max_scatter_points : int, default=1500
        Points per pair-plot panel (correlations use every cell).
    fitted_at : str, optional
        When the fit was made, shown in the header.
    dpi : int, default=100
    figures : bool, default=True
        False skips drawing: ``metrics.json`` and the page (tables, notes) only,
        for fast automated checks.

    Returns
    -------
    ReportResult

    Raises
    ------
    ReportError
        The output path exists as a file or cannot be created; the inputs are
        not a fit table, summary and model.
    """
    t_start = time.perf_counter()
    out = _prepare_out_dir(out_dir)
    cells, summary, model = _check_inputs(cells, summary, model)
    ss = np.random.SeedSequence(seed)
    rng_sub, rng_sim, rng_plot = (np.random.default_rng(s) for s in ss.spawn(3))
    law = get_law(model.law)
    pnames = law.params
    units = _units(model)
    notes = []

    col, usable, flag = _collect(dies, cells, model, rng_sub=rng_sub, rng_sim=rng_sim,
                                 max_population_cells=max_population_cells,
                                 max_noise_cells=max_noise_cells)
    n_usable_table = int(usable.sum())
    metrics = {
        "meta": {
            "store": str(store_name), "hfox_fit_version": __version__, "seed": int(seed),
            "law": model.law, "fitted_at": fitted_at,
            "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wafers": sorted(col.wafers), "n_dies": col.n_dies,
            "pulses_per_train": sorted(col.pulse_counts),
        },
        "figures": {},
    }
    flag_counts = {f: int((flag == f).sum()) for f in _FLAGS}
    other = int(len(flag) - sum(flag_counts.values()))
    if other:
        flag_counts["other"] = other
    metrics["cells"] = {
        "fit_table_rows": int(len(cells)), "measured_cell_cycles": col.n_cell_cycles,
        "usable": n_usable_table, "by_flag": flag_counts, "unmatched": col.unmatched,
        "nonfinite_ok": int(((flag == "ok") & ~usable).sum()),
    }
    optional = [p for p in _OPTIONAL.get(model.law, {}) if p in cells.columns]
    if optional and n_usable_table:
        unset = ~np.isfinite(cells.loc[usable, optional].to_numpy(dtype=float)).all(axis=1)
        metrics["cells"]["law_unset"] = {"params": optional, "n": int(unset.sum())}
        if unset.any():
            notes.append(f"{int(unset.sum()):,} usable cell-cycle(s) have no fitted {' / '.join(optional)} "
                         "(no significant break within the train): their fitted law is the straight line "
                         f"m1 t + c1, and they are not in the {' and '.join(optional)} histograms.")
    if "flag" not in cells.columns:
        notes.append("the fit table has no 'flag' column: every row was taken as 'ok'.")
    if col.n_dies == 0:
        notes.append("no measured dies: the campaign holds no measurements.")
    if col.unmatched:
        notes.append(f"{col.unmatched} usable row(s) of the fit table have no measurements in this "
                     "campaign (unknown wafer, die, device or cycle) and are left out.")
    if metrics["cells"]["nonfinite_ok"]:
        notes.append(f"{metrics['cells']['nonfinite_ok']} row(s) flagged 'ok' have non-finite fitted "
                     "parameters and are left out.")
    sum_law = _sec(summary, "drift").get("law")
    if sum_law is not None and sum_law != model.law:
        notes.append(f"the summary names drift law {sum_law!r} but the model uses {model.law!r}; "
                     "the figures use the model's.")

    figs = {}  # name -> (draw function, caption)
    samples = {}
    n_pop = sum(len(b) for b in col.w_meas)
    if n_pop == 0:
        notes.append(
            f"no usable cell: none of the {len(cells)} row(s) of the fit table is flagged 'ok' with "
            "finite fitted parameters and measured reads, so the figures comparing measurements "
            "with the model are left out; the fit tables below are all this report can show."
        )
    else:
        _population_section(col, model, pnames, pulses, metrics, figs, samples, notes,
                            n_usable_table, max_population_cells)
        _parameter_section(cells, usable, col, model, pnames, units, metrics, figs, notes,
                           rng_plot, max_scatter_points)
        _noise_section(col, model, metrics, figs, notes)
    _die_map_section(col, model, pnames, units, metrics, figs, notes)
    tables = _tables(summary, cells, usable, flag_counts, metrics, model, units, notes)
    metrics["tables"] = tables

    for name, (_, _, caption) in figs.items():
        metrics["figures"][name]["caption"] = caption
    if not figures and figs:
        notes.append(f"figures were not drawn (figures=False); their numbers are in metrics.json: "
                     f"{', '.join(n for n in FIGURES if n in figs)}.")
        figs = {}
    figure_paths, embedded = _render(figs, out, dpi)
    for name, path in figure_paths.items():
        metrics["figures"][name]["file"] = path.name
    for name in FIGURES:  # stale PNGs of an earlier report would contradict this one
        stale = out / f"{name}.png"
        if name not in figure_paths and stale.is_file():
            stale.unlink()
    metrics["notes"] = list(notes)
    elapsed = time.perf_counter() - t_start
    metrics["meta"]["elapsed_s"] = round(elapsed, 3)
    page = _html(metrics, figs, embedded, notes, tables)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(json_safe(metrics), indent=1, allow_nan=False), encoding="utf-8")
    return ReportResult(out_dir=out, html=html_path, metrics_path=metrics_path, figures=figure_paths,
                        metrics=metrics, notes=notes, n_cells=n_pop, elapsed_s=elapsed, samples=samples)


def _population_section(col, model, pnames, pulses, metrics, figs, samples, notes,
                        n_usable_table, cap):
    P = col.n_pulses
    wm = _pad(col.w_meas, P)
    ws = _pad(col.w_sim, P)
    t = np.arange(P)
    n = len(wm)
    sub = "" if n >= n_usable_table else f" (a random {n:,} of {n_usable_table:,}, cap {cap:,})"
    # Traces: typical and extreme cells.
    tail = max(5, P // 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        final = np.nanmedian(wm[:, -tail:], axis=1).astype(float)
    rms = np.concatenate(col.rms)
    ids = pd.concat(col.ids, ignore_index=True)
    finite = np.isfinite(final)
    med = np.nanmedian(final) if finite.any() else 0.0
    order = np.argsort(np.where(finite, np.abs(final - med), np.inf))
    typical = [int(i) for i in order[:3] if finite[i]]
    extreme = []
    if finite.any():
        for i, kind in ((int(np.nanargmax(np.where(finite, final, -np.inf))), "highest final w"),
                        (int(np.nanargmin(np.where(finite, final, np.inf))), "lowest final w"),
                        (int(np.nanargmax(np.where(np.isfinite(rms), rms, -np.inf))), "largest residual")):
            if i not in [e[0] for e in extreme] and i not in typical:
                extreme.append((i, kind))
    params = {p: np.concatenate([b[p] for b in col.params]) for p in pnames}

    def _trace_info(i, kind):
        r = ids.iloc[i]
        return {"kind": kind, "wafer": r.wafer, "die": r.die, "device": r.device, "cycle": int(r.cycle),
                "final_w": float(final[i]), "rms_residual": float(rms[i]),
                **{p: float(params[p][i]) for p in pnames}}

    chosen = [(i, "typical") for i in typical] + extreme
    traces = [_trace_info(i, k) for i, k in chosen]
    metrics["figures"]["traces"] = {"n_cells": len(chosen), "pool": n, "cells": traces}

    def draw_traces(fig):
        from .plotting import plot_traces

        axes = fig.subplots(1, 2)
        for ax, group, title in ((axes[0], [c for c in chosen if c[1] == "typical"], "typical cells"),
                                 (axes[1], [c for c in chosen if c[1] != "typical"], "extreme cells")):
            if not group:
                ax.set_title(f"{title}: none", fontsize=10)
                continue
            rows = [i for i, _ in group]
            lp = _evaluable(model.law, {p: params[p][rows] for p in pnames})
            # What the model expects of this cell: its law plus the mean of the pink term
            # (uniform innovations are not centred; the fit keeps that mean out of c1).
            fitted = model.mean_w(t, {p: lp[p][:, None] for p in pnames}) + model.pink.offset(t)
            labels = [f"{ids.die[i]} {ids.device[i]} c{int(ids.cycle[i])}" + ("" if k == "typical" else f" ({k})")
                      for i, k in group]
            plot_traces(t, wm[rows], fitted, labels, ax=ax, title=title,
                        fitted_label="fitted law + pink mean (dashed)")

    figs["traces"] = (draw_traces, (11, 4.0),
                      f"Measured w = ln(R/R0) of {len(typical)} typical cells (final w nearest the "
                      f"population median) and {len(extreme)} extreme ones, out of {n:,} cell-cycles"
                      f"{sub}; dashed: each cell's fitted drift law plus the mean of the pink-noise term "
                      f"(alpha/2 times the partial sum of the filter taps, {model.pink.offset(t[-1:])[0]:.3g} "
                      "once the history is full), i.e. what the model expects of that cell without RTN.")

    # Band.
    qm, qs = _quantiles(wm), _quantiles(ws)
    diff = qm["q50"][1:] - qs["q50"][1:]
    band = {"n_measured": n, "n_simulated": len(ws), "pulses": t,
            "measured": qm, "simulated": qs,
            "max_abs_median_diff": float(np.nanmax(np.abs(diff))) if diff.size and np.isfinite(diff).any() else None,
            "mean_abs_median_diff": float(np.nanmean(np.abs(diff))) if diff.size and np.isfinite(diff).any() else None}
    metrics["figures"]["band"] = band

    def draw_band(fig):
        from .plotting import MEASURED, plot_band

        ax, ax2 = fig.subplots(1, 2, width_ratios=[2.2, 1])
        plot_band(t, qm, qs, ax=ax, title="population of w over pulses")
        for q, colour, lab in (("q05", "#7aa6d6", "5 %"), ("q50", MEASURED, "median"), ("q95", "#0b2d57", "95 %")):
            ax2.plot(t, qm[q] - qs[q], color=colour, lw=1.4 if q == "q50" else 0.9, label=lab)
        ax2.axhline(0, color="0.5", lw=0.8)
        ax2.set_xlabel("pulses since SET")
        ax2.set_ylabel("measured - simulated w")
        ax2.set_title("quantile differences", fontsize=10)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)

    figs["band"] = (draw_band, (11, 4.0),
                    f"Median and 5-95 % band of w over pulses: {n:,} measured cell-cycles{sub} against "
                    f"{len(ws):,} simulated from the fitted model (same cells, same pulse counts, same "
                    "missing reads). Flagged cells are left out: the model describes working cells. "
                    f"Largest |median difference| = {_fmt(band['max_abs_median_diff'], 3)}.")

    # ECDFs at chosen pulses.
    chosen_p = []
    for p in pulses:
        p = int(p)
        p = P - 1 if p < 0 else p
        if 1 <= p < P and p not in chosen_p:
            chosen_p.append(p)
    if len(chosen_p) < len(pulses):
        notes.append(f"distribution panels at pulses {chosen_p} only: trains have {P - 1} pulses.")
    ecdf = {}
    for p in chosen_p:
        a = wm[:, p].astype(float)
        b = ws[:, p].astype(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        samples[p] = (a, b)
        if len(a) and len(b):
            ks = stats.ks_2samp(a, b)
            ecdf[str(p)] = {"ks": float(ks.statistic), "pvalue": float(ks.pvalue), "n_measured": len(a),
                            "n_simulated": len(b), "median_measured": float(np.median(a)),
                            "median_simulated": float(np.median(b))}
    metrics["figures"]["ecdf"] = {"pulses": ecdf}

    def draw_ecdf(fig):
        from .plotting import plot_ecdf

        axes = np.atleast_1d(fig.subplots(1, max(1, len(chosen_p))))
        for ax, p in zip(axes, chosen_p):
            a, b = samples[p]
            plot_ecdf(a, b, ks=ecdf.get(str(p), {}).get("ks"), ax=ax, title=f"after {p} pulses")

    if chosen_p:
        ks_txt = ", ".join(f"{p}: {ecdf[str(p)]['ks']:.3f}" for p in chosen_p if str(p) in ecdf)
        figs["ecdf"] = (draw_ecdf, (11, 3.6),
                        f"Distribution of w across cells after {', '.join(map(str, chosen_p))} pulses: "
                        f"{n:,} measured cell-cycles{sub} against as many simulated (x axis: the 0.1-99.9 % "
                        f"range). Two-sample KS distance by pulse count: {ks_txt}.")


def _parameter_section(cells, usable, col, model, pnames, units, metrics, figs, notes, rng, max_pts):
    names = [p for p in model.parameter_names if p in cells.columns]
    values = {p: cells[p].to_numpy(dtype=float)[usable] for p in names}
    values = {p: v[np.isfinite(v)] for p, v in values.items()}
    sim = {p: np.concatenate([b[p] for b in col.sim_params]) for p in names}
    probs = np.linspace(0.005, 0.995, 199)
    out = {}
    for p in names:
        law = model.d2d[p]
        v = values[p]
        counts, edges = (np.histogram(v, bins=50, density=True) if len(v) else (np.array([]), np.array([])))
        c2c = p in model.c2c
        ks = (float(stats.ks_2samp(v, sim[p]).statistic) if c2c and len(v) else _ks_law(v, law))
        out[p] = {"n": len(v), "unit": units.get(p, ""), "ks": ks,
                  "ks_against": "simulated D2D+C2C population" if c2c else f"fitted {law.family} law",
                  "median_measured": float(np.median(v)) if len(v) else None,
                  "median_model": law.median(),
                  "hist": {"edges": edges, "density": counts},
                  "qq": {"p": probs, "model": law.ppf(probs),
                         "measured": np.quantile(v, probs) if len(v) else np.full(len(probs), np.nan)}}
    n_cells = int(usable.sum())
    metrics["figures"]["parameters"] = {"n_cells": n_cells, "params": out}

    def draw_params(fig):
        from .plotting import plot_parameter_hist, plot_qq

        axes = fig.subplots(2, len(names), squeeze=False)
        for j, p in enumerate(names):
            plot_parameter_hist(values[p], model.d2d[p], name=p, unit=units.get(p, ""), ks=out[p]["ks"],
                                simulated=sim[p] if p in model.c2c else None, ax=axes[0, j])
            plot_qq(out[p]["qq"]["model"], out[p]["qq"]["measured"], name=p, unit=units.get(p, ""),
                    ax=axes[1, j])

    figs["parameters"] = (draw_params, (max(8.0, 2.9 * len(names)), 5.8),
                          f"Per-cell fitted parameters of {n_cells:,} usable cell-cycles (n in each legend: a "
                          "cell whose fit leaves a parameter unset, e.g. no break within the train, is not in "
                          "that histogram, which is then cut near the train length): histograms with the "
                          "fitted D2D density (top; KS distance to the fitted law, or to the simulated "
                          "D2D+C2C population where the model has C2C) and QQ plots against the fitted "
                          "law at 199 probabilities from 0.5 % to 99.5 % (bottom).")

    # Pairs in normal-score space (pairwise-complete: a cell without t_star still shows m1 vs c1).
    pair_names = [p for p in names if len(values[p]) >= 3]
    mat = np.column_stack([cells[p].to_numpy(dtype=float)[usable] for p in pair_names]) if pair_names else np.empty((0, 0))
    simmat = np.column_stack([sim[p] for p in pair_names]) if pair_names else np.empty((0, 0))
    rho_m, rho_s = _spearman(mat), _spearman(simmat)
    rho_model = _model_spearman(model, pair_names)
    metrics["figures"]["pairs"] = {"names": pair_names, "n_cells": n_cells, "n_simulated": len(simmat),
                                   "n_per_param": {p: len(values[p]) for p in pair_names},
                                   "n_scatter": min(max_pts, n_cells),
                                   "spearman_measured": rho_m, "spearman_simulated": rho_s,
                                   "spearman_model": rho_model}
    if len(pair_names) >= 2 and n_cells >= 3:
        zm = np.column_stack([_normal_scores(c) for c in mat.T])
        zs = np.column_stack([_normal_scores(c) for c in simmat.T])
        pick_m = rng.choice(len(zm), size=min(max_pts, len(zm)), replace=False)
        pick_s = rng.choice(len(zs), size=min(max_pts, len(zs)), replace=False)

        def draw_pairs(fig):
            from .plotting import plot_pairs

            k = len(pair_names)
            axes = fig.subplots(k, k, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
            fig.subplots_adjust(left=0.05, right=0.99, bottom=0.05, top=0.95)
            fig.suptitle("below diagonal: fitted cells (blue) · above: simulated population (orange)",
                         fontsize=10)
            plot_pairs(zm[pick_m], zs[pick_s], pair_names, rho_measured=rho_m, rho_simulated=rho_s, ax=axes)

        k = len(pair_names)
        figs["pairs"] = (draw_pairs, (1.75 * k + 0.6, 1.75 * k + 0.3),
                         f"Parameter pairs as normal scores (Phi^-1 of rank/(n+1)): below the diagonal "
                         f"{len(pick_m):,} of the {n_cells:,} fitted cell-cycles (blue), above it "
                         f"{len(pick_s):,} simulated ones (orange). rho = Spearman correlation over all "
                         "cells of each side (each pair over the cells that have both values); the fit "
                         "summary's correlations are in the tables below.")

    # C2C: deviation of each cycle from its cell's mean over cycles, measured against simulated.
    c2c_names = [p for p in names if p in model.c2c]
    if c2c_names:
        ids = pd.concat(col.ids, ignore_index=True)
        key = ids["wafer"] + "/" + ids["die"] + "/" + ids["device"].astype(str)
        meas_par = {p: np.concatenate([b[p] for b in col.params]) for p in c2c_names if p in col.params[0]}
        multi = key.map(key.value_counts()).to_numpy() > 1
        if not multi.any():
            notes.append("the model has C2C laws but no cell has two usable cycles: no C2C figure.")
        else:
            res = {}
            for p in list(meas_par):
                dm = meas_par[p] - pd.Series(meas_par[p]).groupby(key.to_numpy()).transform("mean").to_numpy()
                dsim = sim[p] - pd.Series(sim[p]).groupby(key.to_numpy()).transform("mean").to_numpy()
                dm, dsim = dm[multi], dsim[multi]
                res[p] = {"measured": dm, "simulated": dsim,
                          "ks": float(stats.ks_2samp(dm, dsim).statistic),
                          "std_measured": float(np.std(dm)), "std_simulated": float(np.std(dsim))}
            metrics["figures"]["c2c"] = {"n_cells": int(multi.sum()),
                                         "params": {p: {k: v for k, v in r.items()
                                                        if k not in ("measured", "simulated")}
                                                    for p, r in res.items()}}

            def draw_c2c(fig):
                from .plotting import plot_ecdf, plot_parameter_hist

                axes = fig.subplots(2, len(res), squeeze=False)
                for j, (p, r) in enumerate(res.items()):
                    plot_parameter_hist(r["measured"], None, name=f"{p} - cell mean", unit=units.get(p, ""),
                                        ks=r["ks"], simulated=r["simulated"], ax=axes[0, j])
                    plot_ecdf(r["measured"], r["simulated"], ks=r["ks"], ax=axes[1, j],
                              xlabel=f"{p} - cell mean ({units.get(p, '')})")

            figs["c2c"] = (draw_c2c, (max(7.0, 3.4 * len(res)), 6.0),
                           f"Cycle-to-cycle variation: deviation of each cycle's parameter from its cell's "
                           f"mean over cycles, for {int(multi.sum()):,} cell-cycles of cells with two or more "
                           "usable cycles, against the same statistic of the simulated population.")


def _noise_section(col, model, metrics, figs, notes):
    first = int(model.pink.taps) + 1
    P = col.n_pulses
    xm = _noise_rows(_pad(col.r_meas, P), first)
    xs = _noise_rows(_pad(col.r_sim, P), first)
    length = xm.shape[1] if xm.ndim == 2 else 0
    if length < 32:
        notes.append(f"noise figures left out: they need trains of more than {first + 31} pulses "
                     f"(found {P - 1}).")
        return
    if len(xm) == 0:
        notes.append(f"noise figures left out: every cell has more than 10 % failed reads after pulse "
                     f"{first}.")
        return
    nperseg = min(256, length)
    f, pm = _welch(xm, nperseg)
    _, ps = _welch(xs, nperseg)
    pmod = _pink_psd(model, f)
    maxlag = min(60, length // 4)
    lags = np.arange(maxlag + 1)
    am, n_acf = _acf(xm, maxlag)
    asim, _ = _acf(xs, maxlag)
    amod = _pink_acf(model, lags)
    window = max(3, min(31, length // 8))
    sigma = model.pink.alpha * np.sqrt(
        np.sum(np.convolve(model.pink.coefficients, np.ones(window) / window) ** 2) / 12.0)
    hi_m, lo_m, frac_m, ncell_m, L = _dwell_runs(xm, window, sigma)
    hi_s, lo_s, frac_s, ncell_s, _ = _dwell_runs(xs, window, sigma)
    k0 = max(1, window // 2)  # shorter dwells are smoothed away: not binned
    edges = np.unique(np.round(np.geomspace(k0, max(L, k0 + 1) + 1, 20)).astype(int)).astype(float)
    dwell = {"window": window, "sigma_smoothed_pink": sigma, "k_spread": 6.0, "hysteresis": 0.2,
             "trace_length": L, "rtn_cells_measured": ncell_m, "rtn_cells_simulated": ncell_s,
             "fraction_high_measured": frac_m, "fraction_high_simulated": frac_s,
             "fraction_high_model_stationary": model.rtn.stationary_high, "edges": edges}
    for state, rm, rs, p in (("high", hi_m, hi_s, model.rtn.p_down), ("low", lo_m, lo_s, model.rtn.p_up)):
        cm, dm = _dwell_hist(rm, edges)
        cs, ds = _dwell_hist(rs, edges)
        dwell[state] = {"p_leave": p, "n_runs_measured": len(rm), "n_runs_simulated": len(rs),
                        "counts_measured": cm, "counts_simulated": cs,
                        "density_measured": dm, "density_simulated": ds,
                        "density_model": _geometric_windowed(p, edges, L),
                        "mean_measured": float(np.mean(rm)) if len(rm) else None,
                        "mean_simulated": float(np.mean(rs)) if len(rs) else None}
    noise = {"n_cells": len(xm), "n_simulated": len(xs), "first_pulse": first, "trace_length": length,
             "residual_std_measured": float(np.sqrt(np.mean(xm**2))),
             "residual_std_simulated": float(np.sqrt(np.mean(xs**2))),
             "pink_std_model": model.pink.std,
             "spectrum": {"f": f, "measured": pm, "simulated": ps, "model": pmod, "nperseg": nperseg,
                          "slope_measured": _slope(f, pm), "slope_simulated": _slope(f, ps),
                          "slope_model": _slope(f, pmod), "exponent_model": model.pink.exponent},
             "acf": {"lags": lags, "measured": am, "simulated": asim, "model": amod, "n_cells": n_acf},
             "dwell": dwell}
    metrics["figures"]["noise"] = noise

    def draw_noise(fig):
        from .plotting import plot_acf, plot_dwell, plot_spectrum

        axes = fig.subplots(2, 2)
        plot_spectrum(f, pm, ps, pmod, ax=axes[0, 0],
                      model_label=f"fitted pink law (alpha={model.pink.alpha:.3g}, beta={model.pink.exponent:.2g})")
        axes[0, 0].set_title("residual spectrum (Welch, mean over cells)", fontsize=10)
        plot_acf(lags, am, asim, amod, ax=axes[0, 1], model_label="fitted pink law alone")
        axes[0, 1].set_title("residual autocorrelation", fontsize=10)
        for ax, state in ((axes[1, 0], "high"), (axes[1, 1], "low")):
            d = dwell[state]
            plot_dwell(edges, d["density_measured"], d["density_simulated"], d["density_model"], state=state,
                       ax=ax, model_label=f"geometric, p={d['p_leave']:.2g}/pulse, seen in {L}-pulse windows")
            ax.set_title(f"RTN {state}-state dwell: {d['n_runs_measured']} measured, "
                         f"{d['n_runs_simulated']} simulated runs", fontsize=10)

    sub = f"{len(xm):,} measured and {len(xs):,} simulated cell-cycles"
    figs["noise"] = (draw_noise, (11, 7.6),
                     f"Noise of the residuals (measured w minus each cell's fitted law; simulated w minus "
                     f"its own law) from pulse {first} on (after the {model.pink.taps}-tap pink history "
                     f"fills), {sub}, each trace mean-removed. RTN dwell times: each residual is smoothed over "
                     f"{window} pulses; a cell whose smoothed spread (98th minus 25th percentile) exceeds 6 "
                     f"times the fitted pink noise after the same smoothing ({sigma:.2g}) is an RTN cell "
                     f"({ncell_m:,} measured, {ncell_s:,} simulated); it is high above the middle of that "
                     "spread plus 20 % of it and low again below the middle minus 20 % (hysteresis). Only "
                     "complete runs (not touching either end of the train) count, so long dwells are "
                     "under-represented on both sides, and dwells shorter than half the smoothing are not binned; "
                     "the geometric law is drawn as seen through the same window.")


def _die_map_section(col, model, pnames, units, metrics, figs, notes):
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
        notes.append(f"{_NO_COORDS}: no die map (DieData.attrs needs 'x'/'y' or 'die_x'/'die_y').")
        return
    if not known:
        entry["message"] = "no die with coordinates has usable cells"
        notes.append("no die map: the dies with coordinates have no usable cells.")
        return
    if len(known) < len(dies):
        notes.append(f"die map: {len(dies) - len(known)} die(s) without coordinates or usable cells are not shown.")
    wafers = sorted({d["wafer"] for d in known})

    def draw_map(fig):
        from .plotting import plot_die_map

        axes = fig.subplots(1, 2)
        x = [d["coords"][0] for d in known]
        y = [d["coords"][1] for d in known]
        lab = [d["die"] for d in known]
        plot_die_map(x, y, [d[f"median_{mkey}"] for d in known], ax=axes[0], labels=lab,
                     label=f"median {mkey} ({units.get(mkey, '')})")
        plot_die_map(x, y, [d["median_r0"] if d["median_r0"] is not None else np.nan for d in known],
                     ax=axes[1], labels=lab, label="median R0 (Ohm)", cmap="magma")
        axes[0].set_title(f"median {mkey} per die", fontsize=10)
        axes[1].set_title("median R0 per die", fontsize=10)

    n = sum(d["n_cells"] for d in known)
    figs["die_map"] = (draw_map, (11, 4.6),
                       f"Die maps of the median fitted {mkey} and R0 over {len(known)} dies ({n:,} usable "
                       f"cell-cycles; wafer{'s' if len(wafers) > 1 else ''} {', '.join(wafers)}).")


# --------------------------------------------------------------------------- tables


def _sec(d, key):
    """``d[key]`` when it is a dict, else an empty dict (a summary may lack or garble a part)."""
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def _num(x):
    """``x`` as a float, or None when it is not a finite number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _tables(summary, cells, usable, flag_counts, metrics, model, units, notes):
    tables = {}
    devices = _sec(summary, "devices")
    flagged = _sec(devices, "flagged")
    tables["flags"] = {
        "fit_table": flag_counts,
        "summary": {"total": devices.get("total"), "fitted": devices.get("fitted"),
                    **{f: flagged.get(f) for f in _FLAGS[1:]}},
    }
    if not devices:
        notes.append("the fit summary has no 'devices' counts.")
    drift = _sec(summary, "drift")
    scores = {str(k): (v if isinstance(v, dict) else {}) for k, v in _sec(drift, "scores").items()}
    rows = []
    if scores:
        aics = {k: _num(v.get("aic")) for k, v in scores.items()}
        bics = {k: _num(v.get("bic")) for k, v in scores.items()}
        best_aic = min((a for a in aics.values() if a is not None), default=None)
        best_bic = min((b for b in bics.values() if b is not None), default=None)
        for name in sorted(scores, key=lambda k: (aics[k] is None, aics[k] or 0.0)):
            aic, bic = aics[name], bics[name]
            rows.append({"law": name, "aic": aic, "bic": bic,
                         "delta_aic": aic - best_aic if aic is not None and best_aic is not None else None,
                         "delta_bic": bic - best_bic if bic is not None and best_bic is not None else None,
                         "chosen": name == drift.get("law")})
    else:
        notes.append("the fit summary has no drift-law scores (AIC/BIC).")
    tables["scores"] = {"law": drift.get("law"), "rows": rows}
    d2d = _sec(summary, "d2d")
    pfig = metrics["figures"].get("parameters", {}).get("params", {})
    prow = []
    for p in list(d2d) + [p for p in model.parameter_names if p not in d2d and p in cells.columns]:
        s = _sec(d2d, p)
        se_col = f"{p}_stderr"
        se = cells[se_col].to_numpy(dtype=float)[usable] if se_col in cells.columns else np.array([])
        se = se[np.isfinite(se)]
        prow.append({"param": p, "unit": units.get(p, ""), "family": s.get("family"),
                     "params": s.get("params"), "bounds": s.get("bounds"), "median": s.get("median"),
                     "median_ci90": s.get("median_ci90"), "ks_summary": s.get("ks"),
                     "ks_report": pfig.get(p, {}).get("ks"),
                     "median_measured": pfig.get(p, {}).get("median_measured"),
                     "median_cell_stderr": float(np.median(se)) if len(se) else None,
                     "in_summary": p in d2d})
    if not d2d:
        notes.append("the fit summary has no D2D laws.")
    tables["d2d"] = prow
    corr = _sec(summary, "correlation")
    tables["correlation"] = {"names": corr.get("names"), "spearman": corr.get("spearman"),
                             "copula": corr.get("copula")}
    pink = _sec(summary, "pink")
    nfig = metrics["figures"].get("noise", {})
    tables["pink"] = {"std": pink.get("std"), "exponent": pink.get("exponent"),
                      "model_alpha": model.pink.alpha, "model_std": model.pink.std,
                      "model_exponent": model.pink.exponent,
                      "residual_std_measured": nfig.get("residual_std_measured"),
                      "residual_std_simulated": nfig.get("residual_std_simulated"),
                      "slope_model": nfig.get("spectrum", {}).get("slope_model"),
                      "slope_measured": nfig.get("spectrum", {}).get("slope_measured"),
                      "slope_simulated": nfig.get("spectrum", {}).get("slope_simulated")}
    rtn = _sec(summary, "rtn")
    dw = nfig.get("dwell", {})
    tables["rtn"] = {"p_up": rtn.get("p_up"), "p_down": rtn.get("p_down"),
                     "amplitude_median": _sec(rtn, "amplitude").get("median"),
                     "model_p_up": model.rtn.p_up, "model_p_down": model.rtn.p_down,
                     "model_amplitude_median": (model.d2d["rtn_amplitude"].median()
                                                if "rtn_amplitude" in model.d2d else None),
                     "fraction_high_measured": dw.get("fraction_high_measured"),
                     "fraction_high_simulated": dw.get("fraction_high_simulated"),
                     **{f"mean_{st}_{side}": dw.get(st, {}).get(f"mean_{side}")
                        for st in ("high", "low") for side in ("measured", "simulated")}}
    for key in ("pink", "rtn", "correlation"):
        if not _sec(summary, key):
            notes.append(f"the fit summary has no '{key}' section.")
    return tables


# --------------------------------------------------------------------------- rendering


def _render(figs, out, dpi):
    if not figs:
        return {}, {}
    import matplotlib
    from matplotlib.figure import Figure

    paths, embedded = {}, {}
    style = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
             "axes.spines.top": False, "axes.spines.right": False}
    with matplotlib.rc_context(style):
        for name in FIGURES:
            if name not in figs:
                continue
            draw, size, _ = figs[name]
            fig = Figure(figsize=size, layout="constrained" if name != "pairs" else None)
            draw(fig)
            path = out / f"{name}.png"
            fig.savefig(path, dpi=dpi)
            paths[name] = path
            embedded[name] = base64.b64encode(path.read_bytes()).decode("ascii")
    return paths, embedded


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;
 margin:0;background:#f4f5f7;color:#1d2127;font-size:15px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:18px 26px 40px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:6px 0 2px}h2{font-size:20px;margin:30px 0 8px;border-bottom:2px solid #1f5fa8;
 padding-bottom:3px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#555;font-size:13px}
.notes{background:#fff6e0;border-left:5px solid #e0a100;padding:8px 14px;margin:14px 0}
.notes li{margin:3px 0}
.glance{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#eef3fa;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px;color:#1f5fa8}.card span{font-size:12px;color:#444}
figure{margin:14px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;color:#333;margin-top:4px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:right}th{background:#e6ebf2}
td.l,th.l{text-align:left}tr:nth-child(even) td{background:#f7f9fc}
.chosen td{font-weight:bold}
.missing{color:#8a5a00;font-style:italic}
nav a{margin-right:12px;font-size:13px}
footer{margin-top:30px;font-size:12px;color:#666}
"""

_TITLES = {
    "traces": "Cell traces with their fitted law",
    "band": "Population over pulses: measured vs simulated",
    "ecdf": "Distributions of w at chosen pulse counts",
    "parameters": "D2D parameters: histograms and QQ plots",
    "pairs": "Parameter correlations",
    "c2c": "Cycle-to-cycle variation",
    "noise": "Noise: spectrum, autocorrelation, RTN dwell times",
    "die_map": "Die map",
}


def _table(header, rows, left=1):
    h = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(header))
    body = []
    for r in rows:
        cls = ' class="chosen"' if isinstance(r, tuple) and r and r[0] == "__chosen__" else ""
        cells = r[1] if cls else r
        body.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(cells)) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _matrix(names, mat):
    try:
        names = [str(n) for n in names]
        mat = np.asarray(mat, dtype=float).reshape(len(names), len(names))
    except (TypeError, ValueError):
        return '<p class="missing">not in the fit summary</p>'
    if not names:
        return '<p class="missing">not in the fit summary</p>'
    rows = [[html.escape(n)] + [_fmt(v, 3) for v in row] for n, row in zip(names, mat)]
    return _table([""] + names, rows)


def _html(metrics, figs, embedded, notes, tables):
    e = html.escape
    meta = metrics["meta"]
    cells = metrics["cells"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>Validation report – {e(meta['store'])}</title><style>{_CSS}</style></head><body><main>"]
    parts.append(f"<h1>Validation report: {e(meta['store'])}</h1>")
    parts.append(
        f"<div class='sub'>wafer(s) {e(', '.join(meta['wafers']) or '–')} · {meta['n_dies']} die(s) · "
        f"{e(', '.join(map(str, meta['pulses_per_train'])) or '–')} pulses per train · drift law "
        f"<b>{e(meta['law'])}</b> · fitted {e(str(meta.get('fitted_at') or 'at an unknown time'))} · "
        f"report {e(meta['generated_at'])} by hfox_fit {e(meta['hfox_fit_version'])}, seed {meta['seed']}</div>")
    nav = " ".join(f"<a href='#{n}'>{e(_TITLES[n])}</a>" for n in FIGURES if n in figs)
    parts.append(f"<nav>{nav} <a href='#tables'>Fit tables</a></nav>")
    if notes:
        parts.append("<div class='notes'><b>What this report could not show or left out</b><ul>"
                     + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul></div>")
    figm = metrics["figures"]
    cards = [(f"{cells['usable']:,}", f"usable cell-cycles of {cells['fit_table_rows']:,} fitted"),
             (f"{sum(v for k, v in cells['by_flag'].items() if k != 'ok'):,}", "flagged cell-cycles")]
    ecdf = figm.get("ecdf", {}).get("pulses", {})
    if ecdf:
        last = max(ecdf, key=int)
        cards.append((f"{ecdf[last]['ks']:.3f}", f"KS distance of w after {last} pulses"))
    if figm.get("band", {}).get("max_abs_median_diff") is not None:
        cards.append((_fmt(figm["band"]["max_abs_median_diff"], 3), "largest |median w difference|"))
    if "noise" in figm:
        cards.append((_fmt(figm["noise"]["residual_std_measured"], 3), "residual std of w (measured)"))
    parts.append("<div class='glance'>" + "".join(
        f"<div class='card'><b>{v}</b><span>{e(t)}</span></div>" for v, t in cards) + "</div>")
    for name in FIGURES:
        if name == "die_map" and name not in figs:
            msg = figm.get("die_map", {}).get("message", _NO_COORDS)
            parts.append(f"<h2 id='die_map'>{e(_TITLES[name])}</h2><p class='missing'>{e(msg)}.</p>")
            continue
        if name not in figs:
            continue
        _, _, caption = figs[name]
        parts.append(f"<h2 id='{name}'>{e(_TITLES[name])}</h2><figure>"
                     f"<img src='data:image/png;base64,{embedded[name]}' data-file='{name}.png' "
                     f"alt='{e(_TITLES[name])}'><figcaption>{e(caption)} "
                     f"<span class='sub'>[{name}.png]</span></figcaption></figure>")
    parts.append(_tables_html(tables))
    parts.append(f"<footer>Every number above is in metrics.json beside this page. Measured w = ln(R/R0) "
                 f"uses each cell-cycle's fitted r0; simulated cells come from the fitted model with seed "
                 f"{meta['seed']}. Report built in {meta['elapsed_s']:.1f} s.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _tables_html(tables):
    e = html.escape
    out = ["<h2 id='tables'>Fit tables</h2>"]
    fl = tables["flags"]
    rows = []
    for f in _FLAGS + (("other",) if "other" in fl["fit_table"] else ()):
        rows.append([f, _fmt(fl["fit_table"].get(f, 0)),
                     _fmt(fl["summary"].get(f)) if f != "ok" else _fmt(fl["summary"].get("fitted"))])
    rows.append(["total", _fmt(sum(fl["fit_table"].values())), _fmt(fl["summary"].get("total"))])
    out.append("<h3>Cells per flag</h3>" + _table(["flag", "fit table (cell-cycles)", "summary (devices; ok = fitted)"], rows))
    sc = tables["scores"]
    out.append("<h3>Drift-law scores</h3>")
    if sc["rows"]:
        rows = []
        for r in sc["rows"]:
            cells = [e(r["law"]) + (" ✔" if r["chosen"] else ""), _fmt(r["aic"], 8), _fmt(r["bic"], 8),
                     _fmt(r["delta_aic"], 4), _fmt(r["delta_bic"], 4)]
            rows.append(("__chosen__", cells) if r["chosen"] else cells)
        out.append(_table(["law", "AIC", "BIC", "ΔAIC", "ΔBIC"], rows))
    else:
        out.append("<p class='missing'>no law scores in the fit summary</p>")
    out.append("<h3>D2D laws (every fitted number with its 90 % interval as the summary gives it)</h3>")
    rows = []
    for r in tables["d2d"]:
        params = r["params"]
        params = (", ".join(f"{e(str(k))}={_fmt(v)}" for k, v in params.items()) if isinstance(params, dict)
                  else _fmt(params)) or "–"
        bounds, ci = r["bounds"], r["median_ci90"]
        bounds = "[" + ", ".join(_fmt(b) for b in bounds) + "]" if isinstance(bounds, (list, tuple)) else (
            "none" if bounds is None else _fmt(bounds))
        ci = "[" + ", ".join(_fmt(b) for b in ci) + "]" if isinstance(ci, (list, tuple)) else _fmt(ci)
        name = e(r["param"]) + ("" if r["in_summary"] else " <span class='missing'>(not in summary)</span>")
        rows.append([name, e(r["unit"] if r["unit"] not in ("", "1") else "–"), e(str(r["family"] or "–")),
                     params, bounds, _fmt(r["median"]), ci, _fmt(r["median_measured"]),
                     _fmt(r["median_cell_stderr"], 3), _fmt(r["ks_summary"], 3), _fmt(r["ks_report"], 3)])
    out.append(_table(["parameter", "unit", "family", "law parameters", "bounds", "median", "median 90 % CI",
                       "median of fitted cells", "median per-cell stderr", "KS (fit)", "KS (this report)"],
                      rows, left=5))
    c = tables["correlation"]
    out.append("<h3>Correlation (fit summary)</h3><div style='display:flex;gap:30px;flex-wrap:wrap'>"
               f"<div><b>Spearman</b>{_matrix(c['names'], c['spearman'])}</div>"
               f"<div><b>Gaussian copula</b>{_matrix(c['names'], c['copula'])}</div></div>")
    p = tables["pink"]
    out.append("<h3>Noise</h3>" + _table(
        ["quantity", "fit summary", "model", "measured here"],
        [["pink std of w", _fmt(p["std"]), _fmt(p["model_std"]), "–"],
         ["pink spectral exponent β", _fmt(p["exponent"]), _fmt(p["model_exponent"]), "–"],
         ["pink α", "–", _fmt(p["model_alpha"]), "–"],
         ["residual std of w (pink + RTN + read noise)", "–",
          _fmt(p["residual_std_simulated"], 3) + " (simulated)", _fmt(p["residual_std_measured"], 3)],
         ["residual PSD log-log slope, 0.02-0.2 cycles/pulse", "–",
          f"{_fmt(p['slope_simulated'], 3)} (simulated; pink law alone {_fmt(p['slope_model'], 3)})",
          _fmt(p["slope_measured"], 3)]]))
    r = tables["rtn"]
    out.append(_table(
        ["RTN", "fit summary", "model", "measured here"],
        [["p_up (low→high, 1/pulse)", _fmt(r["p_up"]), _fmt(r["model_p_up"]), "–"],
         ["p_down (high→low, 1/pulse)", _fmt(r["p_down"]), _fmt(r["model_p_down"]), "–"],
         ["amplitude median", _fmt(r["amplitude_median"]), _fmt(r["model_amplitude_median"]), "–"],
         ["fraction of smoothed reads detected high", "–", _fmt(r["fraction_high_simulated"], 3) + " (simulated)",
          _fmt(r["fraction_high_measured"], 3)],
         ["mean complete high dwell (pulses)", "–", _fmt(r["mean_high_simulated"], 3) + " (simulated)",
          _fmt(r["mean_high_measured"], 3)],
         ["mean complete low dwell (pulses)", "–", _fmt(r["mean_low_simulated"], 3) + " (simulated)",
          _fmt(r["mean_low_measured"], 3)]]))
    return "\n".join(out)


# --------------------------------------------------------------------------- store entry point


def report_store(path, out_dir, **kwargs) -> ReportResult:
    """Write the validation report of the fit held in a campaign store.

    Parameters
    ----------
    path : str or path-like
        The campaign store (HDF5) written by ``hfox-fit ingest`` / ``fit``.
    out_dir : str or path-like
        Output directory (created).
    **kwargs
        Passed to :func:`build_report` (``seed``, ``pulses``, ...).

    Returns
    -------
    ReportResult

    Raises
    ------
    ReportError
        The output path is a file or cannot be created.
    StoreError
        The store is missing, is not a campaign store, or holds no fit yet.
    """
    path = Path(path)
    _prepare_out_dir(out_dir, create=False)
    from .store import CampaignStore

    store = CampaignStore(path)
    fit = store.load_fit()  # StoreError: missing file, not a store, no fit yet (one clear line)
    kwargs.setdefault("store_name", path.name)
    kwargs.setdefault("fitted_at", fit.fitted_at)
    return build_report(store.iter_dies(), fit.cells, fit.summary, fit.model, out_dir, **kwargs)

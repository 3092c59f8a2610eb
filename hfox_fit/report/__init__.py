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

Layout: :mod:`._collect` reads the inputs (measured and simulated ``w`` per
cell), :mod:`._stats` holds the statistics, :mod:`._sections` the figure
sections (numbers, captions, drawing), :mod:`._tables` the fit tables and
:mod:`._html` the rendering of the figures and the page; this module is the
entry (:func:`build_report`, :func:`report_store`).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._json import json_safe
from .._version import __version__
from ..exceptions import ReportError
from ..laws import get_law
from ._collect import _OPTIONAL, _check_inputs, _collect, _prepare_out_dir, die_coordinates
from ._conditions import conditions_section, summary_conditions
from ._html import FIGURES, _html, _render
from ._maps import _die_map_section
from ._sections import _noise_section, _parameter_section, _population_section
from ._tables import _flag_counts, _sec, _tables
from ._training import training_section
from ._wafers import wafers_section

__all__ = ["ReportError", "ReportResult", "build_report", "report_store", "FIGURES", "die_coordinates"]


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


def _units(model):
    units = dict(get_law(model.law).units)
    units.update({"r0": "Ohm", "rtn_amplitude": "1"})
    return units


def build_report(dies, cells, summary, model, out_dir, *, store_name="campaign", seed=0,
                 pulses=(10, 100, -1), max_population_cells=50_000, max_noise_cells=2048,
                 max_scatter_points=1500, fitted_at=None, dpi=100, figures=True, training=None,
                 progress=None) -> ReportResult:
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
    training : path-like, optional
        Folder of a training study (``hfox-fit train-demo --out``): its accuracy figure
        and summary are added.
    progress : callable, optional
        Called with a short description of each stage as it starts (a progress display).

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
    stage = progress or (lambda text: None)

    watch = None
    if summary_conditions(summary):  # each train's pulse condition, noted as the dies are read
        from ..fitting.conditions import ConditionRecorder  # here: hfox_fit.fitting loads lmfit

        watch = ConditionRecorder()
        dies = watch.watch(dies)
    stage("reading the measurements and simulating the fitted population")
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
    flag_counts = _flag_counts(flag)
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
                         f"m1 t + c1. A censored parameter's panel counts them as censored at the end of "
                         "their train (Kaplan-Meier); a histogram of a parameter that exists only after a "
                         "break leaves them out.")
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
        stage("comparing the population, the D2D laws and the noise")
        _population_section(col, model, pnames, pulses, metrics, figs, samples, notes,
                            n_usable_table, max_population_cells)
        _parameter_section(cells, usable, col, model, pnames, units, metrics, figs, notes,
                           rng_plot, max_scatter_points)
        _noise_section(col, model, metrics, figs, notes)
    _die_map_section(col, model, pnames, units, metrics, figs, notes, cells, usable, flag)
    if training is not None:
        training_section(training, metrics, figs, notes)
    tables = _tables(summary, cells, usable, flag_counts, metrics, model, units, notes)
    metrics["tables"] = tables
    conditions_section(watch, col, summary, model, pnames, units, seed, metrics, figs, tables, notes)
    wafers_section(summary, pnames, units, metrics, figs, tables, notes)

    for name, (_, _, caption) in figs.items():
        metrics["figures"][name]["caption"] = caption
    if not figures and figs:
        notes.append(f"figures were not drawn (figures=False); their numbers are in metrics.json: "
                     f"{', '.join(n for n in FIGURES if n in figs)}.")
        figs = {}
    figure_paths, embedded = _render(figs, out, dpi, progress=progress)
    for name, path in figure_paths.items():
        metrics["figures"][name]["file"] = path.name
    for name in FIGURES:  # stale PNGs of an earlier report would contradict this one
        stale = out / f"{name}.png"
        if name not in figure_paths and stale.is_file():
            stale.unlink()
    metrics["notes"] = list(notes)
    elapsed = time.perf_counter() - t_start
    metrics["meta"]["elapsed_s"] = round(elapsed, 3)
    stage("writing report.html and metrics.json")
    page = _html(metrics, figs, embedded, notes, tables)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(json_safe(metrics), indent=1, allow_nan=False), encoding="utf-8")
    return ReportResult(out_dir=out, html=html_path, metrics_path=metrics_path, figures=figure_paths,
                        metrics=metrics, notes=notes, n_cells=n_pop, elapsed_s=elapsed, samples=samples)


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
    from ..fitting import CampaignResult  # here: hfox_fit.fitting loads lmfit, and lmfit matplotlib
    from ..store import CampaignStore

    store = CampaignStore(path)
    if kwargs.get("progress"):
        kwargs["progress"]("reading the fit")
    fit = CampaignResult.load(store)  # StoreError: missing file, not a store, no fit yet (one clear line)
    kwargs.setdefault("store_name", path.name)
    kwargs.setdefault("fitted_at", fit.fitted_at)
    return build_report(store.iter_dies(), fit.cells, fit.summary(), fit.model, out_dir, **kwargs)

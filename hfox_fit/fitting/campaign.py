"""One entry point: fit a whole campaign (drift, noise, D2D, C2C) from DieData.

:func:`fit_campaign` maps :func:`fit_die` (a pure function of one
:class:`~hfox_fit.schema.DieData`, so dies can be handed to workers) over the
dies, then pools the results: the drift law is chosen by total AIC, the pink
and RTN laws are fitted to the pooled residual statistics, the D2D laws,
correlations and C2C laws to the unflagged cells. The result carries the
per-(cell, cycle) table, the summary JSON (the contract other tools read), a
:class:`~hfox_fit.model.DeviceModel` and arrays for validation plots.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from .._json import json_safe
from .._version import __version__
from ..exceptions import FitError
from ..laws import AUTO_LAWS, ParameterLaw, get_law
from ..model import DeviceModel
from ..schema import DieData
from ._executor import ChunkFailure, Workers, map_dies, part_seed, run_here
from ._result import CampaignResult
from .conditions import add_conditions, train_conditions
from .correlation import copula_note
from .d2d import CANDIDATE_FAMILIES, D2DFitter, _fit_parameter_part
from .drift import (
    DRIFT_MODELS,
    DriftFitter,
    DriftOptions,
    censor_late_breaks,
    check_law,
    fit_drift_die,
    steepest_post_break_slope,
)
from .flags import FLAG_NAMES
from .noise import NoiseFitter
from .rtn import shown_amplitudes
from .wafers import add_wafers

__all__ = ["CampaignFitter", "CampaignResult", "CampaignFit", "fit_die", "fit_campaign", "d2d_rows"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def fit_die(die: DieData, law: str = "auto", options: DriftOptions | None = None, *, progress=None):
    """Fit one die: drift law(s), flags, RTN detection and residual spectrum (pure function).

    Parameters
    ----------
    die : DieData
    law : str, default="auto"
        A registered law, or "auto" for all of them on the same reads.
    options : DriftOptions, optional
    progress : callable, optional
        Called with the fraction of the die done (0 to 1), for a progress bar.

    Returns
    -------
    DieDriftResult
    """
    law = check_law(law, allow_auto=True)
    laws = AUTO_LAWS if law == "auto" else (law,)
    return fit_drift_die(die, laws, options, progress=progress)


def _device_flags(cells: pd.DataFrame):
    """One flag per device: the most frequent flag among its cycles when at least half are flagged."""
    keys = ["wafer", "die", "device"]
    counts = cells.groupby(keys + ["flag"], sort=False, observed=True).size().unstack("flag", fill_value=0)
    total = counts.sum(axis=1).to_numpy()
    n_ok = counts["ok"].to_numpy() if "ok" in counts else np.zeros(len(counts), int)
    bad_cols = [c for c in counts.columns if c != "ok"]
    if bad_cols:
        bad = counts[bad_cols].to_numpy()
        worst = np.asarray(bad_cols, dtype=object)[np.argmax(bad, axis=1)]
        flag = np.where(total - n_ok >= 0.5 * total, worst, "ok")
    else:
        flag = np.full(len(counts), "ok", dtype=object)
    return pd.DataFrame({"flag": flag.astype(str), "any_ok": n_ok > 0}, index=counts.index)


def _leave_out_masked(rows: pd.DataFrame, params, max_masked: float) -> pd.DataFrame:
    """Blank the drift parameters of trains whose reads were mostly masked (RTN-high), for the D2D fits.

    When RTN hides a large part of a train, its drift (a break inside the hidden
    part, say) can be missed, and its stderrs understate its errors (m1: the
    standard deviation of (fit - truth) / stderr is 1.6-1.9 on these trains of
    the presets). RTN itself is independent of the drift, but whether it is found
    is not: slow trains are masked a little more often (wafer_b seed 1000: 43 % of
    the slowest quarter of m1 against 33-37 %), so this selection moves a median
    by about 1 % (keeping these trains moved the 9-condition medians of m1 by
    -0.3 % on average over 7 seeds, the paper preset's by +1.6 % over 8). ``r0``
    is kept.
    """
    rows = rows.copy()
    total = rows["n_reads"].to_numpy(float) + rows["n_masked"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        hidden = rows["n_masked"].to_numpy(float) / total > max_masked
    for p in params:
        for col in (p, p + "_stderr", p + "_lo", p + "_hi"):
            if col in rows:
                rows.loc[hidden, col] = np.nan
    return rows


def _identifiable_breaks(rows: pd.DataFrame) -> pd.DataFrame:
    """Blank ``t_star`` of the trains whose break could not be seen wherever it lay, for the D2D fit.

    A train whose first slope ``m1`` is within the range of the post-break slopes
    shows a break only when it lies mid-train (an early or a late one is lost in
    the noise), so keeping the trains whose break happened to be found would
    select the middle of the ``t_star`` law. The choice is made on ``m1`` alone
    (the fitted slope, or the straight line's when no break was found) against
    the steepest ``m2`` of the campaign (:func:`steepest_post_break_slope`, from
    at least 20 trains), the same rule for every train whatever its break;
    ``m1`` of the paper's model is independent of ``t_star``.
    """
    if "t_star" not in rows or "m2" not in rows:
        return rows
    limit, n_pool = steepest_post_break_slope(rows)
    if n_pool < 20:
        return rows
    m1 = rows["m1"].to_numpy(float)
    m1 = np.where(np.isfinite(m1), m1, rows["m1_line"].to_numpy(float)) if "m1_line" in rows else m1
    with np.errstate(invalid="ignore"):
        weak = ~(m1 > limit)
    rows = rows.copy()
    for col in ("t_star", "t_star_stderr", "t_star_lo", "t_star_hi"):
        if col in rows:
            rows.loc[weak, col] = np.nan
    return rows


def _slopes_after_seen_breaks(rows: pd.DataFrame) -> pd.DataFrame:
    """Blank ``m2`` where the D2D rows keep no exact ``t_star``: a post-break slope only past a break they count.

    A break seen after the censoring point (:func:`~hfox_fit.fitting.breaks.censor_late_breaks`), or on a
    train whose break could not have been seen wherever it lay (:func:`_identifiable_breaks`), is one
    that happened to show: a late break leaves few reads after it and shows only where its slopes differ
    a lot. Its ``m2`` is such a selection (paper preset, 40 wafers: the late ones' true m1 - m2 a third of
    the others', and keeping them took the m2 law's median 3.5 % low and put +0.05 of correlation between
    m1 and m2 that the cells do not have). The devices table keeps every train's ``m2``.
    """
    if "t_star" not in rows or "m2" not in rows:
        return rows
    unseen = ~np.isfinite(rows["t_star"].to_numpy(float))
    rows = rows.copy()
    for col in ("m2", "m2_stderr"):
        if col in rows:
            rows.loc[unseen, col] = np.nan
    return rows


def _ambiguous_lines(rows: pd.DataFrame) -> pd.DataFrame:
    """``m1`` of the trains whose value is their straight line's slope and whose break may hide in the noise.

    Such a train (no break seen, its slope within the range of post-break slopes: ``t_star``
    undetermined, :func:`~hfox_fit.fitting.breaks.classify_breaks`) reports the line's slope with a
    standard error widened to an early break its data cannot rule out: honest for the cell, but
    one-sided and widest on the flattest trains, so as a Gaussian error in the D2D likelihood it took
    the low end of the law out (the m1 median of the default condition law's slowest conditions
    +18-25 %). The D2D step takes the line's slope with the line's standard error instead, marked
    ``m1_ambiguous``: the law's value, weighed by how often the group's breaks lie beyond the trains
    (:func:`~hfox_fit.fitting.d2d.line_weight`), or the law's value mixed down by a hidden break
    (:func:`~hfox_fit.fitting.d2d.fit_parameter`).
    The devices table keeps the widened error.
    """
    if "m1_line" not in rows or "m1_line_stderr" not in rows:
        return rows
    line = rows["m1_line"].to_numpy(float)
    censored = rows["t_star_censored"].fillna(False).to_numpy(bool) if "t_star_censored" in rows else False
    amb = np.isfinite(line) & (rows["m1"].to_numpy(float) == line) & ~censored
    rows = rows.copy()
    rows["m1_ambiguous"] = amb
    rows["m1_stderr"] = np.where(amb, rows["m1_line_stderr"].to_numpy(float), rows["m1_stderr"].to_numpy(float))
    return rows


def d2d_rows(cells: pd.DataFrame, law: str, max_masked: float = 0.3) -> pd.DataFrame:
    """The per-train table the D2D laws are fitted to (flagged rows still in; the D2D step drops them).

    Breaks censored at one point (:func:`~hfox_fit.fitting.breaks.censor_late_breaks`), ``t_star``
    blanked where a break could not be seen wherever it lay (:func:`_identifiable_breaks`), ``m2`` kept
    only where ``t_star`` is (:func:`_slopes_after_seen_breaks`), the drift
    parameters blanked on mostly masked trains (:func:`_leave_out_masked`, skipped when the table has
    no read counts), ``m1`` of a straight line that a hidden break may have mixed down marked
    ambiguous (:func:`_ambiguous_lines`). The report compares each law with exactly these values.
    """
    rows = cells
    if get_law(law).has_break:
        rows = _slopes_after_seen_breaks(_ambiguous_lines(_identifiable_breaks(censor_late_breaks(cells))))
    if "n_reads" not in rows or "n_masked" not in rows:
        return rows
    return _leave_out_masked(rows, list(get_law(law).params), max_masked)


def _lmfit_check(results, law) -> dict:
    """How much lmfit, started at the vectorised optimum, improved the SSE of the sampled trains."""
    changes = [v for r in results for v in r.verify.get(law, {}).values()]
    if not changes:
        return {"trains": 0}
    return {"trains": len(changes), "max_rel_sse_improvement": float(max(0.0, -min(changes)))}


def _median_curve_fits(traces: np.ndarray, offset: np.ndarray) -> dict:
    """lmfit fit of every law to the median w(t) of the example traces (campaign-level report)."""
    if traces.size == 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(traces, axis=0) - offset[: traces.shape[1]]
    t = np.arange(1, len(med) + 1, dtype=float)
    good = np.isfinite(med)
    out = {}
    for name, model in DRIFT_MODELS.items():
        law = get_law(name)
        start = law.start_values()
        span = float(np.nanmax(med) - np.nanmin(med)) or 1e-3
        if law.has_break:
            # the break mid-curve, the slopes from the curve's rise (two_slope's m1, m2)
            start[law.theta] = t[good][len(t[good]) // 2]
            start["m1"] = span / max(t[good][-1], 1.0)
            start["m2"] = start["m1"] / 3
        params = model.make_params(**start)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = model.fit(med[good], params, t=t[good], method="least_squares")
        except Exception:  # noqa: BLE001 - the report is advisory
            continue
    return out


def fit_campaign(dies, law: str = "auto", jobs: int = 1, progress: bool = False, *,
                 options: DriftOptions | None = None, bootstrap: int = 200, random_state: int = 0,
                 n_dies: int | None = None, max_masked: float = 0.3, scheduler: str | None = None) -> CampaignResult:
    """Fit the weak-RESET model to a campaign.

    Parameters
    ----------
    dies : iterable of DieData
        E.g. a list, or ``CampaignStore(path).iter_dies()``; or die sources that workers
        read themselves (see :mod:`hfox_fit.fitting._executor`).
    law : {"auto", "two_slope", "power", "log"}, default="auto"
        The drift law; "auto" fits all on the same reads and keeps the lowest total AIC.
    jobs : int, default=1
        Worker processes for the per-die step and then for the pooling's independent parts
        (each parameter's D2D law, the correlations, the C2C laws, the pink spectrum, the RTN
        amplitude law), each of which has its own seed from ``random_state`` and its name, so
        the numbers do not depend on ``jobs``.
    progress : bool, default=False
        Show progress on stderr: the per-die step (moving within each die), then one line
        per pooled step (noise, D2D laws, ...); whole lines when stderr is not a terminal.
    options : DriftOptions, optional
    bootstrap : int, default=200
        Bootstrap replicates for the intervals.
    random_state : int, default=0
    n_dies : int, optional
        Number of dies, for the progress bar when ``dies`` is an iterator.
    max_masked : float, default=0.3
        Trains with a larger fraction of reads masked as RTN-high are left out
        of the drift parameters' D2D fits (RTN may hide their break, and their
        stderrs are too small); whether RTN is found depends a little on the
        drift, so this selection moves a median by about 1 % (see
        :func:`_leave_out_masked`).
    scheduler : str, optional
        Run the per-die step and the pooling's parts on Dask instead: ``"local:N"`` (a local
        cluster of N worker processes) or ``"tcp://HOST:PORT"`` (a running scheduler); needs
        ``jobs=1``. The fitted numbers are the same whichever way the dies run.

    Returns
    -------
    CampaignResult
        The same as ``CampaignFitter(law, ...).fit(dies).result_``.

    Raises
    ------
    FitError
        No dies, an unknown law, or no cell that can be fitted.

    Examples
    --------
    >>> from hfox_fit.synth import make_wafer
    >>> wafer = make_wafer("paper", devices=128, pulses=400, seed=1)
    >>> fit = fit_campaign(wafer.dies, law="two_slope", bootstrap=20)
    >>> fit.summary()["devices"]["total"]
    128
    >>> fit.model.law
    'two_slope'
    """
    fitter = CampaignFitter(law, jobs, progress, options=options, bootstrap=bootstrap, random_state=random_state,
                            max_masked=max_masked, scheduler=scheduler)
    return fitter.fit(dies, n_dies=n_dies).result_


class CampaignFitter:
    """Fit the weak-RESET model to a campaign: ``CampaignFitter(...).fit(dies)`` sets :attr:`result_`.

    Parameters are those of :func:`fit_campaign`; :meth:`fit` maps :func:`fit_die` over the
    dies (in ``jobs`` worker processes, or on the Dask ``scheduler``) and pools the results
    (the pooling's independent parts on the same workers).

    Attributes
    ----------
    result_ : CampaignResult
        The fit: per-cell table, device model, summary, validation arrays (after :meth:`fit`).
    die_parts_ : dict
        ``{"W03/D07": (DieDriftResult, conditions)}``: what was pooled of each die (see :meth:`die_trees`).
    failed_ : dict
        ``{"W03/D07": "error"}``: the dies that failed twice on the Dask ``scheduler`` and were
        left out (only with ``keep_going=True``; otherwise such a die raises
        :class:`~hfox_fit.fitting._executor.ChunkFailure`).

    Examples
    --------
    >>> from hfox_fit.synth import make_wafer
    >>> wafer = make_wafer("paper", devices=128, pulses=400, seed=1)
    >>> CampaignFitter(law="two_slope", bootstrap=20).fit(wafer.dies).result_.law
    'two_slope'
    """

    def __init__(self, law: str = "auto", jobs: int = 1, progress: bool = False, *,
                 options: DriftOptions | None = None, bootstrap: int = 200, random_state: int = 0,
                 max_masked: float = 0.3, scheduler: str | None = None, keep_going: bool = False):
        self.law, self.jobs, self.progress, self.scheduler = law, jobs, progress, scheduler
        self.keep_going = keep_going
        self.options, self.bootstrap, self.random_state, self.max_masked = options, bootstrap, random_state, max_masked

    def fit(self, dies, n_dies: int | None = None, *, known: dict | None = None) -> CampaignFitter:
        """Fit ``dies`` (an iterable of DieData; ``n_dies`` sizes the progress bar of an iterator).

        ``known``: ``{"W03/D07": (DieDriftResult, conditions)}``, results of an earlier fit (see
        :meth:`die_trees`) pooled as they are for the dies they name; only the other dies are
        fitted. Pooling follows the order of ``dies`` either way, so refitting some dies and
        pooling them with the others' kept results gives the numbers of a full fit.
        """
        law, jobs, progress, options = self.law, self.jobs, self.progress, self.options
        known = dict(known or {})
        law = check_law(law, allow_auto=True)
        if jobs is None or int(jobs) < 1:
            raise FitError(f"jobs must be a positive integer, got {jobs!r}.")
        if isinstance(dies, DieData):
            dies = [dies]
        if n_dies is None and hasattr(dies, "__len__"):
            n_dies = len(dies)
        from .._progress import Progress

        names = None
        if known:
            dies = list(dies)
            names = [_die_name(d) for d in dies]
            dies = [d for d, name in zip(dies, names) if name not in known]
            n_dies = len(dies)
        bar = Progress("fit", n_dies, "die", enabled=bool(progress))
        self.failed_ = {}
        try:
            # one set of workers for the per-die step and the pooling's independent parts
            with Workers(jobs, self.scheduler) as workers:
                self._fit_on(workers, dies, law, options, bar, n_dies, known, names)
            bar.close(f"done in {bar.elapsed():.1f} s")
        finally:
            bar.close()
        return self

    def _fit_on(self, workers, dies, law, options, bar, n_dies, known, names) -> None:
        try:
            results = map_dies(_fit_die_recorded, dies, (law, options), progress=bar, n_dies=n_dies,
                               workers=workers)
        except ChunkFailure as failure:
            if not self.keep_going or (all(r is None for r in failure.results) and not known):
                raise
            self.failed_ = failure.failures  # the other dies are pooled; the caller reports these
            results = failure.results
        for _, caught, _ in (r for r in results if r is not None):  # warnings of the per-die step, raised
            for category, message in caught:                        # here even from worker processes
                warnings.warn(message, category, stacklevel=4)
        if names is not None:  # the kept results in their place among the refitted ones
            fitted = iter(results)
            results = [(known[name][0], [], known[name][1]) if name in known else next(fitted)
                       for name in names]
        results = [r for r in results if r is not None]
        if not results:
            raise FitError("no dies to fit: the campaign is empty. Ingest measurements first.")
        self.die_parts_ = {f"{r.wafer}/{r.die}": (r, c) for r, _, c in results}
        # the pulse condition of every train (read where the die was), for the per-condition laws
        conditions = pd.concat([c for _, _, c in results], ignore_index=True)
        self.result_ = _pool([r for r, _, _ in results], law, self.bootstrap, self.random_state,
                             self.max_masked, options, stage=bar.stage, conditions=conditions, workers=workers)
        self.result_.summary()["notes"].extend(f"die {name} not fitted (failed twice): {err}"
                                               for name, err in self.failed_.items())

    def die_trees(self) -> dict:
        """``{"W03/D07": tree}``: each pooled die's own result as a tree the store keeps (:meth:`fit` first)."""
        from ._parts import part_to_tree

        return {name: part_to_tree(res, cond) for name, (res, cond) in self.die_parts_.items()}


def _die_name(item) -> str:
    if isinstance(item, DieData):
        return f"{item.wafer}/{item.die}"
    return str(getattr(item, "name", item))


def _fit_die_recorded(die, law, options, progress=None):
    """:func:`fit_die` with its warnings recorded (worker processes do not show them) and its trains' conditions.

    The result keeps only what pooling needs (:func:`pooled_part`), so the campaign's memory
    grows by the per-train table, not by its reads.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_die(die, law, options, progress=progress)
    return pooled_part(res), [(w.category, str(w.message)) for w in caught], train_conditions(die)


def pooled_part(res):
    """The per-die result less its (cells x pulses) arrays, which only re-fitting one train with the die needs.

    Dropped: the fitted-read mask (``mask_bits``), the telegraph excess of the trains fitted
    through their high reads (``rtn_excess``) and the RTN posterior per block (``rtn.high``,
    None here). Kept: the per-train tables, the per-cell spectrum and RTN statistics the noise
    step bootstraps over, at most ``max_traces`` example traces and the pink offset.
    """
    rtn = dataclasses.replace(res.rtn, high=None) if res.rtn is not None else None
    return dataclasses.replace(res, rtn=rtn, mask_bits=None, rtn_excess={})


def _pool(results, law, bootstrap, random_state, max_masked=0.3, options=None, stage=None,
          conditions=None, workers=None) -> CampaignResult:
    stage = stage or (lambda text: None)  # one line per pooled step, for the progress display
    laws = AUTO_LAWS if law == "auto" else (law,)
    stage("pooling: drift law choice over the dies")
    drift = DriftFitter(law=law, options=options)._from_results(results, laws)
    if not drift.per_cell_["flag"].eq("ok").any():
        reasons = drift.per_cell_["flag_reason"].value_counts().head(3).to_dict()
        raise FitError(
            f"no cell could be fitted: all {len(drift.per_cell_)} pulse train(s) are flagged (most common "
            f"reasons: {reasons}). Check the data (too few pulses? cells never formed?)."
        )
    chosen = drift.law_
    cells = drift.per_cell_
    notes = []
    for r in results:
        notes.extend(r.messages)

    # noise, D2D laws, correlations, C2C, the RTN amplitude law: independent parts, each with its own
    # seed (from random_state and its name), run on the fit's workers when it has some
    run = workers.run if workers is not None else run_here  # (Workers.run runs here without workers)
    stage(f"pooling: noise laws (pink, RTN), D2D laws, correlations and C2C ({bootstrap} bootstrap replicates"
          + (", on the workers)" if workers is not None and workers.parallel else ")"))
    noise = NoiseFitter(bootstrap=bootstrap, random_state=random_state)
    noise_parts = noise.parts(drift)
    # the amplitudes of the trains that show RTN, as the pooled RTN part gives them (that part, which measures
    # the p_down detection factor, runs with the others)
    amps = shown_amplitudes(drift.rtn_stats_)
    params = list(get_law(chosen).params) + ["r0"]
    law_rows = d2d_rows(cells, chosen, max_masked)
    d2d = D2DFitter(params, bootstrap=bootstrap, random_state=random_state, fallback=True)
    d2d_parts = d2d.parts(law_rows)
    # the longest parts first (measured on the paper preset: r0's law, then the drift parameters'), so that
    # the workers finish together
    parts = {k: d2d_parts.pop(k) for k in ("d2d/r0", *(f"d2d/{p}" for p in params)) if k in d2d_parts}
    parts.update({"d2d/correlation": d2d_parts.pop("d2d/correlation"), **noise_parts})
    if amps.size >= 5:  # observed above a detection limit: fitted with that window, reported untruncated
        parts["d2d/rtn_amplitude"] = (_fit_parameter_part, ("rtn_amplitude", amps), dict(
            families=("uniform",) + CANDIDATE_FAMILIES[1:], truncate=False, window=(float(amps.min()), np.inf),
            bootstrap=bootstrap, rng=part_seed(random_state, "d2d/rtn_amplitude")))
    parts.update(d2d_parts)
    pooled = run(parts)
    noise.collect(pooled)
    pink, rtn = noise.pink_, noise.rtn_
    d2d.collect(pooled)
    notes.extend(d2d.notes_)
    fits, laws_used, cell_tab = d2d.fits_, d2d.laws_, d2d.cells_
    amp_fit = pooled.get("d2d/rtn_amplitude")
    if isinstance(amp_fit, FitError):
        notes.append(f"RTN amplitude: {amp_fit}")
        amp_fit = None
    if amp_fit is not None:
        amp_law = amp_fit.law
    elif amps.size:
        amp_law = ParameterLaw("uniform", {"loc": 0.0, "scale": float(amps.max())}, None)
    else:
        amp_law = ParameterLaw("uniform", {"loc": 0.0, "scale": 1e-6}, None)

    # the device model
    corr = d2d.correlation_
    model = DeviceModel(
        law=chosen,
        d2d={**{p: laws_used[p] for p in params}, "rtn_amplitude": amp_law},
        pink=pink.pink,
        rtn=rtn.telegraph,
        correlation_names=list(corr["names"]),
        correlation=np.asarray(corr["copula"]),
        c2c={p: c["law"] for p, c in d2d.c2c_.items() if c.get("significant")},
        meta={"source": "hfox_fit.fitting.fit_campaign", "hfox_fit_version": __version__,
              "n_trains": int(len(cells)), "n_trains_fitted": int(cells["flag"].eq("ok").sum())},
    )

    # summary
    dev = _device_flags(cells)
    flagged = {f: int((dev["flag"] == f).sum()) for f in FLAG_NAMES}
    train_flags = {f: int((cells["flag"] == f).sum()) for f in FLAG_NAMES}
    d2d_summary = {}
    for p in params:
        f = fits.get(p)
        if f is not None:
            d2d_summary[p] = f.to_dict()
        else:
            lw = laws_used[p]
            d2d_summary[p] = {**lw.to_dict(), "median": lw.median(), "median_ci90": None, "ks": None,
                              "note": next((n for n in notes if n.startswith(f"D2D {p}:")), "fallback law")}
    if "t_star" in params and "t_star_censored" in cells:
        d2d_summary["t_star"]["n_censored_trains"] = int(cells["t_star_censored"].fillna(False).astype(bool).sum())
    amp_summary = {"median": amp_law.median(), "median_ci90": amp_fit.median_ci90 if amp_fit else None,
                   "family": amp_law.family, "params": amp_law.params, "bounds": None,
                   "params_stderr": amp_fit.to_dict()["params_stderr"] if amp_fit else {},
                   "params_ci90": dict(amp_fit.params_ci90) if amp_fit else {},
                   "n_cells": int(amps.size), "detection_limit": rtn.detection_limit,
                   "note": ("fitted to the amplitudes of cells showing RTN, above the smallest one seen "
                            "(detection limit); smaller amplitudes are extrapolated by the law")}
    if amp_fit is None:
        amp_summary["note"] = ("fewer than 5 cells show RTN: the law is uniform(0, max amplitude) without an "
                               "interval" if amps.size else "no RTN observed: amplitude law is a placeholder")
    summary = {
        "devices": {"total": int(len(dev)), "fitted": int(((dev["flag"] == "ok") & dev["any_ok"]).sum()),
                    "flagged": flagged},
        "trains": {"total": int(len(cells)), "fitted": int(cells["flag"].eq("ok").sum()), "flagged": train_flags},
        "drift": {"law": chosen, "criterion": "aic", "scores": drift.scores_, "laws_fitted": list(laws),
                  "note": ("per-train quasi-likelihood AIC/BIC (-2 log L over the noise's long-run variance "
                           "ratio kappa) summed over the trains every law fitted"),
                  "lmfit_check": _lmfit_check(results, chosen)},
        "d2d": d2d_summary,
        "correlation": {k: corr[k] for k in ("names", "spearman", "copula", "copula_stderr", "copula_ci90",
                                             "spearman_stderr", "spearman_ci90", "n_pairs", "n_censored",
                                             "copula_error_shift", "reliability") if k in corr} | {
            "note": copula_note(corr["names"], corr.get("reliability"))},
        "c2c": {p: {k: v for k, v in c.items() if k != "law"} | ({"family": "norm", "params": c["law"].params}
                                                                 if "law" in c else {})
                for p, c in d2d.c2c_.items()},
        "pink": {"std": pink.std, "std_stderr": pink.std_stderr, "std_ci90": pink.std_ci90,
                 "exponent": pink.exponent, "exponent_stderr": pink.exponent_stderr,
                 "exponent_ci90": pink.exponent_ci90, "white_std": pink.white_std,
                 "white_std_stderr": pink.white_std_stderr, "white_std_ci90": pink.white_std_ci90,
                 "taps": pink.taps, "n_segments": pink.n_segments,
                 "note": ("std of the pink term in w = ln(R/R0) once its 15-pulse history is full; exponent of "
                          "S(f) ~ f^-exponent; white_std is the read noise; intervals: bootstrap over cells")},
        "rtn": {"p_up": rtn.p_up, "p_up_stderr": rtn.p_up_stderr, "p_up_ci90": rtn.p_up_ci90,
                "p_down": rtn.p_down, "p_down_stderr": rtn.p_down_stderr, "p_down_ci90": rtn.p_down_ci90,
                "amplitude": amp_summary, "n_trains": rtn.n_cells, "n_showing": rtn.n_showing,
                "note": rtn.note or "per-pulse probabilities; intervals: bootstrap over trains"},
        "notes": notes,
    }
    add_conditions(summary, model, law_rows, conditions, params, laws_used, bootstrap, random_state,
                   noise_source=drift)
    add_wafers(summary, law_rows, params, laws_used, bootstrap, random_state, stage)
    summary = json_safe(summary)

    # arrays for validation plots
    stage("pooling: summary and validation arrays")
    traces = np.concatenate([r.traces for r in results if r.traces.size], axis=0) if any(
        r.traces.size for r in results) else np.zeros((0, 0))
    arrays = {
        "spectrum_freq": pink.freqs, "spectrum_measured": pink.measured, "spectrum_fitted": pink.fitted,
    }
    if traces.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(traces, _QUANTILES, axis=0)
        arrays.update({"w_pulse": np.arange(1, traces.shape[1] + 1), "w_quantile_levels": np.array(_QUANTILES),
                       "w_quantiles": q, "w_traces": traces})
    for p in params:
        arrays[f"d2d_values_{p}"] = cell_tab[p].to_numpy(float)
    arrays["rtn_amplitudes"] = amps
    offset = results[0].offset if results[0].offset is not None else np.zeros(max(traces.shape[1], 1))
    law_fits = _median_curve_fits(traces, offset) if traces.size else {}
    return CampaignResult(cells, summary, model, arrays, law_fits=law_fits, drift=drift, noise=noise, d2d=d2d)



#: The name of :class:`CampaignResult` before 0.2 (kept for one release).
CampaignFit = CampaignResult

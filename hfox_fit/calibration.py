"""Population intervals calibrated by simulation: the fit run again on wafers simulated from its own model.

The intervals of :func:`~hfox_fit.fitting.fit_campaign` come from a bootstrap over
cells of the fitted per-cell values. That bootstrap sees the sampling of cells and the
per-cell errors as they are, but not what the per-cell fit does to the population as a
whole: the cells whose break is seen are a selection (``m2`` and its copula pairs), an
exponential law's edge is set by the few lowest cells and their errors (its ``loc``),
the deconvolution leans on the stderrs. Over 40 synthetic wafers per preset those
intervals cover 47-95 % where 90 % is asked (``benchmarks/bench_coverage.py``).

:func:`calibrate` measures these effects on the campaign's own design: it simulates
``replicates`` wafers from the fitted :class:`~hfox_fit.model.DeviceModel` (the same
pulses per train and trains per cell (up to 4), up to ``max_devices`` cells, the read noise the
fit measured, no broken cells), fits each as the campaign was fitted (its drift law, no
bootstrap) and compares every population quantity with the model's own value. For each
quantity it reports

* ``bias``: the mean of the replicates' estimates less the model's value, and its
  standard error ``bias_stderr`` (their spread over ``sqrt(N)``);
* ``sd``: their standard deviation, scaled to the campaign's number of cells
  (``sqrt(n_sim / n)``: the spread of a population estimate goes as one over the
  root of the cells it is made of); a copula correlation's is never below the spread that
  sampling its cell pairs alone gives (``(1 - rho^2) / sqrt(n_pairs - 3)``), which the
  replicates can fall short of (the row's note says when);
* the calibrated 90 % interval: ``estimate +- t(0.95, N - 1) sd`` (the Student quantile
  for the N replicates that measured the spread); where the bias exceeds
  :data:`BIAS_RESOLVED` (2) of its standard errors (``bias_resolved``), the interval
  reaches out by it on the side where the truth lies (and ``sd`` grows by
  ``sqrt(1 + 1 / N)`` for the bias's own noise). A bias larger than the spread is said in
  the row's note: the interval then rests on the bias being the same at the truth. The estimate is not moved: where the
  fitted model is a poor stand-in for the truth (an RTN amplitude law of another
  family, an ``m2`` law fitted on a selection) the simulated bias can have the wrong
  size, and an interval that only widens keeps at least the coverage it had.

This is a parametric bootstrap of the whole fit (cells, per-cell fits, breaks seen or
not, the family chosen): its intervals are as good as the fitted model is a
description of the wafer; the campaign's broken cells, ADC step and fit options other
than the drift law are not simulated, nor its pulse conditions or wafers one by one: a
campaign that pools several is simulated as one population drawn from its pooled laws,
and the calibration says so (:attr:`Calibration.pooled`, the summary's note and the
printed summary). Measured over 40 synthetic wafers per preset in
``benchmarks/bench_coverage.py --calibrate N`` and the slow coverage test.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ._progress import Progress
from .exceptions import FitError
from .fitting import fit_campaign
from .fitting._executor import Workers
from .fitting._families import _POSITIVE
from .model import DeviceModel
from .synth import MeasurementEffects, make_wafer

__all__ = ["Calibration", "calibrate", "population_quantities"]


def _bench(summary: dict) -> MeasurementEffects:
    """The bench of the simulated wafers: the read noise the fit measured (``pink.white_std``, the white part of
    ``w``: a relative spread of the read current), no ADC step, no failed reads, no broken cells."""
    white = (summary.get("pink") or {}).get("white_std")
    white = float(white) if white is not None and np.isfinite(white) and white > 0 else 0.0
    return MeasurementEffects(read_noise=white, adc_step=0.0, failed_read=0.0, stuck=0.0, abrupt=0.0, open=0.0)


#: Fewest replicates that give a calibrated interval (the others report their bias and sd only).
MIN_REPLICATES = 5
#: Replicates of ``hfox-fit fit``, ``run`` and ``demo`` unless ``--calibrate N`` says otherwise (0: none).
DEFAULT_REPLICATES = 20
#: A bias widens the interval when it exceeds this many of its standard errors over the replicates; a smaller
#: one the replicates cannot tell from 0.
BIAS_RESOLVED = 2.0


def population_quantities(summary: dict) -> dict:
    """``{name: value}`` of a fit's population quantities, named as in ``benchmarks/bench_coverage.py``:
    ``median <p>``, ``<p>.<family param>`` (with the family, ``<p>.family``), ``copula <a>~<b>``,
    ``pink std``, ``rtn p_up``, ``rtn p_down``."""
    return {name: value for name, (value, _) in _population(summary).items()}


def _population(summary: dict) -> dict:
    """``{name: (value, the fit's own 90 % interval or None)}`` of :func:`population_quantities`."""
    out = {}
    for p, d in (summary.get("d2d") or {}).items():
        out[f"median {p}"] = (d.get("median"), d.get("median_ci90"))
        out[f"{p}.family"] = (d.get("family"), None)
        params_ci = d.get("params_ci90") or {}
        for k, v in (d.get("params") or {}).items():
            out[f"{p}.{k}"] = (v, params_ci.get(k))
    corr = summary.get("correlation") or {}
    cop, cop_ci = corr.get("copula"), corr.get("copula_ci90")
    for name, i, j in _copula_pairs(corr):
        out[name] = (None if cop is None else cop[i][j], None if cop_ci is None else cop_ci[i][j])
    pink, rtn = summary.get("pink") or {}, summary.get("rtn") or {}
    out["pink std"] = (pink.get("std"), pink.get("std_ci90"))
    for k in ("p_up", "p_down"):
        out[f"rtn {k}"] = (rtn.get(k), rtn.get(k + "_ci90"))
    return out


def _model_values(model: DeviceModel, names) -> dict:
    """The model's own value of each population quantity (the truth of the wafers simulated from it)."""
    out = {}
    corr_names = list(model.correlation_names)
    for p, law in model.d2d.items():
        out[f"median {p}"] = float(law.median())
        out[f"{p}.family"] = law.family
        for k, v in law.params.items():
            out[f"{p}.{k}"] = float(v)
    for name in names:
        if name.startswith("copula "):
            a, b = name[len("copula "):].split("~")
            out[name] = (float(np.asarray(model.correlation)[corr_names.index(a), corr_names.index(b)])
                         if a in corr_names and b in corr_names else 0.0)
    out["pink std"] = float(model.pink.std)
    out["rtn p_up"], out["rtn p_down"] = float(model.rtn.p_up), float(model.rtn.p_down)
    return out


def _family_of(name: str) -> str | None:
    """``"m1"`` for a family parameter ``"m1.loc"``; None for the other quantities."""
    if name.startswith(("median ", "copula ", "pink ", "rtn ")) or "." not in name or name.endswith(".family"):
        return None
    return name.split(".", 1)[0]


def _domain(name: str) -> tuple[float, float]:
    """The values ``name`` can take where they are bounded: a copula correlation in [-1, 1], a telegraph
    probability per pulse in [0, 1], a std and a family's scale and shape (``s``, ``a``, ``c``) above 0."""
    if name.startswith("copula "):
        return -1.0, 1.0
    if name in ("rtn p_up", "rtn p_down"):
        return 0.0, 1.0
    if name == "pink std" or (_family_of(name) is not None and name.split(".", 1)[1] in ("scale", "s", "a", "c")):
        return 0.0, np.inf
    return -np.inf, np.inf


def _fixed_by_family(name: str, family) -> bool:
    """Whether ``name`` (``"t_star.loc"``) is a parameter its family holds fixed: the fit holds the ``loc`` of
    the positive families (and ``uniform``) at 0."""
    return name.endswith(".loc") and family in _POSITIVE


class Calibration:
    """What :func:`calibrate` measured: one row per population quantity (:attr:`table`).

    Attributes
    ----------
    table : pandas.DataFrame
        ``quantity``, ``estimate`` (the campaign's), ``ci90_lo``/``ci90_hi`` (its bootstrap
        interval, where it has one), ``model_value`` (the simulated wafers' truth),
        ``bias``, ``sd``, ``n_replicates`` (that gave the quantity: a family's parameters
        only where a replicate chose the model's family), ``bias_stderr``, ``bias_resolved``,
        ``calibrated_lo``/``calibrated_hi`` and ``note``.
    replicates, devices, pulses, cycles, seconds, failed : int, int, int, int, float, list
        The design of the simulated wafers, the time taken and the replicates whose fit failed (why).
    pooled : str or None
        What the campaign's pooled laws pool that the simulated wafers do not (``"9 pulse conditions"``,
        ``"3 wafers"``), or None for a campaign of one condition and one wafer.
    """

    def __init__(self, table, *, replicates, devices, pulses, cycles, seconds, failed, n_cells, pooled=None):
        self.table = table
        self.replicates, self.devices, self.pulses, self.cycles = replicates, devices, pulses, cycles
        self.seconds, self.failed, self.n_cells = seconds, failed, n_cells
        self.pooled = pooled

    def interval(self, quantity: str):
        """The calibrated 90 % interval of ``quantity`` (``(lo, hi)``; None where it has none)."""
        row = self.table[self.table["quantity"] == quantity]
        if row.empty or not np.isfinite(row["calibrated_lo"].iloc[0]):
            return None
        return float(row["calibrated_lo"].iloc[0]), float(row["calibrated_hi"].iloc[0])

    def to_dict(self) -> dict:
        """The summary's ``calibration`` block (JSON-ready)."""
        rows = {}
        for r in self.table.itertuples(index=False):
            fin = np.isfinite(r.calibrated_lo)
            rows[r.quantity] = {
                "estimate": _num(r.estimate), "model_value": _num(r.model_value), "bias": _num(r.bias),
                "bias_stderr": _num(r.bias_stderr), "sd": _num(r.sd), "n_replicates": int(r.n_replicates),
                "bias_resolved": bool(r.bias_resolved),
                "ci90": [_num(r.calibrated_lo), _num(r.calibrated_hi)] if fin else None, "note": r.note,
            }
        return {"replicates": self.replicates, "devices": self.devices, "pulses": self.pulses,
                "cycles": self.cycles, "n_cells": self.n_cells, "pooled": self.pooled,
                "seconds": round(self.seconds, 2),
                "failed": list(self.failed), "quantities": rows,
                "note": ("a parametric bootstrap of the whole fit: wafers simulated from the fitted model with the "
                         "campaign's design, fitted again; the 90 % interval spans the replicates' spread (scaled "
                         "to the campaign's cells; a copula correlation's never below what sampling its cell pairs "
                         f"alone gives) about the estimate, and reaches out by the bias where the bias exceeds {BIAS_RESOLVED:g} of its "
                         "standard errors, on the side where the truth lies; clipped to the values the quantity can "
                         "take" + _pooled_note(self.pooled))}

    def __repr__(self) -> str:
        return (f"Calibration({self.replicates} replicates of {self.devices} cells x {self.pulses} pulses, "
                f"{len(self.table)} quantities, {self.seconds:.1f} s)")


def _num(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _design(result) -> tuple[int, int, int]:
    """Cells, pulses per train and trains per cell of a fitted campaign (its unflagged trains)."""
    cells = result.cells
    ok = cells[cells["flag"].eq("ok")] if "flag" in cells else cells
    if ok.empty:
        raise FitError("calibrate: the fit has no unflagged train to take the design from.")
    keys = [c for c in ("wafer", "die", "device") if c in ok]
    per_cell = ok.groupby(keys, sort=False).size()
    pulses = int(np.median(ok["last_pulse"].to_numpy(float))) if "last_pulse" in ok else 1000
    return int(len(per_cell)), max(pulses, 2), int(max(1, np.median(per_cell.to_numpy())))


def _replicate(model: DeviceModel, devices: int, pulses: int, cycles: int, seed: int, bench, law: str):
    """Simulate one wafer from ``model`` and fit it as the campaign was: ``(quantities, None)`` or ``(None, why)``
    (a module-level function: it runs in worker processes)."""
    wafer = make_wafer(model, devices=devices, pulses=pulses, cycles=cycles, seed=seed, effects=bench)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_campaign(wafer.dies, law=law, bootstrap=0, progress=False)
        return population_quantities(fit.summary()), None
    except FitError as err:
        return None, str(err).splitlines()[0]


def calibrate(result, *, replicates: int = DEFAULT_REPLICATES, max_devices: int = 1024, seed=None,
              progress: bool = False, law: str | None = None, jobs: int = 1, scheduler: str | None = None
              ) -> Calibration:
    """Calibrate a campaign fit's population intervals by fitting wafers simulated from its model.

    Parameters
    ----------
    result : CampaignResult
        A fit (:func:`~hfox_fit.fitting.fit_campaign`, or loaded from a store); its
        ``model`` is simulated and its ``summary()`` is what is calibrated.
    replicates : int, default=20
        Wafers simulated and fitted (each costs about one fit of ``max_devices`` cells).
    max_devices : int, default=1024
        Cells per simulated wafer at most (the campaign's number of unflagged cells when smaller);
        the spread is scaled to the campaign's cells.
    seed : int, optional
    progress : bool, default=False
        A progress bar over the replicates (on stderr).
    law : str, optional
        The drift law to fit the replicates with (default: the campaign's).
    jobs : int, default=1
        Local worker processes that fit the replicates (each wafer on one).
    scheduler : str, optional
        A Dask scheduler (``"local:N"`` or ``"tcp://HOST:PORT"``) to fit them on instead.
        Each replicate has its own seed, so the numbers are the same wherever it runs.

    Returns
    -------
    Calibration
    """
    if replicates < 2:
        raise ValueError(f"calibrate: replicates must be >= 2 (a spread needs two); got {replicates}.")
    if max_devices < 16:
        raise ValueError(f"calibrate: max_devices must be >= 16; got {max_devices}.")
    if int(jobs) < 1:
        raise ValueError(f"calibrate: jobs must be >= 1; got {jobs}.")
    model = result.model
    if not isinstance(model, DeviceModel) or not model.d2d:
        raise FitError("calibrate: the fit holds no population model to simulate (no D2D laws).")
    n_cells, pulses, cycles = _design(result)
    devices = min(n_cells, max_devices)
    cycles = min(cycles, 4)
    law = law or result.law or "two_slope"
    own = _population(result.summary())
    estimates = {name: value for name, (value, _) in own.items()}
    truth = _model_values(model, estimates)
    seeds = [int(ss.generate_state(1)[0]) for ss in np.random.SeedSequence(seed).spawn(replicates)]
    bench = _bench(result.summary())
    parts = {k: (_replicate, (model, devices, pulses, cycles, s, bench, law), {}) for k, s in enumerate(seeds)}
    t0 = time.perf_counter()
    with Progress("calibrate", replicates, "wafer", enabled=progress) as bar, Workers(jobs, scheduler) as workers:
        done = workers.run(parts, on_done=lambda _: bar.advance(1))
    got = [q for q, _ in done.values() if q is not None]
    failed = [f"replicate {k}: {why}" for k, (_, why) in done.items() if why is not None]
    seconds = time.perf_counter() - t0
    table = _table(estimates, truth, got, {name: ci for name, (_, ci) in own.items()},
                   scale=np.sqrt(devices / n_cells), floors=_sampling_floors(result.summary()))
    return Calibration(table, replicates=replicates, devices=devices, pulses=pulses, cycles=cycles,
                       seconds=seconds, failed=failed, n_cells=n_cells, pooled=_pooled_design(result.summary()))


def _pooled_design(summary: dict) -> str | None:
    """What a campaign's pooled laws pool that the simulated wafers do not (``"9 pulse conditions"``), or None."""
    parts = [f"{len(summary[k])} {what}" for k, what in (("conditions", "pulse conditions"), ("wafers", "wafers"))
             if len(summary.get(k) or ()) > 1]
    return " and ".join(parts) or None


def _pooled_note(pooled: str | None) -> str:
    """The calibration note's words on a campaign that pools conditions or wafers (empty for one of each)."""
    if not pooled:
        return ""
    return (f"; the campaign pools {pooled}, and each simulated wafer is one population drawn from the pooled laws, "
            f"not the {pooled} one by one: the intervals are those of a campaign of one condition and one wafer "
            "with these laws, and the per-condition and per-wafer medians are not calibrated")


def _sampling_floors(summary: dict) -> dict:
    """``{copula <a>~<b>: (1 - rho^2) / sqrt(n_pairs - 3)}``: the spread that sampling a pair's cells alone gives.

    A Gaussian-copula (normal scores) correlation of ``n`` cells scatters by at least this much
    whatever the fit does (the Pearson correlation's spread under normality, with Fisher's ``n - 3``).
    Replicates can fall short of it: wafer_b's ``c1~r0`` (about 300 pairs, floor 0.058) scattered by
    0.056 over the replicates of 36 wafers, where the wafers' own estimates scattered by 0.070 over 120,
    and its calibrated interval covered 72.5-85 % instead of 90 %. Pairs with fewer than 5 cells: none.
    """
    corr = summary.get("correlation") or {}
    cop, n_pairs = corr.get("copula"), corr.get("n_pairs")
    out = {}
    if cop is None or n_pairs is None:
        return out
    for name, i, j in _copula_pairs(corr):
        rho, n = cop[i][j], n_pairs[i][j]
        if rho is not None and n is not None and np.isfinite(rho) and n >= 5:
            out[name] = float((1.0 - rho**2) / np.sqrt(n - 3.0))
    return out


def _copula_pairs(corr: dict):
    """``(copula <a>~<b>, i, j)`` for each pair ``i < j`` of a summary's correlation ``names``."""
    names = corr.get("names") or []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            yield f"copula {names[i]}~{names[j]}", i, j


def _table(estimates: dict, truth: dict, got: list, own_ci: dict, scale: float, floors=None) -> pd.DataFrame:
    """One row per quantity of ``estimates`` from the replicates' quantities ``got`` against ``truth``;
    ``own_ci``: the fit's own intervals by name; ``floors``: the least spread of a quantity by name
    (:func:`_sampling_floors`), which the interval's ``sd`` is never below."""
    floors = floors or {}
    rows = []
    for name, est in estimates.items():
        if name.endswith(".family") or est is None or name not in truth:
            continue
        p = _family_of(name)
        same = [g for g in got if p is None or (g.get(f"{p}.family") == truth.get(f"{p}.family"))]
        vals = np.array([g.get(name) for g in same if g.get(name) is not None], float)
        vals = vals[np.isfinite(vals)]
        n = len(vals)
        bias = bias_se = sd = lo = hi = np.nan
        resolved = False
        notes = []
        if p is not None and estimates.get(f"{p}.family") != truth.get(f"{p}.family"):
            notes.append("the fit's family differs from the model's")
        ci = own_ci.get(name)
        ci = (np.nan, np.nan) if ci is None else tuple(np.nan if v is None else float(v) for v in ci)
        if _fixed_by_family(name, estimates.get(f"{p}.family")) or (
                n >= 2 and np.all(vals == truth[name]) and float(est) == truth[name]):
            notes, n = ["held fixed by the family (not fitted)"], 0
        elif n >= 2:
            bias = float(vals.mean() - truth[name])
            bias_se = float(vals.std(ddof=1) / np.sqrt(n))  # (at the simulated cells: the bias does not scale)
            sd = float(vals.std(ddof=1) * scale)
            resolved = abs(bias) > BIAS_RESOLVED * bias_se
            floor = floors.get(name)
            if floor is not None and sd < floor:
                notes.append(f"spread {sd:.3g} over the replicates, below the {floor:.3g} that sampling the "
                             "campaign's cell pairs alone gives: that one is used")
                sd = floor
        if n >= MIN_REPLICATES:
            half = stats.t.ppf(0.95, n - 1) * sd  # (Student: the spread is measured on n replicates)
            lo, hi = float(est) - half, float(est) + half
            if resolved:  # reach out by the bias on the side where the truth lies, and for the bias's own noise
                half *= np.sqrt(1.0 + 1.0 / n)
                lo, hi = float(est) - max(bias, 0.0) - half, float(est) - min(bias, 0.0) + half
                if abs(bias) > sd:
                    notes.append("bias larger than the spread: the interval holds if the bias at the truth is "
                                 "the one at the fitted model, which a strongly biased estimate need not be")
            else:
                notes.append(f"bias within {BIAS_RESOLVED:g} of its standard error over the replicates")
            low, high = _domain(name)  # (clipped where it reaches past the values the quantity can take)
            if lo < low or hi > high:
                if not name.startswith("copula "):
                    notes.append(f"clipped to the values it can take, [{low:g}, {high:g}]")
                lo, hi = max(lo, low), min(hi, high)
        elif n or not notes:
            notes.append(f"{n} replicate(s) gave it (fewer than {MIN_REPLICATES}): no interval")
        rows.append({"quantity": name, "estimate": float(est), "ci90_lo": ci[0], "ci90_hi": ci[1],
                     "model_value": float(truth[name]), "bias": bias, "bias_stderr": bias_se, "sd": sd,
                     "n_replicates": n, "bias_resolved": bool(resolved),
                     "calibrated_lo": lo, "calibrated_hi": hi, "note": "; ".join(notes)})
    return pd.DataFrame(rows)

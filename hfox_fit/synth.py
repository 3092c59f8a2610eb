"""Virtual wafers: measurements simulated from a known DeviceModel.

:func:`make_wafer` returns the reads as :class:`~hfox_fit.schema.DieData` plus
the per-cell ground truth; writing them as raw files of each format is the job
of :func:`write_wafer` (CLI ``hfox-fit synth``). The measurement effects are
those of a real bench: read noise on the current, an ADC step, failed reads
(NaN) and a few broken cells:

* ``stuck``: stuck at LRS, the pulses do nothing: no drift, and by default no pink
  noise and no RTN either (only the read noise); with
  ``MeasurementEffects(stuck_noise=True)`` a stuck cell keeps its own pink noise
  and RTN, as a real cell whose filament no longer moves can;
* ``abrupt``: a full RESET at one pulse, the resistance jumps to the HRS and stays;
* ``open``: never formed, megaohms from the first read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ._atomic import atomic_path
from ._json import json_safe
from .exceptions import FitError, FormatError
from .model import ConditionLaw, DeviceModel, preset_model
from .schema import DieData, dies_to_table

__all__ = [
    "MeasurementEffects",
    "SynthWafer",
    "make_wafer",
    "make_condition_campaign",
    "make_wafer_campaign",
    "W2W_PARAMS",
    "DEFAULT_CONDITION_SLOPES",
    "DEFAULT_V_PULSES",
    "DEFAULT_PULSE_WIDTHS",
    "write_wafer",
    "effects_preset",
    "EFFECT_PRESETS",
    "TRUTH_NAME",
    "FLAGS",
    "CELLS_PER_ARRAY",
    "ARRAYS_PER_DIE",
]

#: Cell flags, in the order the fit and the truth use them.
FLAGS = ("ok", "stuck", "abrupt", "open")
#: Geometry of the virtual chip: arrays of ROWS x COLS cells, ARRAYS_PER_DIE per die.
ROWS = COLS = 16
CELLS_PER_ARRAY = ROWS * COLS
ARRAYS_PER_DIE = 4


@dataclass
class MeasurementEffects:
    """What the bench adds on top of the device model.

    Attributes
    ----------
    read_noise : float
        Relative standard deviation of the read current (Gaussian).
    adc_step : float
        Current quantisation step in A (0 for none); reads never fall below one step.
    failed_read : float
        Probability that a read fails (stored as NaN).
    stuck, abrupt, open : float
        Fractions of broken cells of each kind.
    v_read, v_pulse, pulse_width : float
        Measurement conditions (V, V, s).
    stuck_noise : bool, default=False
        False: a stuck cell reads its R0 at every pulse (read noise only).
        True: it keeps the cell's own pink noise and RTN and loses only the
        drift (``w = w_pink + w_rtn``: the pink term's offset still builds up
        over the first pulses after SET). Either way no random number is drawn
        for it, so the rest of the wafer is the same.
    """

    read_noise: float = 2e-3
    adc_step: float = 1e-10
    failed_read: float = 5e-4
    stuck: float = 0.01
    abrupt: float = 0.01
    open: float = 0.005
    v_read: float = 0.1
    v_pulse: float = 1.25
    pulse_width: float = 1e-6
    stuck_noise: bool = False


@dataclass
class SynthWafer:
    """A simulated wafer: its reads per die, the ground truth, and the model behind it."""

    dies: list
    truth: pd.DataFrame  # one row per (cell, cycle): ids, flag, every model parameter
    model: DeviceModel
    effects: MeasurementEffects
    meta: dict = field(default_factory=dict)
    #: the true condition law of a campaign over several pulse conditions (``model`` is its reference)
    condition_law: ConditionLaw | None = None

    def truth_json(self) -> dict:
        """Ground truth as JSON-safe data (written beside the raw files)."""
        out = {
            "model": self.model.to_dict(),
            "effects": self.effects.__dict__.copy(),
            "meta": dict(self.meta),
            "cells": self.truth.to_dict(orient="records"),
        }
        if self.condition_law is not None:
            out["condition_law"] = self.condition_law.to_dict()
        return out


def device_name(index: int) -> tuple[str, int, int]:
    """Array name, row and column of the ``index``-th cell of a die."""
    a, k = divmod(index, CELLS_PER_ARRAY)
    r, c = divmod(k, COLS)
    return f"A{a + 1}", r, c


def make_wafer(preset="paper", *, devices: int = 1024, pulses: int = 1000, cycles: int = 1,
               seed=None, wafer: str = "W01", effects: MeasurementEffects | None = None) -> SynthWafer:
    """Simulate a wafer of ``devices`` cells measured over ``cycles`` trains of ``pulses`` pulses.

    Parameters
    ----------
    preset : str or DeviceModel, default="paper"
        The ground-truth model (a name of :data:`hfox_fit.model.MODEL_PRESETS`).
    devices : int
        Cells on the wafer; dies hold up to ``ARRAYS_PER_DIE * CELLS_PER_ARRAY`` cells.
    pulses, cycles : int
        Pulses per train (reads at pulses 0..pulses) and trains per cell.
    seed : int or None
    wafer : str
    effects : MeasurementEffects, optional

    Returns
    -------
    SynthWafer
    """
    if devices < 1 or pulses < 1 or cycles < 1:
        raise FitError(f"devices, pulses and cycles must be >= 1; got {devices}, {pulses}, {cycles}.")
    model = preset if isinstance(preset, DeviceModel) else preset_model(preset)
    effects = effects or MeasurementEffects()
    rng = np.random.default_rng(seed)
    params = model.sample_parameters(devices, rng)
    w, cyc = model.simulate(devices, pulses, n_cycles=cycles, rng=rng, params=params)
    r0 = cyc["r0"][..., None]
    resistance = r0 * np.exp(w)

    # Broken cells.
    flag = np.zeros(devices, dtype="<U6")
    flag[:] = "ok"
    u = rng.uniform(size=devices)
    edges = np.cumsum([effects.stuck, effects.abrupt, effects.open])
    flag[u < edges[2]] = "open"
    flag[u < edges[1]] = "abrupt"
    flag[u < edges[0]] = "stuck"
    stuck = flag == "stuck"
    if effects.stuck_noise:
        # the cell's own noise (pink + RTN) without its drift: w - w_mean (no random draw)
        t = np.arange(pulses + 1)
        drift = model.mean_w(t, {k: v[stuck][..., None] for k, v in cyc.items()})
        resistance[stuck] = r0[stuck] * np.exp(w[stuck] - drift)
    else:
        resistance[stuck] = r0[stuck]
    abrupt = np.nonzero(flag == "abrupt")[0]
    jump_at = np.zeros((devices, cycles), dtype=int)
    for i in abrupt:
        jump_at[i] = rng.integers(5, pulses + 1, size=cycles) if pulses >= 5 else pulses
        hrs = np.exp(rng.uniform(np.log(5e4), np.log(5e5), size=cycles))
        for c in range(cycles):
            resistance[i, c, jump_at[i, c]:] = hrs[c] * np.exp(0.02 * rng.standard_normal(pulses + 1 - jump_at[i, c]))
    opened = flag == "open"
    n_open = int(opened.sum())
    if n_open:
        base = np.exp(rng.uniform(np.log(2e6), np.log(2e7), size=(n_open, cycles, 1)))
        resistance[opened] = base * np.exp(0.05 * rng.standard_normal((n_open, cycles, pulses + 1)))

    # The bench: read current with noise and an ADC step, some failed reads.
    current = effects.v_read / resistance
    current = current * (1.0 + effects.read_noise * rng.standard_normal(current.shape))
    if effects.adc_step > 0:
        current = np.maximum(np.round(current / effects.adc_step), 1.0) * effects.adc_step
    measured = effects.v_read / current
    measured[rng.uniform(size=measured.shape) < effects.failed_read] = np.nan

    # Cut into dies.
    per_die = ARRAYS_PER_DIE * CELLS_PER_ARRAY
    dies, rows = [], []
    names = [device_name(i % per_die) for i in range(devices)]
    cycle_ids = np.arange(cycles, dtype="int64")
    for d0 in range(0, devices, per_die):
        idx = np.arange(d0, min(d0 + per_die, devices))
        die = f"D{d0 // per_die + 1:02d}"
        devs = np.array([f"{names[i][0]}/r{names[i][1]:02d}c{names[i][2]:02d}" for i in idx])
        order = np.argsort(devs, kind="stable")  # DieData keeps devices sorted
        idx, devs = idx[order], devs[order]
        shape = (len(idx), cycles)
        dies.append(
            DieData(
                wafer=wafer,
                die=die,
                devices=devs,
                cycles=cycle_ids,
                resistance=measured[idx],
                present=np.ones(measured[idx].shape, bool),
                v_read=np.full(shape, effects.v_read),
                v_pulse=np.full(shape, effects.v_pulse),
                pulse_width=np.full(shape, effects.pulse_width),
                attrs={"die_index": d0 // per_die},
            )
        )
        for j, i in enumerate(idx):
            for c in range(cycles):
                row = {"wafer": wafer, "die": die, "device": devs[j], "cycle": int(c), "flag": str(flag[i])}
                row.update({k: float(v[i, c]) for k, v in cyc.items()})
                row["abrupt_pulse"] = int(jump_at[i, c]) if flag[i] == "abrupt" else None
                rows.append(row)
    truth = pd.DataFrame(rows)
    meta = {"preset": preset if isinstance(preset, str) else "custom", "devices": devices,
            "pulses": pulses, "cycles": cycles, "seed": seed, "wafer": wafer}
    return SynthWafer(dies=dies, truth=truth, model=model, effects=effects, meta=meta)


#: The condition law ``hfox-fit synth --conditions`` draws from by default: per parameter, the
#: slope of ln median against the amplitude (``b_v``, 1/V) and against ln width (``b_w``). A larger
#: or longer pulse drifts faster (m1 up) and breaks earlier (t* down); the others do not move.
DEFAULT_CONDITION_SLOPES = {"m1": {"b_v": 2.0, "b_w": 0.5}, "t_star": {"b_v": -1.5, "b_w": -0.4}}
#: The default grid of ``--conditions``: 3 amplitudes (V) x 3 widths (s), the reference in the middle.
DEFAULT_V_PULSES = (1.15, 1.25, 1.35)
DEFAULT_PULSE_WIDTHS = (0.5e-6, 1e-6, 2e-6)


def make_condition_campaign(preset="paper", slopes=None, *, v_pulses=DEFAULT_V_PULSES,
                            pulse_widths=DEFAULT_PULSE_WIDTHS, v_ref: float | None = None,
                            width_ref: float | None = None, devices: int = 128, pulses: int = 1000,
                            cycles: int = 1, seed=None, wafer: str = "W01",
                            effects: MeasurementEffects | None = None) -> SynthWafer:
    """Simulate a wafer measured at every pulse condition of a grid, from a known condition law.

    Each (amplitude, width) pair of the grid gets its own ``devices`` cells (its own dies,
    numbered on across the conditions), drawn from the reference model with every law of
    ``slopes`` moved to the median the condition law gives there
    (:meth:`hfox_fit.model.ConditionLaw.law_at`). The reads carry their condition in
    ``v_pulse`` and ``pulse_width``; the truth has one row per (cell, cycle) with its
    condition, and :attr:`SynthWafer.condition_law` records the true coefficients.

    Parameters
    ----------
    preset : str or DeviceModel, default="paper"
        The model at the reference condition.
    slopes : dict, optional
        Parameter -> ``{"b_v": ..., "b_w": ...}`` (default :data:`DEFAULT_CONDITION_SLOPES`).
    v_pulses, pulse_widths : sequence of float
        The grid (V, s); every pair is measured.
    v_ref, width_ref : float, optional
        The reference condition (default: the ``effects``' ``v_pulse`` and ``pulse_width``).
    devices : int, default=128
        Cells per condition.
    pulses, cycles, seed, wafer, effects
        As :func:`make_wafer`.
    """
    base = preset if isinstance(preset, DeviceModel) else preset_model(preset)
    effects = effects or MeasurementEffects()
    v_pulses = [float(v) for v in v_pulses]
    pulse_widths = [float(w) for w in pulse_widths]
    if not v_pulses or not pulse_widths:
        raise FitError("make_condition_campaign: give at least one amplitude and one width.")
    bad = [w for w in pulse_widths if not (np.isfinite(w) and w > 0)] + [v for v in v_pulses if not np.isfinite(v)]
    if bad:
        raise FitError(f"make_condition_campaign: amplitudes must be finite and widths > 0 s; got {bad}.")
    grid = [(v, w) for v in v_pulses for w in pulse_widths]
    if len(set(grid)) < len(grid):
        raise FitError(f"make_condition_campaign: the grid repeats a condition: {grid}.")
    law = ConditionLaw.from_slopes(base, DEFAULT_CONDITION_SLOPES if slopes is None else slopes,
                                   effects.v_pulse if v_ref is None else v_ref,
                                   effects.pulse_width if width_ref is None else width_ref)
    seeds = np.random.SeedSequence(seed).spawn(len(grid))
    dies, truths, n_dies = [], [], 0
    for k, ((v, w), ss) in enumerate(zip(grid, seeds)):
        model = replace(base, d2d={n: law.law_at(n, lw, v, w) for n, lw in base.d2d.items()})
        part = make_wafer(model, devices=devices, pulses=pulses, cycles=cycles, seed=np.random.default_rng(ss),
                          wafer=wafer, effects=replace(effects, v_pulse=v, pulse_width=w))
        rename = {}
        for die in part.dies:
            n_dies += 1
            rename[die.die] = f"D{n_dies:02d}"
            die.die, die.attrs = rename[die.die], {**die.attrs, "die_index": n_dies - 1, "condition": k}
            dies.append(die)
        truth = part.truth.assign(die=part.truth["die"].map(rename), v_pulse=v, pulse_width=w)
        truths.append(truth)
    meta = {"preset": preset if isinstance(preset, str) else "custom", "devices": devices * len(grid),
            "devices_per_condition": devices, "pulses": pulses, "cycles": cycles, "seed": seed, "wafer": wafer,
            "conditions": [{"v_pulse": v, "pulse_width": w} for v, w in grid]}
    return SynthWafer(dies=dies, truth=pd.concat(truths, ignore_index=True), model=base, effects=effects,
                      meta=meta, condition_law=law)


#: The parameters whose medians ``make_wafer_campaign`` shifts from wafer to wafer by default.
W2W_PARAMS = ("m1", "t_star", "r0")


def make_wafer_campaign(preset="paper", *, wafers: int = 2, w2w_sd: float = 0.0, factors=None,
                        params=W2W_PARAMS, devices: int = 512, pulses: int = 1000, cycles: int = 1, seed=None,
                        effects: MeasurementEffects | None = None) -> SynthWafer:
    """Simulate several wafers whose medians move from wafer to wafer (a known W2W spread).

    Wafer ``k`` (named ``W01``, ``W02``, ...) is :func:`make_wafer` of the model with the law
    of every parameter of ``params`` scaled by its own factor (:func:`hfox_fit.model.scaled_law`:
    same family and shape, median times the factor). The factors are either drawn, lognormal
    ``exp(w2w_sd * z)`` with ``z`` standard normal, one per (wafer, parameter), or given:
    ``factors`` is one number per wafer (every parameter of ``params`` alike) or one dict
    ``{parameter: factor}`` per wafer. ``meta["wafers"]`` records each wafer's true factors and
    medians, ``meta["w2w"]`` how they were made; the truth table has every wafer's cells.

    Parameters
    ----------
    preset : str or DeviceModel, default="paper"
    wafers : int, default=2
        Number of wafers (ignored when ``factors`` is given: one wafer per entry).
    w2w_sd : float, default=0.0
        Standard deviation of the log of the drawn factors.
    factors : sequence of float or of dict, optional
    params : sequence of str, default=("m1", "t_star", "r0")
    devices : int, default=512
        Cells per wafer.
    pulses, cycles, seed, effects
        As :func:`make_wafer`.
    """
    from .model import scaled_law

    base = preset if isinstance(preset, DeviceModel) else preset_model(preset)
    params = tuple(params)
    unknown = [p for p in params if p not in base.d2d]
    if unknown:
        raise FitError(f"make_wafer_campaign: the model has no D2D law for {unknown}; it has {sorted(base.d2d)}.")
    if not (np.isfinite(w2w_sd) and w2w_sd >= 0):
        raise FitError(f"make_wafer_campaign: w2w_sd must be >= 0; got {w2w_sd!r}.")
    seeds = np.random.SeedSequence(seed).spawn(2)
    if factors is None:
        if int(wafers) < 1:
            raise FitError(f"make_wafer_campaign: wafers must be >= 1; got {wafers!r}.")
        z = np.random.default_rng(seeds[0]).standard_normal((int(wafers), len(params)))
        table = [dict(zip(params, np.exp(w2w_sd * row).tolist())) for row in z]
    else:
        table = [dict(f) if isinstance(f, dict) else {p: float(f) for p in params} for f in factors]
        if not table:
            raise FitError("make_wafer_campaign: give at least one wafer's factors.")
        for k, f in enumerate(table):
            bad = {p: v for p, v in f.items() if p not in base.d2d or not (np.isfinite(v) and v > 0)}
            if bad:
                raise FitError(f"make_wafer_campaign: wafer {k + 1}'s factors {bad} are not positive factors of "
                               f"parameters of the model ({sorted(base.d2d)}).")
    wafer_seeds = seeds[1].spawn(len(table))
    dies, truths, records = [], [], []
    for k, (f, ss) in enumerate(zip(table, wafer_seeds)):
        name = f"W{k + 1:02d}"
        laws = {p: scaled_law(lw, f[p]) if p in f else lw for p, lw in base.d2d.items()}
        part = make_wafer(replace(base, d2d=laws), devices=devices, pulses=pulses, cycles=cycles,
                          seed=np.random.default_rng(ss), wafer=name, effects=effects)
        dies.extend(part.dies)
        truths.append(part.truth)
        records.append({"wafer": name, "factors": {p: float(v) for p, v in f.items()},
                        "medians": {p: laws[p].median() for p in f}})
    meta = {"preset": preset if isinstance(preset, str) else "custom", "devices": devices * len(table),
            "devices_per_wafer": devices, "pulses": pulses, "cycles": cycles, "seed": seed, "wafer": "wafers",
            "w2w": {"sd": float(w2w_sd) if factors is None else None, "params": list(params),
                    "how": "drawn: exp(sd * z), z standard normal" if factors is None else "given"},
            "wafers": records}
    return SynthWafer(dies=dies, truth=pd.concat(truths, ignore_index=True), model=base,
                      effects=effects or MeasurementEffects(), meta=meta)


#: Named sets of measurement effects (``hfox-fit synth --effects``).
EFFECT_PRESETS = {
    # What make_wafer uses by default: a good bench.
    "bench": MeasurementEffects(),
    # The device model alone: no read noise, no ADC step, no failed reads, no broken cells.
    "clean": MeasurementEffects(read_noise=0.0, adc_step=0.0, failed_read=0.0, stuck=0.0, abrupt=0.0, open=0.0),
    # A poor setup: more read noise, a coarse ADC, 1 % failed reads, 5 % broken cells.
    "noisy": MeasurementEffects(read_noise=1e-2, adc_step=1e-9, failed_read=1e-2, stuck=0.02, abrupt=0.02,
                                open=0.01),
}

#: Name of the ground-truth file :func:`write_wafer` puts beside the raw files
#: (``hfox-fit ingest`` skips files of this name).
TRUTH_NAME = "truth.json"

#: Where each format's writer puts a wafer, relative to the output folder.
_TARGETS = {"tidy": "{wafer}.csv", "hdf5": "{wafer}.h5"}


def effects_preset(name: str) -> MeasurementEffects:
    """Return a fresh copy of the measurement effects preset ``name`` (see :data:`EFFECT_PRESETS`)."""
    try:
        return replace(EFFECT_PRESETS[name])
    except KeyError:
        raise FitError(f"unknown effects preset {name!r}; the presets are {sorted(EFFECT_PRESETS)}.") from None


def write_wafer(wafer: SynthWafer, out_dir, format: str = "bench", *, truth: bool = True, **options) -> list[Path]:
    """Write a simulated wafer as raw files of ``format``, with its ground truth beside them.

    Parameters
    ----------
    wafer : SynthWafer
        What :func:`make_wafer` returned.
    out_dir : str or path-like
        Folder to write to (created if needed). ``bench``, ``b1500`` and
        ``ramps`` write several files into it; ``hdf5`` writes ``<wafer>.h5``
        and ``tidy`` writes ``<wafer>.csv`` (``options["suffix"]=".parquet"``
        for Parquet).
    format : str, default="bench"
        A format of :func:`hfox_fit.parsers.list_formats` that can be written.
    truth : bool, default=True
        Also write :meth:`SynthWafer.truth_json` as ``out_dir / TRUTH_NAME``
        (strict JSON: NaN written as null).
    **options
        Passed to :func:`hfox_fit.parsers.write_measurements`.

    Returns
    -------
    list of pathlib.Path
        The raw files written, then the truth file.
    """
    from .parsers import write_measurements  # parsers sit above synth in the import order

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = dies_to_table(wafer.dies)
    wafer_id = str(wafer.meta.get("wafer", "wafer"))
    if format in _TARGETS:
        target = out / _TARGETS[format].format(wafer=wafer_id)
        suffix = options.pop("suffix", None)
        if suffix:
            if suffix not in (".csv", ".parquet"):
                raise FormatError(f"tidy files end in .csv or .parquet; got suffix {suffix!r}.")
            if format != "tidy":
                raise FormatError(f"option 'suffix' applies to the tidy format only, not {format!r}.")
            target = target.with_suffix(suffix)
    else:
        target = out
    written = [Path(p) for p in write_measurements(table, target, format, **options)]
    if truth:
        written.append(_write_json(out / TRUTH_NAME, wafer.truth_json()))
    return written


def _write_json(path: Path, data) -> Path:
    """Write ``data`` as indented strict JSON, atomically."""
    text = json.dumps(json_safe(data), indent=1, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path

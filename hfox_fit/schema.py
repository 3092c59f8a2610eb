"""The measurement table and its array form.

The measurement table has one row per read (see ``COLUMNS``). Every reader's
output goes through :func:`validate_table`, which reports all problems at once.

For storage and fitting, the reads of one (wafer, die) are held as a
:class:`DieData`: arrays of shape (cells, cycles, pulses), NaN where a read
failed, with a ``present`` mask telling a failed read (a row with NaN) from a
read that was never taken (no row at all). A die is the unit of work of the
store and of the fit, so a later scale-out can hand dies to workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .exceptions import SchemaError

__all__ = [
    "COLUMNS",
    "DTYPES",
    "UNITS",
    "CONDITIONS",
    "DieData",
    "validate_table",
    "table_to_dies",
    "dies_to_table",
    "empty_table",
]

#: Column order of the measurement table.
COLUMNS = (
    "wafer",
    "die",
    "device",
    "cycle",
    "pulse",
    "resistance",
    "v_read",
    "v_pulse",
    "pulse_width",
)

#: pandas dtype of each column.
DTYPES = {
    "wafer": "string",
    "die": "string",
    "device": "string",
    "cycle": "int64",
    "pulse": "int64",
    "resistance": "float64",
    "v_read": "float64",
    "v_pulse": "float64",
    "pulse_width": "float64",
}

#: SI unit of each physical column ("" for identifiers and counters).
UNITS = {
    "wafer": "",
    "die": "",
    "device": "",
    "cycle": "",
    "pulse": "",
    "resistance": "Ohm",
    "v_read": "V",
    "v_pulse": "V",
    "pulse_width": "s",
}

#: Columns that describe how a pulse train was measured (one value per train).
CONDITIONS = ("v_read", "v_pulse", "pulse_width")

_ID_COLUMNS = ("wafer", "die", "device")
_INT_COLUMNS = ("cycle", "pulse")


def empty_table() -> pd.DataFrame:
    """Return an empty measurement table with the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=DTYPES[c]) for c in COLUMNS})


def validate_table(table: pd.DataFrame, *, source: str = "table") -> pd.DataFrame:
    """Check and coerce a measurement table; report every problem at once.

    Parameters
    ----------
    table : pandas.DataFrame
        Candidate table; it is not modified.
    source : str, default="table"
        What produced the table (a reader's name and file), used in messages.

    Returns
    -------
    pandas.DataFrame
        A new table with exactly ``COLUMNS`` in order, the dtypes of ``DTYPES``
        and a fresh RangeIndex.

    Raises
    ------
    SchemaError
        Missing or extra columns, values that cannot be cast, negative cycle
        or pulse numbers, empty identifiers, non-positive resistances or
        read voltages, duplicated (wafer, die, device, cycle, pulse) rows.
    """
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(f"{source}: expected a pandas DataFrame, got {type(table).__name__}.")
    problems = []
    missing = [c for c in COLUMNS if c not in table.columns]
    extra = [c for c in table.columns if c not in COLUMNS]
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {extra}")
    if problems:
        raise SchemaError(
            f"{source}: {'; '.join(problems)}; found {list(table.columns)}. "
            f"The measurement table has the columns {list(COLUMNS)}."
        )
    out = {}
    for col in _ID_COLUMNS:
        values = table[col]
        nulls = values.isna()
        s = values.astype("string")
        empty = nulls | (s.str.len() == 0)
        if empty.any():
            problems.append(f"{int(empty.sum())} row(s) with an empty {col!r} (first at row {_first(empty)})")
        out[col] = s
    for col in _INT_COLUMNS:
        num = pd.to_numeric(table[col], errors="coerce")
        bad = num.isna() | (num != np.floor(num))
        if bad.any():
            problems.append(
                f"{int(bad.sum())} row(s) with a non-integer {col!r} (first at row {_first(bad)}: "
                f"{table[col].iloc[int(np.argmax(bad.to_numpy()))]!r})"
            )
            num = num.fillna(0)
        neg = num < 0
        if neg.any():
            problems.append(f"{int(neg.sum())} row(s) with a negative {col!r} (first at row {_first(neg)})")
        out[col] = num.to_numpy().astype("int64") if not bad.any() else np.zeros(len(table), "int64")
    for col in ("resistance",) + CONDITIONS:
        raw = table[col]
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        unparsable = num.isna() & raw.notna() & ~raw.astype("string").str.lower().isin(["nan", ""])
        if unparsable.any():
            problems.append(
                f"{int(unparsable.sum())} row(s) with a non-numeric {col!r} (first at row {_first(unparsable)})"
            )
        out[col] = num.to_numpy()
    r = out["resistance"]
    nonpos = r <= 0
    if nonpos.any():
        problems.append(
            f"{int(nonpos.sum())} row(s) with a zero or negative resistance (first at row "
            f"{_first(nonpos)}); a failed read must be NaN"
        )
    inf = np.isinf(r)
    if inf.any():
        problems.append(f"{int(inf.sum())} row(s) with an infinite resistance (first at row {_first(inf)})")
    v = out["v_read"]
    bad_v = ~(v > 0)
    if bad_v.any():
        problems.append(
            f"{int(bad_v.sum())} row(s) without a positive v_read (first at row {_first(bad_v)})"
        )
    if problems:
        raise SchemaError(f"{source}: " + "; ".join(problems) + ".")
    result = pd.DataFrame({c: out[c] for c in COLUMNS})
    for col in _ID_COLUMNS:
        result[col] = result[col].astype("string")
    key = list(COLUMNS[:5])
    dup = result.duplicated(key, keep=False)
    if dup.any():
        first = result.loc[dup].iloc[0]
        raise SchemaError(
            f"{source}: {int(dup.sum())} rows share a (wafer, die, device, cycle, pulse) key, e.g. "
            f"{first.wafer}/{first.die}/{first.device} cycle {first.cycle} pulse {first.pulse}. "
            "Each read must appear once; check for a file ingested twice under other names "
            "or a cycle counter that was not advanced."
        )
    return result


def _first(mask) -> int:
    return int(np.argmax(np.asarray(mask)))


@dataclass
class DieData:
    """The reads of one (wafer, die) as arrays.

    Attributes
    ----------
    wafer, die : str
        Identifiers.
    devices : ndarray of str, shape (n_cells,)
        Cell ids, sorted.
    cycles : ndarray of int64, shape (n_cycles,)
        Cycle numbers present on this die, sorted.
    resistance : ndarray of float64, shape (n_cells, n_cycles, n_pulses)
        Read resistance in Ohm at pulse index ``p`` (pulse 0 = right after SET);
        NaN for a failed read or a read not taken.
    present : ndarray of bool, same shape
        True where the table has a row (a failed read is present and NaN).
    v_read, v_pulse, pulse_width : ndarray of float64, shape (n_cells, n_cycles)
        Conditions of each pulse train (V, V, s); NaN where unknown or no train.
    attrs : dict
        Free-form JSON-safe metadata (e.g. die coordinates).
    """

    wafer: str
    die: str
    devices: np.ndarray
    cycles: np.ndarray
    resistance: np.ndarray
    present: np.ndarray
    v_read: np.ndarray
    v_pulse: np.ndarray
    pulse_width: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return len(self.devices)

    @property
    def n_cycles(self) -> int:
        return len(self.cycles)

    @property
    def n_pulses(self) -> int:
        """Number of pulse indices held (max pulse + 1)."""
        return self.resistance.shape[2]

    @property
    def n_reads(self) -> int:
        return int(self.present.sum())

    def to_table(self) -> pd.DataFrame:
        """Return this die's reads as a measurement table (rows where ``present``)."""
        return dies_to_table([self])


def table_to_dies(table: pd.DataFrame, *, source: str = "table") -> list[DieData]:
    """Split a validated measurement table into one :class:`DieData` per (wafer, die).

    Raises
    ------
    SchemaError
        When the conditions (v_read, v_pulse, pulse_width) change within one
        pulse train: the array form keeps one value per train.
    """
    dies = []
    if len(table) == 0:
        return dies
    for (wafer, die), part in table.groupby(["wafer", "die"], sort=True, observed=True):
        devices, dev_idx = np.unique(part["device"].to_numpy(dtype=object).astype(str), return_inverse=True)
        cycles, cyc_idx = np.unique(part["cycle"].to_numpy(), return_inverse=True)
        pulse = part["pulse"].to_numpy()
        shape = (len(devices), len(cycles), int(pulse.max()) + 1)
        resistance = np.full(shape, np.nan)
        present = np.zeros(shape, bool)
        resistance[dev_idx, cyc_idx, pulse] = part["resistance"].to_numpy()
        present[dev_idx, cyc_idx, pulse] = True
        conds = {}
        train = dev_idx * len(cycles) + cyc_idx
        for col in CONDITIONS:
            values = part[col].to_numpy()
            per_train = np.full(len(devices) * len(cycles), np.nan)
            # NaN-aware "one value per train" check: compare min and max of the finite values.
            lo = pd.Series(values).groupby(train).min()
            hi = pd.Series(values).groupby(train).max()
            nan_any = pd.Series(np.isnan(values)).groupby(train).any()
            fin_any = pd.Series(~np.isnan(values)).groupby(train).any()
            varies = (lo != hi) & lo.notna() | (nan_any & fin_any)
            if varies.any():
                t = int(varies.index[np.argmax(varies.to_numpy())])
                d, c = divmod(t, len(cycles))
                raise SchemaError(
                    f"{source}: {col} changes within one pulse train ({wafer}/{die}/{devices[d]} "
                    f"cycle {cycles[c]}); a train must be measured under one condition. "
                    "Give the reads under the new condition another cycle number."
                )
            per_train[lo.index.to_numpy()] = lo.to_numpy()
            conds[col] = per_train.reshape(len(devices), len(cycles))
        dies.append(
            DieData(
                wafer=str(wafer),
                die=str(die),
                devices=devices.astype(str),
                cycles=cycles.astype("int64"),
                resistance=resistance,
                present=present,
                **conds,
            )
        )
    return dies


def dies_to_table(dies) -> pd.DataFrame:
    """Return the measurement table of several :class:`DieData` (inverse of :func:`table_to_dies`)."""
    parts = []
    for d in dies:
        dev_i, cyc_i, pulse = np.nonzero(d.present)
        n = len(pulse)
        parts.append(
            pd.DataFrame(
                {
                    "wafer": pd.array([d.wafer] * n, dtype="string"),
                    "die": pd.array([d.die] * n, dtype="string"),
                    "device": pd.array(d.devices[dev_i], dtype="string"),
                    "cycle": d.cycles[cyc_i].astype("int64"),
                    "pulse": pulse.astype("int64"),
                    "resistance": d.resistance[dev_i, cyc_i, pulse],
                    "v_read": d.v_read[dev_i, cyc_i],
                    "v_pulse": d.v_pulse[dev_i, cyc_i],
                    "pulse_width": d.pulse_width[dev_i, cyc_i],
                }
            )
        )
    if not parts:
        return empty_table()
    return pd.concat(parts, ignore_index=True)

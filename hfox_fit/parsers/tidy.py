"""``tidy``: the measurement table itself, as CSV (with a header row) or Parquet.

This is what ``hfox-fit`` writes when asked to export measurements, so any
lab can convert its own files to it. Extra columns are ignored (and noted).
Rows are checked like the other formats: a bad row names its line (CSV) or
its row number (Parquet).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import FormatError, ParseError
from ..schema import COLUMNS
from ._base import Parser, ReadResult, read_result
from ._common import (
    MAX_COUNTER,
    NA_VALUES,
    Notes,
    Rejects,
    build_table,
    check_file,
    decode,
    iter_lines,
    parse_counter,
    parse_value,
    read_text_bytes,
    strip_bom,
)

__all__ = ["TidyParser"]

_IDS = ("wafer", "die", "device")
_INTS = ("cycle", "pulse")
_FLOATS = ("resistance", "v_read", "v_pulse", "pulse_width")
_PARQUET_MAGIC = b"PAR1"
_CSV_DTYPES = {**{c: str for c in _IDS}, **{c: "int64" for c in _INTS}, **{c: "float64" for c in _FLOATS}}


class TidyParser(Parser):
    """Reader and writer of the measurement table as CSV or Parquet."""

    name = "tidy"
    suffixes = (".csv", ".parquet", ".pq")
    description = "the measurement table itself (wafer,die,device,cycle,pulse,resistance,...) as CSV or Parquet"

    def sniff(self, head: bytes, path=None) -> bool:
        if head.startswith(_PARQUET_MAGIC):
            return True
        first = strip_bom(head).split(b"\n", 1)[0].rstrip(b"\r")
        names = {f.strip().strip('"').lower() for f in first.decode("utf-8", "replace").split(",")}
        return set(COLUMNS) <= names

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read a tidy CSV or Parquet file; see :func:`hfox_fit.parsers.read_measurements`."""
        path = check_file(Path(path))
        notes = Notes()
        given = [k for k, v in (("wafer", wafer), ("die", die), ("v_read", v_read)) if v is not None]
        if given:
            notes.add(f"argument(s) {given} ignored: a tidy table names its own ids and conditions")
        rejects = Rejects(path, on_bad_lines)
        with open(path, "rb") as fh:
            parquet = fh.read(4) == _PARQUET_MAGIC
        if parquet:
            frame = _read_parquet(path, notes)
            rows_read = len(frame)
            frame = _check_frame(frame, rejects, lambda i: f"row {i + 1}")
        else:
            frame, rows_read = _read_csv(path, notes, rejects)
        rejects.flush()
        table = _to_table(frame)
        return read_result(
            table, path, self.name, rows_read=rows_read, rejects=rejects, notes=notes,
            metadata={"container": "parquet" if parquet else "csv"},
        )

    def write(self, table: pd.DataFrame, path, **options) -> list[Path]:
        """Write the table as ``path``: CSV for ``.csv``, Parquet for ``.parquet`` / ``.pq``.

        Floats are written with full precision, so reading the file back gives
        the same table. ``options`` go to ``DataFrame.to_csv`` / ``to_parquet``.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            table.to_csv(path, index=False, lineterminator="\n", **options)
        elif suffix in (".parquet", ".pq"):
            table.to_parquet(path, index=False, engine="pyarrow", **options)
        else:
            raise FormatError(
                f"cannot write {str(path)!r} as tidy: the suffix must be .csv, .parquet or .pq, "
                f"got {path.suffix or '(none)'!r}."
            )
        return [path]


# ---------------------------------------------------------------------- CSV
def _header(data: bytes, path: Path) -> list:
    nl = data.find(b"\n")
    first = (data if nl < 0 else data[:nl]).rstrip(b"\r")
    if b"\r" in first:  # a lone carriage return: the csv module refuses it, with no line to name
        raise ParseError("the header line holds a carriage return (\\r) before its end: the file's line endings "
                         "are damaged; save it with \\n or \\r\\n line endings.", path=path, line=1)
    try:
        names = [f.strip().lower() for f in next(csv.reader([decode(first, path, 1)]), [])]
    except csv.Error as err:
        raise ParseError(f"cannot read the header line: {err}.", path=path, line=1) from None
    _check_columns(names, path, 1)
    return names


def _check_columns(names: list, path: Path, line) -> None:
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ParseError(
            f"missing header column(s) {missing}; expected the columns {list(COLUMNS)}, saw {names}.",
            path=path,
            line=line,
        )
    dup = sorted({c for c in COLUMNS if names.count(c) > 1})
    if dup:
        raise ParseError(f"the header names column(s) {dup} twice.", path=path, line=line)


def _read_csv(path: Path, notes: Notes, rejects: Rejects):
    data = read_text_bytes(path)
    names = _header(data, path)
    extra = [n for n in names if n not in COLUMNS]
    if extra:
        notes.add(f"column(s) {extra} ignored")
    nl = data.find(b"\n")
    body = b"" if nl < 0 else data[nl + 1 :]
    frame = _fast_csv(body, names)
    if frame is not None:
        clean = _check_frame(frame, None, None)
        if clean is not None:
            return clean, len(frame)
    return _slow_csv(body, names, path, rejects)


def _fast_csv(body: bytes, names: list):
    if not body.strip():
        return _empty_frame()
    if b'"' in body or b"\x00" in body or body.count(b"\r") != body.count(b"\r\n"):
        return None
    body = body.rstrip(b"\r\n") + b"\n"
    if b"\n\n" in body or b"\n\r\n" in body or not body.isascii():
        return None
    try:
        frame = pd.read_csv(
            io.BytesIO(body), header=None, names=names, usecols=list(COLUMNS), dtype=_CSV_DTYPES,
            engine="c", quoting=csv.QUOTE_NONE, keep_default_na=False,
            na_values={c: NA_VALUES for c in _FLOATS}, skip_blank_lines=False,
        )
    except (ValueError, OverflowError, TypeError, IndexError):
        return None
    if body.count(b",") != (len(names) - 1) * len(frame):
        return None
    return frame


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in _CSV_DTYPES.items()})


def _slow_csv(body: bytes, names: list, path: Path, rejects: Rejects):
    """Line by line with the csv module: names the line of each bad row.

    Each line is one row (a quoted field cannot span lines), so a stray quote
    spoils one row, not the rest of the file.
    """
    idx = {c: names.index(c) for c in COLUMNS}
    out = {c: [] for c in COLUMNS}
    seen: dict = {}
    rows_read = 0
    for lineno, _, raw in iter_lines(body, 2):
        text = decode(raw, path, lineno)
        if not text.strip():
            continue
        rows_read += 1
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as err:
            rejects.add(lineno, f"not a CSV row ({err}); expected {len(names)} fields ({','.join(names)})")
            continue
        if len(fields) != len(names):
            rejects.add(lineno, f"expected {len(names)} fields ({','.join(names)}), saw {len(fields)}")
            continue
        row, msg = {}, None
        for c in _IDS:
            row[c] = fields[idx[c]]
            if not row[c].strip():
                msg = f"{c} is empty; expected an id"
                break
        if msg is None:
            for c in _INTS:
                row[c], msg = parse_counter(fields[idx[c]], c)
                if msg:
                    break
        if msg is None:
            row["resistance"], msg = parse_value(fields[idx["resistance"]], "resistance", "Ohm")
        if msg is None:
            row["v_read"], msg = parse_value(fields[idx["v_read"]], "v_read", "V")
            if msg is None and math.isnan(row["v_read"]):
                msg = "v_read is empty; expected a positive read voltage in V"
        for c, unit in (("v_pulse", "V"), ("pulse_width", "s")):
            if msg is None:
                row[c], msg = parse_value(fields[idx[c]], c, unit, positive=False)
        if msg is None:
            key = tuple(row[c] for c in COLUMNS[:5])
            if key in seen:
                msg = (f"repeats the read {'/'.join(key[:3])} cycle {key[3]} pulse {key[4]} of line "
                       f"{seen[key]}; expected each read once")
            else:
                seen[key] = lineno
        if msg:
            rejects.add(lineno, msg)
            continue
        for c in COLUMNS:
            out[c].append(row[c])
    frame = pd.DataFrame({c: pd.Series(out[c], dtype=_CSV_DTYPES[c]) for c in COLUMNS})
    return frame, rows_read



# ------------------------------------------------------------------- Parquet
def _read_parquet(path: Path, notes: Notes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        names = [n.lower() for n in schema.names]
        _check_columns(names, path, None)
        extra = [n for n in schema.names if n.lower() not in COLUMNS]
        if extra:
            notes.add(f"column(s) {extra} ignored")
        columns = [schema.names[names.index(c)] for c in COLUMNS]
        frame = pq.read_table(path, columns=columns).to_pandas()
    except ParseError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as err:
        raise ParseError(
            f"not a readable Parquet file ({type(err).__name__}: {err}); the file may be damaged or "
            "truncated. Expected the tidy table as Parquet.",
            path=path,
        ) from err
    frame.columns = list(COLUMNS)
    return frame


# ----------------------------------------------------------------- checks
def _check_frame(frame: pd.DataFrame, rejects, label):
    """Mark the bad rows of a typed frame; with ``rejects`` None return None if any is bad."""
    n = len(frame)
    bad = np.zeros(n, bool)
    why = np.full(n, "", dtype=object)

    def mark(mask, message):
        new = np.asarray(mask, bool) & ~bad
        why[new] = message
        bad[:] |= new

    for c in _IDS:
        values = frame[c].astype(object)
        mark(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy(),
             f"{c} is empty; expected an id")
    for c in _INTS:
        num = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        mark(~np.isfinite(num) | (num != np.floor(num)) | (num < 0) | (num > MAX_COUNTER),
             f"{c} must be a non-negative integer")
    floats = {}
    for c in _FLOATS:
        floats[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        mark(np.isnan(floats[c]) & frame[c].notna().to_numpy(), f"{c} is not a number")
        mark(np.isinf(floats[c]), f"{c} is infinite")
    mark(floats["resistance"] <= 0, "zero or negative resistance; expected a positive value in Ohm, or "
                                    "an empty field / nan for a failed read")
    mark(~(floats["v_read"] > 0), "v_read is empty or not positive; expected a positive read voltage in V")
    good = np.flatnonzero(~bad)
    dup = frame.iloc[good][list(COLUMNS[:5])].astype(str).duplicated(keep="first").to_numpy()
    if dup.any():
        mark(np.isin(np.arange(n), good[dup]),
             "repeats an earlier read (same wafer, die, device, cycle and pulse); expected each read once")
    if not bad.any():
        return frame
    if rejects is None:
        return None
    pos = np.flatnonzero(bad)
    rejects.add_many(pos, lambda i: str(why[pos[i]]), labels=lambda i: label(int(pos[i])))
    return frame.loc[~bad].reset_index(drop=True)


def _to_table(frame: pd.DataFrame) -> pd.DataFrame:
    ids = {}
    for c in _IDS:
        codes, uniques = pd.factorize(frame[c].astype(str).to_numpy(dtype=object))
        ids[c] = (codes, list(uniques))
    cols = {c: pd.to_numeric(frame[c]).to_numpy(dtype=np.int64) for c in _INTS}
    cols.update({c: pd.to_numeric(frame[c]).to_numpy(dtype=np.float64, na_value=np.nan) for c in _FLOATS})
    for c in cols:
        cols[c] = np.array(cols[c])  # writable, owned
    return build_table(ids, cols)

"""``ramps``: one column per ramp, one row per pulse (CSV of read currents).

::

    rmp1,rmp2,rmp3
    0.000245103,0.000245041,0.000245868
    0.00024481,0.000244907,

Column ``rmpN`` is cycle ``N - 1`` of one cell; row ``k`` under the header is
pulse ``k``. Values are read currents in A at a read voltage given by the
caller (default 0.1 V). Ragged columns are padded with empty fields at their
end: those are not reads. An empty field inside a column, or ``nan`` anywhere,
is a failed read (NaN resistance). The file holds no ids: wafer, die and
device come from the arguments or the file name ``{wafer}_{die}_{array}_r{row}c{col}.csv``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import FormatError, ParseError
from ._base import Parser, ReadResult, read_result
from ._common import (
    Notes,
    Rejects,
    bad_current,
    build_table,
    check_newline,
    check_one_condition_per_train,
    check_writable_ids,
    device_id,
    fast_numeric,
    fmt,
    ids_from_name,
    iter_lines,
    parse_value,
    read_text_bytes,
    resolve,
    resolve_v_read,
    split_devices,
    strip_bom,
    write_text,
)

__all__ = ["RampsParser"]

_RMP = re.compile(r"^rmp(\d+)$", re.IGNORECASE)
_EMPTY, _READ, _BAD = 0, 1, 2


def _fields(line: str) -> list:
    fields = [f.strip() for f in line.split(",")]
    return fields


class RampsParser(Parser):
    """Reader and writer of the one-column-per-ramp CSV (see the module docstring)."""

    name = "ramps"
    suffixes = (".csv",)
    description = "one column per ramp (rmp1, rmp2, ...), one row per pulse; read currents in A"

    def sniff(self, head: bytes, path=None) -> bool:
        text = strip_bom(head)
        first, nl, _ = text.partition(b"\n")
        fields = _fields(first.decode("utf-8", "replace"))
        if not nl:  # the header goes on beyond the head: its last field may be cut
            fields = fields[:-1]
        while fields and not fields[-1]:
            fields.pop()
        return bool(fields) and all(_RMP.match(f) for f in fields)

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read a ramps file; see :func:`hfox_fit.parsers.read_measurements`."""
        path = Path(path)
        data = read_text_bytes(path)
        notes = Notes()
        rejects = Rejects(path, on_bad_lines)
        cycles, trailing, body, body_line = _header(data, path)
        ncols = len(cycles)
        nfields = ncols + trailing
        body = _strip_trailing_blank_lines(body)  # a blank line inside still holds its pulse's place
        matrix, status = None, None
        if body:
            names = [f"c{j}" for j in range(nfields)]
            arrays = fast_numeric(body, names, {f"c{j}": "float64" for j in range(ncols)}, nfields=nfields)
            if arrays is not None:
                matrix = np.column_stack([arrays[f"c{j}"] for j in range(ncols)])
                if bad_current(matrix).any():
                    matrix = None
            if matrix is not None:
                status = np.where(np.isnan(matrix), _EMPTY, _READ).astype(np.int8)
                _explicit_nan(body, body_line, status)
            else:
                matrix, status = _slow(body, body_line, ncols, trailing, rejects)
        else:
            matrix, status = np.zeros((0, ncols)), np.zeros((0, ncols), np.int8)
        rejects.flush()

        ids = ids_from_name(path)
        ids_w = resolve("wafer", arg=wafer, name=ids.get("wafer"), notes=notes)
        ids_d = resolve("die", arg=die, name=ids.get("die"), notes=notes)
        if ids_w is None or ids_d is None:
            missing = " and ".join(k for k, v in (("wafer", ids_w), ("die", ids_d)) if v is None)
            raise ParseError(
                f"ramps files hold no ids, and the file name does not follow "
                "{wafer}_{die}_{array}_r{row}c{col}.csv (e.g. W07_D12_A2_r00c00.csv): "
                f"pass {missing} as arguments (--wafer / --die on the command line).",
                path=path,
            )
        if "row" in ids:
            device = device_id(ids["array"], ids["row"], ids["col"])
            notes.add(f"device {device!r} taken from the file name")
        else:
            device = path.stem
            notes.add(
                f"device {device!r} taken from the file name, which does not follow "
                "{wafer}_{die}_{array}_r{row}c{col}.csv"
            )
        v = resolve_v_read(arg=v_read, notes=notes)
        notes.add("ramps files carry no v_pulse or pulse_width: NaN")

        last = _last_present(status)
        inside = np.arange(status.shape[0])[:, None] <= last[None, :]
        keep = (inside & (status != _BAD)).T  # (ramp, pulse) order
        ramp, pulse = np.nonzero(keep)
        current = matrix.T[keep]
        n = len(pulse)
        table = build_table(
            {
                "wafer": (np.zeros(n, np.int64), [str(ids_w)]),
                "die": (np.zeros(n, np.int64), [str(ids_d)]),
                "device": (np.zeros(n, np.int64), [device]),
            },
            {
                "cycle": np.asarray(cycles, np.int64)[ramp],
                "pulse": pulse.astype(np.int64),
                "resistance": v / current,
                "v_read": np.full(n, v),
                "v_pulse": np.full(n, math.nan),
                "pulse_width": np.full(n, math.nan),
            },
        )
        return read_result(
            table, path, self.name, rows_read=n + rejects.count, rejects=rejects, notes=notes,
            metadata={"ramps": [f"rmp{c + 1}" for c in cycles], "pulses": (last + 1).tolist()},
        )

    def write(self, table: pd.DataFrame, path, *, newline: str = "\n", bom: bool = False) -> list[Path]:
        """Write one ``{wafer}_{die}_{array}_r{row}c{col}.csv`` per device into the folder ``path``.

        Columns are ``rmp{cycle + 1}``, rows pulses 0, 1, ... (every pulse up to the
        last of a ramp must be in the table); failed reads are written ``nan``,
        the padding of shorter ramps as empty fields. The file keeps only the
        currents ``v_read / resistance``: read it back with the same ``v_read``;
        v_pulse and pulse_width are not kept.
        """
        check_newline(newline)
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        check_writable_ids(table, self.name)
        arrays, rows, cols = split_devices(table, self.name)
        check_one_condition_per_train(table, ["wafer", "die", "device"], self.name, columns=("v_read",))
        written = []
        for (wafer, die, device), part in table.groupby(["wafer", "die", "device"], sort=True, observed=True):
            code = table["device"].cat.categories.get_loc(device)
            cycles = np.unique(part["cycle"].to_numpy())
            length = part.groupby("cycle")["pulse"].agg(["max", "count"])
            gap = length[length["max"] + 1 != length["count"]]
            if len(gap):
                raise FormatError(
                    f"cannot write {wafer}/{die}/{device} cycle {gap.index[0]} in the ramps format: its "
                    "pulses are not 0, 1, 2, ... without gaps (a ramp row is a pulse). Fill the "
                    "missing reads with NaN, or write the tidy format."
                )
            grid = np.full((int(length["max"].max()) + 1, len(cycles)), "", dtype=object)
            col = np.searchsorted(cycles, part["cycle"].to_numpy())
            current = part["v_read"].to_numpy() / part["resistance"].to_numpy()
            grid[part["pulse"].to_numpy(), col] = [fmt(x) for x in current.tolist()]
            lines = [",".join(f"rmp{c + 1}" for c in cycles)]
            lines += [",".join(r) for r in grid.tolist()]
            name = f"{wafer}_{die}_{arrays[code]}_r{rows[code]:02d}c{cols[code]:02d}.csv"
            written.append(write_text(out / name, "\n".join(lines) + "\n", newline=newline, bom=bom))
        return written


def _header(data: bytes, path: Path):
    """Cycle numbers of the ramp columns, whether lines end in an empty field, the body."""
    nl = data.find(b"\n")
    raw = data if nl < 0 else data[:nl]
    text = raw.rstrip(b"\r").decode("utf-8", "replace")
    fields = _fields(text)
    trailing = 0
    if len(fields) > 1 and fields[-1] == "":
        fields, trailing = fields[:-1], 1
    cycles = []
    for j, f in enumerate(fields):
        m = _RMP.match(f)
        if m is None or int(m[1]) < 1:
            try:
                float(f)
                what = "missing header: the first line holds numbers"
            except ValueError:
                what = f"column {j + 1} of the header is named {f!r}"
            raise ParseError(
                f"{what}; expected the ramp names rmp1, rmp2, ... (one column per ramp).",
                path=path,
                line=1,
            )
        cycles.append(int(m[1]) - 1)
    if len(set(cycles)) != len(cycles):
        dup = sorted({c + 1 for c in cycles if cycles.count(c) > 1})
        raise ParseError(f"the header names ramp(s) {[f'rmp{d}' for d in dup]} twice; expected each once.",
                         path=path, line=1)
    return cycles, trailing, (b"" if nl < 0 else data[nl + 1 :]), 2


def _strip_trailing_blank_lines(body: bytes) -> bytes:
    end = len(body.rstrip(b" \t\r\n"))
    nl = body.find(b"\n", end)
    return body[: len(body) if nl < 0 else nl + 1] if end else b""


def _last_present(status: np.ndarray) -> np.ndarray:
    """Per ramp, the index of its last non-empty field (-1 for none): the ramp ends there."""
    present = status != _EMPTY
    if present.shape[0] == 0:
        return np.full(present.shape[1], -1)
    return np.where(present.any(axis=0), present.shape[0] - 1 - np.argmax(present[::-1], axis=0), -1)


def _explicit_nan(body: bytes, line: int, status: np.ndarray) -> None:
    """Mark 'nan' fields after the last number of some ramp as reads (the fast path reads NaN)."""
    if b"n" not in body and b"N" not in body:
        return
    tail = int(_last_present(status).min()) + 1
    for k, (_, _, raw) in enumerate(iter_lines(body, line)):
        if k < tail:
            continue
        for j, f in enumerate(raw.split(b",")[: status.shape[1]]):
            if f.strip().lower() == b"nan":
                status[k, j] = _READ


def _slow(body: bytes, line: int, ncols: int, trailing: int, rejects: Rejects):
    """Line by line: each bad value is a rejected read, a line of the wrong width all its reads."""
    values, status = [], []
    for lineno, _, raw in iter_lines(body, line):
        row_v = [math.nan] * ncols
        row_s = [_EMPTY] * ncols
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        fields = _fields(text) if text is not None else None
        if fields is not None and trailing and len(fields) == ncols + 1 and fields[-1] == "":
            fields.pop()
        if fields == [""]:  # a blank line: every ramp is empty at this pulse
            fields = [""] * ncols
        if fields is None or len(fields) != ncols:
            parts = raw.split(b",")
            filled = [j for j, f in enumerate(parts[:ncols]) if f.strip()]
            for j in filled:
                row_s[j] = _BAD
            why = "not UTF-8 text" if text is None else f"saw {len(fields)}"
            rejects.add(lineno, f"expected {ncols + trailing} fields (one per ramp), {why}; the line is "
                                "left out", count=max(1, len(filled)))
        else:
            for j, f in enumerate(fields):
                if not f:
                    continue
                value, msg = parse_value(f)
                if msg:
                    row_s[j] = _BAD
                    rejects.add(lineno, f"ramp column {j + 1}: {msg}")
                else:
                    row_v[j], row_s[j] = value, _READ
        values.append(row_v)
        status.append(row_s)
    return np.array(values, np.float64).reshape(-1, ncols), np.array(status, np.int8).reshape(-1, ncols)

"""``b1500``: Keysight B1500A EasyEXPERT CSV export (tagged lines, one record per pulse train).

::

    SetupTitle, WeakReset
    PrimitiveTest, WeakResetTrain
    TestParameter, Measurement.Read.Voltage, 0.1
    TestParameter, Measurement.Pulse.Amplitude, 1.25
    TestParameter, Measurement.Pulse.Width, 1E-06
    MetaData, TestRecord.TestTarget, W07_D12_A2_r00c00
    MetaData, TestRecord.IterationIndex, 3
    Dimension1, 1001, 1001
    DataName, PulseNo, Iread
    DataValue, 0, 1.4312000000000001E-05

Records follow each other newest first. ``TestTarget`` names the cell
(``{wafer}_{die}_{array}_r{row}c{col}``), ``IterationIndex`` the cycle (a
record without one is one cycle, numbered by its order among the records of its
cell in the file, from 0, and noted); the data hold a pulse counter ``PulseNo``
and the read current ``Iread`` (A) or a read resistance ``Rread`` (Ohm); other
columns and other header lines are ignored. The ``DataValue`` lines of a record go through the pandas C engine;
only a record that holds a bad line is read line by line.
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
    MAX_COUNTER,
    Notes,
    Rejects,
    TrainOrder,
    bad_current,
    build_table,
    check_newline,
    check_one_condition_per_train,
    check_writable_ids,
    codes_of,
    counter_problems,
    device_id,
    fast_numeric,
    fmt,
    ids_from_name,
    iter_lines,
    order_message,
    parse_condition,
    parse_counter,
    parse_value,
    read_text_bytes,
    resolve,
    resolve_v_read,
    split_devices,
    strip_blank_lines,
    strip_bom,
    write_text,
)

__all__ = ["B1500Parser"]

#: Tags of the header lines of a record; one of them after data starts a new record.
HEADER_TAGS = {
    "SetupTitle", "PrimitiveTest", "TestParameter", "MetaData", "AnalysisSetup",
    "Dimension1", "Dimension2", "DataName",
}
#: TestParameter names of the conditions (lower case) -> table column.
PARAMETERS = {
    "measurement.read.voltage": "v_read",
    "measurement.pulse.amplitude": "v_pulse",
    "measurement.pulse.width": "pulse_width",
}
TARGET = "testrecord.testtarget"
ITERATION = "testrecord.iterationindex"
_TARGET_RE = re.compile(r"^(?:(?P<wafer>.+)_(?P<die>[^_]+)_)?(?P<array>[^_/]+)_r(?P<row>\d+)c(?P<col>\d+)$")
_DATA = b"DataValue"
#: Records named in the note about records without an IterationIndex.
SHOW_NOTED = 3


class B1500Parser(Parser):
    """Reader and writer of the B1500 EasyEXPERT export (see the module docstring)."""

    name = "b1500"
    suffixes = (".csv",)
    description = "Keysight B1500A EasyEXPERT CSV export (SetupTitle ... DataName, DataValue records)"

    def sniff(self, head: bytes, path=None) -> bool:
        first = strip_bom(head).lstrip().split(b"\n", 1)[0]
        return first.split(b",", 1)[0].strip() in (b"SetupTitle", b"PrimitiveTest")

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read a B1500 export; see :func:`hfox_fit.parsers.read_measurements`."""
        return _B1500Reader(Path(path), wafer, die, v_read, on_bad_lines).run()

    def write(self, table: pd.DataFrame, path, *, quantity: str = "Iread", newline: str = "\n",
              bom: bool = False) -> list[Path]:
        """Write one ``{wafer}_{die}.csv`` per die into the folder ``path``, records newest first.

        Parameters
        ----------
        table : pandas.DataFrame
            A validated measurement table; devices must be ``{array}/r{row}c{col}``.
        path : path-like
            Folder (created if needed).
        quantity : {"Iread", "Rread"}, default="Iread"
            Write the read current ``v_read / resistance`` (A) or the resistance (Ohm).
        newline : {"\\n", "\\r\\n"}, default="\\n"
        bom : bool, default=False
        """
        if quantity not in ("Iread", "Rread"):
            raise ValueError(f"quantity must be 'Iread' or 'Rread'; got {quantity!r}.")
        check_newline(newline)
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        check_writable_ids(table, self.name)
        arrays, rows, cols = split_devices(table, self.name)
        bad = [v for v in list(table["die"].cat.categories) + list(arrays) if "_" in v]
        if bad:
            raise FormatError(f"cannot write the die or array name {bad[0]!r} in the b1500 format: "
                              "TestTarget {wafer}_{die}_{array}_r{row}c{col} is split at '_'.")
        keys = ["wafer", "die", "device", "cycle"]
        check_one_condition_per_train(table, keys, self.name)
        written = []
        for (wafer, die), part in table.groupby(["wafer", "die"], sort=True, observed=True):
            part = part.sort_values(keys + ["pulse"], kind="stable")
            chunks = []
            trains = list(part.groupby(["device", "cycle"], sort=True, observed=True))
            for (device, cycle), train in reversed(trains):  # newest record first
                code = table["device"].cat.categories.get_loc(device)
                target = f"{wafer}_{die}_{arrays[code]}_r{rows[code]:02d}c{cols[code]:02d}"
                first = train.iloc[0]
                lines = ["SetupTitle, WeakReset", "PrimitiveTest, WeakResetTrain",
                         f"TestParameter, Measurement.Read.Voltage, {fmt(first.v_read)}"]
                if first.v_pulse == first.v_pulse:
                    lines.append(f"TestParameter, Measurement.Pulse.Amplitude, {fmt(first.v_pulse)}")
                if first.pulse_width == first.pulse_width:
                    lines.append(f"TestParameter, Measurement.Pulse.Width, {fmt(first.pulse_width)}")
                n = len(train)
                lines += [f"MetaData, TestRecord.TestTarget, {target}",
                          f"MetaData, TestRecord.IterationIndex, {int(cycle)}",
                          f"Dimension1, {n}, {n}", "Dimension2, 1, 1", f"DataName, PulseNo, {quantity}"]
                r = train["resistance"].to_numpy()
                values = train["v_read"].to_numpy() / r if quantity == "Iread" else r
                chunks.append("\n".join(lines) + "\n")
                chunks.append("".join(
                    f"DataValue, {p}, {fmt(v)}\n" for p, v in zip(train["pulse"].tolist(), values.tolist())
                ))
            written.append(write_text(out / f"{wafer}_{die}.csv", "".join(chunks), newline=newline, bom=bom))
        return written


class _Record:
    """The header of one test record and the rows read under it."""

    def __init__(self, index: int, line: int):
        self.index = index
        self.line = line
        self.params: dict = {}
        self.meta: dict = {}
        self.names = None
        self.dimension = None
        self.setup_title = None
        self.identity = None  # resolved at the first data line
        self.duplicate_of = None
        self.rows = 0  # data lines seen, bad ones included
        self.pulses: list = []
        self.values: list = []
        self.has_data = False


class _B1500Reader:
    def __init__(self, path: Path, wafer, die, v_read, on_bad_lines):
        self.path = path
        self.rejects = Rejects(path, on_bad_lines)
        self.notes = Notes()
        self.args = {"wafer": wafer, "die": die, "v_read": v_read}
        self.from_name = ids_from_name(path)
        self.records: list = []
        self.seen: dict = {}
        self.cell_records: dict = {}  # (wafer, die, device) -> records of that cell so far
        self.no_iteration: list = []  # (record index, line, device, cycle) of records without one
        self.order = TrainOrder()
        self.rows_read = 0

    def run(self) -> ReadResult:
        data = read_text_bytes(self.path)
        pos, line, n = 0, 1, len(data)
        rec = None
        while pos < n:
            le = data.find(b"\n", pos)
            le = n if le < 0 else le + 1
            if data.startswith(_DATA, pos):
                end = data.find(b"\nSetupTitle", pos)
                end = n if end < 0 else end + 1
                used = self._data(rec, data[pos:end], line)
                line += data.count(b"\n", pos, pos + used)
                pos += used
                continue
            raw = data[pos:le].rstrip(b"\r\n")
            pos = le
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            fields = [f.strip() for f in (text or "").split(",")]
            while fields and not fields[-1]:
                fields.pop()
            if text is not None and not fields:
                line += 1
                continue
            tag = fields[0] if fields else ""
            if tag in HEADER_TAGS:
                if rec is None or (tag == "SetupTitle" and rec.setup_title is not None) or rec.has_data:
                    self._close(rec)
                    rec = _Record(len(self.records), line)
                    self.records.append(rec)
                self._header(rec, tag, fields, line)
            elif rec is not None and rec.names is not None:
                self._bad_line(rec, raw, line)
            line += 1
        self._close(rec)
        self.rejects.flush()
        if not self.records:
            raise ParseError(
                "no test record: expected 'SetupTitle, ...' header lines, then 'DataName' and "
                "'DataValue' lines. Is this a B1500 EasyEXPERT export?",
                path=self.path,
            )
        return self._finish()

    # ------------------------------------------------------------ headers
    def _header(self, rec: _Record, tag: str, fields: list, line: int) -> None:
        if tag == "SetupTitle":
            rec.setup_title = fields[1] if len(fields) > 1 else ""
        elif tag == "TestParameter" and len(fields) >= 3:
            name = fields[1].lower()
            if name in PARAMETERS:
                rec.params[PARAMETERS[name]] = (fields[2], line)
        elif tag == "MetaData" and len(fields) >= 3:
            rec.meta[fields[1].lower()] = (",".join(fields[2:]), line)
        elif tag == "Dimension1" and len(fields) >= 2:
            try:
                rec.dimension = int(float(fields[1]))
            except ValueError as err:
                raise ParseError(f"Dimension1 must be a number of points, saw {fields[1]!r}.",
                                 path=self.path, line=line) from err
        elif tag == "DataName":
            names = [f.lower() for f in fields[1:]]
            if "pulseno" not in names:
                raise ParseError(
                    f"expected a pulse counter column 'PulseNo' in DataName, saw {fields[1:]}.",
                    path=self.path, line=line,
                )
            quantity = "iread" if "iread" in names else "rread" if "rread" in names else None
            if quantity is None:
                raise ParseError(
                    f"expected a read current column 'Iread' (A) or a read resistance column 'Rread' "
                    f"(Ohm) in DataName, saw {fields[1:]}.",
                    path=self.path, line=line,
                )
            rec.names = names
            rec.labels = fields[1:]
            rec.quantity = quantity
            rec.pulse_at = names.index("pulseno")
            rec.value_at = names.index(quantity)
            rec.names_line = line

    def _identity(self, rec: _Record) -> tuple:
        """wafer, die, device, cycle and conditions of a record (at its first data line)."""
        where = f"the record at line {rec.line}"
        target, tline = rec.meta.get(TARGET, (None, rec.line))
        m = _TARGET_RE.match(target or "")
        if m is None:
            saw = "no 'MetaData, TestRecord.TestTarget' line" if target is None else f"TestTarget {target!r}"
            raise ParseError(
                f"{where} has {saw}; expected the cell as {{wafer}}_{{die}}_{{array}}_r{{row}}c{{col}} "
                "(e.g. W07_D12_A2_r00c00).",
                path=self.path, line=tline,
            )
        ids = {}
        for key in ("wafer", "die"):
            ids[key] = resolve(key, file=m[key], arg=self.args[key], name=self.from_name.get(key),
                               notes=self.notes, where=where)
            if ids[key] is None:
                raise ParseError(
                    f"{where}: TestTarget {target!r} names no {key}, no {key}= was given and the file "
                    "name does not follow {wafer}_{die}.csv. Pass " + f"{key}=... (--{key}).",
                    path=self.path, line=tline,
                )
        device = device_id(m["array"], int(m["row"]), int(m["col"]))
        cell = (str(ids["wafer"]), str(ids["die"]), device)
        order = self.cell_records.get(cell, 0)
        self.cell_records[cell] = order + 1
        text, iline = rec.meta.get(ITERATION, (None, rec.line))
        if text is None:
            cycle = order
            self.no_iteration.append((rec.index, rec.line, device, cycle))
        else:
            cycle, msg = parse_counter(text, "IterationIndex")
            if msg:
                raise ParseError(msg + ".", path=self.path, line=iline)
        cond = {}
        file_v = None
        if "v_read" in rec.params:
            text, ln = rec.params["v_read"]
            file_v = parse_condition(text, "v_read", self.path, ln, positive=True)
        cond["v_read"] = resolve_v_read(file=file_v, arg=self.args["v_read"], notes=self.notes, where=where)
        for key, label in (("v_pulse", "Measurement.Pulse.Amplitude"), ("pulse_width", "Measurement.Pulse.Width")):
            if key in rec.params:
                text, ln = rec.params[key]
                cond[key] = parse_condition(text, key, self.path, ln)
            else:
                cond[key] = math.nan
                self.notes.add(f"{key} unknown (no 'TestParameter, {label}' line): NaN")
        ident = (str(ids["wafer"]), str(ids["die"]), device, cycle)
        if ident in self.seen:
            rec.duplicate_of = self.seen[ident]
        else:
            self.seen[ident] = rec.line
        return ident + (cond["v_read"], cond["v_pulse"], cond["pulse_width"])

    # --------------------------------------------------------------- data
    def _bad_line(self, rec: _Record, raw: bytes, line: int) -> None:
        self.rows_read += 1
        rec.rows += 1
        self.rejects.add(
            line,
            f"expected a 'DataValue, ...' line in the record of line {rec.line}, saw "
            f"{raw[:80].decode('utf-8', 'replace')!r}",
        )

    def _data(self, rec, run: bytes, line: int) -> int:
        """Read a run of DataValue lines; return the bytes used (it stops at a header line)."""
        if rec is None or rec.names is None:
            return self._orphans(rec, run, line)
        rec.has_data = True
        if rec.identity is None:
            rec.identity = self._identity(rec)
        body, first_line = strip_blank_lines(run, line)
        nlines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        arrays = None
        if body and body.count(b"\n" + _DATA) + 1 == nlines:
            first = body.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
            k = len(rec.names) + (1 if first.endswith(b",") else 0)
            names = ["_tag"] + [f"c{i}" for i in range(k)]
            dtypes = {f"c{rec.pulse_at}": "int64", f"c{rec.value_at}": "float64"}
            arrays = fast_numeric(body, names, dtypes, nfields=k + 1, extra_bytes=b"DataVlu \t",
                                  skipinitialspace=True)
            if arrays is not None:
                pulse, value = arrays[f"c{rec.pulse_at}"], arrays[f"c{rec.value_at}"]
                if counter_problems({"p": pulse}, {"p": MAX_COUNTER}) or bad_current(value).any():
                    arrays = None
        if arrays is not None:
            self.rows_read += len(pulse)
            rec.rows += len(pulse)
            self._keep(rec, pulse, value, None, first_line)
            self.rejects.flush()
            return len(run)
        return self._slow(rec, run, line)

    def _slow(self, rec: _Record, run: bytes, line: int) -> int:
        pulses, values, lines = [], [], []
        used = 0
        what = ("read current", "A") if rec.quantity == "iread" else ("read resistance", "Ohm")
        k = len(rec.names)
        for lineno, end, raw in iter_lines(run, line):
            fields = [f.strip() for f in raw.split(b",")]
            tag = fields[0]
            if tag != _DATA:
                if tag.decode("utf-8", "replace") in HEADER_TAGS:  # a record without SetupTitle
                    break
                used = end
                if raw.strip():
                    self._bad_line(rec, raw, lineno)
                continue
            used = end
            self.rows_read += 1
            rec.rows += 1
            data = fields[1:]
            if len(data) == k + 1 and data[-1] == b"":
                data.pop()
            if len(data) != k:
                self.rejects.add(
                    lineno, f"expected {k} values after DataValue ({', '.join(rec.labels)}), saw {len(data)}"
                )
                continue
            try:
                p_text, v_text = data[rec.pulse_at].decode("utf-8"), data[rec.value_at].decode("utf-8")
            except UnicodeDecodeError:
                self.rejects.add(lineno, "not UTF-8 text; expected numbers. Re-save the file as UTF-8.")
                continue
            pulse, msg = parse_counter(p_text, "PulseNo")
            if msg is None:
                value, msg = parse_value(v_text, *what)
            if msg:
                self.rejects.add(lineno, msg)
                continue
            pulses.append(pulse)
            values.append(value)
            lines.append(lineno)
        if pulses:
            self._keep(rec, np.array(pulses, np.int64), np.array(values, np.float64),
                       np.array(lines, np.int64), None)
        self.rejects.flush()
        return used

    def _orphans(self, rec, run: bytes, line: int) -> int:
        """DataValue lines before any DataName: their columns are unknown, so each is bad."""
        used = 0
        for lineno, end, raw in iter_lines(run, line):
            if not raw.startswith(_DATA):
                if raw.strip():
                    break
                used = end
                continue
            used = end
            self.rows_read += 1
            if rec is not None:
                rec.rows += 1
            self.rejects.add(lineno, "DataValue line before any 'DataName' line of its record; "
                                     "the columns are unknown")
        self.rejects.flush()
        return used

    def _keep(self, rec: _Record, pulse, value, lines, first_line) -> None:
        where = (lambda pos: pos + first_line) if lines is None else (lambda pos: lines[pos])
        if rec.duplicate_of is not None:
            wafer, die, device, cycle = rec.identity[:4]
            why = "" if ITERATION in rec.meta else (
                f" (it has no TestRecord.IterationIndex: cycle {cycle} is its order among the records "
                "of the cell, from 0)"
            )
            self.rejects.add_many(
                where(np.arange(len(pulse))),
                lambda i: f"the record at line {rec.line} repeats cell {device} cycle {cycle} of "
                          f"{wafer}/{die}, already read in the record at line {rec.duplicate_of}{why}; "
                          "expected one record per cell and IterationIndex",
            )
            return
        _, pos, before = self.order.check(rec.index, np.zeros(len(pulse), np.int64), pulse)
        if pos is not None:
            device, cycle = rec.identity[2], rec.identity[3]
            self.rejects.add_many(
                where(pos),
                lambda i, pos=pos, before=before, pulse=pulse: order_message(
                    device, cycle, int(pulse[pos[i]]), int(before[i])
                ),
            )
            keep = np.ones(len(pulse), bool)
            keep[pos] = False
            pulse, value = pulse[keep], value[keep]
        if rec.quantity == "iread":
            value = rec.identity[4] / value
        rec.pulses.append(pulse)
        rec.values.append(value)

    def _close(self, rec) -> None:
        self.rejects.flush()
        if rec is None or rec.dimension is None or not rec.has_data or rec.rows == rec.dimension:
            return
        msg = (
            f"the record at line {rec.line} declares {rec.dimension} points (Dimension1) but holds "
            f"{rec.rows} DataValue line(s)"
        )
        if not self.rejects.skip:
            raise ParseError(
                msg + "; the file may be truncated or edited. Pass on_bad_lines='skip' to keep the "
                "reads it holds.",
                path=self.path, line=rec.line,
            )
        self.notes.add(f"{self.path}:{rec.line}: {msg}; the reads present were kept")

    # ------------------------------------------------------------ assembly
    def _note_no_iteration(self) -> None:
        """One note for the records read without an IterationIndex (the first few named)."""
        gone = self.no_iteration
        if not gone:
            return
        each = [f"record {i} (line {ln}, cell {dev}) as cycle {c}" for i, ln, dev, c in gone[:SHOW_NOTED]]
        more = f", and {len(gone) - SHOW_NOTED} more" if len(gone) > SHOW_NOTED else ""
        if len(gone) == 1:
            i, ln, dev, c = gone[0]
            head = f"record {i} (line {ln}) has no TestRecord.IterationIndex: read as cycle {c}"
            tail = f"its order among the records of cell {dev} in the file, from 0"
            self.notes.add(f"{head} ({tail})")
            return
        self.notes.add(
            f"{len(gone)} records have no TestRecord.IterationIndex: each is read as one cycle, numbered "
            f"by its order among the records of its cell in the file (from 0): {'; '.join(each)}{more}"
        )

    def _finish(self) -> ReadResult:
        self._note_no_iteration()
        kept = [r for r in self.records if r.pulses]
        counts = [sum(len(p) for p in r.pulses) for r in kept]
        ids = {}
        for j, col in enumerate(("wafer", "die", "device")):
            codes, names = codes_of([r.identity[j] for r in kept])
            ids[col] = (np.repeat(codes, counts), names)
        cols = {
            "cycle": np.repeat(np.array([r.identity[3] for r in kept], np.int64), counts),
            "pulse": np.concatenate([p for r in kept for p in r.pulses]).astype(np.int64)
            if kept else np.zeros(0, np.int64),
            "resistance": np.concatenate([v for r in kept for v in r.values]) if kept else np.zeros(0),
        }
        for j, col in enumerate(("v_read", "v_pulse", "pulse_width")):
            cols[col] = np.repeat(np.array([r.identity[4 + j] for r in kept], np.float64), counts)
        table = build_table(ids, cols)
        records = [
            {
                "line": r.line,
                "setup_title": r.setup_title,
                "test_target": r.meta.get(TARGET, (None,))[0],
                "iteration_index": r.meta.get(ITERATION, (None,))[0],
                "record_time": r.meta.get("testrecord.recordtime", (None,))[0],
                "dimension1": r.dimension,
                "data_names": r.names,
            }
            for r in self.records
        ]
        return read_result(
            table, self.path, "b1500", rows_read=self.rows_read, rejects=self.rejects, notes=self.notes,
            metadata={"records": records},
        )

"""``bench``: the test chip's bench export (CSV, one file per array run).

::

    # hfox-bench v1
    # wafer: W07
    # die: D12
    # array: A2
    # v_read: 0.1
    # v_pulse: 1.25
    # pulse_width: 1e-06
    row,col,cycle,pulse,i_read
    0,0,0,0,1.4312e-05

``# key: value`` lines just above a column header are that block's metadata
(unknown keys are kept); other ``#`` lines are comments. An appended run
brings a new metadata block and header; a block starts from the metadata of
the block before it. The file is read in pieces of a few MB; each run of data
lines goes through the pandas C engine, and only a run that it cannot parse,
or that holds a bad value, is read line by line to name the bad line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import ParseError
from ._base import Parser, ReadResult, read_result
from ._common import (
    MAX_COUNTER,
    MAX_ROW_COL,
    Notes,
    Rejects,
    TrainOrder,
    bad_current,
    build_table,
    check_file,
    check_newline,
    check_one_condition_per_train,
    check_text_start,
    check_writable_ids,
    code_dtype,
    counter_problems,
    decode,
    device_id,
    fast_numeric,
    fmt,
    ids_from_name,
    iter_lines,
    order_message,
    parse_condition,
    parse_counter,
    parse_value,
    resolve,
    resolve_v_read,
    split_devices,
    strip_blank_lines,
    strip_bom,
    write_text,
)

__all__ = ["BenchParser"]

HEADER = ("row", "col", "cycle", "pulse", "i_read")
MAGIC = "hfox-bench v1"
#: Bytes read at a time (cut at a line end).
PIECE = 2 << 20
_DTYPES = {"row": "int64", "col": "int64", "cycle": "int64", "pulse": "int64", "i_read": "float64"}
_LIMITS = {"row": MAX_ROW_COL, "col": MAX_ROW_COL, "cycle": MAX_COUNTER, "pulse": MAX_COUNTER}


def _header_columns(text: str):
    """The field names of a header line, or None when ``text`` is not the bench header."""
    names = [f.strip().lower() for f in text.split(",")]
    return names if set(HEADER) <= set(names) else None


class BenchParser(Parser):
    """Reader and writer of the bench export (see the module docstring)."""

    name = "bench"
    suffixes = (".csv",)
    description = "test-chip bench export: '# key: value' metadata, then row,col,cycle,pulse,i_read"

    def sniff(self, head: bytes, path=None) -> bool:
        text = strip_bom(head).lstrip()
        if text.startswith(b"# hfox-bench"):
            return True
        for raw in text.splitlines()[:200]:
            s = raw.strip()
            if not s or s.startswith(b"#"):
                continue
            return _header_columns(s.decode("utf-8", "replace")) is not None
        return False

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read a bench file; see :func:`hfox_fit.parsers.read_measurements`."""
        return _BenchReader(Path(path), wafer, die, v_read, on_bad_lines).run()

    def write(self, table: pd.DataFrame, path, *, newline: str = "\n", bom: bool = False) -> list[Path]:
        """Write one ``{wafer}_{die}_{array}.csv`` per run into the folder ``path``.

        Parameters
        ----------
        table : pandas.DataFrame
            A validated measurement table; devices must be ``{array}/r{row}c{col}``.
        path : path-like
            Folder (created if needed).
        newline : {"\\n", "\\r\\n"}, default="\\n"
        bom : bool, default=False
            Start each file with a UTF-8 byte-order mark.

        Notes
        -----
        Currents are written as ``v_read / resistance`` with full precision
        (failed reads as empty fields). A change of v_read, v_pulse or
        pulse_width from one cycle to the next starts a new metadata block, as
        the bench does; within a pulse train they must not change.
        """
        check_newline(newline)
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        check_writable_ids(table, self.name)
        arrays, rows, cols = split_devices(table, self.name)
        check_one_condition_per_train(table, ["wafer", "die", "device", "cycle"], self.name)
        dev = table["device"].cat.codes.to_numpy()
        frame = pd.DataFrame(
            {
                "wafer": table["wafer"].astype(str).to_numpy(),
                "die": table["die"].astype(str).to_numpy(),
                "array": arrays[dev],
                "row": rows[dev],
                "col": cols[dev],
                "cycle": table["cycle"].to_numpy(),
                "pulse": table["pulse"].to_numpy(),
                "i_read": table["v_read"].to_numpy() / table["resistance"].to_numpy(),
                "v_read": table["v_read"].to_numpy(),
                "v_pulse": table["v_pulse"].to_numpy(),
                "pulse_width": table["pulse_width"].to_numpy(),
            }
        )
        frame["_cond"] = frame.groupby(["v_read", "v_pulse", "pulse_width"], dropna=False, sort=False).ngroup()
        written = []
        for (wafer, die, array), part in frame.groupby(["wafer", "die", "array"], sort=True):
            first_cycle = part.groupby("_cond")["cycle"].transform("min")
            part = part.assign(_first=first_cycle).sort_values(
                ["_first", "_cond", "row", "col", "cycle", "pulse"], kind="stable"
            )
            chunks = []
            for _, block in part.groupby(["_first", "_cond"], sort=False):
                b = block.iloc[0]
                chunks.append(
                    f"# {MAGIC}\n# wafer: {wafer}\n# die: {die}\n# array: {array}\n"
                    f"# v_read: {fmt(b.v_read)}\n# v_pulse: {fmt(b.v_pulse)}\n"
                    f"# pulse_width: {fmt(b.pulse_width)}\n{','.join(HEADER)}\n"
                )
                chunks.append(
                    block[list(HEADER)].to_csv(header=False, index=False, na_rep="", lineterminator="\n")
                )
            target = out / f"{wafer}_{die}_{array}.csv"
            written.append(write_text(target, "".join(chunks), newline=newline, bom=bom))
        return written


class _BenchReader:
    """The state of one read: current block, pending ``#`` lines, parsed parts."""

    def __init__(self, path: Path, wafer, die, v_read, on_bad_lines):
        self.path = path
        self.rejects = Rejects(path, on_bad_lines)
        self.notes = Notes()
        self.args = {"wafer": wafer, "die": die, "v_read": v_read}
        self.from_name = ids_from_name(path)
        self.meta: dict = {}  # raw metadata in force: key -> (text, line)
        self.pending: list = []  # '#' lines since the last header or data line
        self.block = None
        self.blocks: list = []
        self.parts: list = []
        self.order = TrainOrder()
        self.rows_read = 0
        self.version = None

    # ------------------------------------------------------------ driving
    def run(self) -> ReadResult:
        check_file(self.path)
        line, rest, first = 1, b"", True
        with open(self.path, "rb") as fh:
            while True:
                chunk = fh.read(PIECE)
                buf = rest + chunk if rest else chunk
                if chunk:
                    cut = buf.rfind(b"\n") + 1
                    if cut == 0:
                        rest = buf
                        continue
                    piece, rest = buf[:cut], buf[cut:]
                else:
                    piece, rest = buf, b""
                if first:
                    piece = piece[check_text_start(piece, self.path) :]
                    first = False
                if piece:
                    self._feed_piece(piece, line)
                    line += piece.count(b"\n")
                if not chunk:
                    break
        if self.block is None:
            raise ParseError(
                f"missing header: no column header '{','.join(HEADER)}' in the file; expected "
                "'# key: value' metadata lines, then the header, then the data.",
                path=self.path,
            )
        return self._finish()

    def _feed_piece(self, piece: bytes, line: int) -> None:
        """Split a piece of whole lines into runs of plain lines and '#' lines."""
        pos = search = 0
        n = len(piece)
        while pos < n:
            h = piece.find(b"#", search)
            if h < 0:
                break
            ls = max(piece.rfind(b"\n", pos, h) + 1, pos)
            le = piece.find(b"\n", h)
            le = n if le < 0 else le + 1
            if piece[ls:h].strip():  # a '#' inside a data line: that line is bad, found later
                search = le
                continue
            if ls > pos:
                self._feed_plain(piece[pos:ls], line)
                line += piece.count(b"\n", pos, ls)
            raw = piece[ls:le].rstrip(b"\r\n")
            self.pending.append((line, decode(raw, self.path, line).strip()))
            line += 1
            pos = search = le
        if pos < n:
            self._feed_plain(piece[pos:], line)

    def _feed_plain(self, seg: bytes, line: int) -> None:
        """Plain lines: a header first when one is due, then data."""
        seg, line = strip_blank_lines(seg, line)
        if not seg:
            return
        if self.block is None or self.pending:
            nl = seg.find(b"\n")
            first = seg if nl < 0 else seg[:nl]
            text = first.rstrip(b"\r").decode("utf-8", "replace").strip()
            names = _header_columns(text)
            if names is not None:
                self._start_block(names, line)
                seg, line = seg[len(first) + 1 :], line + 1
            elif self.block is None:
                raise ParseError(
                    f"missing header: expected the column header '{','.join(HEADER)}' before the "
                    f"first data line, saw {text[:80]!r}. Add the header line.",
                    path=self.path,
                    line=line,
                )
            else:
                self.pending = []  # '#' lines between data lines are comments
        if seg:
            self._feed_data(seg, line)

    # ------------------------------------------------------------ blocks
    def _start_block(self, names: list, line: int) -> None:
        dup = sorted({c for c in HEADER if names.count(c) > 1})
        if dup:
            raise ParseError(
                f"the header names column(s) {dup} twice; expected each of {list(HEADER)} once.",
                path=self.path,
                line=line,
            )
        meta = dict(self.meta)
        for ln, text in self.pending:
            body = text[1:].strip()
            if body.lower().startswith("hfox-bench"):
                self.version = body
                if body.lower() != MAGIC:
                    self.notes.add(f"unknown bench format version {body!r} read as {MAGIC!r}")
                continue
            key, sep, value = body.partition(":")
            if sep and key.strip():
                meta[key.strip().lower()] = (value.strip(), ln)
        self.pending = []
        self.meta = meta
        where = f"the metadata of the block at line {line}"
        block = {"line": line, "names": names}
        for key in ("wafer", "die"):
            text, ln = meta.get(key, (None, None))
            value = resolve(key, file=text or None, arg=self.args[key], name=self.from_name.get(key),
                            notes=self.notes, where=where)
            if value is None:
                raise ParseError(
                    f"no {key} id: the metadata above the header has no '# {key}: ...' line, no "
                    f"{key}= was given and the file name does not follow "
                    "{wafer}_{die}_{array}.csv. Add the line, or pass " + f"{key}=... (--{key}).",
                    path=self.path,
                    line=line,
                )
            block[key] = str(value)
        text, ln = meta.get("array", (None, None))
        array = resolve("array", file=text or None, name=self.from_name.get("array"), notes=self.notes)
        if array is None:
            raise ParseError(
                "no array id: the metadata above the header has no '# array: ...' line and the file "
                "name does not follow {wafer}_{die}_{array}.csv; device ids are {array}/r{row}c{col}. "
                "Add '# array: A1' above the header.",
                path=self.path,
                line=line,
            )
        block["array"] = str(array)
        file_v = None
        if "v_read" in meta:
            text, ln = meta["v_read"]
            file_v = parse_condition(text, "v_read", self.path, ln, positive=True)
        block["v_read"] = resolve_v_read(file=file_v, arg=self.args["v_read"], notes=self.notes, where=where)
        for key in ("v_pulse", "pulse_width"):
            if key in meta:
                text, ln = meta[key]
                block[key] = parse_condition(text, key, self.path, ln)
            else:
                block[key] = math.nan
                self.notes.add(f"{key} unknown (no '# {key}:' line): NaN")
        block["metadata"] = {k: v for k, (v, _) in meta.items()}
        block["index"] = len(self.blocks)
        self.blocks.append(block)
        self.block = block

    # -------------------------------------------------------------- data
    def _feed_data(self, seg: bytes, line: int) -> None:
        block = self.block
        arrays = fast_numeric(seg, block["names"], _DTYPES, nfields=len(block["names"]))
        if arrays is not None and not counter_problems(arrays, _LIMITS) and not bad_current(arrays["i_read"]).any():
            self.rows_read += len(arrays["i_read"])
            self._add_part(block, arrays, None, line)
        else:
            self._slow(seg, line)
        self.rejects.flush()

    def _slow(self, seg: bytes, line: int) -> None:
        """Line by line: the exact line of each bad row; headers of appended runs."""
        block = self.block
        cols = {}
        lines = []

        def new_lists():
            cols.clear()
            cols.update({c: [] for c in HEADER})
            lines.clear()

        def flush_part():
            if lines:
                arrays = {c: np.array(cols[c], dtype=_DTYPES[c]) for c in HEADER}
                self._add_part(block, arrays, np.array(lines, dtype=np.int64), None)
            new_lists()

        new_lists()
        idx = {c: block["names"].index(c) for c in HEADER}
        nfields = len(block["names"])
        for lineno, _, raw in iter_lines(seg, line):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.rows_read += 1
                try:
                    decode(raw, self.path, lineno)
                except ParseError as err:
                    self.rejects.add(lineno, err.reason)
                continue
            if text.lstrip().startswith("#"):
                continue
            names = _header_columns(text)
            if names is not None:  # an appended run without metadata
                flush_part()
                self.rejects.flush()
                self._start_block(names, lineno)
                block = self.block
                idx = {c: names.index(c) for c in HEADER}
                nfields = len(names)
                continue
            self.rows_read += 1
            fields = text.split(",")
            if len(fields) != nfields:
                self.rejects.add(
                    lineno,
                    f"expected {nfields} fields ({','.join(block['names'])}), saw {len(fields)}: {text[:80]!r}",
                )
                continue
            values = {}
            for c in ("row", "col", "cycle", "pulse"):
                values[c], msg = parse_counter(fields[idx[c]], c, _LIMITS[c])
                if msg:
                    break
            else:
                values["i_read"], msg = parse_value(fields[idx["i_read"]])
            if msg:
                self.rejects.add(lineno, msg)
                continue
            for c in HEADER:
                cols[c].append(values[c])
            lines.append(lineno)
        flush_part()

    def _add_part(self, block: dict, arrays: dict, lines, first_line) -> None:
        """Check the pulse order of a batch of good rows and keep them (16 bytes a row)."""
        row, col, cycle = arrays["row"], arrays["col"], arrays["cycle"]
        pulse = arrays["pulse"].astype(np.int32)
        key = ((row << 16) | col) << 31 | cycle
        train, pos, before = self.order.check((block["wafer"], block["die"], block["array"]), key, pulse)
        resistance = block["v_read"] / arrays["i_read"]
        if pos is not None:
            where = pos + first_line if lines is None else lines[pos]
            array = block["array"]

            def message(i, pos=pos, before=before, row=row, col=col, cycle=cycle, pulse=pulse):
                p = pos[i]
                return order_message(
                    device_id(array, int(row[p]), int(col[p])), int(cycle[p]), int(pulse[p]), int(before[i])
                )

            self.rejects.add_many(where, message)
            keep = np.ones(len(pulse), bool)
            keep[pos] = False
            train, pulse, resistance = train[keep], pulse[keep], resistance[keep]
        self.parts.append([block["index"], train, pulse, resistance])

    # ------------------------------------------------------------ assembly
    def _finish(self) -> ReadResult:
        blocks = self.blocks
        wafers = sorted({b["wafer"] for b in blocks})
        dies = sorted({b["die"] for b in blocks})
        # Each train is ((wafer, die, array), (row << 16 | col) << 31 | cycle): its cell and cycle.
        trains = self.order.trains
        cells = sorted({(scope[2], k >> 31) for scope, k in trains})
        cell_code = {cell: i for i, cell in enumerate(cells)}
        names = [device_id(a, rc >> 16, rc & 0xFFFF) for a, rc in cells]
        dev_of = np.array([cell_code[(scope[2], k >> 31)] for scope, k in trains], dtype=np.int32)
        cycle_of = np.array([k & MAX_COUNTER for _, k in trains], dtype=np.int64)
        parts = self.parts
        self.parts = []
        n = sum(len(p[1]) for p in parts)
        spans = np.cumsum([0] + [len(p[1]) for p in parts])
        cols = {}

        def fill(dtype, field, value_of):
            """Allocate one output column and fill it part by part, freeing what was used."""
            out = np.empty(n, dtype)
            for j, part in enumerate(parts):
                out[spans[j] : spans[j + 1]] = value_of(part)
                if field is not None:
                    part[field] = None
            return out

        cols["resistance"] = fill(np.float64, 3, lambda p: p[3])
        cols["pulse"] = fill(np.int64, 2, lambda p: p[2])
        cols["cycle"] = fill(np.int64, None, lambda p: cycle_of[p[1]])
        device = fill(code_dtype(len(names)), 1, lambda p: dev_of[p[1]])
        for c in ("v_read", "v_pulse", "pulse_width"):
            cols[c] = fill(np.float64, None, lambda p, c=c: blocks[p[0]][c])
        wafer = fill(code_dtype(len(wafers)), None, lambda p: wafers.index(blocks[p[0]]["wafer"]))
        die = fill(code_dtype(len(dies)), None, lambda p: dies.index(blocks[p[0]]["die"]))
        parts.clear()
        table = build_table({"wafer": (wafer, wafers), "die": (die, dies), "device": (device, names)}, cols)
        first = blocks[0]
        metadata = dict(first["metadata"])
        metadata["format_version"] = self.version
        metadata["blocks"] = [
            {"line": b["line"], **b["metadata"],
             **{k: b[k] for k in ("wafer", "die", "array", "v_read", "v_pulse", "pulse_width")}}
            for b in blocks
        ]
        return read_result(
            table, self.path, "bench", rows_read=self.rows_read, rejects=self.rejects, notes=self.notes,
            metadata=metadata,
        )

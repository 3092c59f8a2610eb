"""Helpers shared by the readers: file checks, text decoding, bad-row accounting,
the vectorised fast path, the identifier conventions and the table assembly."""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import FormatError, ParseError
from ..schema import CONDITIONS, key_order

#: How many messages about rejected rows a ReadResult keeps.
MAX_REJECTED = 10
#: Read voltage assumed when neither the file nor the caller gives one (V).
DEFAULT_V_READ = 0.1
#: Values of a float field that mean "failed read".
NA_VALUES = ["", "nan", "NaN", "NAN"]
#: Largest row, column, cycle or pulse number accepted (they are counters, not data).
MAX_COUNTER = 2**31 - 1
MAX_ROW_COL = 2**16 - 1

_BOM = b"\xef\xbb\xbf"
_NUMERIC = b"0123456789.,eE+-nNaA\r\n"
#: ``{wafer}_{die}[_{array}[_r{row}c{col}]]``: the naming convention of raw files.
_NAME = re.compile(
    r"^(?P<wafer>[^_\s]+)_(?P<die>[^_\s]+)(?:_(?P<array>[^_\s]+)(?:_r(?P<row>\d+)c(?P<col>\d+))?)?$"
)
#: ``{array}/r{row}c{col}``: a device id of the test chip.
DEVICE_RE = re.compile(r"^(?P<array>[^/]+)/r(?P<row>\d+)c(?P<col>\d+)$")


# ------------------------------------------------------------------ files and text
def check_file(path) -> Path:
    """Return ``path`` as a Path; raise ParseError if it is missing, a folder or empty."""
    path = Path(path)
    if not path.exists():
        raise ParseError("no such file. Check the path.", path=path)
    if not path.is_file():
        raise ParseError("is not a file; pass one raw measurement file.", path=path)
    if path.stat().st_size == 0:
        raise ParseError("the file is empty (0 bytes); expected raw measurements.", path=path)
    return path


def read_head(path: Path, size: int = 8192) -> bytes:
    """The first ``size`` bytes of a file (for sniffing)."""
    with open(path, "rb") as fh:
        return fh.read(size)


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark."""
    return data[3:] if data.startswith(_BOM) else data


def check_text_start(data: bytes, path: Path) -> int:
    """Return the offset of the text after a UTF-8 BOM; reject UTF-16/32 and binary files."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseError(
            "the file is UTF-16 (or UTF-32) text; expected UTF-8. Re-save it as UTF-8 "
            "(in Excel: 'CSV UTF-8').",
            path=path,
            line=1,
        )
    start = 3 if data.startswith(_BOM) else 0
    first = data[start : start + 4096].split(b"\n", 1)[0]
    if b"\x00" in first:
        raise ParseError(
            "the first line holds NUL bytes: the file is UTF-16/UTF-32 text or binary; "
            "expected UTF-8 text. Re-save it as UTF-8, or pass the right format=.",
            path=path,
            line=1,
        )
    return start


def read_text_bytes(path: Path) -> bytes:
    """The bytes of a text file without its BOM (UTF-16 and binary files rejected)."""
    data = check_file(path).read_bytes()
    return data[check_text_start(data, path) :]


def decode(raw: bytes, path: Path, line) -> str:
    """Decode one line as UTF-8; ParseError naming the line and byte otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParseError(
            f"not UTF-8 text: byte 0x{raw[err.start]:02x} at column {err.start + 1}; expected a UTF-8 "
            "(or ASCII) file. Re-save it as UTF-8 (it may be Latin-1 / Windows-1252).",
            path=path,
            line=line,
        ) from err


def iter_lines(data: bytes, first_line: int):
    """Yield ``(line_number, end, raw_line)``: ``end`` is the offset after the line's newline."""
    pos, n, line = 0, len(data), first_line
    while pos < n:
        le = data.find(b"\n", pos)
        le = n if le < 0 else le + 1
        raw = data[pos:le].rstrip(b"\n")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield line, le, raw
        pos, line = le, line + 1


def strip_blank_lines(seg: bytes, line: int) -> tuple[bytes, int]:
    """Drop blank lines at both ends of ``seg``; return it and its new first line number."""
    body = seg.lstrip(b" \t\r\n")
    if not body:
        return b"", line
    head = seg[: len(seg) - len(body)]
    line += head.count(b"\n")
    end = len(body.rstrip(b" \t\r\n"))
    nl = body.find(b"\n", end)
    return body[: len(body) if nl < 0 else nl + 1], line


# --------------------------------------------------------------------- bad rows
class Rejects:
    """Bad rows of one file: raise at the first (``"error"``) or count them (``"skip"``).

    Rows are reported in batches (:meth:`add`, :meth:`add_many`) and settled by
    :meth:`flush`, which orders them by position, so that ``"error"`` raises at
    the first bad row of the file even when two checks found them.
    """

    def __init__(self, path: Path, on_bad_lines: str):
        check_on_bad_lines(on_bad_lines)
        self.path = path
        self.skip = on_bad_lines == "skip"
        self.count = 0
        self.messages: list[str] = []
        self._single: list = []
        self._groups: list = []

    def add(self, line, message: str, *, count: int = 1, order=None) -> None:
        """One bad row (or ``count`` reads of one line) at ``line``; ``order`` sorts it."""
        self._single.append((line if order is None else order, line, message, count))

    def add_many(self, lines, message_of, *, labels=None) -> None:
        """Bad rows at ``lines`` (sorted), ``message_of(i)`` giving the i-th message."""
        if len(lines):
            self._groups.append((lines, message_of, labels))

    def __bool__(self) -> bool:
        return bool(self._single or self._groups)

    def flush(self) -> None:
        """Raise (``"error"``) or record (``"skip"``) what was added since the last flush."""
        if not (self._single or self._groups):
            return
        items = [(order, line, msg, count) for order, line, msg, count in self._single]
        total = sum(c for *_, c in self._single)
        for lines, message_of, labels in self._groups:
            total += len(lines)
            for i in range(min(len(lines), MAX_REJECTED)):
                label = labels(i) if labels is not None else int(lines[i])
                items.append((int(lines[i]), label, (message_of, i), 1))
        self._single, self._groups = [], []
        items.sort(key=lambda t: t[0])
        if not self.skip:
            _, line, msg, _ = items[0]
            raise ParseError(_text(msg), path=self.path, line=line)
        self.count += total
        for _, line, msg, _ in items[: MAX_REJECTED - len(self.messages)]:
            self.messages.append(str(ParseError(_text(msg), path=self.path, line=line)))


def _text(msg) -> str:
    if isinstance(msg, tuple):
        fn, i = msg
        return fn(i)
    return msg


def check_on_bad_lines(on_bad_lines) -> None:
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip'; got {on_bad_lines!r}.")


class Notes(list):
    """A list of notes that keeps each text once."""

    def add(self, text: str) -> None:
        if text not in self:
            self.append(text)


# ---------------------------------------------------------------- the fast path
def fast_numeric(seg: bytes, names, dtypes: dict, *, nfields: int, extra_bytes: bytes = b"",
                 skipinitialspace: bool = False):
    """Parse a block of plain CSV number lines with the pandas C engine.

    Returns a dict of numpy arrays (the columns of ``dtypes``) or None when the
    block is not exactly ``nfields`` plain numbers per line; the caller then
    reads it line by line to report the exact line. Empty fields and ``nan``
    become NaN in float columns (and fail integer ones).
    """
    if seg.translate(None, _NUMERIC + extra_bytes):
        return None
    if b"\r" in seg and seg.count(b"\r") != seg.count(b"\r\n"):  # a lone CR would split a line
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = pd.read_csv(
                io.BytesIO(seg),
                header=None,
                names=list(names),
                usecols=list(dtypes),
                dtype=dtypes,
                engine="c",
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
                na_values=NA_VALUES,
                skip_blank_lines=False,
                skipinitialspace=skipinitialspace,
            )
    except (ValueError, OverflowError, TypeError, IndexError):  # pandas' ParserError is a ValueError
        return None
    if len(df) == 0 or seg.count(b",") != (nfields - 1) * len(df):  # pandas pads short lines
        return None
    return {c: df[c].to_numpy() for c in dtypes}


def bad_current(i_read: np.ndarray) -> np.ndarray:
    """Mask of currents that are not a positive finite value or NaN (a failed read)."""
    return (i_read <= 0) | np.isinf(i_read)


def current_message(value: float, what: str = "read current", unit: str = "A") -> str:
    if value == 0:
        return f"zero {what} ({value!r} {unit}); expected a positive value, or an empty field / 'nan' for a failed read"
    if math.isinf(value):
        return f"infinite {what} ({value!r}); expected a positive finite value in {unit}"
    return (
        f"negative {what} ({value!r} {unit}); expected a positive value (check the sign "
        "convention of the export), or an empty field / 'nan' for a failed read"
    )


def parse_counter(text: str, what: str, limit: int = MAX_COUNTER):
    """Parse a non-negative integer field; return (value, None) or (None, message)."""
    s = text.strip()
    try:
        value = int(s)
    except ValueError:
        try:  # "3.0" or "1e3", as the vectorised path accepts them
            f = float(s)
            value = int(f) if f.is_integer() else None
        except (ValueError, OverflowError):
            value = None
        if value is None:
            return None, f"{what} must be a non-negative integer, saw {s!r}"
    if value < 0:
        return None, f"{what} must be a non-negative integer, saw {value}"
    if value > limit:
        return None, f"{what} {value} is out of range (at most {limit})"
    return value, None


def parse_value(text: str, what: str = "read current", unit: str = "A", *, positive: bool = True):
    """Parse a float field, empty / nan meaning NaN; return (value, None) or (None, msg).

    ``positive``: the value must be > 0 (a current, a resistance); else any finite
    value (a condition such as a pulse voltage, which may be negative).
    """
    s = text.strip()
    if s in NA_VALUES:
        return math.nan, None
    try:
        value = float(s)
    except ValueError:
        return None, f"{what} is not a number, saw {s!r}; expected a value in {unit} or an empty field"
    if math.isnan(value):
        return value, None
    if positive and (not value > 0 or math.isinf(value)):
        return None, current_message(value, what, unit)
    if math.isinf(value):
        return None, f"{what} is infinite; expected a finite value in {unit} or an empty field"
    return value, None


def counter_problems(arrays: dict, limits: dict) -> bool:
    """True when an integer column of the fast path is negative or over its limit."""
    return any(((arrays[c] < 0) | (arrays[c] > lim)).any() for c, lim in limits.items())


# -------------------------------------------------------------- train order check
class TrainOrder:
    """Check that the pulse counter increases within each train, in file order.

    Trains are keyed by an int64 ``key`` (cell and cycle) within a ``scope``
    (e.g. the array name). Each train gets an index, in order of first
    appearance (``trains`` lists their ``(scope, key)``), and the largest pulse
    of each train is carried from one batch of rows to the next.
    """

    def __init__(self):
        self.index: dict = {}  # (scope, key) -> [train index, largest pulse so far]
        self.trains: list = []

    def check(self, scope, key: np.ndarray, pulse: np.ndarray):
        """Return (train index of each row, positions of rows going backwards, the pulse before each).

        The last two are None when no row goes backwards.
        """
        n = len(key)
        if n == 0:
            return np.zeros(0, np.int32), None, None
        order = None
        if n > 1 and (key[1:] < key[:-1]).any():
            order = np.argsort(key, kind="stable")
            key, pulse = key[order], pulse[order]
        new_run = np.empty(n, bool)
        new_run[0] = True
        np.not_equal(key[1:], key[:-1], out=new_run[1:])
        starts = np.flatnonzero(new_run)
        lengths = np.diff(np.append(starts, n))
        prev = np.empty(n, np.int64)
        prev[0] = -1
        prev[1:] = pulse[:-1]
        if not (pulse[1:] > pulse[:-1])[~new_run[1:]].all():
            run_id = np.cumsum(new_run) - 1
            big = int(pulse.max()) + 2
            shifted = pulse.astype(np.int64) + run_id * big
            cm = np.maximum.accumulate(shifted)
            prev[1:] = cm[:-1] - run_id[1:] * big
        prev[new_run] = -1
        run_max = np.maximum.reduceat(pulse, starts)
        carried = np.empty(len(starts), np.int64)
        run_train = np.empty(len(starts), np.int32)
        index, trains = self.index, self.trains
        for j, (k, m) in enumerate(zip(key[starts].tolist(), run_max.tolist())):
            entry = index.get((scope, k))
            if entry is None:
                entry = index[(scope, k)] = [len(trains), -1]
                trains.append((scope, k))
            run_train[j], carried[j] = entry
            if m > entry[1]:
                entry[1] = m
        if (carried >= 0).any():
            prev = np.maximum(prev, np.repeat(carried, lengths))
        train = np.repeat(run_train, lengths)
        bad = pulse <= prev
        if order is not None:
            unsorted = np.empty_like(train)
            unsorted[order] = train
            train = unsorted
        if not bad.any():
            return train, None, None
        if order is None:
            pos = np.flatnonzero(bad)
            return train, pos, prev[pos]
        pos = order[bad]
        before = prev[bad]
        o = np.argsort(pos)
        return train, pos[o], before[o]


def order_message(device: str, cycle: int, pulse: int, before: int) -> str:
    if pulse == before:
        return (
            f"pulse {pulse} of cell {device} cycle {cycle} is read a second time; expected each "
            "pulse once, in increasing order within a train"
        )
    return (
        f"the pulse counter goes backwards in the train of cell {device} cycle {cycle}: pulse "
        f"{pulse} after pulse {before}; expected increasing pulse numbers within a train "
        "(a new train needs a new cycle number)"
    )


# ------------------------------------------------------------- identifiers
def ids_from_name(path: Path) -> dict:
    """wafer, die, array, row, col from a ``{wafer}_{die}[_{array}[_r{row}c{col}]]`` file name."""
    m = _NAME.match(Path(path).stem)
    if not m:
        return {}
    out = {k: v for k, v in m.groupdict().items() if v is not None}
    for k in ("row", "col"):
        if k in out:
            out[k] = int(out[k])
    return out


def device_id(array: str, row: int, col: int) -> str:
    """The device id ``{array}/r{row:02d}c{col:02d}``."""
    return f"{array}/r{row:02d}c{col:02d}"


def resolve(what: str, *, file=None, arg=None, name=None, notes: Notes, where: str = "the file"):
    """Pick an identifier or condition: the file's own value, else the argument, else the file name.

    An argument that disagrees with the file is noted and ignored.
    """
    if file is not None:
        if arg is not None and str(arg) != str(file):
            notes.add(f"{what} {arg!r} given as an argument is ignored: {where} says {file!r}")
        return file
    if arg is not None:
        if name is not None and str(name) != str(arg):
            notes.add(f"{what} {arg!r} given as an argument; the file name says {name!r}")
        else:
            notes.add(f"{what} {arg!r} taken from the arguments")
        return arg
    if name is not None:
        notes.add(f"{what} {name!r} taken from the file name")
        return name
    return None


def resolve_v_read(*, file=None, arg=None, notes: Notes, where: str = "the file") -> float:
    """The read voltage (V): the file's, else the argument, else DEFAULT_V_READ (noted)."""
    value = resolve("v_read", file=file, arg=arg, notes=notes, where=where)
    if value is None:
        notes.add(f"v_read not given: the default {DEFAULT_V_READ} V was used")
        return DEFAULT_V_READ
    return float(value)


def check_v_read_arg(v_read) -> None:
    if v_read is None:
        return
    try:
        ok = float(v_read) > 0 and math.isfinite(float(v_read))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"v_read must be a positive read voltage in V; got {v_read!r}.")


def parse_condition(text: str, what: str, path: Path, line, *, positive: bool = False) -> float:
    """A condition value (V or s) of a metadata line; 'nan' or empty means unknown (NaN)."""
    s = text.strip()
    if s.lower() in ("", "nan"):
        if positive:
            raise ParseError(f"{what} is empty; expected a positive number in V.", path=path, line=line)
        return math.nan
    try:
        value = float(s)
    except ValueError:
        value = None
    unit = "s" if what == "pulse_width" else "V"
    if value is None or math.isinf(value) or (positive and not value > 0):
        raise ParseError(
            f"{what} must be a {'positive ' if positive else ''}number in {unit}, saw {s!r}.",
            path=path,
            line=line,
        )
    return value


# ---------------------------------------------------------- table assembly
def code_dtype(n: int):
    """The integer dtype pandas uses for the codes of ``n`` categories."""
    return np.int8 if n < 2**7 else np.int16 if n < 2**15 else np.int32


def _small_codes(codes: np.ndarray, n: int) -> np.ndarray:
    return codes.astype(code_dtype(n), copy=False)


def build_table(ids: dict, cols: dict) -> pd.DataFrame:
    """Assemble a measurement table sorted by (wafer, die, device, cycle, pulse).

    Parameters
    ----------
    ids : dict
        ``{"wafer": (codes, names), "die": ..., "device": ...}``: integer codes
        per row into a list of unique names (any order).
    cols : dict
        numpy arrays ``cycle``, ``pulse`` (int64), ``resistance``, ``v_read``,
        ``v_pulse``, ``pulse_width`` (float64), one value per row. They are
        used in place (not copied) when already sorted.
    """
    codes, dtypes = {}, {}
    for col in ("wafer", "die", "device"):
        c, names = ids[col]
        names = np.asarray(names, dtype=object)
        order = np.argsort(names, kind="stable")
        if len(order) and not (order == np.arange(len(order))).all():
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            c = rank[c]
        codes[col] = _small_codes(np.asarray(c), len(names))
        dtypes[col] = pd.CategoricalDtype(pd.Index(list(names[order]), dtype=str))
    if len(cols["pulse"]) > 1:
        sizes = [len(dtypes[c].categories) for c in ("wafer", "die", "device")]
        sizes += [int(cols["cycle"].max()) + 1, int(cols["pulse"].max()) + 1]
        parts = [codes["wafer"], codes["die"], codes["device"], cols["cycle"], cols["pulse"]]
        order = key_order(parts, sizes)
        del parts
        if order is not None:
            for d in (codes, cols):
                for c in list(d):
                    d[c] = d[c][order]
    out = {}
    for col in ("wafer", "die", "device"):
        out[col] = pd.Categorical.from_codes(codes[col], dtype=dtypes[col])
    for col in ("cycle", "pulse", "resistance") + CONDITIONS:
        out[col] = cols[col]
    return pd.DataFrame(out, copy=False)


def codes_of(values: list) -> tuple[np.ndarray, list]:
    """Integer codes of a list of hashable values, and the unique values in first-seen order."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


# ------------------------------------------------------------------ writing
def fmt(value: float) -> str:
    """A float as its shortest round-trip text; NaN as ``nan``."""
    return "nan" if value != value else repr(float(value))


def check_writable_ids(table: pd.DataFrame, fmt_name: str) -> None:
    """File names are built from ids: refuse characters that cannot go into one."""
    for col in ("wafer", "die"):
        for value in table[col].cat.categories:
            if not value or any(ch in value for ch in '/\\:*?"<>|\n\r\t') or value.startswith("."):
                raise FormatError(
                    f"cannot write {col} {value!r} in the {fmt_name} format: raw file names are built "
                    "from the ids, which must not hold / \\ : * ? \" < > | or control characters."
                )


def check_one_condition_per_train(table: pd.DataFrame, keys: list, fmt_name: str, columns=CONDITIONS) -> None:
    """Refuse a table whose ``columns`` change within a group of ``keys`` the format keeps one value for."""
    for col in columns:
        varies = table.groupby(keys, observed=True, sort=False)[col].nunique(dropna=False) > 1
        if varies.any():
            where = "/".join(str(v) for v in varies.index[np.argmax(varies.to_numpy())])
            raise FormatError(
                f"cannot write {where} in the {fmt_name} format: {col} changes there and the format keeps "
                "one value for it. Give each condition its own cycle number, or write the tidy format."
            )


def split_devices(table: pd.DataFrame, fmt_name: str):
    """Per row: array name codes, row and column numbers parsed from ``{array}/r{row}c{col}``."""
    cats = table["device"].cat.categories
    arrays, rows, cols = [], [], []
    for dev in cats:
        m = DEVICE_RE.match(dev)
        if not m:
            raise FormatError(
                f"cannot write device {dev!r} in the {fmt_name} format: its files name cells "
                "'{array}/r{row}c{col}' (e.g. 'A2/r12c07'). Rename the devices, or write the tidy format."
            )
        arrays.append(m["array"])
        rows.append(int(m["row"]))
        cols.append(int(m["col"]))
    return np.array(arrays, dtype=object), np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def write_text(path: Path, text: str, *, newline: str = "\n", bom: bool = False) -> Path:
    """Write text as UTF-8 with the given line ending and an optional BOM."""
    if newline != "\n":
        text = text.replace("\n", newline)
    data = text.encode("utf-8")
    path.write_bytes((_BOM if bom else b"") + data)
    return path


def check_newline(newline: str) -> str:
    if newline not in ("\n", "\r\n"):
        raise ValueError(f"newline must be '\\n' or '\\r\\n'; got {newline!r}.")
    return newline

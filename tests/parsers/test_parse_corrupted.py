"""Property tests: valid files of every format, corrupted at random.

Every outcome must be either a correct table or an ``HfoxError`` whose message
names the file; never another exception. A correct table means: the counts add
up (``rows_read == stored + rejected``), it passes ``validate_table``, and the
rows that came from lines the corruption did not touch are the original rows:
none changed, and none missing unless a row was rejected or a corrupted line
took its key. A corruption that touches nothing gives back the original table.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from parsers_helpers import KEY, sample_table

from hfox_fit.exceptions import HfoxError
from hfox_fit.parsers import read_measurements, write_measurements
from hfox_fit.schema import validate_table

TEXT_FORMATS = ["bench", "b1500", "ramps", "tidy"]
JUNK = st.one_of(
    st.binary(min_size=1, max_size=4),
    st.sampled_from([b"\x00", b"\xff\xfe", b"#", b",", b"\n", b"\r", b'"', b"nan", b"-", b"9", b"e", b" ",
                     b"\xe9", b"\xc3\xa9", b"0,0,0,9,1e-5\n", b"DataValue, 9, 1e-5\n", b",,"]),
)
#: More examples for a longer hunt: HFOX_FUZZ_EXAMPLES=2000 pytest tests/parsers/test_parse_corrupted.py
SETTINGS = settings(max_examples=int(os.environ.get("HFOX_FUZZ_EXAMPLES", 60)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_sources: dict = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corrupted")


def source(fmt: str, variant: int, workdir: Path):
    """A valid file of ``fmt`` (variants: LF, CRLF + BOM), its table and the keys of each line."""
    if (fmt, variant, workdir) in _sources:
        return _sources[(fmt, variant, workdir)]
    folder = Path(tempfile.mkdtemp(prefix=f"{fmt}_{variant}_", dir=workdir))
    pulses = 14 if fmt == "b1500" else 4  # records have ~10 header lines: give them more data lines
    table = sample_table(devices=3, pulses=pulses, cycles=2, failed=0.2, seed=7)
    opts = {"newline": "\r\n", "bom": True} if variant and fmt in ("bench", "b1500", "ramps") else {}
    target = {"hdf5": folder / "W01.h5", "tidy": folder / "W01.csv", "parquet": folder / "W01.parquet"}.get(fmt, folder)
    files = write_measurements(table, target, "tidy" if fmt == "parquet" else fmt, **opts)
    path = files[0]
    if fmt == "ramps":
        device = "A1/r00c00"
        table = table[table["device"] == device].assign(v_pulse=np.nan, pulse_width=np.nan)
    table = table.sort_values(KEY).reset_index(drop=True)
    keys = None if fmt in ("hdf5", "parquet") else _line_keys(fmt, path.read_bytes(), table)
    _sources[(fmt, variant, workdir)] = (path, table, keys)
    return _sources[(fmt, variant, workdir)]


def _line_keys(fmt: str, data: bytes, table: pd.DataFrame) -> list:
    """Per line of the file: the keys (device, cycle, pulse) of the rows it holds; None: a structure line."""
    lines = data.split(b"\n")
    out = []
    rows = iter(table[["device", "cycle", "pulse"]].itertuples(index=False, name=None))
    target = cycle = None
    ramps = None
    for k, raw in enumerate(lines):
        text = raw.decode("utf-8-sig").strip()
        if not text:
            out.append([])  # a blank line: no row, and no structure either
        elif fmt == "bench":
            out.append([next(rows)] if re.match(r"^\d+,\d+,\d+,\d+,", text) else None)
        elif fmt == "tidy":
            out.append([next(rows)] if k > 0 else None)
        elif fmt == "b1500":
            if "TestTarget" in text:
                m = re.search(r"_([^_]+)_r(\d+)c(\d+)$", text)
                target = f"{m[1]}/r{int(m[2]):02d}c{int(m[3]):02d}"
            if "IterationIndex" in text:
                cycle = int(text.rsplit(",", 1)[1])
            out.append([(target, cycle, int(text.split(",")[1]))] if text.startswith("DataValue") else None)
        else:  # ramps: line k is pulse k - 1 of every ramp with a value there
            if k == 0:
                ramps = [int(f[3:]) - 1 for f in text.split(",")]
                out.append(None)
            else:
                fields = text.split(",")
                out.append([("A1/r00c00", ramps[j], k - 1) for j, f in enumerate(fields) if f])
    return out


def corrupt_text(data: bytes, ops, truncate, encoding, data_lines=()):
    """Apply line operations; return the bytes, the original lines touched, where lines shifted
    and the original index of each untouched line by its number in the corrupted file.

    An op on ``data`` aims at a data line (one of ``data_lines``), else at any line.
    """
    lines = data.split(b"\n")
    touched = set()
    shifted_from = None  # first line after which line positions moved (a line removed or split)
    for op, on_data, i, a, b, junk in ops:
        i = data_lines[i % len(data_lines)] if on_data and data_lines else i % len(lines)
        line = lines[i]
        if line is None:
            continue
        if op == "cut":
            lo, hi = sorted((a % (len(line) + 1), b % (len(line) + 1)))
            new = line[:lo] + line[hi:]
        elif op == "swap":
            fields = line.split(b",")
            j, k = a % len(fields), b % len(fields)
            fields[j], fields[k] = fields[k], fields[j]
            new = b",".join(fields)
        elif op == "junk":
            pos = a % (len(line) + 1)
            new = line[:pos] + junk + line[pos:]
        else:  # drop
            new = None
        if new != line:
            touched.add(i)
            lines[i] = new
            if new is None or b"\n" in new:
                shifted_from = i if shifted_from is None else min(shifted_from, i)
    out, starts, number = bytearray(), {}, {}
    for i, line in enumerate(lines):
        if line is None:
            continue
        starts[i] = len(out)
        number[i] = out.count(b"\n") + 1  # the line's number in the corrupted file
        out += line + (b"\n" if i < len(lines) - 1 else b"")
    if truncate is not None and out:
        cut = truncate % len(out)
        touched |= {i for i, s in starts.items() if s + len(lines[i]) >= cut}
        shifted_from = min(shifted_from, cut) if shifted_from is not None else None
        del out[cut:]
    data = bytes(out)
    if encoding == "utf-16":
        data = data.decode("latin-1").encode("utf-16")
        touched = set(range(len(lines)))
    original_of = {n: i for i, n in number.items() if i not in touched}
    return data, touched, shifted_from, original_of


def corrupt_binary(data: bytes, ops, truncate):
    out = bytearray(data)
    for op, _, i, a, b, junk in ops:
        pos = (i * 7919 + a) % max(len(out), 1)
        if op == "junk":
            out[pos:pos] = junk
        elif op == "cut":
            del out[pos : pos + 1 + b % 64]
        else:  # overwrite
            out[pos : pos + len(junk)] = junk
    if truncate is not None and out:
        del out[truncate % len(out):]
    return bytes(out)


def _rows(table: pd.DataFrame) -> dict:
    t = table.astype({c: str for c in ("wafer", "die", "device")})
    return {(r[2], r[3], r[4]): r for r in t.itertuples(index=False, name=None)}


def _same(a, b) -> bool:
    for x, y in zip(a, b):
        if isinstance(x, float) or isinstance(y, float):
            if math.isnan(x) and math.isnan(y):
                continue
            if math.isnan(x) or math.isnan(y) or abs(x - y) > 1e-12 * abs(y):
                return False
        elif x != y:
            return False
    return True


def check(fmt, path, corrupted: bytes, table, keys, touched, shifted_from, mode, explicit, original_of=None):
    """Read a corrupted file and check the property."""
    f = path.parent / "corrupted" / path.name  # the same name: it may carry the ids
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(corrupted)
    fmt_name = "tidy" if fmt == "parquet" else fmt
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = read_measurements(f, fmt_name if explicit else None, on_bad_lines=mode,
                                    **({"v_read": 0.1} if fmt == "ramps" else {}))
    except HfoxError as err:
        assert f.name in str(err), f"the message does not name the file: {err}"
        assert "miscounted" not in str(err), str(err)  # a reader bug, not a verdict on the file
        return "error"
    finally:
        f.unlink()
    t = res.table
    assert res.rows_read == len(t) + res.rows_rejected
    assert mode == "skip" or res.rows_rejected == 0
    pd.testing.assert_frame_equal(validate_table(t), t)
    if corrupted == path.read_bytes():
        assert res.rows_rejected == 0
        pd.testing.assert_frame_equal(
            t.astype({c: str for c in ("wafer", "die", "device")}),
            table.astype({c: str for c in ("wafer", "die", "device")}), check_exact=False, rtol=1e-12)
        return "same"
    if keys is None or any(keys[i] is None for i in touched):
        return "weak"  # a binary file, or a header / metadata line was hit: counts and types only
    if fmt == "ramps" and shifted_from is not None:
        touched = touched | set(range(shifted_from, len(keys)))
    original = _rows(table)
    clean = {k for i, ks in enumerate(keys) if ks and i not in touched for k in ks}
    stored = _rows(t)
    good = {k for k, r in stored.items() if k in original and _same(r, original[k]) and k in clean}
    extra = [k for k, r in stored.items() if not (k in original and _same(r, original[k]))]
    missing = [k for k in clean if k not in good]
    per_line = max(len(ks) for ks in keys if ks)
    assert len(extra) <= per_line * 3 * max(1, len(touched)), f"rows changed: {extra[:5]}"
    assert len(missing) <= res.rows_rejected + len(extra), f"rows silently lost: {missing[:5]}"
    if res.rows_rejected <= len(res.rejected):  # every rejection is listed: account for each lost row
        rejected = {int(m[len(str(f)) + 1 :].split(":", 1)[0]) for m in res.rejected}
        excused = {k for n in rejected if n in original_of for k in keys[original_of[n]] or ()}
        excused |= set(extra)
        assert set(missing) <= excused, f"rows silently lost: {sorted(set(missing) - excused)[:5]}"
    if not touched:
        assert not extra and not missing
    return "checked"


OPS = st.lists(
    st.tuples(st.sampled_from(["cut", "swap", "junk", "junk", "drop"]), st.sampled_from([True, True, True, False]),
              st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), JUNK),
    min_size=1, max_size=3,
)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@SETTINGS
@given(variant=st.integers(0, 1), ops=OPS, truncate=st.sampled_from([None] * 3) | st.integers(0, 10**9),
       encoding=st.sampled_from([None] * 9 + ["utf-16"]), mode=st.sampled_from(["error", "skip", "skip"]),
       explicit=st.sampled_from([True, True, False]))
def test_corrupted_text_files(workdir, fmt, variant, ops, truncate, encoding, mode, explicit):
    path, table, keys = source(fmt, variant, workdir)
    data_lines = [i for i, ks in enumerate(keys) if ks]
    data, touched, shifted, original_of = corrupt_text(path.read_bytes(), ops, truncate, encoding, data_lines)
    event(check(fmt, path, data, table, keys, touched, shifted, mode, explicit, original_of))


@pytest.mark.parametrize("fmt", ["hdf5", "parquet"])
@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["junk", "cut", "overwrite", "overwrite"]), st.just(False),
                              st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), JUNK),
                    min_size=0, max_size=3),
       truncate=st.none() | st.integers(0, 10**9), mode=st.sampled_from(["error", "skip"]), explicit=st.booleans())
def test_corrupted_binary_files(workdir, fmt, ops, truncate, mode, explicit):
    path, table, _ = source(fmt, 0, workdir)
    data = corrupt_binary(path.read_bytes(), ops, truncate)
    event(check(fmt, path, data, table, None, set(), None, mode, explicit))


def test_the_oracle_sees_a_silently_lost_row(workdir):
    """The property would catch a reader that drops a clean row: check it on a fake result."""
    path, table, keys = source("bench", 0, workdir)
    stored = _rows(table.iloc[1:])
    clean = {k for ks in keys if ks for k in ks}
    missing = [k for k in clean if k not in stored]
    assert missing == [("A1/r00c00", 0, 0)]

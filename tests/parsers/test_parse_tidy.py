"""The tidy table as CSV and Parquet: exact round trips, bad rows, damaged files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from parsers_helpers import assert_same_reads, roundtrip, sample_table

from hfox_fit.exceptions import FormatError, ParseError
from hfox_fit.parsers import read_measurements, write_measurements

pytestmark = pytest.mark.filterwarnings("ignore::hfox_fit.exceptions.IngestWarning")

HEADER = "wafer,die,device,cycle,pulse,resistance,v_read,v_pulse,pulse_width\n"


def write(tmp_path, text, name="reads.csv"):
    f = tmp_path / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_is_exact(tmp_path, suffix):
    table = sample_table(devices=20, pulses=6, cycles=2)
    files, got = roundtrip(table, tmp_path / f"W01{suffix}", "tidy")
    assert files == [tmp_path / f"W01{suffix}"]
    assert_same_reads(got, table, rtol=0)
    res = read_measurements(files[0])
    pd.testing.assert_frame_equal(res.table, table)  # same dtypes, categories and order
    assert res.metadata["container"] == suffix[1:]


def test_columns_in_any_order_extra_ignored_failed_reads_kept(tmp_path):
    text = ("pulse,note,device,wafer,die,cycle,resistance,v_read,v_pulse,pulse_width\n"
            "0,ok,c1,W1,D1,0,1000.5,0.1,,\n1,,c1,W1,D1,0,nan,0.1,1.2,1e-6\n2,,c1,W1,D1,0,,0.1,1.2,\n")
    res = read_measurements(write(tmp_path, text))
    t = res.table
    assert t["pulse"].tolist() == [0, 1, 2] and t["resistance"].isna().tolist() == [False, True, True]
    assert "column(s) ['note'] ignored" in res.notes and np.isnan(t["v_pulse"].iloc[0])


def test_quoted_ids_with_commas(tmp_path):
    text = HEADER + '"W,1",D1,"cell ""a""",0,0,1000,0.1,,\n'
    assert read_measurements(write(tmp_path, text)).table["device"].tolist() == ['cell "a"']


def test_arguments_are_noted_and_ignored(tmp_path):
    res = read_measurements(write(tmp_path, HEADER + "W1,D1,c,0,0,1000,0.1,,\n"), wafer="W9", v_read=0.2)
    assert res.table["wafer"].tolist() == ["W1"] and res.table["v_read"].tolist() == [0.1]
    assert "argument(s) ['wafer', 'v_read'] ignored: a tidy table names its own ids and conditions" in res.notes


def test_missing_columns(tmp_path):
    with pytest.raises(ParseError, match=r"reads\.csv:1: missing header column\(s\) \['v_pulse', 'pulse_width'\]; "
                                         r"expected the columns"):
        read_measurements(write(tmp_path, "wafer,die,device,cycle,pulse,resistance,v_read\nW,D,c,0,0,1,0.1\n"),
                          "tidy")


@pytest.mark.parametrize(
    "row, match",
    [
        ("W1,D1,c,0,1,0,0.1,,", r":3: zero resistance"),
        ("W1,D1,c,0,1,-5,0.1,,", r":3: negative resistance"),
        ("W1,D1,c,0,1,abc,0.1,,", r":3: resistance is not a number, saw 'abc'"),
        ("W1,D1,c,-1,1,1000,0.1,,", r":3: cycle must be a non-negative integer, saw -1"),
        ("W1,D1,c,0,1.5,1000,0.1,,", r":3: pulse must be a non-negative integer, saw '1\.5'"),
        ("W1,,c,0,1,1000,0.1,,", r":3: die is empty; expected an id"),
        ("W1,D1,c,0,1,1000,,,", r":3: v_read is empty; expected a positive read voltage in V"),
        ("W1,D1,c,0,1,1000,0.1,inf,", r":3: v_pulse is infinite"),
        ("W1,D1,c,0,1,1000,0.1,", r":3: expected 9 fields \(wafer,die,.*\), saw 8"),
        ("W1,D1,c,0,0,1000,0.1,,", r":3: repeats the read W1/D1/c cycle 0 pulse 0 of line 2"),
    ],
)
def test_bad_rows(tmp_path, row, match):
    f = write(tmp_path, HEADER + "W1,D1,c,0,0,1000,0.1,,\n" + row + "\nW1,D1,c,0,2,1000,0.1,,\n")
    with pytest.raises(ParseError, match=r"reads\.csv" + match):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (3, 2, 1)
    assert res.table["pulse"].tolist() == [0, 2]


@pytest.mark.parametrize("head", [b"\r", b"wafer,die\r,"], ids=["before", "inside"])
def test_a_carriage_return_in_the_header_is_a_parse_error(tmp_path, head):
    """A lone CR in the header line (damaged line endings) made the csv module raise, with no file or line."""
    header = b"wafer,die,device,cycle,pulse,resistance,v_read,v_pulse,pulse_width"
    path = tmp_path / "W01.csv"
    path.write_bytes(head + header[len(head.rstrip(b"\r,")):] + b"\nW01,D01,A1,0,0,6753.6,0.1,1.25,1e-06\n")
    with pytest.raises(ParseError, match=r"W01.csv:1: the header line holds a carriage return"):
        read_measurements(path, "tidy")


def test_parquet_bad_rows_name_the_row(tmp_path):
    t = sample_table(devices=2, pulses=3, cycles=1)
    t.loc[2, "resistance"] = -1.0  # written behind the validator's back
    t.loc[5, "cycle"] = 0
    t.loc[5, "pulse"] = 0
    f = tmp_path / "bad.parquet"
    t.to_parquet(f)
    with pytest.raises(ParseError, match=r"bad\.parquet:row 3: zero or negative resistance"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (8, 6, 2)
    assert "row 6: repeats an earlier read" in res.rejected[1]


def test_damaged_parquet(tmp_path):
    f = tmp_path / "W01.parquet"
    write_measurements(sample_table(devices=4, pulses=20, cycles=1), f, "tidy")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 40])
    with pytest.raises(ParseError, match=r"W01\.parquet: not a readable Parquet file"):
        read_measurements(f)


def test_writer_needs_a_known_suffix(tmp_path):
    with pytest.raises(FormatError, match=r"the suffix must be \.csv, \.parquet or \.pq, got '\.txt'"):
        write_measurements(sample_table(devices=1, pulses=1, cycles=1), tmp_path / "x.txt", "tidy")

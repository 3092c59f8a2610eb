"""The bench export: every quirk of formats.md section 1, the bad inputs, the writer."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from parsers_helpers import DATA, assert_same_reads, roundtrip, sample_table

from hfox_fit.exceptions import FormatError, ParseError
from hfox_fit.parsers import bench as bench_module
from hfox_fit.parsers import read_measurements, write_measurements

META = (
    "# hfox-bench v1\n# wafer: W07\n# die: D12\n# array: A2\n# v_read: 0.1\n# v_pulse: 1.25\n"
    "# pulse_width: 1e-06\n"
)
HEADER = "row,col,cycle,pulse,i_read\n"

pytestmark = pytest.mark.filterwarnings("ignore::hfox_fit.exceptions.IngestWarning")


def write(tmp_path, text, name="W07_D01.csv"):
    f = tmp_path / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


def reference_of_the_example() -> pd.DataFrame:
    """tests/data/W07_D12_A2.csv, by hand."""
    i = [1.4312e-05, 1.4301e-05, math.nan, math.nan, 1.25e-05, 1e-05, 2e-05, 1.6e-05]
    return pd.DataFrame({
        "wafer": ["W07"] * 8, "die": ["D12"] * 8,
        "device": ["A2/r00c00"] * 6 + ["A2/r00c01"] * 2,
        "cycle": [0, 0, 0, 0, 1, 1, 0, 0], "pulse": [0, 1, 2, 3, 0, 1, 0, 1],
        "resistance": [0.1 / x for x in i], "v_read": [0.1] * 8,
        "v_pulse": [1.25] * 4 + [1.5] * 2 + [1.25] * 2, "pulse_width": [1e-6] * 8,
    })


def test_example_file_matches_the_hand_built_table():
    res = read_measurements(DATA / "W07_D12_A2.csv")
    assert res.format == "bench" and res.rows_read == 8 and res.rows_rejected == 0 and res.notes == []
    assert_same_reads(res.table, reference_of_the_example())
    assert res.metadata["operator"] == "jdoe"  # unknown keys are kept
    assert res.metadata["format_version"] == "hfox-bench v1"
    assert [b["v_pulse"] for b in res.metadata["blocks"]] == [1.25, 1.5]
    assert [b["line"] for b in res.metadata["blocks"]] == [9, 19]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_line_endings_and_bom(tmp_path, newline, bom):
    text = (DATA / "W07_D12_A2.csv").read_text().replace("\n", newline)
    f = write(tmp_path, (b"\xef\xbb\xbf" if bom else b"") + text.encode(), "W07_D12_A2.csv")
    assert_same_reads(read_measurements(f).table, reference_of_the_example())


def test_integral_float_counters_are_accepted(tmp_path):
    f = write(tmp_path, META + HEADER + "0,0,0,0,1e-5\n0,0,0,1.0,1e-5\n0,0,0,2e0,1e-5\n")
    assert read_measurements(f).table["pulse"].tolist() == [0, 1, 2]


def test_failed_reads_are_nan_never_dropped(tmp_path):
    f = write(tmp_path, META + HEADER + "0,0,0,0,\n0,0,0,1,nan\n0,0,0,2,NaN\n0,0,0,3,1e-5\n")
    res = read_measurements(f)
    assert res.rows_read == 4 and len(res.table) == 4 and res.rows_rejected == 0
    assert res.table["resistance"].isna().tolist() == [True, True, True, False]


def test_device_id_is_zero_padded(tmp_path):
    f = write(tmp_path, META + HEADER + "3,12,0,0,1e-5\n10,7,0,0,1e-5\n")
    assert read_measurements(f).table["device"].tolist() == ["A2/r03c12", "A2/r10c07"]


def test_comment_after_header_and_metadata_like_comment(tmp_path):
    body = "0,0,0,0,1e-5\n# run resumed\n# note: power glitch\n0,0,0,1,1e-5\n"
    res = read_measurements(write(tmp_path, META + HEADER + body))
    assert res.table["pulse"].tolist() == [0, 1] and res.rows_read == 2
    assert "note" not in res.metadata  # a '# key: value' line not above a header is a comment


def test_appended_run_inherits_and_overrides_metadata(tmp_path):
    text = META + HEADER + "0,0,0,0,1e-5\n" + "# hfox-bench v1\n# v_pulse: 1.5\n# v_read: 0.2\n" + HEADER + "0,0,1,0,1e-5\n"
    t = read_measurements(write(tmp_path, text)).table
    assert t["v_pulse"].tolist() == [1.25, 1.5] and t["v_read"].tolist() == [0.1, 0.2]
    assert t["resistance"].tolist() == [0.1 / 1e-5, 0.2 / 1e-5]
    assert t["die"].tolist() == ["D12", "D12"]


def test_appended_header_without_metadata(tmp_path):
    text = META + HEADER + "0,0,0,0,1e-5\n" + HEADER + "0,0,1,0,1e-5\n"
    assert read_measurements(write(tmp_path, text)).table["cycle"].tolist() == [0, 1]


def test_column_order_from_the_header_and_extra_columns(tmp_path):
    text = META + "pulse,i_read,row,col,cycle,temp\n0,1e-5,0,1,0,300\n1,2e-5,0,1,0,301\n"
    t = read_measurements(write(tmp_path, text)).table
    assert t["device"].tolist() == ["A2/r00c01"] * 2 and t["resistance"].tolist() == [1e4, 5e3]


def test_interleaved_trains_in_file_order(tmp_path):
    rows = [f"{c // 4},{c % 4},0,{p},{1e-5 * (1 + p)}\n" for p in range(3) for c in range(8)]
    t = read_measurements(write(tmp_path, META + HEADER + "".join(rows))).table
    assert len(t) == 24 and t.groupby("device", observed=True)["pulse"].apply(list).map(tuple).nunique() == 1


def test_ids_from_the_file_name_with_notes(tmp_path):
    f = write(tmp_path, "# v_read: 0.1\n" + HEADER + "0,0,0,0,1e-5\n", "W07_D03_A4.csv")
    res = read_measurements(f)
    assert res.table.iloc[0][["wafer", "die", "device"]].tolist() == ["W07", "D03", "A4/r00c00"]
    assert "wafer 'W07' taken from the file name" in res.notes
    assert "array 'A4' taken from the file name" in res.notes
    assert "v_pulse unknown (no '# v_pulse:' line): NaN" in res.notes


def test_ids_from_arguments_and_default_v_read(tmp_path):
    f = write(tmp_path, "# array: A1\n" + HEADER + "0,0,0,0,1e-5\n", "run.csv")
    res = read_measurements(f, "bench", wafer="W1", die="D9")
    assert res.table.iloc[0][["wafer", "die", "v_read"]].tolist() == ["W1", "D9", 0.1]
    assert "v_read not given: the default 0.1 V was used" in res.notes
    res = read_measurements(f, "bench", wafer="W1", die="D9", v_read=0.2)
    assert res.table["resistance"].iloc[0] == pytest.approx(2e4)


def test_file_metadata_beats_arguments(tmp_path):
    res = read_measurements(write(tmp_path, META + HEADER + "0,0,0,0,1e-5\n"), wafer="W99")
    assert res.table["wafer"].iloc[0] == "W07"
    assert any("'W99' given as an argument is ignored" in n for n in res.notes)


@pytest.mark.parametrize("key, fix", [("wafer", "wafer=... (--wafer)"), ("die", "die=... (--die)")])
def test_missing_ids_say_what_to_pass(tmp_path, key, fix):
    text = "# wafer: W1\n# die: D1\n# array: A1\n".replace(f"# {key}: ", "# other: ") + HEADER + "0,0,0,0,1e-5\n"
    with pytest.raises(ParseError, match=rf"run\.csv:4: no {key} id: .*Add the line, or pass {re.escape(fix)}"):
        read_measurements(write(tmp_path, text, "run.csv"), "bench")


def test_missing_array(tmp_path):
    f = write(tmp_path, "# wafer: W1\n# die: D1\n" + HEADER + "0,0,0,0,1e-5\n", "run.csv")
    with pytest.raises(ParseError, match=r"run\.csv:3: no array id: .*Add '# array: A1'"):
        read_measurements(f, "bench")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "line, match",
    [
        ("0,0,1", r"W07_D01\.csv:10: expected 5 fields \(row,col,cycle,pulse,i_read\), saw 3: '0,0,1'"),
        ("0,0,0,1,1e-5,7", r"expected 5 fields .*saw 6"),
        ("0,0,0,1,0", r"W07_D01\.csv:10: zero read current \(0\.0 A\); expected a positive value, or an empty"),
        ("0,0,0,1,-1.2e-05", r":10: negative read current \(-1\.2e-05 A\).*sign convention"),
        ("0,0,0,1,inf", r":10: infinite read current"),
        ("0,0,0,1,1.2e-5x", r":10: read current is not a number, saw '1\.2e-5x'"),
        ("0,x,0,1,1e-5", r":10: col must be a non-negative integer, saw 'x'"),
        ("0,0,0,-1,1e-5", r":10: pulse must be a non-negative integer, saw -1"),
        ("0,0,0,1.5,1e-5", r":10: pulse must be a non-negative integer, saw '1\.5'"),
        ("0,0,0,0,1e-5", r":10: pulse 0 of cell A2/r00c00 cycle 0 is read a second time"),
        ("0,0,0,1,1e-5#x", r":10: read current is not a number"),
        ('"0",0,0,1,1e-5', r":10: row must be a non-negative integer"),
    ],
)
def test_bad_rows_name_file_line_expected_and_seen(tmp_path, line, match):
    f = write(tmp_path, META + HEADER + "0,0,0,0,1e-5\n" + line + "\n0,0,0,2,1e-5\n")
    with pytest.raises(ParseError, match=match):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (3, 2, 1)
    assert res.table["pulse"].tolist() == [0, 2]
    assert res.rejected[0].startswith(f"{f}:10: ")


def test_pulse_counter_going_backwards(tmp_path):
    f = write(tmp_path, META + HEADER + "0,0,0,0,1e-5\n0,0,0,5,1e-5\n0,0,0,3,1e-5\n0,0,0,6,1e-5\n")
    with pytest.raises(ParseError, match=r"W07_D01\.csv:11: the pulse counter goes backwards in the train of "
                                         r"cell A2/r00c00 cycle 0: pulse 3 after pulse 5"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert res.table["pulse"].tolist() == [0, 5, 6] and res.rows_rejected == 1


def test_backwards_across_pieces_and_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_module, "PIECE", 64)  # many small pieces: the check carries over
    rows = "".join(f"0,0,0,{p},1e-5\n" for p in range(40))
    f = write(tmp_path, META + HEADER + rows + "# hfox-bench v1\n" + HEADER + "0,0,0,7,1e-5\n")
    with pytest.raises(ParseError, match=r":51: the pulse counter goes backwards .*pulse 7 after pulse 39"):
        read_measurements(f)


def test_first_bad_row_in_file_order_when_two_checks_find_them(tmp_path):
    f = write(tmp_path, META + HEADER + "0,0,0,3,1e-5\n0,0,0,1,1e-5\n0,0,0,4,abc\n")
    with pytest.raises(ParseError, match=r":10: the pulse counter goes backwards"):
        read_measurements(f)


def test_skip_keeps_ten_messages_and_counts_all(tmp_path):
    rows = "".join(f"0,0,0,{p},{'x' if p % 2 else '1e-5'}\n" for p in range(60))
    res = read_measurements(write(tmp_path, META + HEADER + rows), on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (60, 30, 30)
    assert len(res.rejected) == 10 and res.rejected[0].endswith("saw 'x'; expected a value in A or an empty field")
    assert ":10: " in res.rejected[0] and ":28: " in res.rejected[9]


def test_bad_line_deep_in_a_big_file_is_found_exactly(tmp_path):
    n = 120_000
    rows = np.arange(n)
    lines = [f"{r // 1000 // 16},{r // 1000 % 16},0,{r % 1000},1.5e-05\n" for r in rows]
    lines[100_500] = "0,0,0\n"
    f = write(tmp_path, META + HEADER + "".join(lines))
    with pytest.raises(ParseError, match=rf"W07_D01\.csv:{100_500 + 9}: expected 5 fields"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (n, n - 1, 1)


def test_missing_header(tmp_path):
    with pytest.raises(ParseError, match=r"W07_D01\.csv:8: missing header: expected the column header "
                                         r"'row,col,cycle,pulse,i_read' before the first data line, saw '0,0,0,0,1e-5'"):
        read_measurements(write(tmp_path, META + "0,0,0,0,1e-5\n"), "bench")
    with pytest.raises(ParseError, match="missing header: no column header"):
        read_measurements(write(tmp_path, META), "bench")


def test_header_naming_a_column_twice(tmp_path):
    with pytest.raises(ParseError, match=r":8: the header names column\(s\) \['row'\] twice"):
        read_measurements(write(tmp_path, META + "row,row,col,cycle,pulse,i_read\n"), "bench")


@pytest.mark.parametrize("value, match", [("fast", r":5: v_read must be a positive number in V, saw 'fast'"),
                                          ("0", r":5: v_read must be a positive number in V, saw '0'")])
def test_bad_metadata_value(tmp_path, value, match):
    with pytest.raises(ParseError, match=match):
        read_measurements(write(tmp_path, META.replace("v_read: 0.1", f"v_read: {value}") + HEADER + "0,0,0,0,1e-5\n"))


def test_wrong_encoding(tmp_path):
    f = write(tmp_path, META.encode() + b"# op\xe9rateur: L\xe9a\n" + HEADER.encode() + b"0,0,0,0,1e-5\n")
    with pytest.raises(ParseError, match=r"W07_D01\.csv:8: not UTF-8 text: byte 0xe9 at column 5.*Re-save it as UTF-8"):
        read_measurements(f)
    f = write(tmp_path, META.encode() + HEADER.encode() + b"0,0,0,0,1e-5\xb5\n0,0,0,1,1e-5\n")
    with pytest.raises(ParseError, match=r":9: not UTF-8 text: byte 0xb5"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert res.rows_read == 2 and res.rows_rejected == 1


# --------------------------------------------------------------------- writer
def test_round_trip_within_1e_12(tmp_path):
    table = sample_table(devices=300, pulses=6, cycles=2)  # two arrays
    files, got = roundtrip(table, tmp_path, "bench")
    assert sorted(f.name for f in files) == ["W01_D01_A1.csv", "W01_D01_A2.csv"]
    assert_same_reads(got, table, rtol=1e-12)


def test_writer_starts_a_block_when_v_pulse_changes(tmp_path):
    t = sample_table(devices=2, pulses=2, cycles=2)
    t["v_pulse"] = np.where(t["cycle"] == 1, 1.5, 1.25)
    t.loc[t["cycle"] == 1, "pulse_width"] = np.nan
    files, got = roundtrip(t, tmp_path, "bench")
    text = files[0].read_text()
    assert text.count("row,col,cycle,pulse,i_read") == 2 and "# v_pulse: 1.5\n" in text
    assert "# pulse_width: nan" in text
    assert_same_reads(got, t, rtol=1e-12)


def test_writer_options_crlf_and_bom(tmp_path):
    t = sample_table(devices=2, pulses=2, cycles=1)
    (f,) = write_measurements(t, tmp_path, "bench", newline="\r\n", bom=True)
    data = f.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf# hfox-bench v1\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert_same_reads(read_measurements(f).table, t, rtol=1e-12)


def test_writer_refuses_devices_that_are_not_array_row_col(tmp_path):
    t = sample_table(devices=2, pulses=2, cycles=1)
    t["device"] = t["device"].cat.rename_categories(lambda d: d.replace("/", "-"))
    with pytest.raises(FormatError, match=r"cannot write device 'A1-r00c00' in the bench format: .*'\{array\}/r\{row\}c\{col\}'"):
        write_measurements(t, tmp_path, "bench")

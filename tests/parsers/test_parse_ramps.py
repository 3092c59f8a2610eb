"""One column per ramp: quirks of formats.md section 3, the real CrossSim file, bad input, writer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from parsers_helpers import DATA, assert_same_reads, roundtrip, sample_table

from hfox_fit.exceptions import FormatError, ParseError
from hfox_fit.parsers import read_measurements, write_measurements

pytestmark = pytest.mark.filterwarnings("ignore::hfox_fit.exceptions.IngestWarning")


def write(tmp_path, text, name="W07_D12_A2_r00c00.csv"):
    f = tmp_path / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


def reference_of_the_example() -> pd.DataFrame:
    """tests/data/W07_D12_A2_r00c00.csv, by hand: padding is no read, an inner gap or nan is a failed read."""
    cells = [  # (cycle, pulse, current)
        (0, 0, 0.000245103), (0, 1, 0.00024481), (0, 2, 0.000244495), (0, 3, 0.000244127),
        (1, 0, 0.000245041), (1, 1, math.nan), (1, 2, 0.000244521), (1, 3, 0.000244331), (1, 4, 0.000244012),
        (2, 0, 0.000245868), (2, 1, 0.000245585), (2, 2, math.nan),
    ]
    n = len(cells)
    return pd.DataFrame({
        "wafer": ["W07"] * n, "die": ["D12"] * n, "device": ["A2/r00c00"] * n,
        "cycle": [c for c, _, _ in cells], "pulse": [p for _, p, _ in cells],
        "resistance": [0.1 / i for _, _, i in cells], "v_read": [0.1] * n,
        "v_pulse": [math.nan] * n, "pulse_width": [math.nan] * n,
    })


def test_example_file_matches_the_hand_built_table():
    res = read_measurements(DATA / "W07_D12_A2_r00c00.csv")
    assert res.format == "ramps" and res.rows_read == 12 and res.rows_rejected == 0
    assert_same_reads(res.table, reference_of_the_example())
    assert res.notes == [
        "wafer 'W07' taken from the file name", "die 'D12' taken from the file name",
        "device 'A2/r00c00' taken from the file name", "v_read not given: the default 0.1 V was used",
        "ramps files carry no v_pulse or pulse_width: NaN",
    ]
    assert res.metadata["pulses"] == [4, 5, 3]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_line_endings_and_bom(tmp_path, newline, bom):
    text = (DATA / "W07_D12_A2_r00c00.csv").read_text().replace("\n", newline)
    f = write(tmp_path, (b"\xef\xbb\xbf" if bom else b"") + text.encode())
    assert_same_reads(read_measurements(f).table, reference_of_the_example())


def test_the_real_crosssim_file_is_40_cycles_of_one_cell(crosssim_reset):
    res = read_measurements(crosssim_reset, wafer="SNL", die="D0")
    t = res.table
    assert res.format == "ramps" and res.rows_rejected == 0
    assert t["device"].nunique() == 1 and t["cycle"].tolist()[0] == 0
    assert sorted(t["cycle"].unique()) == list(range(40))
    # each ramp holds its non-empty cells (149..153 pulses), no more: the padding is not read
    raw = pd.read_csv(crosssim_reset)
    per_cycle = t.groupby("cycle")["pulse"].agg(["count", "max"])
    np.testing.assert_array_equal(per_cycle["count"].to_numpy(), raw.notna().sum().to_numpy())
    np.testing.assert_array_equal(per_cycle["max"].to_numpy() + 1, per_cycle["count"].to_numpy())
    assert per_cycle["count"].min() == 149 and per_cycle["count"].max() == 153
    assert not t["resistance"].isna().any()
    assert 400 < t["resistance"].min() < 410 and 615 < t["resistance"].max() < 630  # ~408 -> ~623 Ohm
    first = t[(t["cycle"] == 0) & (t["pulse"] == 0)]["resistance"].item()
    assert first == pytest.approx(0.1 / 0.000245103, rel=1e-15)
    assert "device 'reset' taken from the file name, which does not follow " \
           "{wafer}_{die}_{array}_r{row}c{col}.csv" in res.notes


def test_ids_are_required_when_the_file_name_has_none(tmp_path):
    f = write(tmp_path, "rmp1\n1e-4\n", "reset.csv")
    with pytest.raises(ParseError, match=r"reset\.csv: ramps files hold no ids, .*pass wafer and die as "
                                         r"arguments \(--wafer / --die"):
        read_measurements(f)
    with pytest.raises(ParseError, match=r"pass die as arguments"):
        read_measurements(f, wafer="W1")


def test_arguments_beat_the_file_name_with_a_note(tmp_path):
    res = read_measurements(DATA / "W07_D12_A2_r00c00.csv", wafer="W08", v_read=0.2)
    assert res.table["wafer"].iloc[0] == "W08" and res.table["v_read"].iloc[0] == 0.2
    assert "wafer 'W08' given as an argument; the file name says 'W07'" in res.notes


def test_trailing_comma_on_every_line(tmp_path):
    t = read_measurements(write(tmp_path, "rmp1,rmp2,\n1e-4,2e-4,\n1e-4,,\n")).table
    assert t["cycle"].tolist() == [0, 0, 1] and t["resistance"].tolist() == [1000.0, 1000.0, 500.0]


def test_cycles_come_from_the_ramp_numbers(tmp_path):
    t = read_measurements(write(tmp_path, "rmp3,rmp1\n1e-4,2e-4\n")).table
    assert t["cycle"].tolist() == [0, 2] and t["resistance"].tolist() == [500.0, 1000.0]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "text, match",
    [
        ("1e-4,2e-4\n1e-4,2e-4\n", r":1: missing header: the first line holds numbers; expected the ramp names rmp1"),
        ("rmp1,ramp2\n1e-4,2e-4\n", r":1: column 2 of the header is named 'ramp2'; expected the ramp names"),
        ("rmp1,rmp1\n1e-4,2e-4\n", r":1: the header names ramp\(s\) \['rmp1'\] twice"),
        ("rmp0\n1e-4\n", r":1: column 1 of the header is named 'rmp0'"),
    ],
)
def test_bad_headers(tmp_path, text, match):
    with pytest.raises(ParseError, match=r"W07_D12_A2_r00c00\.csv" + match):
        read_measurements(write(tmp_path, text), "ramps")


@pytest.mark.parametrize(
    "line, match, counts",
    [
        ("1e-4,0", r":3: ramp column 2: zero read current", (4, 3, 1)),
        ("-1e-4,2e-4", r":3: ramp column 1: negative read current", (4, 3, 1)),
        ("1e-4,2e-4x", r":3: ramp column 2: read current is not a number, saw '2e-4x'", (4, 3, 1)),
        ("1e-4", r":3: expected 2 fields \(one per ramp\), saw 1; the line is left out", (3, 2, 1)),
        ("1e-4,2e-4,3e-4", r":3: expected 2 fields \(one per ramp\), saw 3", (4, 2, 2)),
    ],
)
def test_bad_values_and_lines(tmp_path, line, match, counts):
    f = write(tmp_path, f"rmp1,rmp2\n1e-4,2e-4\n{line}\n")
    with pytest.raises(ParseError, match=r"W07_D12_A2_r00c00\.csv" + match):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == counts


def test_a_rejected_value_keeps_the_pulses_after_it_in_place(tmp_path):
    res = read_measurements(write(tmp_path, "rmp1\n1e-4\nx\n3e-4\n"), on_bad_lines="skip")
    assert res.table["pulse"].tolist() == [0, 2] and res.rows_rejected == 1


def test_bad_ramps_fixture():
    with pytest.raises(ParseError, match=r"bad_ramps\.csv:3: ramp column 2: read current is not a number"):
        read_measurements(DATA / "bad_ramps.csv", wafer="W", die="D")


# --------------------------------------------------------------------- writer
def test_round_trip(tmp_path):
    table = sample_table(devices=3, pulses=6, cycles=3).assign(v_pulse=np.nan, pulse_width=np.nan)
    files, got = roundtrip(table, tmp_path, "ramps")
    assert sorted(f.name for f in files) == ["W01_D01_A1_r00c00.csv", "W01_D01_A1_r00c01.csv",
                                             "W01_D01_A1_r00c02.csv"]
    assert_same_reads(got, table, rtol=1e-12)


def test_ragged_ramps_are_padded_and_failed_reads_written_nan(tmp_path):
    t = sample_table(devices=1, pulses=3, cycles=2, failed=0)
    t = t[~((t["cycle"] == 1) & (t["pulse"] >= 2))].reset_index(drop=True)
    t.loc[1, "resistance"] = np.nan
    t.loc[3, "resistance"] = np.nan  # the last read of cycle 0: must stay a read
    (f,) = write_measurements(t, tmp_path, "ramps")
    lines = f.read_text().splitlines()
    assert lines[0] == "rmp1,rmp2" and lines[2].startswith("nan,") and lines[3].endswith(",")
    assert lines[4] == "nan,"
    back = read_measurements(f, v_read=0.1).table
    assert_same_reads(back, t.assign(v_pulse=np.nan, pulse_width=np.nan), rtol=1e-12)


def test_writer_refuses_gaps(tmp_path):
    t = sample_table(devices=1, pulses=3, cycles=1)
    with pytest.raises(FormatError, match=r"W01/D01/A1/r00c00 cycle 0 in the ramps format: its pulses are not "
                                          r"0, 1, 2, \.\.\. without gaps"):
        write_measurements(t[t["pulse"] != 1], tmp_path, "ramps")


def test_writer_needs_one_v_read_per_file(tmp_path):
    t = sample_table(devices=1, pulses=2, cycles=2)
    t.loc[t["cycle"] == 1, "v_read"] = 0.2
    with pytest.raises(FormatError, match=r"W01/D01/A1/r00c00 in the ramps format: v_read changes there"):
        write_measurements(t, tmp_path, "ramps")

"""The Keysight B1500A EasyEXPERT export: quirks of formats.md section 2, bad input, writer."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from parsers_helpers import DATA, assert_same_reads, roundtrip, sample_table

from hfox_fit.exceptions import FormatError, ParseError
from hfox_fit.parsers import read_measurements, write_measurements

pytestmark = pytest.mark.filterwarnings("ignore::hfox_fit.exceptions.IngestWarning")


def record(target="W07_D12_A2_r00c00", iteration=3, rows=((0, "1.4312000000000001E-05"), (1, "1.4301E-05")),
           names="PulseNo, Iread", v_read="0.1", dimension=None, end=""):
    lines = ["SetupTitle, WeakReset", "PrimitiveTest, WeakResetTrain"]
    if v_read is not None:
        lines.append(f"TestParameter, Measurement.Read.Voltage, {v_read}")
    lines += ["TestParameter, Measurement.Pulse.Amplitude, 1.25", "TestParameter, Measurement.Pulse.Width, 1E-06"]
    if target is not None:
        lines.append(f"MetaData, TestRecord.TestTarget, {target}")
    if iteration is not None:
        lines.append(f"MetaData, TestRecord.IterationIndex, {iteration}")
    n = len(rows) if dimension is None else dimension
    lines += [f"Dimension1, {n}, {n}", "Dimension2, 1, 1", f"DataName, {names}"]
    lines += ["DataValue, " + ", ".join(map(str, r)) + end for r in rows]
    return "\n".join(lines) + "\n"


def write(tmp_path, text, name="W07_D12.csv"):
    f = tmp_path / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


def reference_of_the_example() -> pd.DataFrame:
    """tests/data/W07_D12.csv, by hand (two records, newest first)."""
    i = [1.4312000000000001e-05, 1.4301e-05, 2.0000000000000002e-05, 1.6e-05, math.nan]
    return pd.DataFrame({
        "wafer": ["W07"] * 5, "die": ["D12"] * 5, "device": ["A2/r00c00"] * 2 + ["A2/r00c01"] * 3,
        "cycle": [3, 3, 0, 0, 0], "pulse": [0, 1, 0, 1, 2], "resistance": [0.1 / x for x in i],
        "v_read": [0.1] * 5, "v_pulse": [1.25] * 5, "pulse_width": [1e-6] * 5,
    })


def test_example_file_matches_the_hand_built_table():
    res = read_measurements(DATA / "W07_D12.csv")
    assert res.format == "b1500" and res.rows_read == 5 and res.rows_rejected == 0 and res.notes == []
    assert_same_reads(res.table, reference_of_the_example())
    records = res.metadata["records"]
    assert [r["test_target"] for r in records] == ["W07_D12_A2_r00c01", "W07_D12_A2_r00c00"]  # newest first
    assert records[0]["record_time"] == "03/14/2024 10:22:35" and records[0]["line"] == 2


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_line_endings_and_bom(tmp_path, newline, bom):
    text = (DATA / "W07_D12.csv").read_text().replace("\n", newline)
    f = write(tmp_path, (b"\xef\xbb\xbf" if bom else b"") + text.encode())
    assert_same_reads(read_measurements(f).table, reference_of_the_example())


def test_repr_noise_and_trailing_empty_field(tmp_path):
    f = write(tmp_path, record(rows=((0, "1.0000000000000001E-05"), (1, "9.999999999999999E-06")), end=", "))
    t = read_measurements(f).table
    assert t["resistance"].tolist() == [0.1 / 1.0000000000000001e-05, 0.1 / 9.999999999999999e-06]


def test_rread_and_extra_columns(tmp_path):
    rows = ((0, "1.2", "7000.0", "0.1"), (1, "1.2", "", "0.2"), (2, "1.2", "7100.5", "0.3"))
    f = write(tmp_path, record(rows=rows, names="PulseNo, Vpulse, Rread, Time"))
    t = read_measurements(f).table
    assert t["resistance"].iloc[[0, 2]].tolist() == [7000.0, 7100.5] and math.isnan(t["resistance"].iloc[1])


def test_iread_is_preferred_and_columns_found_by_name(tmp_path):
    f = write(tmp_path, record(rows=((5e-5, 0, 1e-5),), names="Time, PulseNo, Iread"))
    t = read_measurements(f).table
    assert t["pulse"].tolist() == [0] and t["resistance"].tolist() == [1e4]


def test_test_target_gives_wafer_die_device_and_iteration_the_cycle(tmp_path):
    f = write(tmp_path, record(target="W9_D3_A1_r4c12", iteration=17))
    row = read_measurements(f).table.iloc[0]
    assert [row.wafer, row.die, row.device, row.cycle] == ["W9", "D3", "A1/r04c12", 17]


def test_target_without_wafer_die_uses_the_file_name(tmp_path):
    res = read_measurements(write(tmp_path, record(target="A1_r00c01"), "W05_D02.csv"))
    assert res.table.iloc[0][["wafer", "die"]].tolist() == ["W05", "D02"]
    assert "wafer 'W05' taken from the file name" in res.notes


def test_missing_read_voltage_uses_argument_or_default(tmp_path):
    f = write(tmp_path, record(v_read=None))
    res = read_measurements(f)
    assert res.table["v_read"].iloc[0] == 0.1 and "v_read not given: the default 0.1 V was used" in res.notes
    assert read_measurements(f, v_read=0.2).table["v_read"].iloc[0] == 0.2


def test_many_unneeded_lines_are_ignored(tmp_path):
    noise = "".join(f"TestParameter, Channel.Unit{k}, SMU{k}, \nAnalysisSetup, Analysis.Line{k}, x\n" for k in range(50))
    text = record().replace("MetaData, TestRecord.TestTarget", noise + "MetaData, TestRecord.TestTarget")
    assert len(read_measurements(write(tmp_path, text)).table) == 2


# ------------------------------------------------------------------ bad input
def test_repeated_record(tmp_path):
    f = write(tmp_path, record() + record())
    with pytest.raises(ParseError, match=r"W07_D12\.csv:23: the record at line 13 repeats cell A2/r00c00 cycle 3 "
                                         r"of W07/D12, already read in the record at line 1"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (4, 2, 2)


@pytest.mark.parametrize(
    "rows, match",
    [
        (((0, 1e-5), (2, 1e-5), (1, 1e-5)), r":13: the pulse counter goes backwards .* pulse 1 after pulse 2"),
        (((0, 1e-5), (1, 0.0), (2, 1e-5)), r":12: zero read current"),
        (((0, 1e-5), (1, -2e-5), (2, 1e-5)), r":12: negative read current"),
        (((0, 1e-5), (1, "1e-5x"), (2, 1e-5)), r":12: read current is not a number, saw '1e-5x'"),
        (((0, 1e-5), ("one", 1e-5), (2, 1e-5)), r":12: PulseNo must be a non-negative integer, saw 'one'"),
        (((0, 1e-5), (1,), (2, 1e-5)), r":12: expected 2 values after DataValue \(PulseNo, Iread\), saw 1"),
    ],
)
def test_bad_rows(tmp_path, rows, match):
    f = write(tmp_path, record(rows=rows))
    with pytest.raises(ParseError, match=r"W07_D12\.csv" + match):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (3, 2, 1)


def test_junk_line_among_the_data_is_a_bad_row(tmp_path):
    text = record(rows=((0, 1e-5), (1, 1e-5))).replace("DataValue, 1,", "garbage\nDataValue, 1,")
    f = write(tmp_path, text)
    with pytest.raises(ParseError, match=r":12: expected a 'DataValue, \.\.\.' line in the record of line 1, saw 'garbage'"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, res.rows_rejected) == (3, 1)


def test_truncated_record(tmp_path):
    f = write(tmp_path, record(rows=((0, 1e-5), (1, 1e-5)), dimension=3))
    with pytest.raises(ParseError, match=r":1: the record at line 1 declares 3 points \(Dimension1\) but holds 2 "
                                         r"DataValue line\(s\); the file may be truncated"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert len(res.table) == 2 and any("declares 3 points" in n for n in res.notes)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"target": None}, r":1: the record at line 1 has no 'MetaData, TestRecord.TestTarget' line"),
        ({"target": "cell7"}, r":6: the record at line 1 has TestTarget 'cell7'; expected the cell as "
                              r"\{wafer\}_\{die\}_\{array\}_r\{row\}c\{col\}"),
        ({"iteration": "x"}, r":7: IterationIndex must be a non-negative integer, saw 'x'"),
        ({"names": "PulseNo, Vread"}, r":10: expected a read current column 'Iread' \(A\) or a read resistance "
                                      r"column 'Rread' \(Ohm\) in DataName, saw \['PulseNo', 'Vread'\]"),
        ({"names": "Index, Iread"}, r":10: expected a pulse counter column 'PulseNo'"),
        ({"v_read": "-0.1"}, r":3: v_read must be a positive number in V, saw '-0\.1'"),
    ],
)
def test_bad_record_headers(tmp_path, kw, match):
    with pytest.raises(ParseError, match=r"W07_D12\.csv" + match):
        read_measurements(write(tmp_path, record(**kw)))


def test_record_without_iteration_index_is_one_cycle_numbered_by_its_order(tmp_path):
    """Records without IterationIndex: one cycle each, numbered per cell in file order, noted."""
    a = record(iteration=None)
    b = record(iteration=None, rows=((0, "2E-05"), (1, "2.1E-05"), (2, "2.2E-05")))
    other = record(target="W07_D12_A2_r00c01", iteration=None, rows=((0, "3E-05"),))
    res = read_measurements(write(tmp_path, a + other + b))
    t = res.table.astype({"device": str})
    got = t.groupby(["device", "cycle"]).size().to_dict()
    assert got == {("A2/r00c00", 0): 2, ("A2/r00c00", 1): 3, ("A2/r00c01", 0): 1}
    assert res.rows_read == 6 and res.rows_rejected == 0
    (note,) = [n for n in res.notes if "IterationIndex" in n]
    assert note.startswith("3 records have no TestRecord.IterationIndex: each is read as one cycle")
    assert "record 0 (line 1, cell A2/r00c00) as cycle 0" in note
    assert "record 2 (line 22, cell A2/r00c00) as cycle 1" in note
    assert [r["iteration_index"] for r in res.metadata["records"]] == [None, None, None]

    (only,) = [n for n in read_measurements(write(tmp_path, a, "W07_D12_one.csv")).notes if "Iteration" in n]
    assert only == ("record 0 (line 1) has no TestRecord.IterationIndex: read as cycle 0 "
                    "(its order among the records of cell A2/r00c00 in the file, from 0)")


def test_bad_row_of_a_record_without_iteration_index_is_reported_at_its_line(tmp_path):
    text = record(iteration=None) + record(iteration=None, rows=((0, "2E-05"), ("x", "2.1E-05"), (2, "2.2E-05")))
    f = write(tmp_path, text)
    with pytest.raises(ParseError, match=r"W07_D12\.csv:22: PulseNo must be a non-negative integer, saw 'x'"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (5, 4, 1)
    assert res.rejected == [f"{f}:22: PulseNo must be a non-negative integer, saw 'x'"]
    assert sorted(res.table["cycle"].tolist()) == [0, 0, 1, 1]


def test_record_without_iteration_index_beside_one_with_it(tmp_path):
    """The order counts every record of the cell; a clash with a given index is a repeated train."""
    f = write(tmp_path, record(iteration=5) + record(iteration=None))
    assert sorted(set(read_measurements(f).table["cycle"])) == [1, 5]
    f = write(tmp_path, record(iteration=1) + record(iteration=None), "W07_D12_clash.csv")
    with pytest.raises(ParseError, match=r":22: the record at line 13 repeats cell A2/r00c00 cycle 1 of W07/D12, "
                                         r"already read in the record at line 1 \(it has no TestRecord\."
                                         r"IterationIndex: cycle 1 is its order"):
        read_measurements(f)


def test_target_without_ids_and_no_file_convention(tmp_path):
    with pytest.raises(ParseError, match=r"names no wafer, no wafer= was given .*Pass wafer=\.\.\. \(--wafer\)"):
        read_measurements(write(tmp_path, record(target="A1_r0c0"), "run.csv"), "b1500")


def test_data_before_data_name_is_rejected(tmp_path):
    f = write(tmp_path, record().replace("DataName, PulseNo, Iread\n", ""))
    with pytest.raises(ParseError, match=r":10: DataValue line before any 'DataName' line"):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (2, 0, 2)


def test_a_bench_file_read_as_b1500(tmp_path):
    with pytest.raises(ParseError, match=r"W07_D12_A2\.csv: no test record: expected 'SetupTitle, \.\.\.'"):
        read_measurements(DATA / "W07_D12_A2.csv", "b1500")


def test_bad_current_fixture():
    with pytest.raises(ParseError, match=r"bad_current\.csv:8: negative read current \(-1\.4301e-05 A\)"):
        read_measurements(DATA / "bad_current.csv")


# --------------------------------------------------------------------- writer
@pytest.mark.parametrize("quantity", ["Iread", "Rread"])
def test_round_trip(tmp_path, quantity):
    table = sample_table(devices=8, pulses=5, cycles=3)
    files, got = roundtrip(table, tmp_path, "b1500", quantity=quantity)
    assert [f.name for f in files] == ["W01_D01.csv"]
    assert_same_reads(got, table, rtol=0 if quantity == "Rread" else 1e-12)


def test_writer_puts_newest_records_first(tmp_path):
    (f,) = write_measurements(sample_table(devices=2, pulses=1, cycles=3), tmp_path, "b1500")
    its = [int(line.rsplit(",", 1)[1]) for line in f.read_text().splitlines() if "IterationIndex" in line]
    assert its == [2, 1, 0, 2, 1, 0]


def test_writer_options(tmp_path):
    (f,) = write_measurements(sample_table(devices=2, pulses=1, cycles=1), tmp_path, "b1500", newline="\r\n", bom=True)
    assert f.read_bytes().startswith(b"\xef\xbb\xbfSetupTitle, WeakReset\r\n")
    with pytest.raises(ValueError, match="quantity must be 'Iread' or 'Rread'"):
        write_measurements(sample_table(devices=2, pulses=1, cycles=1), tmp_path, "b1500", quantity="Vread")


def test_writer_refuses_ids_it_cannot_split(tmp_path):
    t = sample_table(devices=2, pulses=1, cycles=1)
    t["die"] = t["die"].cat.rename_categories({"D01": "D_01"})
    with pytest.raises(FormatError, match=r"cannot write the die or array name 'D_01' in the b1500 format"):
        write_measurements(t, tmp_path, "b1500")


def test_writer_refuses_a_condition_changing_within_a_train(tmp_path):
    t = sample_table(devices=2, pulses=3, cycles=1)
    t.loc[2, "v_pulse"] = 1.3
    with pytest.raises(FormatError, match=r"cannot write W01/D01/A1/r00c00/0 in the b1500 format: v_pulse changes"):
        write_measurements(t, tmp_path, "b1500")

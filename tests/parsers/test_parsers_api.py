"""The public API of hfox_fit.parsers: registry, plug-ins, format choice, common errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from parsers_helpers import DATA, assert_same_reads, read_all, sample_table

from hfox_fit.exceptions import FormatError, HfoxError, IngestWarning, ParseError
from hfox_fit.parsers import (
    BUILTIN_PARSERS,
    Parser,
    ReadResult,
    _registry,
    get_parser,
    list_formats,
    read_measurements,
    recognise,
    write_measurements,
)
from hfox_fit.schema import COLUMNS, validate_table

BUILTINS = ["bench", "b1500", "ramps", "hdf5", "tidy"]
TARGETS = {"bench": "raw", "b1500": "raw", "ramps": "raw", "hdf5": "W01.h5", "tidy": "W01.csv"}


# ------------------------------------------------------------------ registry
def test_list_formats_gives_the_builtins_in_order():
    parsers = list_formats()
    assert [p.name for p in parsers][:5] == BUILTINS
    assert [type(p) for p in parsers[:5]] == list(BUILTIN_PARSERS)
    for p in parsers[:5]:
        assert isinstance(p, Parser) and p.description and p.suffixes and p.can_write


def test_get_parser_unknown_lists_the_formats():
    assert get_parser("b1500").name == "b1500"
    with pytest.raises(FormatError, match=r"unknown format 'csv'\. Installed formats: \['bench', 'b1500', "
                                          r"'ramps', 'hdf5', 'tidy'.*format=\.\.\. \(--format"):
        get_parser("csv")


class _EP:
    """Stand-in for an importlib.metadata.EntryPoint."""

    def __init__(self, name, obj, value="mylab_hfox:Parser"):
        self.name, self.value, self._obj = name, value, obj

    def load(self):
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


class LabParser(Parser):
    name = "mylab"
    suffixes = (".lab",)
    description = "a lab's own format: one resistance per line"

    def sniff(self, head, path=None):
        return head.startswith(b"MYLAB")

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error"):
        values = [float(x) for x in Path(path).read_text().split()[1:]]
        n = len(values)
        table = pd.DataFrame({
            "wafer": [wafer or "W1"] * n, "die": [die or "D1"] * n, "device": ["c0"] * n,
            "cycle": [0] * n, "pulse": list(range(n)), "resistance": values, "v_read": [v_read or 0.1] * n,
            "v_pulse": [np.nan] * n, "pulse_width": [np.nan] * n,
        })
        return ReadResult(table=table, path=Path(path), format=self.name, rows_read=n)


def test_plugin_from_an_entry_point_is_listed_and_used(monkeypatch, tmp_path):
    monkeypatch.setattr(_registry, "_entry_points", lambda: [_EP("mylab", LabParser)])
    assert [p.name for p in list_formats()] == BUILTINS + ["mylab"]
    f = tmp_path / "run.lab"
    f.write_text("MYLAB 1000 1100.5 1200\n")
    res = read_measurements(f)
    assert res.format == "mylab" and res.rows_read == 3
    assert res.table["resistance"].tolist() == [1000, 1100.5, 1200]
    assert isinstance(res.table["device"].dtype, pd.CategoricalDtype)  # went through validate_table


def test_broken_plugin_warns_and_is_left_out(monkeypatch):
    eps = [_EP("broken", ImportError("No module named 'mylab_hfox'")), _EP("mylab", LabParser)]
    monkeypatch.setattr(_registry, "_entry_points", lambda: eps)
    with pytest.warns(IngestWarning, match=r"plug-in 'broken' \(mylab_hfox:Parser\) failed to load.*ImportError"):
        names = [p.name for p in list_formats()]
    assert names == BUILTINS + ["mylab"]


@pytest.mark.parametrize(
    "obj, match",
    [(object(), "is not a Parser"), (type("Clash", (LabParser,), {"name": "bench"}), "already taken")],
)
def test_plugin_that_is_not_a_parser_or_clashes_is_ignored(monkeypatch, obj, match):
    monkeypatch.setattr(_registry, "_entry_points", lambda: [_EP("odd", obj)])
    with pytest.warns(IngestWarning, match=match):
        assert [p.name for p in list_formats()] == BUILTINS


def test_plugin_that_miscounts_is_refused(monkeypatch, tmp_path):
    class Miscount(LabParser):
        def read(self, path, **kw):
            res = super().read(path, **kw)
            res.rows_read += 1
            return res

    monkeypatch.setattr(_registry, "_entry_points", lambda: [_EP("mylab", Miscount)])
    f = tmp_path / "run.lab"
    f.write_text("MYLAB 1000\n")
    with pytest.raises(FormatError, match=r"parser 'mylab' miscounted .*run\.lab.*rows_read 2 != 1 stored \+ 0"):
        read_measurements(f)


# ------------------------------------------------------------ format choice
def test_content_wins_over_the_suffix(tmp_path):
    f = tmp_path / "W07_D12_A2.txt"
    f.write_bytes((DATA / "W07_D12_A2.csv").read_bytes())
    assert read_measurements(f).format == "bench"


def test_explicit_format_wins(tmp_path):
    with pytest.raises(ParseError, match=r"W07_D12_A2\.csv:1: missing header column\(s\)"):
        read_measurements(DATA / "W07_D12_A2.csv", "tidy")


def test_suffix_is_the_fallback(tmp_path):
    f = tmp_path / "dump.h5"
    f.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ParseError, match=r"dump\.h5: not a readable HDF5 file"):
        read_measurements(f)


def test_unknown_content_lists_formats_and_suggests_format(tmp_path):
    f = tmp_path / "run7.dat"
    f.write_text("hello\n")
    with pytest.raises(FormatError, match=r"cannot infer the format of '.*run7\.dat'.*Installed formats: "
                                          r"\['bench', 'b1500', 'ramps', 'hdf5', 'tidy'\]\. Pass format=\.\.\. "
                                          r"\(--format"):
        read_measurements(f)


def test_ambiguous_suffix_lists_the_candidates(tmp_path):
    f = tmp_path / "run7.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(FormatError, match=r"fits several formats \['bench', 'b1500', 'ramps', 'tidy'\]"):
        read_measurements(f)


def test_utf16_file_gets_an_encoding_hint(tmp_path):
    f = tmp_path / "W07_D12_A2.csv"
    f.write_bytes((DATA / "W07_D12_A2.csv").read_text().encode("utf-16"))
    with pytest.raises(FormatError, match="looks UTF-16 encoded"):
        read_measurements(f)
    with pytest.raises(ParseError, match=r"W07_D12_A2\.csv:1: the file is UTF-16 .*expected UTF-8"):
        read_measurements(f, "bench")


@pytest.mark.parametrize("fmt", [None] + BUILTINS)
def test_empty_file(tmp_path, fmt):
    f = tmp_path / "W07_D12.csv"
    f.write_bytes(b"")
    with pytest.raises(ParseError, match=r"W07_D12\.csv: the file is empty \(0 bytes\)"):
        read_measurements(f, fmt)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ParseError, match=r"nope\.csv: no such file"):
        read_measurements(tmp_path / "nope.csv")
    with pytest.raises(ParseError, match="is not a file"):
        read_measurements(tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"on_bad_lines must be 'error' or 'skip'; got 'warn'"):
        read_measurements(DATA / "W07_D12_A2.csv", on_bad_lines="warn")
    with pytest.raises(ValueError, match=r"v_read must be a positive read voltage in V; got -0\.1"):
        read_measurements(DATA / "W07_D12_A2.csv", v_read=-0.1)


def test_skipped_rows_warn_once(tmp_path):
    with pytest.warns(IngestWarning, match=r"1 bad row\(s\) skipped on request; first: .*bad_fields\.csv:9"):
        res = read_measurements(DATA / "bad_fields.csv", on_bad_lines="skip")
    assert res.rows_rejected == 1


# ---------------------------------------------------------- contract, per parser
@pytest.mark.parametrize("fmt", BUILTINS)
def test_contract_write_sniff_read(tmp_path, fmt):
    table = sample_table(devices=5, pulses=3, cycles=2)
    files = write_measurements(table, tmp_path / TARGETS[fmt], fmt)
    assert files and all(isinstance(f, Path) and f.is_file() for f in files)
    parser = get_parser(fmt)
    for f in files:
        head = f.read_bytes()[:8192]
        assert [p.name for p in list_formats() if p.sniff(head, f)] == [fmt]
        res = parser.read(f, wafer=None, die=None, v_read=None, on_bad_lines="error")
        assert isinstance(res, ReadResult) and res.format == fmt and res.path == f
        assert res.rows_read == len(res.table) + res.rows_rejected and res.rows_rejected == 0
        pd.testing.assert_frame_equal(validate_table(res.table), res.table)  # already valid and sorted
        assert res.table.equals(res.table.sort_values(list(res.table.columns[:5])).reset_index(drop=True))
    got = read_all(files)
    ref = table.assign(v_pulse=np.nan, pulse_width=np.nan) if fmt == "ramps" else table
    assert_same_reads(got, ref, rtol=0 if fmt == "tidy" else 1e-12)


def test_every_error_of_the_api_is_an_hfox_error():
    for cls in (ParseError, FormatError):
        assert issubclass(cls, HfoxError) and issubclass(cls, ValueError)


def test_write_refuses_an_invalid_table(tmp_path):
    table = sample_table(devices=2, pulses=2, cycles=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = table.assign(resistance=-1.0)
    with pytest.raises(HfoxError, match="table given to the tidy writer: .*zero or negative resistance"):
        write_measurements(bad, tmp_path / "x.csv", "tidy")


def test_one_argument_sniff_and_read_only_plugin(monkeypatch, tmp_path):
    class OldStyle(LabParser):
        name = "oldlab"

        def sniff(self, head):  # the house-style example's signature
            return head.startswith(b"MYLAB")

    monkeypatch.setattr(_registry, "_entry_points", lambda: [_EP("oldlab", OldStyle)])
    f = tmp_path / "run.lab"
    f.write_text("MYLAB 5\n")
    assert read_measurements(f).format == "oldlab"
    assert not get_parser("oldlab").can_write
    with pytest.raises(FormatError, match="the 'oldlab' format can be read but not written by hfox_fit"):
        write_measurements(sample_table(devices=1, pulses=1, cycles=1), tmp_path / "x", "oldlab")


def test_os_errors_become_parse_errors(monkeypatch, tmp_path):
    class Flaky(LabParser):
        def read(self, path, **kw):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_registry, "_entry_points", lambda: [_EP("mylab", Flaky)])
    f = tmp_path / "run.lab"
    f.write_text("MYLAB 5\n")
    with pytest.raises(ParseError, match=r"run\.lab: cannot read the file: Permission denied\."):
        read_measurements(f)


def test_ids_taken_from_arguments_are_noted(tmp_path):
    f = tmp_path / "ramp.csv"
    f.write_text("rmp1\n1e-4\n")
    res = read_measurements(f, wafer="W1", die="D2", v_read=0.2)
    assert res.notes[:2] == ["wafer 'W1' taken from the arguments", "die 'D2' taken from the arguments"]
    assert "v_read 0.2 taken from the arguments" in res.notes


# ------------------------------------------------------------ a header and no read
def _header_only(fmt: str) -> str:
    if fmt == "bench":
        text = (DATA / "W07_D12_A2.csv").read_text()
        return text[: text.index("row,col,cycle,pulse,i_read\n") + len("row,col,cycle,pulse,i_read\n")]
    if fmt == "tidy":
        return ",".join(COLUMNS) + "\n"
    if fmt == "ramps":
        return "rmp1,rmp2,rmp3\n"
    return ("SetupTitle, WeakReset\nPrimitiveTest, WeakResetTrain\nTestParameter, Measurement.Read.Voltage, 0.1\n"
            "MetaData, TestRecord.TestTarget, W07_D12_A2_r00c00\nMetaData, TestRecord.IterationIndex, 3\n"
            "DataName, PulseNo, Iread\n")


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("fmt", ["bench", "tidy", "ramps", "b1500"])
def test_a_header_alone_is_refused(tmp_path, fmt, crlf):
    text = _header_only(fmt)
    n = text.count("\n")
    f = tmp_path / "W07_D12_A2.csv"
    f.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    assert [p.name for p in recognise(f)[0]] == [fmt]  # it does look like the format
    for how in (None, fmt):
        with pytest.raises(ParseError, match=rf"W07_D12_A2\.csv: holds no reads: only its header \({n} line\(s\)\), "
                                             r"no data row below it; expected at least one read\. If the run "
                                             r"measured nothing, leave the file out of the ingest"):
            read_measurements(f, how)
    with pytest.raises(ParseError, match="holds no reads"):
        read_measurements(f, how, on_bad_lines="skip")


def test_an_hdf5_dump_or_parquet_table_without_reads_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    f = tmp_path / "W07_D12.h5"
    with h5py.File(f, "w") as h:
        g = h.create_group("W07/D12/A2")
        g.attrs.update(v_read=0.1, v_pulse=1.25, pulse_width=1e-6)
        g["row"] = np.zeros(0, np.int64)
        g["col"] = np.zeros(0, np.int64)
        g["i_read"] = np.zeros((0, 4))
    with pytest.raises(ParseError, match=r"W07_D12\.h5: holds no reads: only its header \(groups, columns or "
                                         r"metadata\), no data; expected at least one read"):
        read_measurements(f)
    pytest.importorskip("pyarrow")
    p = tmp_path / "t.parquet"
    sample_table().iloc[:0].to_parquet(p)
    with pytest.raises(ParseError, match=r"t\.parquet: holds no reads: only its header"):
        read_measurements(p)


def test_recognise_says_which_formats_and_how(tmp_path):
    assert [p.name for p in recognise(DATA / "W07_D12_A2.csv")[0]] == ["bench"]
    assert recognise(DATA / "W07_D12_A2.csv")[1] == "content"
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    assert recognise(notes) == ([], "suffix '.md'")
    odd = tmp_path / "x.csv"
    odd.write_text("a,b\n1,2\n")
    matches, how = recognise(odd)
    assert [p.name for p in matches] == ["bench", "b1500", "ramps", "tidy"] and how == "suffix '.csv'"
    assert [p.name for p in recognise(odd, "ramps")[0]] == ["ramps"]
    assert recognise(notes, "bench") == ([], "suffix '.md'")
    with pytest.raises(FormatError, match="unknown format 'nope'"):
        recognise(notes, "nope")

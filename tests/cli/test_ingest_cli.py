"""`hfox-fit ingest`, `formats` and `measurements`, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hfox_fit.cli import main
from hfox_fit.cli._ingest import collect_files
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.synth import make_wafer, write_wafer

parsers = pytest.importorskip("hfox_fit.parsers")
if not hasattr(parsers, "read_measurements"):
    pytest.skip("hfox_fit.parsers does not export read_measurements yet", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "raw"
KEY = ["wafer", "die", "device", "cycle", "pulse"]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A small wafer as bench files (2 dies: 1030 cells x 2 cycles x 6 pulses) plus truth.json."""
    out = tmp_path_factory.mktemp("raw")
    write_wafer(make_wafer("paper", devices=1030, pulses=5, cycles=2, seed=11), out, "bench")
    return out


@pytest.fixture(scope="module")
def raw_table() -> pd.DataFrame:
    t = dies_to_table(make_wafer("paper", devices=1030, pulses=5, cycles=2, seed=11).dies)
    for c in ("wafer", "die", "device"):
        t[c] = t[c].astype(str)
    return t.sort_values(KEY).reset_index(drop=True)


def copy_raw(raw: Path, dest: Path) -> Path:
    shutil.copytree(raw, dest)
    return dest


def bench_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "truth.json"]


# ------------------------------------------------------------------ ingest
def test_ingest_folder(tmp_path, raw, raw_table, capsys):
    folder = copy_raw(raw, tmp_path / "raw")
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.csv").write_text("garbage\n")
    store = tmp_path / "c.h5"
    files = bench_files(folder)
    files = [f for f in files if not any(part.startswith(".") for part in f.relative_to(folder).parts)]

    assert main(["ingest", str(folder), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    n = len(raw_table)
    assert f"ingested {len(files)} file(s) into {store}" in out
    assert f"rows read {n:,}, stored {n:,}, rejected 0" in out
    assert f"store: 1 wafer(s), 2 die(s), 1,030 cells, {n:,} reads" in out

    cs = CampaignStore(store)
    assert [Path(s["path"]).name for s in cs.sources()] == [f.name for f in files]
    assert {s["format"] for s in cs.sources()} == {"bench"}
    got = cs.read_table()
    for c in ("wafer", "die", "device"):
        got[c] = got[c].astype(str)
    pd.testing.assert_frame_equal(got[KEY], raw_table[KEY], check_dtype=False)
    np.testing.assert_allclose(got["resistance"], raw_table["resistance"], rtol=1e-9)
    assert got["resistance"].isna().sum() == raw_table["resistance"].isna().sum() > 0

    # Again: every file is already there; nothing changes.
    before = sha(store)
    assert main(["ingest", str(folder), "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"ingested 0 file(s) into {store}; {len(files)} file(s) already present, skipped" in out
    assert sha(store) == before


def test_collect_files_skips_truth_hidden_and_store(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.csv", "b/1.csv", "a.csv", "truth.json", ".x.csv", "store.h5"):
        (tmp_path / name).write_text("")
    got = collect_files([tmp_path], exclude=[tmp_path / "store.h5"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a.csv", "b/1.csv", "b/2.csv"]
    assert collect_files([tmp_path / ".x.csv"]) == [tmp_path / ".x.csv"]  # named explicitly: taken


# ------------------------------------------------------------------ a header alone
def _bench_header(raw: Path) -> str:
    lines = bench_files(raw)[0].read_text().splitlines(keepends=True)
    return "".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("#")) + 1])


@pytest.mark.parametrize("fmt", ["bench", "tidy"])
def test_header_only_file_is_refused_and_the_store_untouched(tmp_path, raw, fmt, capsys):
    f = tmp_path / ("W01_D01_A9.csv" if fmt == "bench" else "table.csv")
    f.write_text(_bench_header(raw) if fmt == "bench" else "wafer,die,device,cycle,pulse,resistance,v_read,"
                 "v_pulse,pulse_width\n")
    n = f.read_text().count("\n")
    store = tmp_path / "c.h5"
    assert main(["ingest", str(f), "--store", str(store)]) == 2
    out, err = capsys.readouterr()
    assert err == (f"hfox-fit ingest: error: {f}: holds no reads: only its header ({n} line(s)), no data row "
                   "below it; expected at least one read. If the run measured nothing, leave the file out of "
                   "the ingest (move it out of the folder you ingest); if it did, export it again with its "
                   f"data. Nothing was ingested; {str(store)!r} was not created.\n")
    assert out == "" and not store.exists()  # not even created

    # In a folder beside good files, and into an existing store: refused, the store as it was.
    first = bench_files(raw)[0]
    assert main(["ingest", str(first), "--store", str(store), "--quiet"]) == 0
    before = sha(store)
    folder = copy_raw(raw, tmp_path / "raw")
    shutil.copy(f, folder / f.name)
    capsys.readouterr()
    assert main(["ingest", str(folder), "--store", str(store)]) == 2
    assert "holds no reads: only its header" in capsys.readouterr().err
    assert sha(store) == before


# ------------------------------------------------------------------ a folder with other files
def _folder_with_extras(raw: Path, dest: Path) -> Path:
    folder = copy_raw(raw, dest)
    (folder / "README.txt").write_text("wafer W01, measured on the bench\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "notes.md").write_text("# notes\n")
    (folder / "map.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return folder


def test_folder_skips_and_names_the_files_no_reader_recognises(tmp_path, raw, raw_table, capsys):
    folder = _folder_with_extras(raw, tmp_path / "raw")
    store = tmp_path / "c.h5"
    files = bench_files(raw)
    assert main(["ingest", str(folder), "--store", str(store)]) == 0
    out, err = capsys.readouterr()
    extras = [folder / "README.txt", folder / "map.png", folder / "sub" / "notes.md"]
    assert err.splitlines() == [
        f"hfox-fit ingest: skipped {p}: no reader recognises its content or its suffix {p.suffix!r}. To read it "
        "anyway, name it on the command line with --format NAME; --strict refuses the folder instead."
        for p in extras
    ]
    assert f"ingested {len(files)} file(s) into {store}; 3 unrecognised file(s) skipped (named above)" in out
    cs = CampaignStore(store)
    assert cs.summary()["reads"] == len(raw_table)
    assert [Path(s["path"]).name for s in cs.sources()] == [f.name for f in files]
    for rec in cs.sources():  # the provenance says what was left out beside each file
        assert rec["skipped_beside"] == [
            f"{p}: no reader recognises its content or its suffix {p.suffix!r}" for p in extras
        ]

    # The same with --format: only that reader is asked.
    other = tmp_path / "d.h5"
    assert main(["ingest", str(folder), "--store", str(other), "--format", "bench", "--quiet"]) == 0
    assert "skipped " + str(folder / "README.txt") + ": the bench reader recognises neither its content nor " \
           "its suffix '.txt'" in capsys.readouterr().err
    assert CampaignStore(other).summary()["reads"] == len(raw_table)


def test_strict_refuses_a_folder_with_a_file_no_reader_recognises(tmp_path, raw, capsys):
    folder = _folder_with_extras(raw, tmp_path / "raw")
    store = tmp_path / "c.h5"
    assert main(["ingest", str(folder), "--store", str(store), "--strict"]) == 2
    out, err = capsys.readouterr()
    assert err == (f"hfox-fit ingest: error: {folder / 'README.txt'}: no reader recognises its content or its "
                   "suffix '.txt'; --strict refuses a folder that holds such a file. Move the file out of "
                   f"{str(folder)!r}, or leave out --strict to skip it. Nothing was ingested.\n")
    assert out == "" and not store.exists()
    assert main(["ingest", str(bench_files(raw)[0]), "--store", str(store), "--quiet"]) == 0
    before = sha(store)
    assert main(["ingest", str(folder), "--store", str(store), "--strict"]) == 2
    assert sha(store) == before
    # Following the advice works: with the extra files moved out, --strict ingests the folder.
    for p in ("README.txt", "map.png", "sub/notes.md"):
        (folder / p).unlink()
    capsys.readouterr()
    assert main(["ingest", str(folder), "--store", str(store), "--strict", "--quiet"]) == 0
    assert len(CampaignStore(store).sources()) == len(bench_files(raw))


def test_a_file_named_explicitly_is_never_skipped_and_the_advice_works(tmp_path, capsys):
    """A B1500 export that starts with a TestParameter line is not recognised in a folder; named with --format it is read."""
    folder = tmp_path / "runs"
    folder.mkdir()
    text = ("TestParameter, Measurement.Read.Voltage, 0.1\nMetaData, TestRecord.TestTarget, W07_D12_A2_r00c00\n"
            "MetaData, TestRecord.IterationIndex, 0\nDataName, PulseNo, Iread\nDataValue, 0, 1E-05\n"
            "DataValue, 1, 1.1E-05\n")
    odd = folder / "W07_D12_run.dat"
    odd.write_text(text)
    (folder / "W07_D12_A2.csv").write_text("# hfox-bench v1\n# v_read: 0.1\nrow,col,cycle,pulse,i_read\n"
                                           "0,0,1,0,1e-05\n")
    store = tmp_path / "c.h5"
    assert main(["ingest", str(folder), "--store", str(store), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {odd}: no reader recognises its content or its suffix '.dat'. To read it anyway, name it " \
           "on the command line with --format NAME" in err
    assert CampaignStore(store).summary()["reads"] == 1
    # Named on the command line without --format: refused (strict), naming the file.
    assert main(["ingest", str(odd), "--store", str(store)]) == 2
    assert f"cannot infer the format of {str(odd)!r}" in capsys.readouterr().err
    # The advice: named with --format, it is read.
    assert main(["ingest", str(odd), "--store", str(store), "--format", "b1500", "--quiet"]) == 0
    assert CampaignStore(store).summary()["reads"] == 3


def test_folder_of_unrecognised_files_or_an_ambiguous_one_is_refused(tmp_path, raw, capsys):
    only = tmp_path / "docs"
    only.mkdir()
    (only / "README.txt").write_text("hello\n")
    store = tmp_path / "c.h5"
    assert main(["ingest", str(only), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{only}: folder holds no file that a reader recognises; left out: README.txt (no reader recognises " \
           "its content or its suffix '.txt'). If they are measurements, name them on the command line with " \
           "--format NAME (one of bench, b1500, ramps, hdf5, tidy). Nothing was ingested." in err
    assert not store.exists()
    # A .csv that no reader recognises by content may be a damaged data file: refused, not skipped.
    folder = copy_raw(raw, tmp_path / "raw")
    (folder / "wafer_map.csv").write_text("x,y\n1,2\n")
    assert main(["ingest", str(folder), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert (f"cannot tell the format of {str(folder / 'wafer_map.csv')!r} (in the folder {str(folder)!r}): no "
            "format recognises its content and its suffix '.csv' fits several formats ['bench', 'b1500', "
            "'ramps', 'tidy']. If it is not measurements, move it out of the folder; if it is, ingest it on its "
            "own with --format NAME") in err
    assert not store.exists()
    (folder / "wafer_map.csv").rename(tmp_path / "wafer_map.csv")  # the advice: moved out, the folder goes in
    assert main(["ingest", str(folder), "--store", str(store), "--quiet"]) == 0


def test_unreadable_file_leaves_store_untouched(tmp_path, raw, capsys):
    folder = copy_raw(raw, tmp_path / "raw")
    store = tmp_path / "c.h5"
    first = bench_files(folder)[0]
    assert main(["ingest", str(first), "--store", str(store), "--quiet"]) == 0
    before = sha(store)
    bad = folder / "zz_broken.csv"
    head = "".join(first.read_text().splitlines(keepends=True)[:20])
    bad.write_text(head + "this,is,not,a,bench,line,at,all\n")
    capsys.readouterr()
    assert main(["ingest", str(folder), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfox-fit ingest: error: ")
    assert "zz_broken.csv" in err and "Nothing was ingested" in err and "Traceback" not in err
    assert sha(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "raw"]  # no temp file


def test_on_bad_lines_skip_records_rejected(tmp_path, raw, capsys):
    src = bench_files(raw)[0]
    lines = src.read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines.insert(header + 3, "0,0,0,oops,1e-5\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    store = tmp_path / "c.h5"
    assert main(["ingest", str(bad), "--store", str(store)]) == 2
    assert not store.exists()
    capsys.readouterr()
    assert main(["ingest", str(bad), "--store", str(store), "--on-bad-lines", "skip"]) == 0
    out, err = capsys.readouterr()
    assert "hfox-fit ingest: warning: " in err and "1 bad row(s) skipped" in err
    assert "rejected 1" in out and "rejected lines (first 1):" in out
    (rec,) = CampaignStore(store).sources()
    assert rec["rows_rejected"] == 1 and rec["rows_read"] == rec["rows_stored"] + 1
    assert len(rec["rejected"]) == 1


def test_ingest_errors(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nope"), "--store", str(tmp_path / "c.h5")]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["ingest", str(tmp_path / "empty"), "--store", str(tmp_path / "c.h5")]) == 2
    assert "folder holds no file to ingest" in capsys.readouterr().err
    notstore = tmp_path / "notes.h5"
    notstore.write_text("hello\n")
    f = tmp_path / "x.csv"
    f.write_text("")
    assert main(["ingest", str(f), "--store", str(notstore)]) == 2
    assert "is not an HDF5 file" in capsys.readouterr().err
    assert notstore.read_text() == "hello\n"


def test_ingest_options_reach_the_reader(tmp_path, capsys):
    ramps = tmp_path / "cell.csv"
    ramps.write_text("rmp1,rmp2\n1e-5,1.1e-5\n1.2e-5,\n")
    store = tmp_path / "c.h5"
    assert main(["ingest", str(ramps), "--store", str(store), "--format", "ramps",
                 "--wafer", "WX", "--die", "DY", "--v-read", "0.2", "--quiet"]) == 0
    t = CampaignStore(store).read_table()
    assert CampaignStore(store).dies() == [("WX", "DY")]
    assert len(t) == 3 and set(t["v_read"]) == {0.2}
    np.testing.assert_allclose(sorted(t["resistance"]), sorted([0.2 / 1e-5, 0.2 / 1.1e-5, 0.2 / 1.2e-5]))
    # an empty id would be dropped and the files' own used in silence: refused, the store untouched
    before = store.read_bytes()
    assert main(["ingest", str(ramps), "--store", str(store), "--format", "ramps", "--die", "", "--quiet"]) == 2
    assert "--die must name a die" in capsys.readouterr().err
    assert store.read_bytes() == before


def test_ingest_subprocess(tmp_path, raw):
    exe = shutil.which("hfox-fit")
    cmd = [exe] if exe else [sys.executable, "-m", "hfox_fit"]
    store = tmp_path / "c.h5"
    files = bench_files(raw)[:2]
    p = subprocess.run([*cmd, "ingest", *map(str, files), "--store", str(store), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr
    assert "ingested 2 file(s)" in p.stdout
    p = subprocess.run([*cmd, "ingest", str(tmp_path / "missing.csv"), "--store", str(store)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "missing.csv" in p.stderr


# ------------------------------------------------------------------ formats
def test_formats_lists_readers(capsys):
    assert main(["formats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["name", "suffixes", "origin"]
    names = {line.split()[0] for line in out[1:]}
    assert {"bench", "b1500", "ramps", "hdf5", "tidy"} <= names
    assert all("built-in" in line for line in out[1:] if line.split()[0] in names)
    assert any(".csv" in line for line in out[1:])


class LabParser(parsers.Parser):
    name = "mylab"
    suffixes = (".dat",)
    description = "a lab's own format"


class FakeEntryPoint:
    name, value = "mylab", "test_ingest_cli:LabParser"

    def load(self):
        return LabParser


def test_formats_marks_plugins(monkeypatch, capsys):
    import hfox_fit.parsers._registry as registry

    monkeypatch.setattr(registry, "_entry_points", lambda: [FakeEntryPoint()])
    assert main(["formats"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mylab")]
    assert line.split()[:3] == ["mylab", ".dat", "plug-in"] and line.endswith("a lab's own format")


# ------------------------------------------------------------------ measurements
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_measurements_export(tmp_path, raw, suffix, capsys):
    store = tmp_path / "c.h5"
    assert main(["ingest", str(raw), "--store", str(store), "--quiet"]) == 0
    out = tmp_path / f"reads{suffix}"
    assert main(["measurements", str(store), "-o", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    back = parsers.read_measurements(out, "tidy").table
    ref = CampaignStore(store).read_table()
    for t in (back, ref):
        for c in ("wafer", "die", "device"):
            t[c] = t[c].astype(str)
    back = back.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, ref, check_dtype=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_measurements_write_is_atomic(tmp_path, raw, monkeypatch, capsys):
    store = tmp_path / "c.h5"
    assert main(["ingest", bench_files(raw)[0].as_posix(), "--store", str(store), "--quiet"]) == 0
    out = tmp_path / "reads.csv"
    out.write_text("previous export\n")

    def half_write(table, path, format, **kw):
        Path(path).write_text("wafer,die\nW01")
        raise KeyboardInterrupt

    monkeypatch.setattr(parsers, "write_measurements", half_write)
    assert main(["measurements", str(store), "-o", str(out)]) == 130
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "reads.csv"]


def test_measurements_errors(tmp_path, raw, capsys):
    store = tmp_path / "c.h5"
    assert main(["measurements", str(store), "-o", str(tmp_path / "r.csv")]) == 2
    assert "does not exist. Create it with `hfox-fit ingest" in capsys.readouterr().err
    assert main(["ingest", bench_files(raw)[0].as_posix(), "--store", str(store), "--quiet"]) == 0
    assert main(["measurements", str(store), "-o", str(tmp_path / "r.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "written as .csv or .parquet; got suffix '.xlsx'" in err
    assert not (tmp_path / "r.xlsx").exists()
    assert main(["measurements", str(store), "-o", str(tmp_path / "no" / "r.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ the example campaign
def test_example_campaign(tmp_path, capsys):
    if not (DATA / "truth.json").is_file():
        pytest.skip("data/ example campaign absent")
    store = tmp_path / "campaign.h5"
    assert main(["ingest", str(DATA), "--store", str(store), "--quiet"]) == 0
    truth = json.loads((DATA / "truth.json").read_text())
    meta = truth["meta"]
    s = CampaignStore(store).summary()
    assert s["cells"] == meta["devices"]
    assert s["reads"] == meta["devices"] * meta["cycles"] * (meta["pulses"] + 1)
    assert s["failed_reads"] > 0
    assert len(CampaignStore(store).sources()) == len(bench_files(DATA))

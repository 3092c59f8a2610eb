"""Die positions: a small CSV (wafer,die,x,y) read with clear errors, kept in the store, drawn as the die map."""

from __future__ import annotations

import hashlib

import h5py
import pytest

from hfox_fit.cli import main
from hfox_fit.exceptions import ParseError
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore, read_die_positions
from hfox_fit.synth import make_wafer


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def table():
    w = make_wafer("paper", devices=2048, pulses=40, seed=2)  # two dies (1024 cells each)
    assert [d.die for d in w.dies] == ["D01", "D02"]
    return dies_to_table(w.dies)


def _store(tmp_path, table):
    path = tmp_path / "s.h5"
    CampaignStore(path).ingest_table(table, name="sim")
    return path


def _die_attrs(path):
    import json

    out = {}
    with h5py.File(path, "r") as f:
        for w in f["measurements"].values():
            for d in w.values():
                out[d.attrs["die"]] = json.loads(d.attrs["attrs"])
    return out


def test_a_positions_file_with_comments_bom_and_extra_columns_is_read(tmp_path):
    f = tmp_path / "pos.csv"
    f.write_text("\ufeff# die positions of W01\nWafer, Die, X, Y, note\n\nW01,D01,0,0,edge\nW01,D02,1.5,-2,\n",
                 encoding="utf-8")
    pos = read_die_positions(f)
    assert pos.xy == {("W01", "D01"): (0.0, 0.0), ("W01", "D02"): (1.5, -2.0)}
    assert pos.find("W01", "D02") == (1.5, -2.0) and pos.find("W02", "D02") is None
    f.write_text("die,x,y\nD01,0,0\n")  # no wafer column: every wafer
    assert read_die_positions(f).find("W07", "D01") == (0.0, 0.0)


BAD = [
    ("wafer,die,x\nW01,D01,0\n", 1, "lacks the column(s) y"),
    ("wafer,die,x,y\nW01,D01,0,0\nW01,D02,one,0\n", 3, "x is 'one'; expected a finite number"),
    ("wafer,die,x,y\nW01,D01,0,0\nW01,D02,1,nan\n", 3, "y is 'nan'"),
    ("wafer,die,x,y\nW01,D01,0,0\nW01,D02,1,0\nW01,D01,2,0\n", 4, "already placed on line 2"),
    ("wafer,die,x,y\nW01,D01,0,0\nW01,D02,0,0\n", 3, "already taken by the die of line 2"),
    ("wafer,die,x,y\nW01,D01,0,0,9\n", 2, "has 5 field(s) where the header has 4"),
    ("wafer,die,x,y\nW01,,0,0\n", 2, "the die is empty"),
    ("wafer,die,x,y\n", None, "holds no die position"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD, ids=[m for _, _, m in BAD])
def test_a_bad_positions_file_names_its_file_and_line_and_changes_nothing(tmp_path, table, capsys, text, line,
                                                                          message):
    bad = tmp_path / "pos.csv"
    bad.write_text(text)
    with pytest.raises(ParseError) as err:
        read_die_positions(bad)
    assert message in str(err.value) and err.value.line == line
    store = _store(tmp_path, table)
    before = _sha(store)
    raw = tmp_path / "more.csv"
    raw.write_text("x")  # never read: the positions fail first
    assert main(["ingest", str(raw), "--store", str(store), "--die-positions", str(bad)]) == 2
    err = capsys.readouterr().err
    where = f"{bad}:{line}: " if line else f"{bad}: "
    assert err.startswith(f"hfox-fit ingest: error: {where}") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _sha(store) == before


def test_ingest_keeps_the_positions_and_the_report_draws_the_die_map(tmp_path, table, capsys):
    raw = tmp_path / "tidy.csv"
    table.to_csv(raw, index=False)
    pos = tmp_path / "pos.csv"
    pos.write_text("wafer,die,x,y\nW01,D01,3,1\nW01,D02,4,1\nW01,D09,5,1\n")
    store = tmp_path / "s.h5"
    assert main(["ingest", str(raw), "--store", str(store), "--die-positions", str(pos)]) == 0
    out = capsys.readouterr().out
    assert "2 die(s) placed" in out and "1 position(s) name no die of the store (e.g. line 4: D09)" in out
    attrs = _die_attrs(store)
    assert (attrs["D01"]["x"], attrs["D01"]["y"], attrs["D02"]["x"]) == (3.0, 1.0, 4.0)
    # the report's die map reads them from the dies of the store
    from hfox_fit.report import die_coordinates

    assert {d.die: die_coordinates(d) for d in CampaignStore(store).iter_dies()} == {"D01": (3.0, 1.0),
                                                                                  "D02": (4.0, 1.0)}


def test_positions_alone_update_an_existing_store_and_a_file_naming_no_die_is_refused(tmp_path, table, capsys):
    store = _store(tmp_path, table)
    pos = tmp_path / "pos.csv"
    pos.write_text("die,x,y\nD02,7,8\n")  # every wafer; D01 left without a position
    assert main(["ingest", "--store", str(store), "--die-positions", str(pos)]) == 0
    out = capsys.readouterr().out
    assert "1 die(s) placed" in out and "1 die(s) of the store have no position (W01/D01)" in out
    attrs = _die_attrs(store)
    assert attrs["D02"]["x"] == 7.0 and "x" not in attrs["D01"]
    before = _sha(store)
    pos.write_text("wafer,die,x,y\nW01,12,0,0\n")
    assert main(["ingest", "--store", str(store), "--die-positions", str(pos)]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 position(s)" in err and "W01/D01" in err and "Nothing was written" in err
    assert _sha(store) == before
    assert main(["ingest", "--store", str(store)]) == 2
    assert "give raw files or folders" in capsys.readouterr().err

"""`hfox-fit info`: what a campaign store holds, as text and as JSON, before and after a fit."""

from __future__ import annotations

import json
import shutil

import h5py
import pandas as pd
import pytest

from hfox_fit.cli import main
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.store._ingest import TableResult
from hfox_fit.synth import make_wafer


def _table(seed: int, wafer: str, die: str, v_read: float | None = None) -> pd.DataFrame:
    t = dies_to_table(make_wafer("paper", devices=40, pulses=60, cycles=2, seed=seed).dies)
    for c in ("wafer", "die", "device"):
        t[c] = t[c].astype(str)
    t["wafer"], t["die"] = wafer, die
    if v_read is not None:
        t["v_read"] = v_read
    return t


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Two files: W01/D01 (40 cells at the preset's v_read), then W01/D02 and W02/D01 (80 cells at 0.2 V)."""
    path = tmp_path_factory.mktemp("info") / "campaign.h5"
    store = CampaignStore(path)
    store.ingest_table(_table(1, "W01", "D01"), name="first.csv", format="bench")
    second = pd.concat([_table(2, "W01", "D02", 0.2), _table(3, "W02", "D01", 0.2)], ignore_index=True)
    store.ingest_table(second, name="second.csv")
    return path


@pytest.fixture(scope="module")
def fitted_path(store_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("info_fit") / "campaign.h5"
    shutil.copy(store_path, path)
    assert main(["fit", "--calibrate", "0", str(path), "--law", "power", "--quiet"]) == 0
    return path


def _info_json(path, capsys) -> dict:
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_counts_before_a_fit(store_path, capsys):
    info = _info_json(store_path, capsys)
    table = CampaignStore(store_path).read_table()
    t = info["totals"]
    assert t["wafers"] == 2 and t["dies"] == 3 and info["wafers"] == {"W01": ["D01", "D02"], "W02": ["D01"]}
    assert t["cells"] == 120 and t["trains"] == 240
    assert t["reads"] == len(table) and t["failed_reads"] == int(table["resistance"].isna().sum())
    assert t["pulses_per_train"] == [int(table["pulse"].max()) + 1]
    assert t["sources"] == 2 and t["rows_stored"] == len(table) and t["rows_rejected"] == 0
    assert [s["path"] for s in info["sources"]] == ["first.csv", "second.csv"]
    assert all(len(s["sha256"]) == 64 for s in info["sources"])
    v_read = {r["value"]: (r["cells"], r["trains"]) for r in info["conditions"]["v_read"]}
    first_v = float(_table(1, "W01", "D01")["v_read"].iloc[0])
    assert v_read == {first_v: (40, 80), 0.2: (80, 160)}
    assert info["fit"] is None

    assert main(["info", str(store_path)]) == 0
    text = capsys.readouterr().out
    assert "wafers      2: W01 W02" in text
    assert "W01: 2 die(s): D01 D02" in text
    assert "cells       120 (240 cell-cycles" in text
    assert f"reads       {len(table):,} (" in text
    assert "0.2 V (80 cells)" in text and f"{first_v:.4g} V (40 cells)" in text
    assert "sources     2 file(s)" in text
    assert f"first.csv [bench]  sha256 {info['sources'][0]['sha256'][:12]}" in text
    assert f"fit         none (run `hfox-fit fit {store_path}`)" in text


def test_info_shows_the_fit_and_its_d2d_medians(fitted_path, capsys):
    from hfox_fit.fitting import CampaignResult

    info = _info_json(fitted_path, capsys)
    fit = CampaignResult.load(fitted_path)
    assert info["fit"]["fitted_at"] == fit.fitted_at
    assert info["fit"]["summary"]["drift"]["law"] == "power"
    assert info["fit"]["summary"]["devices"] == fit.summary()["devices"]

    assert main(["info", str(fitted_path)]) == 0
    text = capsys.readouterr().out
    assert f"fit         fitted {fit.fitted_at}" in text
    for line in fit.describe(str(fitted_path)).splitlines():  # what `hfox-fit fit` printed
        assert "  " + line in text
    d2d = fit.summary()["d2d"]
    ci = d2d["r0"]["median_ci90"]
    assert f"median {d2d['r0']['median']:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" in text
    # every number printed carries its interval: the noise's too
    assert "[lo, hi]: 90 % intervals of the fit's own bootstrap" in text
    pink, rtn = fit.summary()["pink"], fit.summary()["rtn"]
    lo, hi = pink["std_ci90"]
    assert f"pink noise: std {pink['std']:.3g} [{lo:.3g}, {hi:.3g}]" in text
    lo, hi = rtn["p_up_ci90"]
    assert f"RTN: p_up {rtn['p_up']:.3g} [{lo:.3g}, {hi:.3g}]" in text


def test_a_printed_number_without_an_interval_says_so():
    from hfox_fit.fitting._result import _median_with_ci, _with_ci

    assert _with_ci(0.0123, [0.01, 0.015], ".3g") == "0.0123 [0.01, 0.015]"
    assert _with_ci(0.0123, None, ".3g") == "0.0123 (no interval: the summary's note says why)"
    assert _with_ci(None, None) == "n/a" and _with_ci(float("nan"), [0, 1]) == "n/a"
    assert _median_with_ci({"median": 2e-5, "median_ci90": None}) == (
        "2e-05 (no interval: fallback law: too few values to fit a family)")
    from hfox_fit.fitting._result import _amplitude_why

    assert _amplitude_why({"n_cells": 3, "family": "uniform"}) == "3 cell(s) showed RTN, 5 needed"
    assert "uniform law's edge" in _amplitude_why({"n_cells": 101, "family": "uniform"})
    assert _median_with_ci({"median": 2e-5, "median_ci90": None, "n_used": 40}) == (
        "2e-05 (no interval: no bootstrap, or too few of its replicates succeeded)")


def test_info_reads_no_per_read_array(store_path, capsys, monkeypatch):
    import hfox_fit.store._campaign as campaign

    def refuse(*a, **k):
        raise AssertionError("info read the reads")

    monkeypatch.setattr(campaign, "read_die", refuse)
    monkeypatch.setattr(campaign, "dies_to_table", refuse)
    assert main(["info", str(store_path)]) == 0
    assert "cells       120" in capsys.readouterr().out


def test_info_is_compact_with_many_dies(tmp_path, capsys):
    t = dies_to_table(make_wafer("paper", devices=2, pulses=5, cycles=1, seed=0).dies)
    for c in ("wafer", "die", "device"):
        t[c] = t[c].astype(str)
    files = [TableResult(table=t.assign(die=f"D{i:02d}"), path=f"f{i:02d}.csv", sha256=f"{i:02d}" * 32)
             for i in range(30)]  # one file per die
    path = tmp_path / "many.h5"
    CampaignStore(path).ingest(files)
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(ln for ln in lines if ln.startswith("  W01: 30 die(s)"))
    assert "D00" in line and "D29" in line and "(18 more)" in line and "D15" not in line
    listed = [ln for ln in lines if ln.startswith("  f")]
    assert [ln.split()[0] for ln in listed] == ["f00.csv", "f01.csv", "f02.csv", "f03.csv", "f04.csv",
                                                "f25.csv", "f26.csv", "f27.csv", "f28.csv", "f29.csv"]
    assert "  ... 20 more file(s) (see --json) ..." in lines
    assert "sources     30 file(s): 360 rows stored, 0 rejected" in lines


def test_info_of_a_missing_or_wrong_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "none.h5"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfox-fit info: error: campaign store") and "does not exist" in err
    assert "Traceback" not in err
    text = tmp_path / "notes.txt"
    text.write_text("not a store\n")
    assert main(["info", str(text), "--json"]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


def test_info_of_a_damaged_store_is_a_clear_error(store_path, tmp_path, capsys):
    path = tmp_path / "damaged.h5"
    shutil.copy(store_path, path)
    with h5py.File(path, "r+") as f:
        del f["measurements/W01/D02/source"]
    before = path.read_bytes()
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "part of it cannot be read" in err and "damaged" in err and "Traceback" not in err
    assert path.read_bytes() == before

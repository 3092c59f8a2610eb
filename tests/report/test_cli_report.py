"""``hfox-fit report STORE.h5 -o DIR``: the report from a campaign store, and its error lines."""

from __future__ import annotations

import json

import pytest
from report_helpers import truth_fit

from hfox_fit.cli import main
from hfox_fit.schema import dies_to_table
from hfox_fit.synth import make_wafer

store_mod = pytest.importorskip("hfox_fit.store", reason="the campaign store (hfox_fit.store) has not landed")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(store with a fit, store without one), from one small wafer."""
    tmp = tmp_path_factory.mktemp("stores")
    w = make_wafer("paper", devices=150, pulses=80, seed=11)
    table = dies_to_table(w.dies)
    fitted = store_mod.CampaignStore(tmp / "fitted.h5")
    fitted.ingest_table(table, name="synthetic")
    cells, summary, model = truth_fit(w)
    fitted.save_fit(cells, summary, model.to_dict())
    bare = store_mod.CampaignStore(tmp / "bare.h5")
    bare.ingest_table(table, name="synthetic")
    return fitted.path, bare.path, cells


def _one_error_line(capsys, code):
    out = capsys.readouterr()
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("hfox-fit report: error: ")
    assert "Traceback" not in out.err
    return lines[0]


def test_report_from_a_fitted_store(stores, tmp_path, capsys):
    fitted, _, cells = stores
    out = tmp_path / "rep"
    code = main(["report", str(fitted), "-o", str(out), "--pulses", "5,40,last"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"wrote {out / 'report.html'}" in printed
    assert "note: no die coordinates in this campaign" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Validation report: fitted.h5" in page
    assert "no die coordinates in this campaign" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["fitted_at"]  # the store's fit time is shown
    assert metrics["cells"]["usable"] == int((cells["flag"] == "ok").sum())
    assert sorted(int(p) for p in metrics["figures"]["ecdf"]["pulses"]) == [5, 40, 80]
    for name in metrics["figures"]:
        entry = metrics["figures"][name]
        if "file" in entry:
            assert (out / entry["file"]).is_file()


def test_store_without_fit(stores, tmp_path, capsys):
    _, bare, _ = stores
    line = _one_error_line(capsys, main(["report", str(bare), "-o", str(tmp_path / "r")]))
    assert "no fit in 'bare.h5'" in line and "hfox-fit fit" in line
    assert not (tmp_path / "r").exists()


def test_missing_store(tmp_path, capsys):
    line = _one_error_line(capsys, main(["report", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "r")]))
    assert "does not exist" in line


def test_output_path_is_a_file(stores, tmp_path, capsys):
    fitted, _, _ = stores
    target = tmp_path / "taken"
    target.write_text("x")
    line = _one_error_line(capsys, main(["report", str(fitted), "-o", str(target)]))
    assert "exists and is not a directory" in line


def test_bad_pulse_list(stores, tmp_path, capsys):
    fitted, _, _ = stores
    line = _one_error_line(capsys, main(["report", str(fitted), "-o", str(tmp_path), "--pulses", "10,ten"]))
    assert "--pulses" in line and "'ten'" in line

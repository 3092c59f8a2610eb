"""``hfox-fit calibrate STORE``: a saved fit's population intervals calibrated without refitting it."""

from __future__ import annotations

import json

import pytest

from hfox_fit.calibration import MIN_REPLICATES
from hfox_fit.cli import main
from hfox_fit.exceptions import StoreError
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.synth import make_wafer


@pytest.fixture(scope="module")
def fitted_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibrate") / "campaign.h5"
    CampaignStore(path).ingest_table(dies_to_table(make_wafer("paper", devices=96, pulses=300, seed=11).dies),
                                     name="simulated")
    assert main(["fit", "--calibrate", "0", str(path), "--law", "two_slope", "--quiet"]) == 0
    return path


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def test_calibrate_adds_the_calibration_to_the_saved_fit_and_changes_nothing_else(fitted_store, tmp_path, capsys):
    path = _copy(fitted_store, tmp_path)
    store = CampaignStore(path)
    before = store.load_fit()
    law, dies, _ = store.load_die_results()
    summary = tmp_path / "summary.json"
    assert main(["calibrate", str(path), "--replicates", str(MIN_REPLICATES), "--summary", str(summary)]) == 0
    out = capsys.readouterr()
    assert f"calibrated by {MIN_REPLICATES} simulated wafers" in out.out and "calibrate" in out.err
    after = store.load_fit()
    cal = after.summary.pop("calibration")
    assert cal["replicates"] == MIN_REPLICATES and cal["quantities"]["median m1"]["ci90"] is not None
    assert json.loads(summary.read_text())["calibration"] == cal
    # the rest of the fit is the one saved before: summary, cells, model, arrays, its time and history
    assert after.summary == before.summary
    assert after.cells.equals(before.cells) and after.model == before.model
    assert after.arrays.keys() == before.arrays.keys()
    assert (after.fitted_at, after.history) == (before.fitted_at, before.history)
    assert store.load_die_results()[0] == law and store.load_die_results()[1].keys() == dies.keys()
    # the same numbers as `fit --calibrate N` (same seed, same fit)
    (tmp_path / "again").mkdir()
    again = _copy(fitted_store, tmp_path / "again")
    assert main(["fit", str(again), "--law", "two_slope", "--calibrate", str(MIN_REPLICATES), "--quiet"]) == 0
    refit = CampaignStore(again).load_fit().summary["calibration"]
    assert refit["quantities"] == cal["quantities"]


def test_an_uncalibrated_fit_says_so_in_its_summary_lines_and_report(fitted_store, tmp_path, capsys):
    """`--calibrate 0`: the printed lines and the report say the intervals are the fit's own, and how to calibrate
    them; once calibrated, the report says it no more."""
    from hfox_fit.fitting._result import describe_summary
    from hfox_fit.report import report_store

    path = _copy(fitted_store, tmp_path)
    summary = CampaignStore(path).load_fit().summary
    assert "not calibrated" in describe_summary(summary, str(path)) and "hfox-fit calibrate" in describe_summary(
        summary, str(path))
    note = "These intervals are the fit's own"
    assert note in report_store(path, tmp_path / "before", figures=False).html.read_text()
    assert main(["calibrate", str(path), "--replicates", str(MIN_REPLICATES), "--quiet"]) == 0
    capsys.readouterr()
    summary = CampaignStore(path).load_fit().summary
    assert "not calibrated" not in describe_summary(summary, str(path))
    assert note not in report_store(path, tmp_path / "after", figures=False).html.read_text()


@pytest.mark.parametrize("argv,message", [
    (["--replicates", "1"], "--replicates needs 5"),
    (["--replicates", "0"], "--replicates needs 5"),
    (["--jobs", "2", "--scheduler", "local:2"], "not both"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_options_are_refused_before_anything_is_written(fitted_store, tmp_path, capsys, argv, message):
    path = _copy(fitted_store, tmp_path)
    data = path.read_bytes()
    assert main(["calibrate", str(path), *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert path.read_bytes() == data


def test_a_store_without_a_fit_names_the_command_to_run(tmp_path, capsys):
    path = tmp_path / "campaign.h5"
    CampaignStore(path).ingest_table(dies_to_table(make_wafer("paper", devices=16, pulses=100, seed=1).dies),
                                     name="simulated")
    data = path.read_bytes()
    assert main(["calibrate", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no fit in" in err and "hfox-fit fit" in err and "Traceback" not in err
    assert path.read_bytes() == data


def test_a_read_only_store_is_refused_before_the_simulated_wafers(fitted_store, tmp_path, capsys):
    path = _copy(fitted_store, tmp_path)
    path.chmod(0o444)
    try:
        assert main(["calibrate", str(path), "--quiet"]) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        path.chmod(0o644)


def test_a_fit_replaced_meanwhile_is_not_overwritten(fitted_store, tmp_path):
    path = _copy(fitted_store, tmp_path)
    store = CampaignStore(path)
    fit = store.load_fit()
    data = path.read_bytes()
    with pytest.raises(StoreError, match="was replaced"):
        store.save_fit_summary({**fit.summary, "calibration": {}}, "another time")
    assert path.read_bytes() == data

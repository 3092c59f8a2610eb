"""Progress on a stream that is not a terminal: whole lines, moving within a die, stages after the bar."""

from __future__ import annotations

import io
import re
import time

import pytest

import hfox_fit._progress as progress_mod
from hfox_fit._progress import Progress
from hfox_fit.cli import main
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.synth import make_wafer

PERCENT = re.compile(r"^fit: +(\d+)% \(")


def _complete_lines(err: str) -> list[str]:
    """The lines of ``err``, after checking none was left open or redrawn in place."""
    assert "\r" not in err and "\x1b" not in err, repr(err[:300])
    assert err == "" or err.endswith("\n"), repr(err[-200:])
    return err.splitlines()


@pytest.fixture(scope="module")
def one_die_store(tmp_path_factory):
    wafer = make_wafer("paper", devices=96, pulses=120, seed=5)
    assert len(wafer.dies) == 1
    path = tmp_path_factory.mktemp("progress") / "one_die.h5"
    CampaignStore(path).ingest_table(dies_to_table(wafer.dies), name="one die")
    return path


def test_lines_mode_prints_one_line_per_step_and_per_stage():
    out = io.StringIO()
    bar = Progress("job", 4, "die", stream=out)
    for k in range(1, 9):
        bar.update_to(k / 2)
    bar.stage("pooling")
    bar.close("done")
    lines = _complete_lines(out.getvalue())
    pct = [int(m.group(1)) for m in map(re.compile(r"^job: +(\d+)%").match, lines) if m]
    assert pct == [12, 25, 38, 50, 62, 75, 88, 100]
    assert lines[-2].startswith("job: pooling... (") and lines[-1] == "job: done"


def test_a_delay_hides_a_quick_job_and_shows_a_slow_stage_when_it_runs_out():
    out = io.StringIO()
    with Progress("quick", stream=out, delay=5.0) as bar:
        bar.stage("reading")
        bar.close("done")
    assert out.getvalue() == ""
    out = io.StringIO()
    bar = Progress("slow", stream=out, delay=0.2)
    bar.stage("reading")
    time.sleep(0.6)  # the stage is still running when the delay ends: it is shown then
    assert _complete_lines(out.getvalue()) == ["slow: reading... (0.0 s)"]
    bar.stage("writing")
    bar.close("done")
    lines = _complete_lines(out.getvalue())
    assert lines[1].startswith("slow: writing... (") and lines[2] == "slow: done"


def test_fit_progress_moves_within_the_die_then_names_the_pooled_steps(one_die_store, capsys):
    assert main(["fit", "--calibrate", "0", str(one_die_store)]) == 0
    lines = _complete_lines(capsys.readouterr().err)
    pct = [(i, int(m.group(1))) for i, m in enumerate(map(PERCENT.match, lines)) if m]
    assert [p for _, p in pct][-1] == 100
    within = [p for _, p in pct if 0 < p < 100]
    assert len(within) >= 3, lines  # one die: every step before 100 % is within it
    last_bar = pct[-1][0]
    after = lines[last_bar + 1:]
    assert any("pooling: noise laws" in ln and "D2D laws" in ln for ln in after), after
    assert after[-1].startswith("fit: done in ")


def test_fit_progress_from_worker_processes_moves_within_the_die(one_die_store, capsys):
    assert main(["fit", "--calibrate", "0", str(one_die_store), "--jobs", "2"]) == 0
    lines = _complete_lines(capsys.readouterr().err)
    pct = [int(m.group(1)) for m in map(PERCENT.match, lines) if m]
    assert pct[-1] == 100 and any(0 < p < 100 for p in pct), lines


def test_quiet_fit_prints_no_progress(one_die_store, capsys):
    assert main(["fit", "--calibrate", "0", str(one_die_store), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_export_and_report_show_their_stages_as_whole_lines(one_die_store, tmp_path, capsys, monkeypatch):
    assert main(["fit", "--calibrate", "0", str(one_die_store), "--quiet"]) == 0
    monkeypatch.setattr(progress_mod, "DEFAULT_DELAY", 0.0)  # as if each took longer than the delay
    assert main(["export", str(one_die_store), "-o", str(tmp_path / "model.pt")]) == 0
    lines = _complete_lines(capsys.readouterr().err)
    assert any(ln.startswith("export: hashing the store") for ln in lines), lines
    assert lines[-1].startswith("export: done in ")
    assert main(["report", str(one_die_store), "-o", str(tmp_path / "report")]) == 0
    lines = _complete_lines(capsys.readouterr().err)
    assert any(ln.startswith("report: reading the measurements") for ln in lines), lines
    drawn = [ln for ln in lines if ln.startswith("report: drawing figure ")]
    assert len(drawn) >= 3 and drawn[0].startswith("report: drawing figure 1/")
    assert lines[-1].startswith("report: done in ")
    assert main(["export", str(one_die_store), "-o", str(tmp_path / "m2.pt"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""

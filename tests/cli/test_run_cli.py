"""`hfox-fit run` and `demo`: every option checked before anything is written; --seed; devices.csv."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hfox_fit.cli import build_parser, main
from hfox_fit.cli._run import _step_args

BAD = [
    (["--law", "nope"], "--law must be one of auto, "),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--v-read", "-0.1"], "--v-read must be a read voltage > 0"),
    (["--v-read", "nan"], "--v-read must be a read voltage > 0"),
    (["--format", "nope"], "--format must name an installed reader (bench, "),
    (["--wafer", " "], "--wafer must name a wafer"),
]


@pytest.mark.parametrize(("option", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_bad_option_leaves_no_output_folder(raw, tmp_path, capsys, command, option, message):
    out = tmp_path / "out" / "nested"
    argv = [command, *([str(raw)] if command == "run" else []), "-o", str(out), *option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hfox-fit {command}: error: {message}") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_input_or_a_file_as_output_leaves_files_as_they_were(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", str(raw), str(tmp_path / "absent.csv"), "-o", str(out)]) == 2
    assert "input" in capsys.readouterr().err and not out.exists()
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(taken)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert taken.read_text() == "keep me\n"


def test_strict_refuses_a_stray_file_before_the_output_folder_exists(raw, tmp_path, capsys):
    import shutil

    folder = tmp_path / "raw"
    shutil.copytree(raw, folder)
    (folder / "README.txt").write_text("wafer W01, measured on the bench\n")
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", str(folder), "-o", str(out), "--strict", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hfox-fit run: error: {folder / 'README.txt'}: no reader recognises its content")
    assert "--strict refuses a folder that holds such a file" in err and "Traceback" not in err
    assert not out.exists()
    args = build_parser().parse_args(["run", str(folder), "-o", str(out), "--strict"])
    assert "--strict" in _step_args(args, out)["ingest"]


def test_seed_goes_to_the_report_and_devices_come_after_the_fit(tmp_path):
    args = build_parser().parse_args(["run", "raw", "-o", str(tmp_path), "--seed", "7", "--train"])
    steps = _step_args(args, tmp_path)
    assert list(steps) == ["ingest", "fit", "devices", "export", "train-demo", "report"]
    off = _step_args(build_parser().parse_args(["run", "raw", "-o", str(tmp_path), "--calibrate", "0"]), tmp_path)
    assert off["fit"][off["fit"].index("--calibrate") + 1] == "0"  # (passed on: the fit's own default is 20)
    assert steps["devices"] == [str(tmp_path / "campaign.h5"), "-o", str(tmp_path / "devices.csv")]
    assert steps["report"][steps["report"].index("--seed") + 1] == "7"
    assert "--seed" not in steps["train-demo"]  # train-demo has no base seed
    demo = build_parser().parse_args(["demo", "-o", str(tmp_path)])
    demo.paths = ["raw"]  # what `demo` sets before running the steps
    default = _step_args(demo, tmp_path)
    assert default["report"][default["report"].index("--seed") + 1] == "0"


def test_run_writes_the_devices_csv_passes_the_seed_and_calibrates_by_default(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(raw), "-o", str(out), "--quiet", "--seed", "5"]) == 0
    done = capsys.readouterr().out.strip().splitlines()[-1]
    assert done.startswith("hfox-fit run: done.") and f"devices {out / 'devices.csv'}" in done
    devices = pd.read_csv(out / "devices.csv")
    fit = json.loads((out / "fit_summary.json").read_text())
    assert len(devices) == fit["trains"]["total"] == 60
    assert list(devices.columns[:4]) == ["wafer", "die", "device", "cycle"]
    assert {"r0", "r0_stderr", "flag", "flag_reason"} <= set(devices.columns)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["meta"]["seed"] == 5
    # the population intervals are calibrated unless --calibrate 0: the summary and the report carry them
    assert fit["calibration"]["replicates"] == 20
    assert "median 90 % CI, calibrated" in (out / "report" / "report.html").read_text()


def test_an_interrupt_during_a_later_step_names_the_steps_it_completed(raw, tmp_path, capsys, monkeypatch):
    """SIGINT in the report step: the store, the devices CSV and the checkpoint are complete, and the one line
    says so (not "files were left as they were")."""
    import hfox_fit.cli._report as report_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_cli, "run_report", interrupted)
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", "--quiet", str(raw), "-o", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("hfox-fit run: interrupted in its report step after it had ")
    assert "rerun the command to finish it" in err
    for done in ("stored the ingest in", "saved the fit in", "devices.csv", "model.pt"):
        assert done in err
    assert (out / "campaign.h5").is_file() and (out / "model.pt").is_file()


def test_a_run_whose_first_step_fails_leaves_no_empty_output_folder(tmp_path, capsys):
    """A header-only file: nothing was ingested, the new store was not created, and no empty OUTDIR is left."""
    header = tmp_path / "hdr.csv"
    header.write_text("wafer,die,device,cycle,pulse,resistance\n")
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", "--quiet", str(header), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert "was not created" in err and "as it was" not in err and "Traceback" not in err
    assert not out.exists()


def test_train_without_scikit_learn_is_refused_before_anything_is_written(raw, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", "--quiet", "--train", str(raw), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--train trains on scikit-learn's 8x8 digits" in err and "pip install 'hfox_fit[train]'" in err
    assert not out.exists()

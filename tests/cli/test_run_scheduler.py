"""`hfox-fit run --scheduler`: passed on to the fit step, checked before anything is written."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from hfox_fit.cli import build_parser, main
from hfox_fit.cli._run import _step_args

BAD = [
    (["--scheduler", "nope"], "--scheduler 'nope' is not understood"),
    (["--scheduler", "local:0"], "--scheduler 'local:0': N must be a positive integer"),
    (["--scheduler", "tcp://"], "--scheduler 'tcp://': no HOST:PORT"),
    (["--jobs", "2", "--scheduler", "local:2"], "--jobs 2 and --scheduler local:2: give one"),
]


@pytest.mark.parametrize(("option", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_scheduler_leaves_no_output_folder(raw, tmp_path, capsys, option, message):
    out = tmp_path / "out" / "nested"
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(out), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hfox-fit run: error: {message}") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_without_dask_the_scheduler_says_how_to_install_it(raw, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    out = tmp_path / "out"
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(out), "--scheduler", "local:2"]) == 2
    err = capsys.readouterr().err
    assert "needs dask.distributed" in err and "pip install" in err and not out.exists()


def test_the_scheduler_goes_to_the_fit_step_instead_of_jobs(tmp_path):
    args = build_parser().parse_args(["run", "raw", "-o", str(tmp_path), "--scheduler", "tcp://10.0.0.5:8786"])
    fit = _step_args(args, tmp_path)["fit"]
    assert fit[fit.index("--scheduler") + 1] == "tcp://10.0.0.5:8786" and "--jobs" not in fit
    fit = _step_args(build_parser().parse_args(["run", "raw", "-o", str(tmp_path), "--jobs", "3"]), tmp_path)["fit"]
    assert fit[fit.index("--jobs") + 1] == "3" and "--scheduler" not in fit
    # neither given: the fit's own defaults (one process for the dies, the cores for the calibration)
    demo = build_parser().parse_args(["demo", "-o", str(tmp_path)])
    demo.paths = ["raw"]
    for args in (build_parser().parse_args(["run", "raw", "-o", str(tmp_path)]), demo):
        fit = _step_args(args, tmp_path)["fit"]
        assert "--jobs" not in fit and "--scheduler" not in fit
        assert fit[fit.index("--calibrate") + 1] == "20"


def test_run_on_a_local_cluster_gives_the_same_devices_as_one_process(raw, tmp_path, capsys):
    pytest.importorskip("distributed")
    one, dask = tmp_path / "one", tmp_path / "dask"
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(one), "--quiet"]) == 0
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(dask), "--quiet", "--scheduler", "local:2"]) == 0
    a, b = pd.read_csv(one / "devices.csv"), pd.read_csv(dask / "devices.csv")
    assert len(a) == len(b) == 60
    pd.testing.assert_frame_equal(a, b, rtol=1e-9)
    assert (dask / "report" / "report.html").is_file() and (dask / "model.pt").is_file()

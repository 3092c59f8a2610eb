"""``hfox-fit fit`` and ``hfox-fit devices`` against a campaign store."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hfox_fit.cli import main
from hfox_fit.schema import dies_to_table

store_module = pytest.importorskip("hfox_fit.store")


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_wafer_module):
    path = tmp_path_factory.mktemp("cli") / "campaign.h5"
    store_module.CampaignStore(path).ingest_table(dies_to_table(small_wafer_module.dies), name="simulated")
    return path


@pytest.fixture(scope="module")
def small_wafer_module():
    from hfox_fit.synth import make_wafer

    return make_wafer("paper", devices=96, pulses=300, seed=11)


def test_fit_then_devices(store, tmp_path, capsys):
    summary = tmp_path / "summary.json"
    assert main(["fit", "--calibrate", "0", str(store), "--law", "two_slope", "--summary", str(summary)]) == 0
    out = capsys.readouterr()
    assert "drift law: two_slope" in out.out and "fitted" in out.out
    assert "die" in out.err  # the progress bar
    s = json.loads(summary.read_text())
    assert s["drift"]["law"] == "two_slope" and s["devices"]["total"] == 96
    fit = store_module.CampaignStore(store).load_fit()
    assert fit.summary == s and fit.model["law"] == "two_slope" and len(fit.cells) == 96
    assert "spectrum_measured" in fit.arrays and fit.fitted_at

    csv = tmp_path / "devices.csv"
    assert main(["devices", str(store), "-o", str(csv)]) == 0
    df = pd.read_csv(csv)
    assert list(df.columns[:4]) == ["wafer", "die", "device", "cycle"]
    for col in ("m1", "m1_stderr", "t_star", "t_star_stderr", "m2", "m2_stderr", "c1", "c1_stderr", "r0",
                "r0_stderr", "flag", "flag_reason"):
        assert col in df, col
    assert len(df) == 96 and set(df["flag"]) <= {"ok", "stuck", "abrupt", "open", "failed", "poor_fit"}


def test_refit_replaces_and_keeps_history(store, capsys):
    assert main(["fit", "--calibrate", "0", str(store), "--law", "power", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    fit = store_module.CampaignStore(store).load_fit()
    assert fit.summary["drift"]["law"] == "power" and "a_stderr" in fit.cells
    assert len(fit.history) >= 2


def test_user_errors_exit_2(tmp_path, store, capsys):
    assert main(["fit", "--calibrate", "0", str(tmp_path / "missing.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", "--calibrate", "0", str(store), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--calibrate", "0", str(store), "--law", "linear"])
    assert main(["devices", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.csv")]) == 2
    assert main(["devices", str(store), "-o", str(tmp_path / "no" / "dir" / "x.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_devices_needs_a_fit(tmp_path, small_wafer_module, capsys):
    path = tmp_path / "unfitted.h5"
    store_module.CampaignStore(path).ingest_table(dies_to_table(small_wafer_module.dies[:1]), name="sim")
    assert main(["devices", str(path), "-o", str(tmp_path / "x.csv")]) == 2
    assert "no fit" in capsys.readouterr().err


def test_read_only_store_or_summary_is_refused_before_the_fit(tmp_path, small_wafer_module, capsys, monkeypatch):
    import shutil

    import hfox_fit.fitting as fitting

    path = tmp_path / "ro.h5"
    store_module.CampaignStore(path).ingest_table(dies_to_table(small_wafer_module.dies), name="simulated")
    calls = []
    monkeypatch.setattr(fitting, "fit_campaign", lambda *a, **k: calls.append(1))  # the fit must not start
    monkeypatch.setattr(fitting, "CampaignFitter", lambda *a, **k: calls.append(1))  # (what `fit` calls)
    path.chmod(0o444)
    before = path.read_bytes()
    assert main(["fit", "--calibrate", "0", str(path), "--quiet"]) == 2
    assert "is read-only" in capsys.readouterr().err and not calls
    assert path.read_bytes() == before and (path.stat().st_mode & 0o777) == 0o444
    writable = tmp_path / "rw.h5"
    shutil.copy(path, writable)
    writable.chmod(0o644)
    summary = tmp_path / "s.json"
    summary.write_text("{}\n")
    summary.chmod(0o444)
    assert main(["fit", "--calibrate", "0", str(writable), "--quiet", "--summary", str(summary)]) == 2
    assert "is read-only" in capsys.readouterr().err and not calls and summary.read_text() == "{}\n"


def test_an_interrupt_after_the_save_says_the_fit_is_complete(store, capsys, monkeypatch):
    from hfox_fit.fitting import CampaignResult

    def interrupt(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(CampaignResult, "describe", interrupt)
    assert main(["fit", "--calibrate", "0", str(store), "--law", "two_slope"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"hfox-fit fit: interrupted after it had saved the fit in {store} (complete); nothing else was changed."
    assert store_module.CampaignStore(store).load_fit().summary["drift"]["law"] == "two_slope"


def test_caught_warnings_print_once_and_foreign_ones_are_named(store, capsys, monkeypatch):
    """Own warnings print once with a count; a numpy warning is named as internal, never printed raw."""
    import warnings

    import numpy as np

    from hfox_fit.exceptions import FitConvergenceWarning
    from hfox_fit.fitting import CampaignFitter

    fit = CampaignFitter.fit

    def noisy(self, *a, **k):
        for _ in range(3):
            warnings.warn("the pink-noise spectrum fit did not converge", FitConvergenceWarning, stacklevel=1)
            with np.errstate(invalid="warn"):
                np.sqrt(np.array([-1.0]))
        return fit(self, *a, **k)

    monkeypatch.setattr(CampaignFitter, "fit", noisy)
    assert main(["fit", "--calibrate", "0", str(store), "--law", "two_slope", "--quiet"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hfox-fit fit:")]
    assert err.count("hfox-fit fit: warning: the pink-noise spectrum fit did not converge (3 times)") == 1
    internal = [line for line in err if "invalid value encountered in sqrt" in line]
    assert len(internal) == 1 and internal[0].startswith("hfox-fit fit: note: an internal step warned")
    assert "RuntimeWarning at test_cli_fit.py:" in internal[0] and "please report" in internal[0]

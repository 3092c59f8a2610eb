"""`hfox-fit synth`: raw files of a simulated wafer plus truth.json, in every writable format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hfox_fit.cli import main
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore
from hfox_fit.synth import EFFECT_PRESETS, TRUTH_NAME, effects_preset, make_wafer

parsers = pytest.importorskip("hfox_fit.parsers")
if not hasattr(parsers, "write_measurements"):
    pytest.skip("hfox_fit.parsers does not export write_measurements yet", allow_module_level=True)

KEY = ["wafer", "die", "device", "cycle", "pulse"]
SMALL = ["--devices", "20", "--pulses", "8", "--cycles", "2", "--seed", "5"]


def expected(**kw) -> pd.DataFrame:
    w = make_wafer("paper", devices=20, pulses=8, cycles=2, seed=5, **kw)
    return _sorted(dies_to_table(w.dies))


def _sorted(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    for c in ("wafer", "die", "device"):
        t[c] = t[c].astype(str)
    return t.sort_values(KEY).reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["bench", "b1500", "ramps", "hdf5", "tidy"])
def test_synth_then_ingest_gives_the_simulated_reads(tmp_path, capsys, fmt):
    out = tmp_path / "raw"
    assert main(["synth", "-o", str(out), "--format", fmt, *SMALL]) == 0
    msg = capsys.readouterr().out
    assert f"{fmt} file(s) to {out}" in msg and "ground truth in" in msg
    truth = json.loads((out / TRUTH_NAME).read_text())
    assert len(truth["cells"]) == 20 * 2 and truth["meta"]["seed"] == 5
    assert truth["meta"]["effects_preset"] == "bench"

    store = tmp_path / "c.h5"
    assert main(["ingest", str(out), "--store", str(store), "--quiet"]) == 0
    got = _sorted(CampaignStore(store).read_table())
    ref = expected()
    assert len(got) == len(ref) == 20 * 2 * 9
    pd.testing.assert_frame_equal(got[KEY], ref[KEY], check_dtype=False)
    np.testing.assert_array_equal(np.isnan(got["resistance"]), np.isnan(ref["resistance"]))
    assert np.isnan(got["resistance"]).sum() == np.isnan(ref["resistance"]).sum()
    np.testing.assert_allclose(got["resistance"], ref["resistance"], rtol=1e-12)
    conditions = ["v_read"] if fmt == "ramps" else ["v_read", "v_pulse", "pulse_width"]  # ramps keep v_read only
    pd.testing.assert_frame_equal(got[conditions], ref[conditions])


def test_synth_effects_and_presets(tmp_path, capsys):
    out = tmp_path / "clean"
    assert main(["synth", "-o", str(out), "--format", "tidy", "--effects", "clean", "--preset", "wafer_b",
                 "--wafer", "WB", *SMALL]) == 0
    truth = json.loads((out / TRUTH_NAME).read_text())
    assert truth["effects"] == effects_preset("clean").__dict__
    assert {c["flag"] for c in truth["cells"]} == {"ok"} and truth["meta"]["wafer"] == "WB"
    assert truth["meta"]["preset"] == "wafer_b"
    table = parsers.read_measurements(out / "WB.csv", "tidy").table
    assert not table["resistance"].isna().any()
    assert set(EFFECT_PRESETS) >= {"bench", "clean", "noisy"}


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "old.csv").write_text("x\n")
    assert main(["synth", "-o", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["synth", "-o", str(out), "--overwrite", *SMALL]) == 0
    assert (out / TRUTH_NAME).is_file()


def test_synth_bad_arguments(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path / "x"), "--devices", "0"]) == 2
    assert "--devices must be >= 1; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["synth", "-o", str(tmp_path / "x"), "--preset", "nope"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("")
    assert main(["synth", "-o", str(f)]) == 2
    assert "is a file; -o takes a folder" in capsys.readouterr().err


def test_truth_json_is_strict(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["synth", "-o", str(out), "--format", "tidy", "--effects", "noisy", *SMALL]) == 0
    text = (out / TRUTH_NAME).read_text()
    assert "NaN" not in text
    cells = json.loads(text)["cells"]
    assert any(c["abrupt_pulse"] is None for c in cells)

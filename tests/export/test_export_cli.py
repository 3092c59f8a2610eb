"""``hfox-fit export STORE.h5 -o model.pt`` on a small store holding a (stand-in) fit."""

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import preset_model  # noqa: E402
from hfox_fit.cli import main  # noqa: E402
from hfox_fit.schema import dies_to_table  # noqa: E402
from hfox_fit.store import CampaignStore  # noqa: E402
from hfox_fit.synth import make_wafer  # noqa: E402
from hfox_fit.torch import WeakResetArray, load_checkpoint  # noqa: E402


def _store(tmp_path, fitted=3):
    """A store with measurements and a saved fit (the fitter's output written by hand)."""
    store = CampaignStore(tmp_path / "campaign.h5")
    store.ingest_table(dies_to_table(make_wafer(devices=4, pulses=5, seed=0).dies), name="simulated")
    cells = pd.DataFrame({
        "wafer": ["W01"] * 4,
        "die": ["D01"] * 4,
        "device": [f"A1/r00c{i:02d}" for i in range(4)],
        "cycle": [0] * 4,
        "flag": ["ok"] * fitted + ["stuck"] * (4 - fitted),
    })
    summary = {"devices": {"total": 4, "fitted": fitted, "flagged": 4 - fitted}}
    store.save_fit(cells, summary, preset_model("wafer_b").to_dict())
    return store


def test_export_writes_a_checkpoint_with_provenance(tmp_path, capsys):
    store = _store(tmp_path)
    out = tmp_path / "model.pt"
    assert main(["export", str(store.path), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    model, prov = load_checkpoint(out)
    assert model.to_dict() == preset_model("wafer_b").to_dict()
    fit = store.load_fit()
    assert prov["store_sha256"] == store.sha256()
    assert prov["fitted_at"] == fit.fitted_at
    assert prov["cells_used"] == 3
    assert prov["cells"]["flag"] == ["ok", "ok", "ok", "stuck"]
    assert prov["cells"]["device"][0] == "A1/r00c00"
    arr = WeakResetArray.from_checkpoint(out, 100, seed=0)
    assert arr.pulse(10).shape == (100,)


def test_default_output_beside_the_store(tmp_path):
    store = _store(tmp_path)
    assert main(["export", str(store.path)]) == 0
    assert (tmp_path / "campaign.pt").is_file()


def test_fit_with_no_usable_cells_is_a_clear_error(tmp_path, capsys):
    store = _store(tmp_path, fitted=0)
    out = tmp_path / "model.pt"
    assert main(["export", str(store.path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "used no cells (0 fitted of 4)" in err and "Traceback" not in err
    assert not out.exists()


def test_store_without_fit_or_missing(tmp_path, capsys):
    store = CampaignStore(tmp_path / "campaign.h5")
    store.ingest_table(dies_to_table(make_wafer(devices=2, pulses=3, seed=0).dies), name="simulated")
    assert main(["export", str(store.path)]) == 2
    assert "no fit in 'campaign.h5'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "absent.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err

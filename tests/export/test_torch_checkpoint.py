"""The torch checkpoint: plain contents, exact round trip, atomic write, clear errors."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import CheckpointError, FitError, __version__, preset_model  # noqa: E402
from hfox_fit.torch import FORMAT, FORMAT_VERSION, export_checkpoint, load_checkpoint  # noqa: E402

PROV = {
    "store": "campaign.h5",
    "store_sha256": "ab" * 32,
    "cells_used": 3,
    "cells": {"wafer": ["W01"] * 3, "die": ["D01"] * 3, "device": ["a", "b", "c"], "cycle": [0, 0, 0]},
    "fitted_at": "2026-01-01T00:00:00+00:00",
}


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.pt"
    export_checkpoint(preset_model("wafer_b"), path, provenance=PROV)
    return path


@pytest.mark.parametrize("preset", ["paper", "wafer_b"])
def test_round_trip_is_exact(tmp_path, preset):
    model = preset_model(preset)
    path = export_checkpoint(model, tmp_path / "m.pt", provenance=PROV)
    back, prov = load_checkpoint(path)
    assert back.to_dict() == model.to_dict()
    assert prov["store_sha256"] == PROV["store_sha256"]
    assert prov["cells_used"] == 3 and prov["cells"]["device"] == ["a", "b", "c"]
    assert prov["fitted_at"] == PROV["fitted_at"]
    assert prov["hfox_fit_version"] == __version__


def test_file_is_a_plain_dict_of_tensors(ckpt):
    obj = torch.load(ckpt, weights_only=True)  # no pickled classes
    assert set(obj) == {"format", "format_version", "hfox_fit_version", "config", "state_dict"}
    assert obj["format"] == FORMAT and obj["format_version"] == FORMAT_VERSION == 1
    assert all(isinstance(v, torch.Tensor) for v in obj["state_dict"].values())
    sd = obj["state_dict"]
    # drift-law D2D laws with truncations, copula, C2C, noise laws
    assert obj["config"]["d2d"]["m1"]["family"] == "lognorm"
    assert torch.equal(sd["d2d.t_star.bounds"], torch.tensor([40.0, 1500.0], dtype=torch.float64))
    assert sd["copula.correlation"].shape == (2, 2) and float(sd["copula.correlation"][0, 1]) == -0.6
    assert "c2c.r0.params" in sd and "c2c.r0.bounds" in sd
    assert float(sd["pink.alpha"]) == 0.035 and float(sd["rtn.p_up"]) == 2e-3

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (str, int, float, bool))

    assert plain(obj["config"])


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old contents")

    def broken_save(obj, f, *a, **k):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(preset_model("paper"), path, provenance=PROV)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.pt"]  # no temp file left behind


def test_existing_file_is_replaced(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"junk")
    export_checkpoint(preset_model("paper"), path, provenance=PROV)
    assert load_checkpoint(path)[0].law == "two_slope"
    assert os.listdir(tmp_path) == ["model.pt"]


def _rewrite(path, **changes):
    obj = torch.load(path, weights_only=True)
    for key, value in changes.items():
        obj[key] = value
    torch.save(obj, path)


def test_newer_format_version_is_refused(ckpt):
    _rewrite(ckpt, format_version=3)
    with pytest.raises(CheckpointError, match=r"model\.pt has format_version 3; this hfox_fit reads "
                                              r"versions 1-1\. Upgrade hfox_fit\."):
        load_checkpoint(ckpt)


def test_other_format_is_refused(ckpt):
    _rewrite(ckpt, format="someone.else")
    with pytest.raises(CheckpointError, match="not an hfox_fit device-model checkpoint.*'someone.else'"):
        load_checkpoint(ckpt)


def test_plain_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="expected format 'hfox_fit.device_model', found None"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_is_refused(ckpt, damage):
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(300), "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.pt is damaged or is not a torch checkpoint"):
        load_checkpoint(ckpt)


def test_damaged_contents_are_refused(ckpt):
    obj = torch.load(ckpt, weights_only=True)
    del obj["state_dict"]["d2d.m1.params"]
    torch.save(obj, ckpt)
    with pytest.raises(CheckpointError, match="parameters of d2d law 'm1' are missing or damaged"):
        load_checkpoint(ckpt)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_fit_without_usable_cells(tmp_path, ckpt):
    with pytest.raises(FitError, match="used no cells"):
        export_checkpoint(preset_model("paper"), tmp_path / "x.pt", provenance={**PROV, "cells_used": 0})
    assert not (tmp_path / "x.pt").exists()
    obj = torch.load(ckpt, weights_only=True)
    obj["config"]["provenance"]["cells_used"] = 0  # a checkpoint made some other way
    torch.save(obj, ckpt)
    with pytest.raises(CheckpointError, match="no usable cells"):
        load_checkpoint(ckpt)


def test_provenance_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match=r"provenance\['x'\]: only str, int"):
        export_checkpoint(preset_model("paper"), tmp_path / "m.pt", provenance={"x": object()})
    with pytest.raises(TypeError, match="needs a DeviceModel"):
        export_checkpoint(preset_model("paper").to_dict(), tmp_path / "m.pt", provenance={})
    # numpy values are turned into plain numbers
    export_checkpoint(preset_model("paper"), tmp_path / "m.pt", provenance={"cells_used": np.int64(5)})
    assert load_checkpoint(tmp_path / "m.pt")[1]["cells_used"] == 5


def test_file_mode_is_not_private(tmp_path):
    umask = os.umask(0o022)
    try:
        path = export_checkpoint(preset_model("paper"), tmp_path / "model.pt", provenance=PROV)
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)
        export_checkpoint(preset_model("paper"), path, provenance=PROV)  # a replaced file keeps its mode
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)

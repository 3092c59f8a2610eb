"""The torch checkpoint: plain contents, exact round trip, atomic write, clear errors."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import CheckpointError, FitError, __version__, preset_model  # noqa: E402
from hfox_fit.torch import FORMAT, FORMAT_VERSION, export_checkpoint, load_checkpoint  # noqa: E402
from hfox_fit.torch._checkpoint import UNVERIFIED_NOTE, checkpoint_checksum  # noqa: E402

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
    assert set(obj) == {"format", "format_version", "hfox_fit_version", "config", "state_dict", "checksum"}
    assert obj["checksum"] == checkpoint_checksum(obj) and obj["checksum"].startswith("sha256:")
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


def _resave(obj, path):
    """Save an edited checkpoint with a checksum that matches it (a checkpoint made some other way)."""
    obj["checksum"] = checkpoint_checksum(obj)
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
    with pytest.raises(CheckpointError, match=r"model\.pt is damaged or is not a torch checkpoint") as err:
        load_checkpoint(ckpt)
    if damage != "truncate":  # not even a zip archive: said so, without torch's internal detail
        assert "not the zip archive torch.save writes" in str(err.value) and "Error:" not in str(err.value)


def test_damaged_contents_are_refused(ckpt):
    obj = torch.load(ckpt, weights_only=True)
    del obj["state_dict"]["d2d.m1.params"]
    _resave(obj, ckpt)
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
    _resave(obj, ckpt)
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


# ------------------------------------------------------------------ checksum
ALTERED = r"model\.pt: the checkpoint's contents do not match its checksum: it was altered after export; " \
    r"export it again from the store\."


@pytest.mark.parametrize("edit", ["tensor value", "tiny tensor change", "scalar", "dtype", "new tensor",
                                  "removed tensor", "config", "provenance", "version string"])
def test_altered_checkpoint_is_refused(ckpt, edit):
    obj = torch.load(ckpt, weights_only=True)
    sd, config = obj["state_dict"], obj["config"]
    if edit == "tensor value":
        i = obj["config"]["d2d"]["m1"]["param_names"].index("scale")
        sd["d2d.m1.params"][i] = 1.5 * sd["d2d.m1.params"][i]  # still a valid law
    elif edit == "tiny tensor change":  # one ulp of one value: still a valid model
        sd["copula.correlation"][0, 1] = float(np.nextafter(float(sd["copula.correlation"][0, 1]), 0.0))
    elif edit == "scalar":
        sd["rtn.p_up"] = torch.tensor(0.5, dtype=torch.float64)
    elif edit == "dtype":
        sd["pink.alpha"] = sd["pink.alpha"].to(torch.float32)
    elif edit == "new tensor":
        sd["extra"] = torch.zeros(1)
    elif edit == "removed tensor":
        del sd["c2c.r0.bounds"]
        config["c2c"]["r0"]["bounded"] = False
    elif edit == "config":
        config["d2d"]["m1"]["family"] = "gamma" if config["d2d"]["m1"]["family"] != "gamma" else "norm"
    elif edit == "provenance":
        config["provenance"]["cells_used"] = 1000
    else:
        obj["hfox_fit_version"] = "9.9.9"
    torch.save(obj, ckpt)  # the old checksum is kept
    with pytest.raises(CheckpointError, match=ALTERED):
        load_checkpoint(ckpt)


def test_checksum_is_verified_and_reported(ckpt):
    model, prov = load_checkpoint(ckpt)
    obj = torch.load(ckpt, weights_only=True)
    assert prov["checksum"] == obj["checksum"] == checkpoint_checksum(obj)
    assert "checksum_note" not in prov
    obj["checksum"] = "sha256:" + "0" * 64  # a checksum edited, contents untouched
    torch.save(obj, ckpt)
    with pytest.raises(CheckpointError, match=ALTERED):
        load_checkpoint(ckpt)


def test_checkpoint_without_checksum_is_refused_unless_allowed(ckpt):
    # Written before the checksum existed, or stripped of it (then edited, say): same format_version, no
    # "checksum" key. Refused by default, with the way out; loaded when the caller says it trusts the file.
    expected = load_checkpoint(ckpt)[0].to_dict()
    obj = torch.load(ckpt, weights_only=True)
    del obj["checksum"]
    torch.save(obj, ckpt)
    with pytest.raises(CheckpointError, match=r"model\.pt carries no checksum: .*hfox-fit export .*allow_unverified=True"):
        load_checkpoint(ckpt)
    model, prov = load_checkpoint(ckpt, allow_unverified=True)
    assert model.to_dict() == expected
    assert prov["checksum"] is None and prov["checksum_note"] == UNVERIFIED_NOTE
    assert prov["cells_used"] == PROV["cells_used"]


def test_damaged_checksummed_contents_are_refused(ckpt):
    obj = torch.load(ckpt, weights_only=True)
    obj["state_dict"]["d2d.m1.params"] = [1.0, 2.0]  # not a tensor
    torch.save(obj, ckpt)
    with pytest.raises(CheckpointError, match=r"model\.pt: its contents cannot be checksummed .*damaged"):
        load_checkpoint(ckpt)


# ------------------------------------------------------------------ values outside their law's range
def _set(obj, key, index, value):
    t = obj["state_dict"][key].clone()
    t[index] = value
    obj["state_dict"][key] = t


def _param_index(obj, law, param, prefix="d2d"):
    return obj["config"][prefix][law]["param_names"].index(param)


@pytest.mark.parametrize("case, message", [
    ("scale<0", r"d2d law 'm1' \(lognorm\) parameter 'scale' is -1\.0; it must be positive"),
    ("scale=0", r"d2d law 'm1' \(lognorm\) parameter 'scale' is 0\.0; it must be positive"),
    ("shape nan", r"d2d law 'm1' \(lognorm\) parameter 's' is nan; it must be finite"),
    ("loc inf", r"d2d law 'm1' \(lognorm\) parameter 'loc' is inf; it must be finite"),
    ("c2c scale", r"c2c law 'r0' \(\w+\) parameter 'scale' is -0\.5; it must be positive"),
    ("bounds", r"d2d law 't_star': truncation bounds must satisfy lo < hi, got \(1500\.0, 40\.0\)"),
    ("corr > 1", r"the copula correlation over \['.*'\] is .*; it must be within \[-1, 1\]"),
    ("corr asym", r"the copula correlation over .* is .*; it must be symmetric"),
    ("corr diag", r"the diagonal of the copula correlation over .* is \[0\.9, 1\.0\]; it must be all ones"),
    ("corr psd", r"the smallest eigenvalue of the copula correlation over .* is -?[0-9.e-]+; it must be >= 0"),
    ("alpha", r"pink\.alpha is -0\.01; it must be finite and >= 0"),
    ("p_up", r"rtn\.p_up is 1\.5; it must be a probability in \[0, 1\]"),
    ("p_down", r"rtn\.p_down is -0\.1; it must be a probability in \[0, 1\]"),
    ("param name", r"the parameter list of d2d law 'm1' \(lognorm\) is \['loc', 'scale', 'zzz'\]"),
])
def test_values_outside_their_law_are_refused(tmp_path, case, message):
    model = preset_model("wafer_b")
    if case == "corr psd":  # three parameters correlated pairwise at -0.9: not a correlation matrix
        model.correlation_names = list(model.correlation_names[:2]) + [
            n for n in model.parameter_names if n not in model.correlation_names][:1]
        model.correlation = np.full((3, 3), -0.9)
        np.fill_diagonal(model.correlation, 1.0)
    path = export_checkpoint(model, tmp_path / "model.pt", provenance=PROV) if case != "corr psd" else None
    if case == "corr psd":  # export refuses it; build the file by hand from a valid one
        good = preset_model("wafer_b")
        good.correlation_names, good.correlation = model.correlation_names, np.eye(3)
        path = export_checkpoint(good, tmp_path / "model.pt", provenance=PROV)
    obj = torch.load(path, weights_only=True)
    sd = obj["state_dict"]
    if case == "scale<0":
        _set(obj, "d2d.m1.params", _param_index(obj, "m1", "scale"), -1.0)
    elif case == "scale=0":
        _set(obj, "d2d.m1.params", _param_index(obj, "m1", "scale"), 0.0)
    elif case == "shape nan":
        _set(obj, "d2d.m1.params", _param_index(obj, "m1", "s"), float("nan"))
    elif case == "loc inf":
        _set(obj, "d2d.m1.params", _param_index(obj, "m1", "loc"), float("inf"))
    elif case == "c2c scale":
        _set(obj, "c2c.r0.params", _param_index(obj, "r0", "scale", "c2c"), -0.5)
    elif case == "bounds":
        sd["d2d.t_star.bounds"] = torch.tensor([1500.0, 40.0], dtype=torch.float64)
    elif case == "corr > 1":
        _set(obj, "copula.correlation", (0, 1), 1.5)
        _set(obj, "copula.correlation", (1, 0), 1.5)
    elif case == "corr asym":
        _set(obj, "copula.correlation", (0, 1), 0.3)
    elif case == "corr diag":
        _set(obj, "copula.correlation", (0, 0), 0.9)
    elif case == "corr psd":
        sd["copula.correlation"] = torch.as_tensor(model.correlation, dtype=torch.float64)
    elif case == "alpha":
        sd["pink.alpha"] = torch.tensor(-0.01, dtype=torch.float64)
    elif case in ("p_up", "p_down"):
        sd[f"rtn.{case}"] = torch.tensor(1.5 if case == "p_up" else -0.1, dtype=torch.float64)
    elif case == "param name":
        i = _param_index(obj, "m1", "s")
        obj["config"]["d2d"]["m1"]["param_names"][i] = "zzz"
        names = obj["config"]["d2d"]["m1"]["param_names"]
        order = sorted(range(len(names)), key=names.__getitem__)
        obj["config"]["d2d"]["m1"]["param_names"] = [names[j] for j in order]
        sd["d2d.m1.params"] = sd["d2d.m1.params"][order]
    _resave(obj, path)  # a valid checksum: only the range check can refuse it
    with pytest.raises(CheckpointError, match=r"^model\.pt: " + message) as err:
        load_checkpoint(path)
    assert "Export it again from the store." in str(err.value)


def test_rounding_of_a_fitted_correlation_is_accepted(tmp_path):
    model = preset_model("wafer_b")
    c = np.array([[1.0 - 2e-16, -0.6], [-0.6 + 1e-16, 1.0]])  # a few ulps off, as a fitted matrix may be
    model.correlation = c
    back, _ = load_checkpoint(export_checkpoint(model, tmp_path / "model.pt", provenance=PROV))
    assert np.array_equal(back.correlation, c)


def test_export_refuses_values_outside_their_law(tmp_path):
    model = preset_model("wafer_b")
    model.d2d["m1"].params["scale"] = -1.0
    with pytest.raises(CheckpointError, match=r"^cannot export model\.pt: d2d law 'm1' \(lognorm\) parameter "
                                              r"'scale' is -1\.0; it must be positive"):
        export_checkpoint(model, tmp_path / "model.pt", provenance=PROV)
    assert not (tmp_path / "model.pt").exists()
    model = preset_model("wafer_b")
    model.rtn.p_down = 2.0
    with pytest.raises(CheckpointError, match=r"rtn\.p_down is 2\.0"):
        export_checkpoint(model, tmp_path / "model.pt", provenance=PROV)


# ------------------------------------------------------------------ read-only target
def test_read_only_checkpoint_is_never_replaced(ckpt):
    ckpt.chmod(0o444)
    before, mode = ckpt.read_bytes(), ckpt.stat().st_mode
    with pytest.raises(CheckpointError) as err:
        export_checkpoint(preset_model("paper"), ckpt, provenance=PROV)
    assert str(err.value) == (f"the checkpoint {str(ckpt)!r} is read-only; export needs to replace it. "
                              "Make it writable (chmod u+w) or copy it.")
    assert ckpt.read_bytes() == before and ckpt.stat().st_mode == mode
    assert os.listdir(ckpt.parent) == ["model.pt"]  # no temp file left behind

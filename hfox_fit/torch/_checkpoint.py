"""Write and read a :class:`~hfox_fit.model.DeviceModel` as a torch checkpoint.

The file is a plain dict that opens with ``torch.load(path, weights_only=True)``::

    {"format": "hfox_fit.device_model", "format_version": 1,
     "hfox_fit_version": "0.1.0",
     "config": {...plain types: law, parameter names, law families, provenance...},
     "state_dict": {"d2d.m1.params": tensor, "d2d.m1.bounds": tensor, ...}}

Every number of the model is a float64 tensor of ``state_dict`` (so it comes
back bit for bit); ``config`` says what each tensor means.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from .._version import __version__
from ..exceptions import CheckpointError, FitError
from ..laws import FAMILIES, ParameterLaw
from ..model import DeviceModel, PinkNoise, TelegraphNoise

__all__ = ["export_checkpoint", "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

#: Value of the ``format`` key of a checkpoint.
FORMAT = "hfox_fit.device_model"
#: Layout version written; files of a higher version are refused.
FORMAT_VERSION = 1
_MIN_VERSION = 1

#: Provenance keys every checkpoint carries (None where unknown).
PROVENANCE_KEYS = ("store_sha256", "store", "cells_used", "cells", "fitted_at", "hfox_fit_version")


def _plain(obj, where: str):
    """Return ``obj`` as plain Python (dict/list/str/int/float/bool/None) or raise."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r} ({type(k).__name__}).")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), where)
    raise TypeError(
        f"{where}: only str, int, float, bool, None, lists and dicts can go in a checkpoint; "
        f"got {type(obj).__name__}."
    )


def _law_entry(prefix: str, name: str, law: ParameterLaw, config: dict, state: dict) -> None:
    names = sorted(law.params)
    config[name] = {"family": law.family, "param_names": names, "bounded": law.bounds is not None}
    state[f"{prefix}.{name}.params"] = torch.tensor([law.params[k] for k in names], dtype=torch.float64)
    if law.bounds is not None:
        state[f"{prefix}.{name}.bounds"] = torch.tensor(law.bounds, dtype=torch.float64)


def _model_payload(model: DeviceModel) -> tuple[dict, dict]:
    config = {
        "law": model.law,
        "parameter_names": list(model.parameter_names),
        "d2d": {},
        "c2c": {},
        "correlation_names": list(model.correlation_names),
        "pink_taps": int(model.pink.taps),
        "meta": _plain(model.meta, "model.meta"),
    }
    state: dict = {}
    for name, law in model.d2d.items():
        _law_entry("d2d", name, law, config["d2d"], state)
    for name, law in model.c2c.items():
        _law_entry("c2c", name, law, config["c2c"], state)
    state["copula.correlation"] = torch.as_tensor(np.asarray(model.correlation, float), dtype=torch.float64)
    state["pink.alpha"] = torch.tensor(float(model.pink.alpha), dtype=torch.float64)
    state["pink.d"] = torch.tensor(float(model.pink.d), dtype=torch.float64)
    state["rtn.p_up"] = torch.tensor(float(model.rtn.p_up), dtype=torch.float64)
    state["rtn.p_down"] = torch.tensor(float(model.rtn.p_down), dtype=torch.float64)
    return config, state


def export_checkpoint(model: DeviceModel, path, *, provenance: dict) -> Path:
    """Write ``model`` to ``path`` as a torch checkpoint (atomically).

    Parameters
    ----------
    model : DeviceModel
        The fitted (or preset) model.
    path : str or path-like
        Output file, conventionally ``model.pt``; replaced if it exists.
    provenance : dict
        Plain data saying where the model comes from: ``store_sha256`` (hex
        SHA-256 of the campaign store), ``store`` (its file name),
        ``cells_used`` (int), ``cells`` (the cells, e.g. as columns),
        ``fitted_at`` (UTC ISO time). Missing keys are written as None;
        ``hfox_fit_version`` is filled in; other keys are kept.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FitError
        When ``provenance["cells_used"] == 0`` (a fit with no usable cells).
    TypeError
        When ``model`` is not a DeviceModel or ``provenance`` is not plain data.

    Examples
    --------
    >>> import tempfile, os
    >>> from hfox_fit import preset_model
    >>> p = os.path.join(tempfile.mkdtemp(), "model.pt")
    >>> _ = export_checkpoint(preset_model("paper"), p, provenance={"cells_used": 1})
    >>> model, prov = load_checkpoint(p)
    >>> model.law, prov["cells_used"]
    ('two_slope', 1)
    """
    if not isinstance(model, DeviceModel):
        raise TypeError(f"export_checkpoint needs a DeviceModel, got {type(model).__name__}.")
    if not isinstance(provenance, dict):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}.")
    prov = {k: None for k in PROVENANCE_KEYS}
    prov.update(_plain(provenance, "provenance"))
    prov["hfox_fit_version"] = __version__
    prov["exported_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if prov["cells_used"] is not None and int(prov["cells_used"]) <= 0:
        raise FitError(
            "the fit used no cells (provenance cells_used = 0): there is no model to export. "
            "Check the cell flags of the fit and fit again."
        )
    config, state = _model_payload(model)
    config["provenance"] = prov
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hfox_fit_version": __version__,
        "config": config,
        "state_dict": state,
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _law_from(prefix: str, name: str, entry, state: dict, where: str) -> ParameterLaw:
    if not isinstance(entry, dict) or entry.get("family") not in FAMILIES:
        raise CheckpointError(f"{where}: {prefix} law {name!r} is damaged or of an unknown family.")
    names = entry.get("param_names")
    values = state.get(f"{prefix}.{name}.params")
    if not isinstance(names, list) or not isinstance(values, torch.Tensor) or values.numel() != len(names):
        raise CheckpointError(f"{where}: the parameters of {prefix} law {name!r} are missing or damaged.")
    bounds = None
    if entry.get("bounded"):
        b = state.get(f"{prefix}.{name}.bounds")
        if not isinstance(b, torch.Tensor) or b.numel() != 2:
            raise CheckpointError(f"{where}: the bounds of {prefix} law {name!r} are missing or damaged.")
        bounds = tuple(float(x) for x in b.tolist())
    return ParameterLaw(entry["family"], dict(zip(names, (float(x) for x in values.tolist()))), bounds)


def _scalar(state: dict, key: str, where: str) -> float:
    v = state.get(key)
    if not isinstance(v, torch.Tensor) or v.numel() != 1 or not math.isfinite(float(v)):
        raise CheckpointError(f"{where}: {key!r} is missing or damaged.")
    return float(v)


def load_checkpoint(path) -> tuple[DeviceModel, dict]:
    """Read a checkpoint written by :func:`export_checkpoint`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    model : DeviceModel
    provenance : dict
        Store hash, cells used, fit time, hfox_fit version (see :func:`export_checkpoint`).

    Raises
    ------
    CheckpointError
        When the file is missing, damaged, of another format, of a newer
        ``format_version``, or from a fit with no usable cells.
    """
    path = Path(path)
    where = path.name
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist or is not a file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(
            f"{where} is damaged or is not a torch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})."
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{where} is not an hfox_fit device-model checkpoint: expected format {FORMAT!r}, "
            f"found {found!r}."
        )
    version = obj.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < _MIN_VERSION:
        raise CheckpointError(f"{where} has an invalid format_version {version!r}; the file is damaged.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format_version {version}; this hfox_fit reads versions "
            f"{_MIN_VERSION}-{FORMAT_VERSION}. Upgrade hfox_fit."
        )
    config, state = obj.get("config"), obj.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{where} lacks its 'config' or 'state_dict'; the file is damaged.")
    prov = config.get("provenance")
    if not isinstance(prov, dict):
        raise CheckpointError(f"{where} lacks its provenance; the file is damaged.")
    if prov.get("cells_used") is not None and prov["cells_used"] <= 0:
        raise CheckpointError(
            f"{where} comes from a fit with no usable cells (cells_used = {prov['cells_used']}); "
            "it holds no model. Fit again and re-export."
        )
    try:
        d2d = {k: _law_from("d2d", k, v, state, where) for k, v in config["d2d"].items()}
        c2c = {k: _law_from("c2c", k, v, state, where) for k, v in config.get("c2c", {}).items()}
        names = list(config.get("correlation_names", []))
        corr = state.get("copula.correlation")
        if not isinstance(corr, torch.Tensor) or tuple(corr.shape) != (len(names), len(names)):
            raise CheckpointError(f"{where}: the copula correlation is missing or has the wrong shape.")
        model = DeviceModel(
            law=config["law"],
            d2d=d2d,
            c2c=c2c,
            correlation_names=names,
            correlation=corr.numpy().astype(float),
            pink=PinkNoise(alpha=_scalar(state, "pink.alpha", where), d=_scalar(state, "pink.d", where),
                           taps=int(config["pink_taps"])),
            rtn=TelegraphNoise(p_up=_scalar(state, "rtn.p_up", where),
                               p_down=_scalar(state, "rtn.p_down", where)),
            meta=dict(config.get("meta") or {}),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: the model description is damaged ({err}).") from err
    return model, dict(prov)

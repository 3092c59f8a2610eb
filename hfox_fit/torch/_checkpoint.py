"""Write and read a :class:`~hfox_fit.model.DeviceModel` as a torch checkpoint.

The file is a plain dict that opens with ``torch.load(path, weights_only=True)``::

    {"format": "hfox_fit.device_model", "format_version": 1,
     "hfox_fit_version": "0.1.0",
     "config": {...plain types: law, parameter names, law families, provenance...},
     "state_dict": {"d2d.m1.params": tensor, "d2d.m1.bounds": tensor, ...},
     "checksum": "sha256:..."}

Every number of the model is a float64 tensor of ``state_dict`` (so it comes
back bit for bit); ``config`` says what each tensor means. ``checksum``
(:func:`checkpoint_checksum`) covers everything else in the file: a checkpoint
altered after export is refused on load. Checkpoints written before the
checksum existed are refused unless ``allow_unverified=True`` (then their provenance says they were
not verified).
Values outside their law's range are refused on export and on load
(:func:`check_model_ranges`).
"""

from __future__ import annotations

import hashlib
import json
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
from ..model import ConditionLaw, DeviceModel, PinkNoise, TelegraphNoise

__all__ = ["export_checkpoint", "load_checkpoint", "checkpoint_checksum", "check_model_ranges",
           "FORMAT", "FORMAT_VERSION"]

#: Value of the ``format`` key of a checkpoint.
FORMAT = "hfox_fit.device_model"
#: Layout version written; files of a higher version are refused.
FORMAT_VERSION = 1
_MIN_VERSION = 1

#: Provenance keys every checkpoint carries (None where unknown).
PROVENANCE_KEYS = ("store_sha256", "store", "cells_used", "cells", "fitted_at", "hfox_fit_version")

#: Top-level key of the checksum (absent in checkpoints written before it existed).
CHECKSUM_KEY = "checksum"
_CHECKSUM_SCHEME = b"hfox_fit.device_model checksum 1"
#: Note in the provenance returned for a checkpoint without a checksum.
UNVERIFIED_NOTE = ("written before checkpoints carried a checksum: its contents could not be verified. "
                   "Export it again from the store to add one.")


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


def checkpoint_checksum(obj: dict) -> str:
    """``"sha256:<hex>"`` of a checkpoint dict, over everything but its ``checksum`` key.

    The hash covers, each length-prefixed: a scheme tag; the other top-level keys
    (``format``, ``format_version``, ``hfox_fit_version``, ``config``) as canonical
    JSON (sorted keys, no spaces); then every ``state_dict`` tensor in sorted name
    order as its name, dtype, shape and raw bytes. A value changed anywhere after
    export changes the checksum.

    Raises
    ------
    TypeError, ValueError, AttributeError, RuntimeError
        When ``obj`` is not made of plain data and tensors (a damaged file).
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    put(_CHECKSUM_SCHEME)
    head = {k: v for k, v in obj.items() if k not in ("state_dict", CHECKSUM_KEY)}
    put(json.dumps(head, sort_keys=True, separators=(",", ":"), allow_nan=True).encode())
    state = obj["state_dict"]
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(t).__name__}, not a tensor")
        put(name.encode())
        put(str(t.dtype).encode())
        put(json.dumps(list(t.shape)).encode())
        put(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


#: Rounding allowed in the copula correlation (a fitted one is symmetric and has a unit diagonal to a few ulps).
_CORR_TOL = 1e-9


def _refuse(where: str, what: str, value, must: str) -> None:
    raise CheckpointError(
        f"{where}: {what} is {value!r}; it must be {must}. The checkpoint holds a value no model can "
        "have: it was edited or damaged. Export it again from the store."
    )


def check_model_ranges(model: DeviceModel, where: str) -> None:
    """Refuse (CheckpointError) a model with a value outside its law's range.

    A D2D or C2C law's parameters must be finite, its ``scale`` and shape
    parameters (:data:`hfox_fit.laws.FAMILIES`) positive and its truncation
    ``lo < hi`` (checked by :class:`~hfox_fit.laws.ParameterLaw` on load); the
    copula correlation symmetric, with unit diagonal, entries in [-1, 1] and
    positive semi-definite; pink ``alpha >= 0`` with at least one tap; RTN
    probabilities in [0, 1]. ``where`` (the file name) starts the message.
    """
    for prefix, laws in (("d2d", model.d2d), ("c2c", model.c2c)):
        for name, law in laws.items():
            positive = set(FAMILIES[law.family]) | {"scale"}
            for key, value in law.params.items():
                what = f"{prefix} law {name!r} ({law.family}) parameter {key!r}"
                if not math.isfinite(value):
                    _refuse(where, what, value, "finite")
                if key in positive and not value > 0:
                    _refuse(where, what, value, "positive")
            expected = set(FAMILIES[law.family]) | {"loc", "scale"}
            if not set(FAMILIES[law.family]) <= set(law.params) <= expected:
                _refuse(where, f"the parameter list of {prefix} law {name!r} ({law.family})",
                        sorted(law.params), f"among {sorted(expected)}, with {sorted(FAMILIES[law.family])}")
    corr, names = np.asarray(model.correlation, float), list(model.correlation_names)
    what = f"the copula correlation over {names}"
    if corr.size:
        if not np.all(np.isfinite(corr)):
            _refuse(where, what, corr.tolist(), "finite")
        if np.any(np.abs(np.diag(corr) - 1) > _CORR_TOL):
            _refuse(where, f"the diagonal of {what}", np.diag(corr).tolist(), "all ones")
        if np.any(np.abs(corr) > 1 + _CORR_TOL):
            _refuse(where, what, corr.tolist(), "within [-1, 1]")
        if np.any(np.abs(corr - corr.T) > _CORR_TOL):
            _refuse(where, what, corr.tolist(), "symmetric")
        low = float(np.linalg.eigvalsh((corr + corr.T) / 2).min())
        if low < -_CORR_TOL:
            _refuse(where, f"the smallest eigenvalue of {what}", low, ">= 0 (positive semi-definite)")
    if not (math.isfinite(model.pink.alpha) and model.pink.alpha >= 0):
        _refuse(where, "pink.alpha", model.pink.alpha, "finite and >= 0")
    if not math.isfinite(model.pink.d):
        _refuse(where, "pink.d", model.pink.d, "finite")
    if model.pink.taps < 1:
        _refuse(where, "pink_taps", model.pink.taps, ">= 1")
    for key in ("p_up", "p_down"):
        p = getattr(model.rtn, key)
        if not 0.0 <= p <= 1.0:
            _refuse(where, f"rtn.{key}", p, "a probability in [0, 1]")


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
    if model.condition_law is not None:  # absent from checkpoints of one condition (and older ones)
        config["condition_law"] = _plain(model.condition_law.to_dict(), "model.condition_law")
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
        Output file, conventionally ``model.pt``; replaced if it exists
        (a read-only one is refused, never replaced).
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
    CheckpointError
        When ``path`` exists and is read-only, or a value of ``model`` is
        outside its law's range (:func:`check_model_ranges`).
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
    path = Path(path)
    check_model_ranges(model, f"cannot export {path.name}")
    config, state = _model_payload(model)
    config["provenance"] = prov
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hfox_fit_version": __version__,
        "config": config,
        "state_dict": state,
    }
    payload[CHECKSUM_KEY] = checkpoint_checksum(payload)
    with atomic_path(path, error=CheckpointError, what="the checkpoint",
                     needs="export needs to replace it") as tmp, open(tmp, "wb") as fh:
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
    try:  # ParameterLaw checks the truncation (lo < hi)
        return ParameterLaw(entry["family"], dict(zip(names, (float(x) for x in values.tolist()))), bounds)
    except FitError as err:
        raise CheckpointError(
            f"{where}: {prefix} law {name!r}: {err} The checkpoint holds a value no model can have: it was "
            "edited or damaged. Export it again from the store."
        ) from err


def _scalar(state: dict, key: str, where: str) -> float:
    v = state.get(key)
    if not isinstance(v, torch.Tensor) or v.numel() != 1 or not math.isfinite(float(v)):
        raise CheckpointError(f"{where}: {key!r} is missing or damaged.")
    return float(v)


def load_checkpoint(path, *, allow_unverified: bool = False) -> tuple[DeviceModel, dict]:
    """Read a checkpoint written by :func:`export_checkpoint`.

    Parameters
    ----------
    path : str or path-like
    allow_unverified : bool, default=False
        Load a checkpoint that carries no checksum (written before checkpoints carried
        one, or with its checksum removed): its values are still checked against their
        laws' ranges, but an edit within them cannot be seen. Refused by default.

    Returns
    -------
    model : DeviceModel
    provenance : dict
        Store hash, cells used, fit time, hfox_fit version (see :func:`export_checkpoint`),
        and ``checksum``: the verified checksum, or None for a checkpoint written
        before checkpoints carried one (then ``checksum_note`` says so).

    Raises
    ------
    CheckpointError
        When the file is missing, damaged, of another format, of a newer
        ``format_version``, altered after export (its checksum differs), holds a
        value outside its law's range, is from a fit with no usable cells, or carries
        no checksum (unless ``allow_unverified``).
    """
    path = Path(path)
    where = path.name
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist or is not a file.")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; torch's own error would name an internal key
        raise CheckpointError(f"{where} is damaged or is not a torch checkpoint (it is not the zip archive "
                              "torch.save writes); give the model.pt that `hfox-fit export` wrote.")
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
    stored = obj.get(CHECKSUM_KEY)
    if stored is None and not allow_unverified:
        raise CheckpointError(
            f"{where} carries no checksum: it was written before checkpoints carried one, or its checksum was "
            "removed, so an edit of its values cannot be ruled out. Export it again from its store "
            "(`hfox-fit export STORE.h5 -o model.pt`), or, if you trust the file, load it with "
            "load_checkpoint(path, allow_unverified=True)."
        )
    if stored is not None:
        try:
            actual = checkpoint_checksum(obj)
        except (TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise CheckpointError(f"{where}: its contents cannot be checksummed ({err}); the file is damaged.") from err
        if stored != actual:
            raise CheckpointError(
                f"{where}: the checkpoint's contents do not match its checksum: it was altered after "
                "export; export it again from the store."
            )
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
            condition_law=ConditionLaw.from_dict(config["condition_law"]) if config.get("condition_law") else None,
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: the model description is damaged ({err}).") from err
    check_model_ranges(model, where)
    prov = dict(prov)
    prov[CHECKSUM_KEY] = stored
    if stored is None:
        prov["checksum_note"] = UNVERIFIED_NOTE
    return model, prov

"""The golden cases of the behaviour-unchanged test (imported as ``golden_cases``).

Each case is run through the command line only (``hfox-fit synth`` / ``run`` / ``devices``),
so the test survives any reorganisation of the package. What a case leaves is reduced to the
numbers that must not move: the fit summary, the devices table, the checkpoint's tensors and
configuration, the report's metrics; times, paths and hashes of files that hold times are
dropped.
"""

from __future__ import annotations

import gzip
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "data"
EXAMPLE = ROOT / "data" / "raw"

# name -> synth arguments (None: the example campaign in data/raw)
CASES = {
    "example": None,
    "paper": ["--preset", "paper", "--devices", "400", "--pulses", "400", "--cycles", "1", "--seed", "31"],
    "wafer_b": ["--preset", "wafer_b", "--devices", "300", "--pulses", "300", "--cycles", "2", "--seed", "32"],
}
VOLATILE = {"fitted_at", "exported_at", "generated_at", "elapsed_s", "store_sha256", "store", "hfox_fit_version",
            "checksum"}


def machine() -> dict:
    """What decides the last bits of numpy/scipy/torch results on this machine."""
    import numpy
    import scipy
    import torch

    try:
        simd = numpy.show_config(mode="dicts")["SIMD Extensions"].get("found", [])
    except Exception:  # older numpy
        simd = []
    return {"machine": platform.machine(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__, "simd": list(simd)}


def _strip(tree):
    if isinstance(tree, dict):
        return {k: _strip(v) for k, v in tree.items() if k not in VOLATILE}
    if isinstance(tree, list):
        return [_strip(v) for v in tree]
    return tree


def run_case(name: str, work: Path) -> dict:
    """Run case ``name`` in folder ``work``; return its outputs as JSON-like data and arrays."""
    import torch

    from hfox_fit.cli import main

    work = Path(work)
    raw = EXAMPLE
    if CASES[name] is not None:
        raw = work / "raw"
        assert main(["synth", "-o", str(raw), "--format", "bench", *CASES[name]]) == 0
    out = work / "out"
    assert main(["run", "--calibrate", "0", str(raw), "-o", str(out), "--quiet"]) == 0
    assert main(["devices", str(out / "campaign.h5"), "-o", str(work / "devices.csv")]) == 0
    summary = json.loads((out / "fit_summary.json").read_text())
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    tensors = {k: v.cpu().numpy() for k, v in checkpoint.pop("state_dict").items()}
    devices = pd.read_csv(work / "devices.csv", keep_default_na=False, na_values=[""])
    return {"summary": _strip(summary), "metrics": _strip(metrics), "checkpoint": _strip(checkpoint),
            "tensors": tensors, "devices": devices}


def save_case(name: str, outputs: dict) -> None:
    GOLDEN.mkdir(exist_ok=True)
    json_part = {k: outputs[k] for k in ("summary", "metrics", "checkpoint")}
    with gzip.open(GOLDEN / f"{name}.json.gz", "wt") as f:
        f.write(json.dumps(json_part, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(GOLDEN / f"{name}_tensors.npz", **outputs["tensors"])
    outputs["devices"].to_csv(GOLDEN / f"{name}_devices.csv.gz", index=False, float_format="%.17g")


def load_case(name: str) -> dict:
    with gzip.open(GOLDEN / f"{name}.json.gz", "rt") as f:
        json_part = json.load(f)
    with np.load(GOLDEN / f"{name}_tensors.npz") as z:
        tensors = {k: z[k] for k in z.files}
    devices = pd.read_csv(GOLDEN / f"{name}_devices.csv.gz", keep_default_na=False, na_values=[""])
    return {**json_part, "tensors": tensors, "devices": devices}

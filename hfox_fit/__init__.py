"""hfox_fit: fit the weak-RESET model of HfOx resistive memories, and export it to PyTorch.

``import hfox_fit`` loads neither torch nor matplotlib: the torch export lives
in :mod:`hfox_fit.torch` and plotting imports matplotlib inside its functions.
"""

from ._version import __version__
from .exceptions import (
    CheckpointError,
    FitConvergenceWarning,
    FitError,
    FormatError,
    HfoxError,
    IngestWarning,
    NotFittedError,
    ParseError,
    ReportError,
    SchemaError,
    StoreError,
)

# The numerical parts load on first use (PEP 562), so `import hfox_fit.cli` is quick and an
# interrupt while the command starts up reaches the command line's handler, not a traceback.
_LAZY = {
    "DRIFT_LAWS": "laws", "ParameterLaw": "laws",
    "DeviceModel": "model", "PinkNoise": "model", "TelegraphNoise": "model", "preset_model": "model",
    "COLUMNS": "schema", "DieData": "schema", "validate_table": "schema",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hfox_fit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "COLUMNS",
    "DRIFT_LAWS",
    "CheckpointError",
    "DeviceModel",
    "DieData",
    "FitConvergenceWarning",
    "FitError",
    "FormatError",
    "HfoxError",
    "IngestWarning",
    "NotFittedError",
    "ParameterLaw",
    "ParseError",
    "PinkNoise",
    "ReportError",
    "SchemaError",
    "StoreError",
    "TelegraphNoise",
    "preset_model",
    "validate_table",
]

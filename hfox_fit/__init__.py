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
from .laws import DRIFT_LAWS, ParameterLaw
from .model import DeviceModel, PinkNoise, TelegraphNoise, preset_model
from .schema import COLUMNS, DieData, validate_table

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

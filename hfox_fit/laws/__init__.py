"""Pure numpy laws of the weak-RESET model (no fitting here).

* :mod:`.drift`: the drift laws ``w_mean(t)`` and their registry
  (:data:`DRIFT_LAWS`, :class:`DriftLaw`, :data:`AUTO_LAWS`).
* :mod:`.noise`: the pink-noise filter and the RTN chain.
* :mod:`.families`: distributions of a cell parameter over cells
  (:data:`FAMILIES`, :class:`ParameterLaw`).
"""

from .drift import AUTO_LAWS, DRIFT_LAWS, DriftLaw, get_law, log, power, two_slope
from .families import FAMILIES, ParameterLaw
from .noise import pink_autocovariance, pink_coefficients, pink_std, rtn_transition_power

__all__ = [
    "AUTO_LAWS",
    "DriftLaw",
    "DRIFT_LAWS",
    "get_law",
    "two_slope",
    "power",
    "log",
    "pink_coefficients",
    "pink_std",
    "pink_autocovariance",
    "rtn_transition_power",
    "ParameterLaw",
    "FAMILIES",
]

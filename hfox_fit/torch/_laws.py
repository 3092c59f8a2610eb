"""Torch formulas of the drift laws of :data:`hfox_fit.laws.DRIFT_LAWS`.

Each formula takes ``t`` (pulses since SET, a float tensor) and ``p``, a dict
from parameter name to a tensor broadcasting against ``t`` (the update passes
every per-cell parameter row, ``r0`` and ``rtn_amplitude`` included), and
returns ``w_mean(t)``: what the numpy law of the same name gives, in torch
operations (``tests/export/test_torch_laws.py`` holds them equal).

:data:`TORCH_LAWS` is keyed by the numpy registry: a law registered there
without a formula here is left out of it, and :func:`torch_law` names it when an
array is built for it.
"""

from __future__ import annotations

import torch

from ..exceptions import FitError
from ..laws import DRIFT_LAWS

__all__ = ["TORCH_LAWS", "torch_law"]


def _two_slope(t, p):
    # m1 min(t, t*) + m2 max(t - t*, 0) + c1: the two-slope law, continuous at t*
    before = torch.clamp(t, max=p["t_star"])
    w = torch.addcmul(p["c1"], p["m1"], before)
    return w.addcmul_(p["m2"], torch.sub(t, before))


def _power(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.pow(t, p["b"]))


def _log(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.log1p(t / p["tau"]))


# The torch formula of each law, by the name it has in hfox_fit.laws.DRIFT_LAWS.
_FORMULAS = {"two_slope": _two_slope, "power": _power, "log": _log}

#: Torch versions of the drift laws of :data:`hfox_fit.laws.DRIFT_LAWS`, in its order
#: (a registered law without a torch formula is missing here: see :func:`torch_law`).
TORCH_LAWS = {name: _FORMULAS[name] for name in DRIFT_LAWS if name in _FORMULAS}


def torch_law(name: str):
    """The torch formula of drift law ``name``, or a :class:`~hfox_fit.exceptions.FitError` naming it."""
    try:
        return TORCH_LAWS[name]
    except KeyError:
        pass
    where = ("it is registered in hfox_fit.laws.DRIFT_LAWS but has no torch formula "
             "in hfox_fit.torch._laws" if name in DRIFT_LAWS else "it is not a registered drift law")
    raise FitError(
        f"WeakResetArray has no torch version of drift law {name!r} ({where}); "
        f"it simulates {sorted(TORCH_LAWS)}."
    )

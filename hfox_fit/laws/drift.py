r"""The drift laws of the weak-RESET model: formulas and the registry, each law defined once.

Conventions (see ../shared/reference/weak-reset-model.md):

* ``t`` is the number of weak RESET pulses since the last SET; ``t = 0`` is the
  read right after SET.
* ``w = ln(R / R0)`` with ``R0`` the cell's resistance right after SET, so
  ``w(0) = 0`` by definition; the drift laws below give ``w_mean(t)`` for
  ``t >= 1`` (``c1`` is the jump the first pulse makes on the law's line).
* Drift laws are registered in :data:`DRIFT_LAWS` by name; each
  :class:`DriftLaw` carries everything the rest of the package needs to know
  about it (formula, parameters, units, bounds, start values, its nonlinear
  parameter, whether it has a break). :data:`AUTO_LAWS` are those ``law="auto"``
  fits and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..exceptions import FitError

__all__ = [
    "AUTO_LAWS",
    "DriftLaw",
    "DRIFT_LAWS",
    "get_law",
    "two_slope",
    "power",
    "log",
]


def two_slope(t, m1, t_star, m2, c1):
    r"""Two-slope drift, continuous at the break ``t_star``.

    .. math::

        w(t) = \begin{cases} m_1 t + c_1 & t < t^* \\
                             m_2 (t - t^*) + m_1 t^* + c_1 & t \ge t^* \end{cases}

    ``m1``, ``m2`` in 1/pulse, ``t_star`` in pulses, ``c1`` dimensionless.
    Parameters broadcast against ``t`` (e.g. shape (cells, 1) with t of shape (pulses,)).
    """
    t = np.asarray(t, dtype=float)
    before = m1 * t + c1
    after = m2 * (t - t_star) + m1 * t_star + c1
    return np.where(t < t_star, before, after)


def power(t, a, b, c1):
    r"""Power-law drift :math:`w(t) = a\,t^{b} + c_1` (``a`` in 1/pulse^b, ``b`` > 0)."""
    t = np.asarray(t, dtype=float)
    return a * np.power(t, b) + c1


def log(t, a, tau, c1):
    r"""Logarithmic drift :math:`w(t) = a \ln(1 + t/\tau) + c_1` (``tau`` in pulses)."""
    t = np.asarray(t, dtype=float)
    return a * np.log1p(t / tau) + c1


@dataclass(frozen=True)
class DriftLaw:
    """A named drift law: its function and everything known about its parameters.

    Attributes
    ----------
    name : str
    func : callable
        ``func(t, **params)``, broadcasting the parameters against ``t``.
    params : tuple of str
        Parameter names, in the order of ``func``'s arguments after ``t``.
    units : dict
        Parameter name -> unit.
    bounds : dict
        Parameter name -> ``(lo, hi)``: physical bounds, used as fit limits.
    description : str
    start : mapping
        Parameter name -> default start value of an iterative fit (shared: do
        not modify it; :meth:`start_values` gives a copy).
    theta : str
        The parameter the law is nonlinear in (given it, the law is linear in the
        others: the fits profile over it). For a law with a break, the break time.
    break_params : tuple of str
        Parameters defined only when a break is seen (empty: the law has no break).
        A fit that sees no break reports them as NaN.
    no_break : dict
        For each of ``break_params``, what it becomes when no break is seen, for
        evaluating the law without one: a number, or the name of the parameter it
        equals (two_slope: the break beyond any read, ``m2 = m1``).
    """

    name: str
    func: object
    params: tuple
    units: dict
    bounds: dict  # name -> (lo, hi) physical bounds used as fit limits
    description: str
    start: dict = field(default_factory=dict)
    theta: str = ""
    break_params: tuple = ()
    no_break: dict = field(default_factory=dict)

    def __post_init__(self):
        params = set(self.params)
        for what, keys in (("units", self.units), ("bounds", self.bounds), ("start", self.start)):
            if set(keys) != params:
                raise FitError(f"drift law {self.name!r}: {what} must name exactly its parameters {self.params}.")
        if self.theta not in params:
            raise FitError(f"drift law {self.name!r}: theta {self.theta!r} is not one of its parameters.")
        if not set(self.break_params) <= params or set(self.no_break) != set(self.break_params):
            raise FitError(f"drift law {self.name!r}: break_params and no_break must name the same parameters.")

    @property
    def has_break(self) -> bool:
        """Whether the law is piecewise, with a break (``theta``) that a fit may or may not see."""
        return bool(self.break_params)

    def start_values(self) -> dict:
        """A fresh dict of the default start values."""
        return dict(self.start)

    def fill_no_break(self, params: dict) -> dict:
        """``params`` (arrays) with the break parameters filled where no break was seen (``theta`` NaN).

        Where ``theta`` is not finite, each of :attr:`break_params` takes its
        :attr:`no_break` value, so that the law evaluates to its no-break form.
        Modifies and returns ``params``.
        """
        seen = np.isfinite(params[self.theta])
        for p in self.break_params:
            fill = self.no_break[p]
            params[p] = np.where(seen, params[p], params[fill] if isinstance(fill, str) else fill)
        return params

    def __call__(self, t, **params):
        return self.func(t, **{k: params[k] for k in self.params})


DRIFT_LAWS = {
    "two_slope": DriftLaw(
        "two_slope",
        two_slope,
        ("m1", "t_star", "m2", "c1"),
        {"m1": "1/pulse", "t_star": "pulse", "m2": "1/pulse", "c1": "1"},
        {"m1": (-1.0, 1.0), "t_star": (1.0, 1e7), "m2": (-1.0, 1.0), "c1": (-5.0, 5.0)},
        "two slopes m1, m2 joined continuously at t_star (Majumdar et al. 2021)",
        start={"m1": 1e-3, "t_star": 100.0, "m2": 1e-4, "c1": 0.0},
        theta="t_star",
        break_params=("t_star", "m2"),
        no_break={"t_star": 1e12, "m2": "m1"},
    ),
    "power": DriftLaw(
        "power",
        power,
        ("a", "b", "c1"),
        {"a": "1/pulse^b", "b": "1", "c1": "1"},
        {"a": (-10.0, 10.0), "b": (1e-3, 3.0), "c1": (-5.0, 5.0)},
        "power law a*t^b + c1",
        start={"a": 1e-2, "b": 0.5, "c1": 0.0},
        theta="b",
    ),
    "log": DriftLaw(
        "log",
        log,
        ("a", "tau", "c1"),
        {"a": "1", "tau": "pulse", "c1": "1"},
        {"a": (-10.0, 10.0), "tau": (1e-2, 1e7), "c1": (-5.0, 5.0)},
        "logarithmic law a*ln(1 + t/tau) + c1",
        start={"a": 0.05, "tau": 50.0, "c1": 0.0},
        theta="tau",
    ),
}

#: The laws ``law="auto"`` fits on the same reads and compares by total AIC (in this order).
AUTO_LAWS = ("two_slope", "power", "log")


def get_law(name: str) -> DriftLaw:
    """Return the registered drift law ``name`` or raise a clear error."""
    try:
        return DRIFT_LAWS[name]
    except KeyError:
        raise FitError(
            f"unknown drift law {name!r}; the registered laws are {sorted(DRIFT_LAWS)}."
        ) from None

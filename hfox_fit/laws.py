r"""Pure numpy laws of the weak-RESET model (no fitting here).

Conventions (see ../shared/reference/weak-reset-model.md):

* ``t`` is the number of weak RESET pulses since the last SET; ``t = 0`` is the
  read right after SET.
* ``w = ln(R / R0)`` with ``R0`` the cell's resistance right after SET, so
  ``w(0) = 0`` by definition; the drift laws below give ``w_mean(t)`` for
  ``t >= 1`` (``c1`` is the jump the first pulse makes on the law's line).
* Drift laws are registered in :data:`DRIFT_LAWS` by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .exceptions import FitError

__all__ = [
    "DriftLaw",
    "DRIFT_LAWS",
    "get_law",
    "two_slope",
    "power",
    "log",
    "pink_coefficients",
    "rtn_transition_power",
    "ParameterLaw",
    "FAMILIES",
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
    """A named drift law: its function, parameter names, units and sane bounds."""

    name: str
    func: object
    params: tuple
    units: dict
    bounds: dict  # name -> (lo, hi) physical bounds used as fit limits
    description: str

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
    ),
    "power": DriftLaw(
        "power",
        power,
        ("a", "b", "c1"),
        {"a": "1/pulse^b", "b": "1", "c1": "1"},
        {"a": (-10.0, 10.0), "b": (1e-3, 3.0), "c1": (-5.0, 5.0)},
        "power law a*t^b + c1",
    ),
    "log": DriftLaw(
        "log",
        log,
        ("a", "tau", "c1"),
        {"a": "1", "tau": "pulse", "c1": "1"},
        {"a": (-10.0, 10.0), "tau": (1e-2, 1e7), "c1": (-5.0, 5.0)},
        "logarithmic law a*ln(1 + t/tau) + c1",
    ),
}


def get_law(name: str) -> DriftLaw:
    """Return the registered drift law ``name`` or raise a clear error."""
    try:
        return DRIFT_LAWS[name]
    except KeyError:
        raise FitError(
            f"unknown drift law {name!r}; the registered laws are {sorted(DRIFT_LAWS)}."
        ) from None


def pink_coefficients(taps: int = 15, d: float = 0.5) -> np.ndarray:
    r"""Coefficients of the truncated fractional integrator :math:`(1 - z^{-1})^{-d}`.

    :math:`b_0 = 1,\ b_k = b_{k-1} (k - 1 + d) / k`. With ``d = 1/2`` this is the
    paper's pink-noise filter (1, 0.5, 0.375, 0.3125, ...); its spectrum falls as
    :math:`f^{-2d}` over the band the taps cover.
    """
    b = np.empty(taps)
    b[0] = 1.0
    for k in range(1, taps):
        b[k] = b[k - 1] * (k - 1 + d) / k
    return b


def rtn_transition_power(p_up, p_down, n):
    """Return P(high after n pulses | low) and P(high after n | high) of the two-state chain.

    Closed form of the n-th power of ``[[1-p_up, p_up], [p_down, 1-p_down]]``:
    with ``s = p_up + p_down`` and ``lam = 1 - s``,
    ``P(high | low) = p_up/s * (1 - lam**n)`` and
    ``P(high | high) = p_up/s + p_down/s * lam**n``. Broadcasts over ``n``.
    """
    n = np.asarray(n, dtype=float)
    s = p_up + p_down
    if s <= 0:
        zero = np.zeros_like(n)
        return zero, np.ones_like(n)
    lam_n = np.power(1.0 - s, n)
    pi_high = p_up / s
    return pi_high * (1.0 - lam_n), pi_high + (p_down / s) * lam_n


#: scipy.stats families hfox_fit fits and samples, with their shape-parameter names.
FAMILIES = {
    "norm": (),
    "lognorm": ("s",),
    "expon": (),
    "gamma": ("a",),
    "weibull_min": ("c",),
    "uniform": (),
}


@dataclass
class ParameterLaw:
    """A distribution of one cell parameter: a scipy.stats family, optionally truncated.

    Parameters
    ----------
    family : str
        scipy.stats name (one of :data:`FAMILIES`).
    params : dict
        scipy keyword arguments (shape(s), ``loc``, ``scale``).
    bounds : tuple of float or None
        Truncation interval ``(lo, hi)``; None for none.
    """

    family: str
    params: dict
    bounds: tuple | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise FitError(f"unknown distribution family {self.family!r}; expected one of {sorted(FAMILIES)}.")
        self.params = {k: float(v) for k, v in self.params.items()}
        if self.bounds is not None:
            lo, hi = (float(b) for b in self.bounds)
            if not lo < hi:
                raise FitError(f"truncation bounds must satisfy lo < hi, got {self.bounds}.")
            self.bounds = (lo, hi)

    @property
    def dist(self):
        """The frozen scipy distribution (before truncation)."""
        return getattr(stats, self.family)(**self.params)

    def _cdf_bounds(self):
        if self.bounds is None:
            return 0.0, 1.0
        d = self.dist
        return float(d.cdf(self.bounds[0])), float(d.cdf(self.bounds[1]))

    def ppf(self, u):
        """Quantile function of the (truncated) law at probabilities ``u``."""
        lo, hi = self._cdf_bounds()
        x = self.dist.ppf(lo + np.asarray(u) * (hi - lo))
        if self.bounds is not None:
            x = np.clip(x, *self.bounds)
        return x

    def cdf(self, x):
        """Distribution function of the (truncated) law."""
        lo, hi = self._cdf_bounds()
        return np.clip((self.dist.cdf(x) - lo) / (hi - lo), 0.0, 1.0)

    def pdf(self, x):
        """Density of the (truncated) law (zero outside the bounds)."""
        lo, hi = self._cdf_bounds()
        x = np.asarray(x, dtype=float)
        p = self.dist.pdf(x) / (hi - lo)
        if self.bounds is not None:
            p = np.where((x >= self.bounds[0]) & (x <= self.bounds[1]), p, 0.0)
        return p

    def median(self) -> float:
        return float(self.ppf(0.5))

    def sample(self, n, rng=None):
        """Draw ``n`` values (numpy Generator ``rng``, default a fresh one)."""
        rng = np.random.default_rng(rng)
        return self.ppf(rng.uniform(size=n))

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "params": dict(self.params),
            "bounds": list(self.bounds) if self.bounds is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ParameterLaw:
        b = d.get("bounds")
        return cls(d["family"], dict(d["params"]), tuple(b) if b is not None else None)

"""Distributions of one cell parameter over cells: the scipy.stats families (:data:`FAMILIES`) and :class:`ParameterLaw`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from ..exceptions import FitError

__all__ = ["FAMILIES", "ParameterLaw"]


#: scipy.stats families hfox_fit fits and samples, with their shape-parameter names.
FAMILIES = {
    "norm": (),
    "lognorm": ("s",),
    "expon": (),
    "gamma": ("a",),
    "weibull_min": ("c",),
    "uniform": (),
}


@lru_cache(maxsize=512)
def _frozen(family, params):
    # building a frozen scipy distribution costs about 1 ms (its docstring is formatted each time);
    # a fitted law asks for its own again and again (median, cdf, ppf)
    return getattr(stats, family)(**dict(params))


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
        return _frozen(self.family, tuple(sorted(self.params.items())))

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
        # A window far in the tail holds ~1e-300 of the family's mass: the ratio overflows above it
        # and clips to 1 (right); a window holding no mass in floating point gives NaN below it.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            lo, hi = self._cdf_bounds()
            return np.clip((self.dist.cdf(x) - lo) / (hi - lo), 0.0, 1.0)

    def pdf(self, x):
        """Density of the (truncated) law (zero outside the bounds)."""
        x = np.asarray(x, dtype=float)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # as in cdf
            lo, hi = self._cdf_bounds()
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

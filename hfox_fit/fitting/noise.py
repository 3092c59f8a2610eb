r"""The noise step of a campaign: pink (1/f) noise and RTN laws from the drift fit's residual statistics.

:class:`NoiseFitter` pools the per-die statistics of the drift fit and calls
both fits: the pink-noise spectrum (:mod:`hfox_fit.fitting.pink`) and the
random telegraph noise rates and amplitudes (:mod:`hfox_fit.fitting.rtn`).
The names of both modules that other code imports from here are re-exported.
"""

from __future__ import annotations

import warnings

from ..exceptions import FitConvergenceWarning, FitError, NotFittedError
from ._executor import run_here
from .pink import PinkSpectrum, SpectrumStats, fit_pink_spectrum, segment_periodograms
from .rtn import _VAR_U1U2 as _VAR_U1U2
from .rtn import RTNEstimate as RTNEstimate
from .rtn import RTNStats, _pool_rtn, rtn_em
from .rtn import block_stats as block_stats
from .rtn import block_to_pulse as block_to_pulse
from .rtn import pulse_to_block as pulse_to_block

__all__ = [
    "PinkSpectrum",
    "SpectrumStats",
    "RTNStats",
    "segment_periodograms",
    "fit_pink_spectrum",
    "rtn_em",
    "NoiseFitter",
]


class NoiseFitter:
    """Pink-noise and RTN laws of a campaign, from the drift fit's residual statistics.

    Parameters
    ----------
    bootstrap : int, default=100
        Bootstrap replicates (over cells) for the intervals.
    random_state : int, default=0

    Attributes
    ----------
    pink_ : PinkSpectrum
    rtn_ : RTNEstimate
    """

    def __init__(self, bootstrap: int = 100, random_state: int = 0):
        self.bootstrap = bootstrap
        self.random_state = random_state

    def fit(self, source, *, run=None):
        """Fit from a fitted :class:`~hfox_fit.fitting.DriftFitter` or a list of per-die results.

        ``source`` must expose ``spectrum_stats_`` and ``rtn_stats_`` (lists, one per die).
        ``run``: how the two parts (pink, RTN) are run (e.g.
        :meth:`~hfox_fit.fitting._executor.Workers.run`); by default here, one after the other.
        """
        return self.collect((run or run_here)(self.parts(source)))

    def parts(self, source) -> dict:
        """The independent parts of :meth:`fit`, ``{"noise/pink": ..., "noise/rtn": ...}`` (see :meth:`collect`)."""
        spectra = getattr(source, "spectrum_stats_", None)
        rtn = getattr(source, "rtn_stats_", None)
        if spectra is None or rtn is None:
            raise NotFittedError(
                f"NoiseFitter.fit expects a fitted DriftFitter (with spectrum_stats_ and rtn_stats_); "
                f"got {type(source).__name__}."
            )
        rtn = [r for r in rtn if r is not None and len(r.up)]
        if not rtn:
            raise FitError("no pulse train long enough for the RTN detection (need 2 blocks of pulses).")
        # each part seeded by random_state itself, as before the parts were split: neither depends on the other
        return {"noise/pink": (fit_pink_spectrum, (SpectrumStats.concat(spectra),),
                               {"bootstrap": self.bootstrap, "rng": self.random_state}),
                "noise/rtn": (_pool_rtn, (rtn, self.bootstrap, self.random_state), {})}

    def collect(self, results: dict):
        """Set :attr:`pink_` and :attr:`rtn_` from the results of :meth:`parts`; returns self."""
        self.pink_ = results["noise/pink"]
        if not self.pink_.lmfit_result.success:
            warnings.warn(f"the pink-noise spectrum fit did not converge: {self.pink_.lmfit_result.message}",
                          FitConvergenceWarning, stacklevel=3)
        self.rtn_ = results["noise/rtn"]
        return self

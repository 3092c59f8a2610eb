"""Estimate the weak-RESET model from measurements, with uncertainties.

Entry point: :class:`CampaignFitter` / :func:`fit_campaign` (DieData in, a
:class:`CampaignResult` out, whose numbers are :class:`ParamEstimate` values in
:class:`FitResult` laws). The
steps are usable alone: :class:`DriftFitter` (per cell and cycle, vectorised,
robust to RTN), :class:`NoiseFitter` (pink and RTN laws), :class:`D2DFitter`
(population laws, correlations, C2C). :func:`fit_die` is the pure per-die step;
:func:`fit_law_rows` the plain vectorised least-squares fit of one law to many rows.
"""

from ._result import CampaignResult, FitResult, ParamEstimate
from .campaign import CampaignFit, CampaignFitter, fit_campaign, fit_die
from .d2d import CANDIDATE_FAMILIES, D2DFitter, ParamFit, correlations, fit_c2c, fit_parameter
from .drift import (
    DRIFT_MODELS,
    DieDriftResult,
    DriftFitter,
    DriftOptions,
    classify_breaks,
    drift_model,
    fit_drift_die,
    fit_law_rows,
)
from .flags import FLAG_NAMES, FlagOptions, detect_flags
from .noise import NoiseFitter, PinkSpectrum, fit_pink_spectrum

__all__ = [
    "CANDIDATE_FAMILIES",
    "CampaignFit",
    "CampaignFitter",
    "CampaignResult",
    "D2DFitter",
    "DRIFT_MODELS",
    "DieDriftResult",
    "DriftFitter",
    "DriftOptions",
    "FLAG_NAMES",
    "FitResult",
    "FlagOptions",
    "NoiseFitter",
    "ParamEstimate",
    "ParamFit",
    "PinkSpectrum",
    "classify_breaks",
    "correlations",
    "detect_flags",
    "drift_model",
    "fit_c2c",
    "fit_campaign",
    "fit_die",
    "fit_drift_die",
    "fit_law_rows",
    "fit_parameter",
    "fit_pink_spectrum",
]

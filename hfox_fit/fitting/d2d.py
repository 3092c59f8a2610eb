r"""Device-to-device (D2D) laws of the per-cell parameters: the public D2D step.

For each parameter, every candidate family (``norm``, ``lognorm``, ``expon``,
``gamma``, ``weibull_min``, each optionally truncated to the range of the
data, which is the maximum-likelihood truncation) is fitted by maximum
likelihood on the same cells. Positive families have ``loc = 0`` (``expon``
keeps a free ``loc``), so every untruncated candidate has two parameters (three
with the contamination weight) and a truncated one four (three for ``expon``,
whose ``loc`` is its lower bound). Candidates within 2 AIC of the lowest cannot
be told apart: the summary lists them (``indistinguishable``) and the one with
the fewest parameters, untruncated before truncated, shape-free (norm, expon)
before shape families, then the lowest AIC, is kept (:data:`CHOICE_RULE`,
:func:`choose_candidate`).

The AIC of every candidate is ``2 k - 2 log L`` of a normalised density of the
same cells (a truncated law divided by its mass between its bounds, taken from
the survival function in the upper tail; an observation window likewise;
censored cells as ``F(hi) - F(lo)``; truncated candidates are not fitted where
cells are censored). One approximation keeps the scales from being exactly one
(:data:`AIC_SCALE`, written in the summary): each value's measurement error is
integrated in closed form for untruncated ``norm`` and ``expon`` but with a
12-node Gauss-Hermite rule for the others, which misses a law's sharp edge (a
truncation bound, 0) and laws narrower than a value's error; on the paper
preset's m1 this moves a quadrature candidate's log-likelihood by a few units.
An exact quadrature (Gauss-Legendre over each value's error window with the
law's edges as limits) was measured: it moves the m1 choice on the paper preset
from the exponential law to lognorm or gamma on 4 of 20 wafers (seeds 1000-1019;
8 of 20 for seeds 0-19), because the per-cell m1 errors depend on the cell's own
m1: with the same errors and stderrs shuffled across cells, the exponential wins
by 15-30 AIC on those wafers.

Cells whose value is only bounded (e.g. a two-slope break beyond the last
pulse) enter as censored observations, ``log(F(hi) - F(lo))``; cells whose
standard error is large against the population's spread are left out (and
counted). Every value with a standard error enters the likelihood convolved
with its Gaussian measurement error (errors in variables). A value that may
only bound the cell's own (``ambiguous``: the straight line's slope of a train
whose break may hide in its noise) enters as a mixture: the law's value with its
error, or the law's value mixed down by a hidden break (a share of it between
:data:`HIDDEN_BREAK_MIN_SHARE` and 1). The 90 % intervals
of the median and of the family's parameters are a bootstrap over cells of the
whole step: in each replicate every candidate is refitted (one Newton step from
its maximum-likelihood fit, with the score of each cell) and the family chosen
again by AIC, so the sampling of the cells, their fit errors and the choice of
the family are all in the interval. The cells' own median
(Kaplan-Meier under censoring, percentile bootstrap) is reported beside it as a
family-free check.

The likelihood of one family lives in :mod:`hfox_fit.fitting._families`, the
checks of a fitted law (median intervals, KS) in
:mod:`hfox_fit.fitting._law_checks`. :class:`D2DFitter` also calls the
correlations between the parameters (:mod:`hfox_fit.fitting.correlation`) and
their cycle-to-cycle laws (:mod:`hfox_fit.fitting.c2c`); both are re-exported
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..exceptions import FitError, NotFittedError
from ..laws import FAMILIES, ParameterLaw
from ._cells import cell_values as cell_values
from ._cells import line_weight as line_weight
from ._cells import parameter_inputs
from ._executor import part_seed, run_here
from ._families import AMBIGUOUS_FLOOR as AMBIGUOUS_FLOOR
from ._families import EIV_THRESHOLD as EIV_THRESHOLD
from ._families import GUARD_LRT as GUARD_LRT
from ._families import HIDDEN_BREAK_MIN_SHARE as HIDDEN_BREAK_MIN_SHARE
from ._families import MAX_CONTAMINATION as MAX_CONTAMINATION
from ._families import _Data, _fit_candidate, _fit_candidates, _guarded, _median
from ._law_checks import _bootstrap_law, _ks, _percentile_interval, _sample_median
from ._tables import ERROR_CORRELATION_PAIRS, error_correlation_column, r0_error_correlation
from ._util import _join, robust_sd
from .c2c import fit_c2c
from .correlation import correlations

__all__ = [
    "CANDIDATE_FAMILIES",
    "AIC_SCALE",
    "CHOICE_RULE",
    "INDISTINGUISHABLE_AIC",
    "GUARD_LRT",
    "HIDDEN_BREAK_MIN_SHARE",
    "AMBIGUOUS_FLOOR",
    "choose_candidate",
    "ParamFit",
    "fit_parameter",
    "D2DFitter",
    "correlations",
    "fit_c2c",
    "cell_values",
]

#: Families tried for every parameter (``uniform`` is added for the RTN amplitude).
CANDIDATE_FAMILIES = ("norm", "lognorm", "expon", "gamma", "weibull_min")
#: What the candidates' AIC are computed on, and where their scales differ (also written in the summary).
AIC_SCALE = ("2 k - 2 log L on the same cells for every candidate, a truncated law divided by its mass between "
             "its bounds, censored cells as F(hi) - F(lo) (truncated candidates are not fitted where cells are "
             "censored: score null). Not exactly one scale: the measurement error of each value is integrated in "
             "closed form for untruncated norm and expon, by a 12-node Gauss-Hermite rule for the others, which "
             "can move their log-likelihood by a few units where values sit near a law's edge or their error "
             "is wider than the law")
#: Candidates whose AIC is within this of the lowest cannot be told apart by the data.
INDISTINGUISHABLE_AIC = 2.0
#: Candidates further than this from the best AIC are not re-chosen in the bootstrap of the interval.
BOOTSTRAP_AIC = 10.0
#: How the law is chosen among indistinguishable candidates (also written in the summary).
CHOICE_RULE = ("lowest AIC; candidates within 2 AIC of it are indistinguishable, and among them the one with "
               "the fewest free parameters (truncation bounds and contamination weight counted), then an "
               "untruncated law before a truncated one, then a family without a shape parameter (norm, expon, "
               "uniform) before one with, then the lowest AIC, is kept")


@dataclass
class ParamFit:
    """The D2D law of one parameter and how it was chosen.

    Attributes
    ----------
    name : str
    law : ParameterLaw
    median : float
        Median of the fitted law (the parameter's unit).
    median_ci90 : list of float or None
        90 % interval of the law's median: percentile bootstrap over cells of the
        whole step (each cell with its value, measurement error and censoring; every
        candidate family refitted by one Newton step from its maximum-likelihood fit
        and the family chosen again by AIC in each replicate), so that it holds the
        sampling of the cells, their fit errors and the choice of the family.
    sample_median : float
        The cells' own median, free of any family (Kaplan-Meier where cells are
        right-censored), as a check on the law: NaN where undetermined.
    sample_median_ci90 : list of float or None
        Percentile-bootstrap 90 % interval of ``sample_median`` over cells.
    ks : float or None
        Kolmogorov-Smirnov statistic of the values against the law, measurement
        error included (below most censoring points when there is censoring);
        None with fewer than 5 values.
    scores : dict
        Per candidate ("lognorm", "lognorm_truncated", ...): ``aic``, ``loglik``,
        ``n_params`` (NaN where it could not be fitted, with the reason in ``note``).
    indistinguishable : list of str
        The candidates within 2 AIC of the lowest (the data cannot tell them
        apart), in order of AIC, when there are two or more; else empty.
    n_used, n_censored, n_excluded : int
    note : str
    params_stderr, params_ci90 : dict
        Standard error and 90 % interval of each free parameter of the chosen
        family (the same bootstrap, conditional on the family: its replicates
        refit this family whatever the replicate chose). A parameter held fixed
        (``loc`` of a positive family, a truncation bound) has none.
    family_share : float or None
        Fraction of the bootstrap replicates that chose this family again.
    contamination : float
        Share of the cells set aside as outliers by the contamination guard (0 when it is off).
    guard_lrt : float or None
        Twice the log-likelihood the guard gained on the best untruncated candidate; the guard is
        on when it exceeds :data:`GUARD_LRT`. None where it was not tested (fewer than 50 cells,
        ``guard=False``).
    """

    name: str
    law: ParameterLaw
    median: float
    median_ci90: list | None
    ks: float | None
    scores: dict
    n_used: int
    n_censored: int
    n_excluded: int
    note: str = ""
    contamination: float = 0.0
    sample_median: float = np.nan
    sample_median_ci90: list | None = None
    params_stderr: dict = field(default_factory=dict)
    params_ci90: dict = field(default_factory=dict)
    family_share: float | None = None
    indistinguishable: list = field(default_factory=list)
    guard_lrt: float | None = None

    def to_dict(self) -> dict:
        d = self.law.to_dict()
        d.update({
            "median": self.median,
            "median_ci90": self.median_ci90,
            "sample_median": _f(self.sample_median),
            "sample_median_ci90": self.sample_median_ci90,
            "params_stderr": {k: _f(v) if v is not None else None for k, v in self.params_stderr.items()},
            "params_ci90": dict(self.params_ci90),
            "family_share": self.family_share,
            "ks": self.ks,
            "n_used": self.n_used,
            "n_censored": self.n_censored,
            "n_excluded": self.n_excluded,
            "contamination": self.contamination,
            "guard_lrt": _f(self.guard_lrt) if self.guard_lrt is not None else None,
            "scores": {k: {"aic": _f(v["aic"]), "loglik": _f(v["loglik"]), "n_params": v.get("n_params")}
                       for k, v in self.scores.items()},
            "indistinguishable": list(self.indistinguishable),
            "choice_rule": CHOICE_RULE,
            "aic_scale": AIC_SCALE,
        })
        if self.note:
            d["note"] = self.note
        return d


def _seed(random_state):
    """An integer seed from ``random_state`` (an int, or anything else: 0)."""
    return int(random_state) if isinstance(random_state, (int, np.integer)) and random_state >= 0 else 0


def _f(x):
    x = float(x)
    return x if np.isfinite(x) else None


def fit_parameter(name, values, *, stderr=None, lower=None, upper=None, families=CANDIDATE_FAMILIES,
                  truncate=True, window=None, max_stderr_ratio=20.0, guard=True,
                  bootstrap=200, max_select=3000, rng=0, starts=None, ambiguous=None,
                  ambiguous_weight=0.5) -> ParamFit:
    """Fit the D2D law of one parameter by maximum likelihood and AIC.

    Parameters
    ----------
    name : str
    values : array-like of shape (n,)
        Per-cell values (NaN where only bounded, see ``lower``/``upper``).
    stderr : array-like of shape (n,), optional
        Per-cell standard errors. Cells with ``stderr > max_stderr_ratio *``
        (robust spread of the values) or a NaN stderr are left out; where the
        stderr is positive, the cell's likelihood is the law convolved with its
        Gaussian measurement error (closed forms for norm and expon, Gauss-Hermite
        quadrature otherwise).
    lower, upper : array-like of shape (n,), optional
        Interval of cells whose value is NaN (``upper = inf``: right-censored).
    families : sequence of str
        Candidates. The choice among them is :func:`choose_candidate`
        (:data:`CHOICE_RULE`): candidates within 2 AIC of the lowest are reported
        as ``indistinguishable`` and the one with the fewest parameters is kept.
    truncate : bool, default=True
        Also try each family truncated to the data range.
    window : tuple of float, optional
        Observation window: values outside could not have been seen (selection),
        e.g. ``(detection_limit, inf)``. The returned law is not truncated to it.
    guard : bool, default=True
        Contamination guard (50 values or more), on demand: when a share of
        outliers (a uniform law over the data range, with a fitted weight up to
        :data:`MAX_CONTAMINATION`) beside the best untruncated candidate raises
        its log-likelihood by more than ``GUARD_LRT / 2``, every untruncated
        candidate is fitted as that mixture, so that a few failed per-cell fits
        cannot decide a family or its ``loc``; on clean cells it stays off (it
        would narrow the law). The law returned is the family's.
    bootstrap : int, default=200
    max_select : int, default=3000
        The candidates are compared (AIC) on a random subset of at most this many
        cells; the chosen family is then refitted on all of them. 0 for all cells.
    rng : int or Generator
    starts : dict of str to dict, optional
        Per family, parameters to start its untruncated fit from (a fit of like cells).
    ambiguous : array-like of bool, shape (n,), optional
        Cells whose value may only bound their own (the straight line's slope of a train whose
        break may hide in its noise): each enters as the law's value with its error, with weight
        ``ambiguous_weight``, or as a value a hidden break mixed down, ``x = u m`` with ``m`` from
        the law and ``u`` uniform in [:data:`HIDDEN_BREAK_MIN_SHARE`, 1] (with a
        :data:`AMBIGUOUS_FLOOR` share of a uniform density over the values' range, a line no law
        explains), and places no bound or ``loc``.
    ambiguous_weight : float, default=0.5
        How often an ambiguous value is the cell's own (:func:`line_weight`), clipped to [0.05, 0.95].

    Raises
    ------
    FitError
        When fewer than 5 usable values remain or no family can be fitted.
    """
    rng = np.random.default_rng(rng)
    values = np.asarray(values, float)
    n_all = len(values)
    exact = np.isfinite(values)
    excluded = 0
    if stderr is not None:
        se = np.asarray(stderr, float)
        xs = values[exact]
        spread = robust_sd(xs) if xs.size >= 5 else np.inf
        precise = np.isfinite(se) & (se <= max_stderr_ratio * spread)
        excluded = int((exact & ~precise).sum())
        exact = exact & precise
    x = values[exact]
    lo = hi = np.zeros(0)
    cens = np.zeros(n_all, bool)
    if lower is not None:
        lower = np.asarray(lower, float)
        upper = np.asarray(upper if upper is not None else np.full(n_all, np.inf), float)
        cens = ~np.isfinite(values) & np.isfinite(lower)
        lo, hi = lower[cens], upper[cens]
    excluded += int((~np.isfinite(values) & ~cens).sum())
    se_x = np.asarray(stderr, float)[exact] if stderr is not None else None
    amb_x = np.asarray(ambiguous, bool)[exact] if ambiguous is not None else None
    guard_wanted = bool(guard and len(x) >= 50)
    amb_w = float(np.clip(ambiguous_weight, 0.05, 0.95))
    data = _Data(x, lo, hi, window, guard=False, se=se_x, ambiguous=amb_x, ambiguous_weight=amb_w)
    if len(x) < 5:
        raise FitError(
            f"parameter {name!r}: only {len(x)} cell(s) with a precise value (of {n_all}); the D2D law "
            "needs at least 5. Fit more cells or relax max_stderr_ratio."
        )
    # candidates are compared on at most max_select cells (a random subset), the winner refitted on all
    sel_data = data
    if max_select and data.n > max_select:
        frac = max_select / data.n
        kx = rng.random(len(x)) < frac
        kc = rng.random(len(lo)) < frac
        sel_data = _Data(x[kx], lo[kc], hi[kc], window, guard=False, se=se_x[kx] if se_x is not None else None,
                         ambiguous=amb_x[kx] if amb_x is not None else None, ambiguous_weight=amb_w)
    scores, fits = _fit_candidates(sel_data, families, truncate, starts)
    finite = {k: v["aic"] for k, v in scores.items() if np.isfinite(v["aic"])}
    if not finite:
        raise FitError(f"parameter {name!r}: no candidate family could be fitted ({scores}).")
    note = ""
    guard_lrt = None
    if guard_wanted:
        guard_lrt = _guard_test(finite, scores, sel_data)
        if guard_lrt is not None and guard_lrt > GUARD_LRT:
            # outliers the law cannot hold: every untruncated candidate again, as a mixture with them
            subset = sel_data is not data
            data = _guarded(data)
            sel_data = _guarded(sel_data) if subset else data
            guarded_scores, guarded_fits = _fit_candidates(sel_data, families, False)
            scores.update(guarded_scores)
            fits.update(guarded_fits)
            finite = {k: v["aic"] for k, v in scores.items() if np.isfinite(v["aic"])}
            note = (f"contamination guard on: a share of outliers (uniform over the cells' range, at most "
                    f"{100 * MAX_CONTAMINATION:g} %) beside the law raises the log-likelihood by {guard_lrt / 2:.1f} "
                    f"(2 dlogL > {GUARD_LRT:g}: not the sampling of clean cells), so every untruncated candidate "
                    "is fitted as that mixture")
    while True:
        best, tied = choose_candidate(finite, {k: fits[k][0].n_params for k in finite})
        cand, kw, eps = fits[best]
        if sel_data is data:
            break
        # chosen on a subset: refit on every cell; a candidate that does not hold there (e.g. a
        # truncation bound at a value <= 0 for a positive family) gives way to the next one
        fam, trunc = best.replace("_truncated", ""), best.endswith("_truncated")
        refit = None
        for start in (cand.pack(kw, eps), None):
            try:
                refit = _fit_candidate(fam, trunc, data, start_v=start)
                break
            except (ValueError, FloatingPointError):
                continue
        if refit is not None:
            cand, kw, eps, _ = refit
            break
        scores[best]["note"] = "chosen on the subset, but not valid on all the cells"
        del finite[best]
        if not finite:
            raise FitError(f"parameter {name!r}: no candidate family holds on all the cells ({scores}).")
    law = ParameterLaw(cand.family, kw, cand.bounds)
    # the interval: a bootstrap over cells of the whole step, every candidate refitted and the
    # family chosen again in each replicate (the candidates still standing, the chosen one as refitted)
    # only candidates the data did not reject (within BOOTSTRAP_AIC of the best): a replicate's AIC is a
    # second-order expansion, and a rejected truncated law (bounds at the sample's extremes) swings by
    # hundreds between replicates and would be "chosen" with a median far from the data
    plausible = [k for k in finite if finite[k] <= min(finite.values()) + BOOTSTRAP_AIC or k == best]
    boot = _bootstrap_law({**{k: fits[k] for k in plausible}, best: (cand, kw, eps)}, plausible, best, data,
                          bootstrap, rng, rule=_choose_per_replicate({k: fits[k][0].n_params for k in plausible}))
    ci, params_ci, params_se, chosen_share = None, {}, {}, None
    if boot is not None:
        ci, _ = _percentile_interval(boot["median"])
        for k, reps in boot["params"].items():
            params_ci[k], params_se[k] = _percentile_interval(reps)
        chosen_share = boot["chosen_share"]
    if law.family == "expon" and params_ci.get("loc") is not None:  # fitted, not the truncation bound
        note = _join(note, "expon's loc is the law's lower edge, set by the few lowest cells and their errors: "
                           "its interval (params_ci90) is too narrow, about half of such intervals covered the "
                           "truth on synthetic wafers; the median's interval is not affected")
    median = _median(law.family, law.params, law.bounds)  # law.median() would build a scipy law (1 ms)
    if ci is None and bootstrap:
        note = _join(note, "median interval unavailable: the bootstrap could not be computed for this law")
    if eps * len(x) >= 1:
        note = _join(note, f"about {eps * len(x):.0f} value(s) ({100 * eps:.1f} %) set aside as outliers by the "
                           "contamination guard")
    sample = _sample_median(data, bootstrap, rng)
    sample_median, sample_ci = sample if sample is not None else (np.nan, None)
    if sample_ci is not None and not sample_ci[0] <= median <= sample_ci[1]:
        note = _join(note, f"the {law.family} law's median {median:.4g} lies outside the 90 % interval of the "
                           f"cells' own median ({sample_median:.4g}): the family fits the bulk of the cells "
                           "only roughly")
    ks = _ks(law, data)
    if ks is not None and not np.isfinite(ks):
        note = _join(note, f"KS statistic unavailable: the fitted {law.family} law is degenerate (its "
                           "distribution function cannot be evaluated at the cells' values)")
    if tied:
        note = _join(note, f"{len(tied)} candidates are within {INDISTINGUISHABLE_AIC:g} AIC of the best "
                           f"({', '.join(tied)}): the data cannot tell them apart; {best} is kept by the "
                           "choice rule (fewest parameters, untruncated first, no shape parameter first, then "
                           "lowest AIC)")
    return ParamFit(name, law, median, ci, ks, scores, int(len(x)), int(len(lo)), excluded, note,
                    contamination=float(eps), sample_median=float(sample_median), sample_median_ci90=sample_ci,
                    params_stderr=params_se, params_ci90=params_ci, family_share=chosen_share,
                    indistinguishable=tied, guard_lrt=guard_lrt)


def choose_candidate(aic, n_params):
    """The candidate kept among those fitted, and the ones the data cannot tell apart.

    Parameters
    ----------
    aic : dict of str to float
        Finite AIC of each fitted candidate ("lognorm", "expon_truncated", ...).
    n_params : dict of str to int
        Free parameters each candidate's AIC counts (truncation bounds and the
        contamination weight included).

    Returns
    -------
    chosen : str
    indistinguishable : list of str
        Every candidate within :data:`INDISTINGUISHABLE_AIC` of the lowest AIC, in
        order of AIC, when there are two or more; else empty.

    Notes
    -----
    :data:`CHOICE_RULE`: among the indistinguishable candidates, the one with the
    fewest free parameters, then an untruncated law before a truncated one, then a
    family without a shape parameter (norm, expon, uniform) before one with
    (lognorm, gamma, weibull_min), then the lowest AIC (ties by name). A
    difference below 2 AIC is not evidence for the larger model, so the simpler
    law is kept; a truncation to the data's range that the data do not demand is
    not kept; and a shape family that only mimics a shape-free one (gamma or
    weibull_min with shape near 1 for an exponential) gives way to it. The order
    of ``families`` plays no part.
    """
    low = min(aic.values())
    near = sorted((k for k, v in aic.items() if v <= low + INDISTINGUISHABLE_AIC), key=lambda k: (aic[k], k))

    def has_shape(key):
        return bool(FAMILIES.get(key.removesuffix("_truncated"), ()))

    chosen = min(near, key=lambda k: (n_params[k], k.endswith("_truncated"), has_shape(k), aic[k], k))
    return chosen, (near if len(near) > 1 else [])


def _choose_per_replicate(n_params):
    """:func:`choose_candidate` as a bootstrap rule: AIC rows (replicates x keys) -> chosen column per row."""
    def rule(aic, keys):
        picks = np.zeros(len(aic), dtype=int)  # a row with no finite AIC gives a NaN median, dropped later
        if len(keys) == 1:
            return picks
        for i, row in enumerate(aic):
            finite = {k: float(v) for k, v in zip(keys, row) if np.isfinite(v)}
            if finite:
                picks[i] = keys.index(choose_candidate(finite, {k: n_params[k] for k in finite})[0])
        return picks
    return rule



def _guard_test(finite: dict, scores: dict, data: _Data):
    """Twice the log-likelihood gained by the contamination guard on the best untruncated candidate
    (None when there is none, or its guarded fit fails).

    The uniform share is bounded by :data:`MAX_CONTAMINATION` and spans the cells' own range, so on clean
    cells it always gains a little (it takes the sample's extremes): 2 dlogL had a median of 1.4-3 and a
    largest value of 12.7 over 1200 clean samples (norm, lognorm, expon, gamma; 125 to 3000 cells), where
    a few failed per-cell fits far from the others give hundreds. Kept on clean cells, the guard sets the
    tails aside and narrows the law (its scale 4 % small at 512 cells, and its 90 % interval covering 55 %
    of the time instead of 92 %).
    """
    plain = {k: v for k, v in finite.items() if not k.endswith("_truncated")}
    if not plain:
        return None
    best = min(plain, key=plain.get)
    try:
        ll = _fit_candidate(best, False, _guarded(data))[3]
    except (ValueError, FloatingPointError):
        return None
    return 2.0 * (ll - scores[best]["loglik"])


def fallback_law(values, reason):
    """``norm(median, 1.4826 MAD)`` of the finite values (None when there are none) and why it is used."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, reason + "; no value to describe"
    med = float(np.median(v))
    scale = float(1.4826 * np.median(np.abs(v - med))) or max(abs(med) * 1e-3, 1e-12)
    return ParameterLaw("norm", {"loc": med, "scale": scale}, None), (
        reason + f"; the model uses norm(median, 1.4826 MAD) of the {v.size} value(s) instead")


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------


def _fit_parameter_part(name, values, **kwargs):
    """:func:`fit_parameter` as one part of :meth:`D2DFitter.fit`: its FitError returned, for the fallback."""
    try:
        return fit_parameter(name, values, **kwargs)
    except FitError as err:
        return err


@dataclass
class _Spec:
    lower: str | None = None
    upper: str | None = None
    families: tuple = CANDIDATE_FAMILIES
    window: tuple | None = None
    truncate: bool = True
    extra: dict = field(default_factory=dict)


class D2DFitter:
    """Fit the D2D law of every per-cell parameter, their correlations and C2C laws.

    Parameters
    ----------
    params : sequence of str
        Columns of the per-cell table to fit (each with ``<p>_stderr``).
    families : sequence of str, default=CANDIDATE_FAMILIES
    truncate : bool, default=True
    bootstrap : int, default=200
    max_stderr_ratio : float, default=20.0
    random_state : int, default=0
    fallback : bool, default=False
        When a parameter's law cannot be fitted (e.g. a single cell), describe it
        by ``norm(median, 1.4826 MAD)`` and say so in ``notes_`` instead of raising.

    Attributes
    ----------
    fits_ : dict of str to ParamFit
        The parameters whose law was fitted.
    laws_ : dict of str to ParameterLaw
        Every parameter's law (fitted, or the fallback).
    notes_ : list of str
    correlation_ : dict
        ``names``, ``spearman``, ``copula``, ``n_pairs`` and each pair's bootstrap ``*_ci90``/``*_stderr``.
    c2c_ : dict
    """

    def __init__(self, params, families=CANDIDATE_FAMILIES, truncate=True, bootstrap=200,
                 max_stderr_ratio=20.0, random_state=0, fallback=False):
        self.params = params
        self.fallback = fallback
        self.families = families
        self.truncate = truncate
        self.bootstrap = bootstrap
        self.max_stderr_ratio = max_stderr_ratio
        self.random_state = random_state

    def fit(self, rows: pd.DataFrame, *, run=None):
        """Fit from a per-(cell, cycle) table (unflagged rows only are used); returns self.

        ``run``: how the independent parts (one per parameter, the correlations, the C2C
        laws) are run, e.g. :meth:`~hfox_fit.fitting._executor.Workers.run` for worker
        processes; by default one after the other here. Each part has its own seed, from
        ``random_state`` and its name (:func:`~hfox_fit.fitting._executor.part_seed`), so
        the numbers are the same either way and do not depend on the order of ``params``.
        """
        parts = self.parts(rows)
        return self.collect((run or run_here)(parts))

    def parts(self, rows: pd.DataFrame) -> dict:
        """The independent parts of :meth:`fit`, ``{name: (func, args, kwargs)}``, longest first (see :meth:`collect`)."""
        if not isinstance(rows, pd.DataFrame):
            raise FitError(f"D2DFitter.fit expects a DataFrame of per-cell parameters, got {type(rows).__name__}.")
        params = list(self.params)
        missing = [p for p in params if p not in rows]
        if missing:
            raise FitError(f"D2DFitter: the table has no column(s) {missing}; found {list(rows.columns)}.")
        use = rows
        if "flag" in rows:
            use = rows[rows["flag"] == "ok"]
        if use.empty:
            raise FitError("D2DFitter: no unflagged cell to fit the D2D laws to.")
        cells = cell_values(use, params)
        self.cells_ = cells
        parts = {}
        weight = line_weight(cells)
        for p in params:
            parts[f"d2d/{p}"] = (_fit_parameter_part, (p, cells[p].to_numpy()), dict(
                **parameter_inputs(cells, p), families=self.families, ambiguous_weight=weight,
                truncate=self.truncate, max_stderr_ratio=self.max_stderr_ratio, bootstrap=self.bootstrap,
                rng=part_seed(self.random_state, f"d2d/{p}")))
        # the correlations keep the generator they had before the parts were split
        names = [*params]
        error_pairs = list(ERROR_CORRELATION_PAIRS)
        if "c1" in names and "r0" in names:  # c1 is measured against R0: their errors go against each other
            cells = cells.assign(**{error_correlation_column("c1", "r0"): r0_error_correlation(cells)})
            error_pairs.append(("c1", "r0"))
        # a right-censored value (t_star beyond its bound) pairs through its bound; m2 exists only past a seen break
        bounds = {p: p + "_lo" for p in names if p + "_lo" in cells}
        cols = [c for c in cells if c in names or c in bounds.values() or c.endswith(("_stderr", "_err_corr"))]
        parts["d2d/correlation"] = (correlations, (cells[cols], names), dict(
            bootstrap=self.bootstrap, rng=np.random.default_rng([_seed(self.random_state), 1]),
            censored=bounds, exact_only=("m2",), error_correlation={
                (a, b): error_correlation_column(a, b) for a, b in error_pairs}))
        c2c_cols = [c for c in ("wafer", "die", "device", *params, *(p + "_stderr" for p in params)) if c in use]
        parts["d2d/c2c"] = (fit_c2c, (use[c2c_cols], params), dict(
            bootstrap=self.bootstrap, rng=part_seed(self.random_state, "d2d/c2c")))
        return parts

    def collect(self, results: dict):
        """Set the fitted attributes from the results of :meth:`parts` (``{name: result}``); returns self."""
        self.fits_, self.laws_, self.notes_ = {}, {}, []
        cells = self.cells_
        for p in self.params:
            fit = results[f"d2d/{p}"]
            if isinstance(fit, FitError):
                if not self.fallback:
                    raise fit
                law, why = fallback_law(cells[p].to_numpy(), str(fit))
                self.notes_.append(f"D2D {p}: {why}")
                if law is None:
                    raise FitError(f"no D2D law could be built for {p!r}: no finite value among the "
                                   "unflagged cells.") from fit
                self.laws_[p] = law
                continue
            self.fits_[p] = fit
            self.laws_[p] = fit.law
        self.correlation_ = results["d2d/correlation"]
        self.c2c_ = results["d2d/c2c"]
        return self

    def _check(self):
        if not hasattr(self, "fits_"):
            raise NotFittedError("This D2DFitter instance is not fitted yet. Call 'fit' first.")

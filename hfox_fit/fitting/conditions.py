r"""Pulse conditions: the D2D laws of each (v_pulse, pulse_width) and how they move between them.

A campaign measured at several weak-RESET conditions is one population per
condition. The per-train drift fit does not depend on the condition (it is per
cell), so :class:`ConditionFitter` only groups the per-(cell, cycle) table by the
condition each train was measured at (as stored; cells of one condition may span
dies and wafers) and reruns the D2D step (:func:`~hfox_fit.fitting.fit_parameter` on
the cells, as :class:`~hfox_fit.fitting.D2DFitter` does) on each group, every
condition's law of a parameter in one family, chosen once on the cells of all the
conditions scaled to a common median. Trains whose ``v_pulse`` or ``pulse_width``
is unknown (NaN) form their own "unknown condition" group, never mixed into a
known one.

From the per-condition medians and their 90 % intervals it then fits the
condition law of each parameter by weighted least squares,

.. math:: \ln \mathrm{median} = a + b_v (V - V_{ref}) + b_w \ln(w / w_{ref})

(the median itself for a parameter whose interval reaches 0 or below), with the
stderrs scaled up by the Birge ratio when the medians scatter more than their
intervals say. Whether the spread of the law is shared by the conditions or
each condition's own is chosen by AIC on the conditions' spreads and reported.

Each condition also gets its pink and RTN laws (:func:`add_condition_noise`): the
pooled noise step on that condition's trains, from the per-train residual spectra
and RTN statistics the drift fit keeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..exceptions import FitError
from ..laws import pink_std
from ..model import ConditionLaw
from ..schema import DieData
from ._cells import parameter_inputs
from ._law_checks import _law_ppf
from ._medians import use_sample_medians
from .d2d import (
    CANDIDATE_FAMILIES,
    GUARD_LRT,
    cell_values,
    fallback_law,
    fit_parameter,
    line_weight,
)
from .pink import SpectrumStats, _design, fit_pink_spectrum, pink_autocovariance
from .rtn import _draw_counts, _pool_rtn

__all__ = ["ConditionFitter", "ConditionRecorder", "add_conditions", "d2d_section", "summary_sections",
           "train_conditions"]

#: the order of preference (within 2 AIC units) for a positive parameter, whose conditions scale it
_POSITIVE_FIRST = ("lognorm", "gamma", "weibull_min", "expon", "norm")
#: cells on which the conditions' shared family is chosen (a subset: the choice only needs the shape)
_FAMILY_CELLS = 300
_KEYS = ["wafer", "die", "device", "cycle"]
#: z of a two-sided 90 % interval: a 90 % interval is 2 * 1.645 standard errors wide
_Z90 = 1.6448536269514722


def train_conditions(die: DieData) -> pd.DataFrame:
    """One row per (device, cycle) of ``die``: its ids, ``v_pulse`` and ``pulse_width`` (NaN where unknown)."""
    n_cells, n_cycles = len(die.devices), len(die.cycles)
    return pd.DataFrame({
        "wafer": np.repeat(str(die.wafer), n_cells * n_cycles),
        "die": np.repeat(str(die.die), n_cells * n_cycles),
        "device": np.repeat(np.asarray(die.devices, dtype=str), n_cycles),
        "cycle": np.tile(np.asarray(die.cycles, dtype="int64"), n_cells),
        "v_pulse": np.asarray(die.v_pulse, float).reshape(-1),
        "pulse_width": np.asarray(die.pulse_width, float).reshape(-1),
    })


class ConditionRecorder:
    """Notes the condition of every train of the dies that pass through :meth:`watch` (cheap: two arrays per die)."""

    def __init__(self):
        self._parts = []

    def watch(self, dies):
        """Yield ``dies`` unchanged, recording their trains' conditions on the way."""
        for die in dies:
            if isinstance(die, DieData):
                self._parts.append(train_conditions(die))
            yield die

    def table(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame({k: [] for k in _KEYS + ["v_pulse", "pulse_width"]})
        return pd.concat(self._parts, ignore_index=True)


def d2d_section(d2d, params, cells: pd.DataFrame) -> dict:
    """The summary's ``d2d`` section of one D2D fit: each parameter's law, median and interval, checks."""
    out = {}
    for p in params:
        f = d2d.fits_.get(p)
        if f is None and p not in d2d.laws_:  # no law for it in this group (its notes say why)
            continue
        if f is not None:
            out[p] = f.to_dict()
        else:
            lw = d2d.laws_[p]
            out[p] = {**lw.to_dict(), "median": lw.median(), "median_ci90": None, "ks": None,
                      "note": next((n for n in d2d.notes_ if n.startswith(f"D2D {p}:")), "fallback law")}
    if "t_star" in out and "t_star_censored" in cells:
        out["t_star"]["n_censored_trains"] = int(cells["t_star_censored"].fillna(False).astype(bool).sum())
    return out


def condition_location(d2d: list) -> str:
    """Which median of each condition the condition law follows: ``"sample_median"`` or ``"median"``.

    The cells' own median (family-free) where every condition has it with an interval and no
    cell is censored; the law's median otherwise (under censoring the law extrapolates past
    the censoring point, the cells' Kaplan-Meier median cannot). The law's median carries the
    errors-in-variables weighting of the D2D fit, under which the flattest trains' m1 weighed
    little: the m1 medians of the slow conditions came out high (+18 % at 1.15 V, 0.5 and 1 us,
    10 seeds of the default condition law; +7 and +11 % since those trains' lines enter as
    ambiguous values, see :func:`~hfox_fit.fitting.campaign.d2d_rows`; +4.5 and +4.9 % since they may be
    mixed down by a hidden break, and where a law misses its cells' median every condition reports
    the cells', :func:`~hfox_fit.fitting._medians.use_sample_medians`) and m1's width slope leaned
    (mean z -1.27 on the laws' medians, +0.05 on the cells').
    """
    given = [d for d in d2d if d]
    if given and all(not d.get("n_censored") and d.get("sample_median") is not None and d.get("sample_median_ci90")
                     for d in given):
        return "sample_median"
    return "median"


class _FamilyFits:
    """The D2D step of :class:`D2DFitter` on one condition's rows, each law in the family shared by the conditions.

    Same cells (:func:`cell_values` of the unflagged rows, computed for all the conditions at once), same :func:`fit_parameter` and the same
    fallback as the pooled step; correlations and C2C laws are pooled-only (they would cost as
    much again and no condition law uses them). The contamination guard (on demand: kept only where
    outliers are there, see :func:`fit_parameter`) is tried for ``expon`` (and an unchosen family),
    whose ``loc`` a few failed per-cell fits would move far below the cells; the other families'
    medians hardly feel them, and the test would add a fit to each.
    ``fits_``, ``laws_``, ``notes_`` as D2DFitter's.
    """

    def __init__(self, params, pooled: dict, bootstrap: int, random_state: int, guarded=None, group=None):
        # pooled: parameter -> {"families": (family,), "truncate": bool}, the family every condition shares
        self.params, self.pooled, self.bootstrap, self.random_state = params, pooled, bootstrap, random_state
        self.guarded = guarded  # parameters whose pooled law needed the guard (None: test each condition)
        self.group = group  # this condition's key in the shared choice's "starts"

    def fit(self, cells: pd.DataFrame | None) -> _FamilyFits:
        """Fit from the per-cell table (:func:`cell_values` of the condition's unflagged rows)."""
        if cells is None or cells.empty:
            raise FitError("no unflagged cell to fit the D2D laws to")
        rng = np.random.default_rng(self.random_state)
        self.fits_, self.laws_, self.notes_ = {}, {}, []
        weight = line_weight(cells)
        for p in self.params:
            choice = dict(self.pooled.get(p, {}))
            tied = choice.pop("indistinguishable", [])  # of the one family choice over all the conditions
            start = choice.pop("starts", {}).get(self.group)
            try:
                fit = fit_parameter(p, cells[p].to_numpy(), **parameter_inputs(cells, p), ambiguous_weight=weight,
                                    bootstrap=self.bootstrap, rng=rng,
                                    guard=choice.get("families", ("expon",))[0] == "expon"
                                    and (self.guarded is None or p in self.guarded),
                                    starts=None if start is None else {choice["families"][0]: start}, **choice)
            except FitError as err:
                law, why = fallback_law(cells[p].to_numpy(), str(err))
                if law is None:  # e.g. every break censored here: the other parameters keep their laws
                    self.notes_.append(f"D2D {p}: no finite value among this group's unflagged cells (every "
                                       "train censored, or the parameter never fitted): no law for it here")
                    continue
                self.notes_.append(f"D2D {p}: {why}")
                self.laws_[p] = law
                continue
            if tied:
                fit.indistinguishable = list(tied)
                fit.note = "; ".join(filter(None, [fit.note, (
                    f"the family was chosen once over every condition's cells (each scaled to its condition's "
                    f"median), where {', '.join(tied)} are within 2 AIC of each other")]))
            self.fits_[p], self.laws_[p] = fit, fit.law
        if not self.laws_:
            raise FitError("no parameter has a finite value among the unflagged cells")
        return self


def _shared_families(cells, cell_gid, params, pooled: dict, random_state: int) -> dict:
    """Per parameter, the family (and truncation) every condition's law takes: ``{"families", "truncate"}``, and
    ``starts``: per condition (its index in ``cell_gid``), that law moved to the condition's median, to start its fit.

    The conditions' medians move, so the pooled cells are a mixture and the pooled law's family
    says little about each condition's. The family is chosen by AIC (as the D2D step does) on
    the cells of all the conditions, each divided by its condition's median (less it, where some
    value is <= 0), on at most ``_FAMILY_CELLS`` of them drawn at random, untruncated, without a
    bootstrap; a positive parameter prefers the positive families (lognorm first) within 2 AIC units,
    as its conditions scale it. Where that fails the pooled law's family is kept. One untruncated family for all
    makes the conditions' laws differ in location and spread only, and costs one candidate per
    condition instead of ten: truncation to a condition's range of values moves little of a
    median and would double that.
    """
    out = {}
    if cells is None or cells.empty:
        return out
    rng = np.random.default_rng(random_state)
    weight = line_weight(cells)
    for p in params:
        x = cells[p].to_numpy(float).copy()
        inputs = parameter_inputs(cells, p)  # (copies below: each cell's values are scaled by its group's median)
        se, amb = inputs["stderr"].copy(), inputs["ambiguous"]
        lo, hi = (None if v is None else v.copy() for v in (inputs["lower"], inputs["upper"]))
        # positive but for a few failed per-cell fits (the guard sets those aside)
        ratio = bool(np.mean(x[np.isfinite(x)] > 0) >= 0.97) if np.isfinite(x).any() else False
        medians = {}
        for k in np.unique(cell_gid):
            at = cell_gid == k
            mk = np.nanmedian(x[at]) if np.isfinite(x[at]).any() else np.nan
            if not np.isfinite(mk) or (ratio and mk <= 0):
                continue
            medians[int(k)] = float(mk)
            for arr in (x, lo, hi) if lo is not None else (x,):
                arr[at] = arr[at] / mk if ratio else arr[at] - mk
            if ratio:
                se[at] = se[at] / mk
        # the shape only: a random subset, without the few values <= 0 of a positive parameter (failed
        # per-cell fits), so that no contamination guard is needed (it would double the cost)
        usable = ~(x <= 0) if ratio else np.ones(len(x), bool)
        pick = np.sort(rng.permutation(np.flatnonzero(usable))[:_FAMILY_CELLS])
        try:
            fit = fit_parameter(p, x[pick], stderr=se[pick], lower=None if lo is None else lo[pick],
                                ambiguous=amb[pick] if amb is not None else None,
                                ambiguous_weight=weight,
                                upper=None if hi is None else hi[pick], truncate=False, bootstrap=0, max_select=0,
                                guard=False, rng=rng, families=_POSITIVE_FIRST if ratio else CANDIDATE_FAMILIES)
            # each condition's fit starts from this law moved to its median (not from moments and, for
            # expon, a scan over loc: half of those fits' likelihood evaluations)
            kw = fit.law.params
            starts = {k: {n: v * mk if ratio and n in ("loc", "scale") else v + mk if n == "loc" else v
                          for n, v in kw.items()} for k, mk in medians.items()}
            out[p] = {"families": (fit.law.family,), "truncate": False, "starts": starts,
                      "indistinguishable": [k.removesuffix("_truncated") for k in fit.indistinguishable]}
        except FitError:
            law = pooled.get(p)
            if law is not None:
                out[p] = {"families": (law.family,), "truncate": law.bounds is not None}
    return out


class ConditionFitter:
    """Per-condition D2D laws and the condition law: ``ConditionFitter(params).fit(rows, conditions)``.

    Parameters
    ----------
    params : sequence of str
        The per-cell parameters (columns of ``rows``), as for :class:`D2DFitter`.
    pooled : dict of str to ParameterLaw, optional
        The pooled laws, whose family every condition shares where the family cannot be
        chosen on the conditions' cells (see :func:`_shared_families`).
    bootstrap : int, default=200
    random_state : int, default=0
    guarded : set of str, optional
        The parameters whose pooled law needed the contamination guard: only their ``expon`` laws
        test it per condition (None: every ``expon`` law does).

    Attributes
    ----------
    groups_ : list of dict
        Per condition (known ones sorted by amplitude then width, the unknown one last):
        ``v_pulse``, ``pulse_width`` (None when unknown), ``n_cells``, ``n_trains``,
        ``n_trains_fitted``, ``d2d`` (as the summary's top-level one), ``notes``.
    law_ : ConditionLaw or None
        The fitted condition law (None with fewer than two known conditions).
    law_summary_ : dict or None
        The summary's ``condition_law``.
    notes_ : list of str
    """

    def __init__(self, params, pooled: dict | None = None, bootstrap: int = 200, random_state: int = 0,
                 guarded=None):
        self.params, self.bootstrap, self.random_state = list(params), bootstrap, random_state
        self.pooled = pooled or {}
        self.guarded = None if guarded is None else set(guarded)

    def fit(self, rows: pd.DataFrame, conditions: pd.DataFrame) -> ConditionFitter:
        """Group ``rows`` (per (cell, cycle), with ``flag``) by the ``conditions`` of their trains and fit each group."""
        cond = conditions.drop_duplicates(_KEYS).astype({k: str for k in _KEYS[:3]})
        keyed = rows[_KEYS].astype({k: str for k in _KEYS[:3]}).astype({"cycle": "int64"})
        merged = keyed.merge(cond.astype({"cycle": "int64"}), on=_KEYS, how="left", validate="many_to_one")
        v = merged["v_pulse"].to_numpy(float)
        w = merged["pulse_width"].to_numpy(float)
        known = np.isfinite(v) & np.isfinite(w)
        self.groups_, self.notes_, self.law_, self.law_summary_ = [], [], None, None
        pairs = sorted(set(zip(v[known].tolist(), w[known].tolist())))
        n_unknown = int((~known).sum())
        self.n_groups_ = len(pairs) + (n_unknown > 0)
        self.single_ = pairs[0] if len(pairs) == 1 and not n_unknown else None
        if self.n_groups_ < 2:
            return self
        gid = np.full(len(rows), len(pairs))
        for k, (vk, wk) in enumerate(pairs):
            gid[known & (v == vk) & (w == wk)] = k
        # the cells of every group in one pass (a device measured at two conditions is two cells)
        tagged = rows.assign(wafer=pd.Series(gid, index=rows.index).astype(str) + "|" + rows["wafer"].astype(str))
        ok = tagged["flag"].eq("ok").to_numpy() if "flag" in tagged else np.ones(len(tagged), bool)
        cells = cell_values(tagged[ok], self.params) if ok.any() else None
        cell_gid = cells["wafer"].str.split("|", n=1).str[0].astype(int).to_numpy() if cells is not None else None
        self.families_ = _shared_families(cells, cell_gid, self.params, self.pooled, self.random_state)
        for k in range(len(pairs) + (n_unknown > 0)):
            sub = rows[gid == k]
            vk, wk = pairs[k] if k < len(pairs) else (None, None)
            self.groups_.append(self._fit_group(sub, None if cells is None else cells[cell_gid == k], vk, wk, k))
        if n_unknown:
            group = self.groups_[-1]
            why = (f"{n_unknown} train(s) have no v_pulse or pulse_width: they are fitted as one 'unknown "
                   "condition' group, apart from every known condition")
            group["notes"].insert(0, why)
            self.notes_.append(f"conditions: {why}.")
        self.notes_.append(
            f"conditions: the campaign holds {self.n_groups_} pulse conditions; the top-level d2d laws pool them "
            "(each condition's laws are in 'conditions', all of one family per parameter, how they move in "
            "'condition_law')")
        known_groups = [g for g in self.groups_ if g["v_pulse"] is not None]
        locations = {p: condition_location([g["d2d"].get(p) or {} for g in known_groups]) for p in self.params}
        if len(pairs) >= 2:
            self._fit_law(known_groups, locations)
        # the medians the law follows are the ones each condition reports, where a law misses its cells'
        use_sample_medians(self.groups_, [p for p in self.params if locations[p] == "sample_median"], _group_name)
        return self

    def _fit_group(self, sub: pd.DataFrame, cells, v, w, k) -> dict:
        dev = sub[["wafer", "die", "device"]].drop_duplicates()
        group = {"v_pulse": v, "pulse_width": w, "n_cells": int(len(dev)), "n_trains": int(len(sub)),
                 "n_trains_fitted": int(sub["flag"].eq("ok").sum()) if "flag" in sub else int(len(sub)),
                 "d2d": {}, "notes": []}
        name = _group_name(group)
        try:
            d2d = _FamilyFits(self.params, self.families_, bootstrap=self.bootstrap,
                              random_state=self.random_state + 1 + k, guarded=self.guarded, group=k).fit(cells)
        except FitError as err:
            group["notes"].append(f"no D2D law at {name}: {err}")
            self.notes_.append(f"conditions: no D2D law at {name}: {err}")
            return group
        group["d2d"] = d2d_section(d2d, self.params, sub)
        group["notes"].extend(d2d.notes_)
        group["_fits"] = d2d
        return group

    # ------------------------------------------------------------------ the condition law
    def _fit_law(self, groups: list, locations: dict) -> None:
        vs = np.array([g["v_pulse"] for g in groups], float)
        ws = np.array([g["pulse_width"] for g in groups], float)
        v_ref = float(np.median(np.unique(vs)))
        width_ref = float(np.exp(np.median(np.log(np.unique(ws)))))
        vary_v, vary_w = len(np.unique(vs)) > 1, len(np.unique(ws)) > 1
        columns = [np.ones(len(groups))] + ([vs - v_ref] if vary_v else []) + (
            [np.log(ws / width_ref)] if vary_w else [])
        names = ["a"] + (["b_v"] if vary_v else []) + (["b_w"] if vary_w else [])
        X = np.stack(columns, axis=1)
        if np.linalg.matrix_rank(X) < X.shape[1]:
            self.notes_.append("condition law: the conditions do not separate amplitude from width (they vary "
                               "together); no condition law fitted")
            return
        out = {"v_ref": v_ref, "width_ref": width_ref, "v_range": [float(vs.min()), float(vs.max())],
               "width_range": [float(ws.min()), float(ws.max())], "n_conditions": len(groups),
               "factors": [f for f, on in (("v_pulse", vary_v), ("pulse_width", vary_w)) if on], "params": {}}
        if not (vary_v and vary_w):
            one = "amplitude (v_pulse)" if vary_v else "width (pulse_width)"
            out["note"] = (f"only the pulse {one} varies over the conditions: the law has that factor alone; "
                           f"{'b_w' if vary_v else 'b_v'} is 0 and not fitted")
        # the condition nearest the reference lends its laws' shapes to the model at any condition
        span_v = np.ptp(vs) or 1.0
        span_w = np.ptp(np.log(ws)) or 1.0
        nearest = groups[int(np.argmin(((vs - v_ref) / span_v) ** 2 + (np.log(ws / width_ref) / span_w) ** 2))]
        law_params = {}
        for p in self.params:
            entry = self._law_of(p, groups, X, names, locations[p])
            out["params"][p] = entry
            if "a" in entry:
                law_params[p] = {k: entry[k] for k in ("a", "a_stderr", "b_v", "b_v_stderr", "b_w", "b_w_stderr",
                                                       "scale") if k in entry}
                if nearest.get("_fits") is not None and p in nearest["_fits"].laws_:
                    law_params[p]["law"] = nearest["_fits"].laws_[p].to_dict()
        out["note"] = "; ".join(x for x in (out.get("note"), (
            "per parameter: ln median (the median itself where a condition's interval reaches 0) = a + b_v (V - "
            "v_ref) + b_w ln(width / width_ref), weighted least squares on the conditions' medians (weights from "
            "their 90 % intervals; 'location': the cells' own medians, 'sample_median', where no cell is censored, "
            "else the laws' medians, 'median'), stderrs scaled by the Birge ratio sqrt(chi2/dof) when above 1; "
            "spread: shared or each condition's own, by AIC on the conditions' spreads")) if x)
        self.law_summary_ = out
        self.law_ = ConditionLaw(v_ref, width_ref, law_params, tuple(out["v_range"]), tuple(out["width_range"]),
                                 vary_v, vary_w)

    def _law_of(self, p: str, groups: list, X: np.ndarray, names: list, location: str) -> dict:
        med, lo, hi, n_used, spread_q, keep, left = [], [], [], [], [], [], []
        for i, g in enumerate(groups):
            d = g["d2d"].get(p, {})
            ci = d.get(location + "_ci90") or d.get("sample_median_ci90")
            fit = g.get("_fits")
            law = fit.laws_.get(p) if fit is not None else None
            if d.get(location) is None or not ci or law is None:
                # e.g. t_star where most trains end before their break: that condition is left out
                left.append(f"v_pulse {g['v_pulse']:g} V, width {g['pulse_width']:g} s")
                continue
            keep.append(i)
            med.append(float(d[location]))
            lo.append(float(ci[0]))
            hi.append(float(ci[1]))
            n_used.append(max(int(d.get("n_used") or 0) + int(d.get("n_censored") or 0), 2))
            spread_q.append(_law_ppf(law, [0.25, 0.75]))
        X = X[keep]
        if len(keep) < X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
            return {"note": (f"no condition law: {len(left)} of {len(groups)} conditions have no median interval "
                             f"for {p} ({'; '.join(left)}); the others cannot separate the factors")}
        med, lo, hi, n_used = (np.asarray(a, float) for a in (med, lo, hi, n_used))
        q = np.asarray(spread_q)
        log = bool(np.all(lo > 0) and np.all(med > 0) and np.all(q > 0))
        f = np.log if log else (lambda x: x)
        y = f(med)
        se = (f(hi) - f(lo)) / (2 * _Z90)
        if not np.all(np.isfinite(se) & (se > 0)):
            return {"note": f"no condition law: a condition's median interval of {p} is empty"}
        wts = 1.0 / se**2
        A = X * np.sqrt(wts)[:, None]
        coef, *_ = np.linalg.lstsq(A, y * np.sqrt(wts), rcond=None)
        cov = np.linalg.inv(A.T @ A)
        resid = (y - X @ coef) / se
        chi2, dof = float(resid @ resid), len(y) - X.shape[1]
        birge = float(np.sqrt(chi2 / dof)) if dof > 0 else 1.0
        stderr = np.sqrt(np.diag(cov)) * max(birge, 1.0)
        entry = {"scale": "log" if log else "linear", "a": float(coef[0]), "a_stderr": float(stderr[0]),
                 "b_v": 0.0, "b_v_stderr": None, "b_w": 0.0, "b_w_stderr": None}
        for name, c, s in zip(names[1:], coef[1:], stderr[1:]):
            entry[name], entry[name + "_stderr"] = float(c), float(s)
        entry.update({"chi2": chi2, "dof": dof, "birge_ratio": birge,
                      "median_at_ref": float(np.exp(coef[0]) if log else coef[0])})
        entry["spread"] = _spread_choice(f(q[:, 1]) - f(q[:, 0]), n_used, log)
        entry["n_conditions_used"] = len(keep)
        entry["location"] = location
        if left:
            entry["note"] = (f"fitted on {len(keep)} of {len(groups)} conditions: {'; '.join(left)} left out (no "
                             f"median interval for {p} there, e.g. most trains end before their break)")
        return entry


def _group_name(group: dict) -> str:
    v, w = group["v_pulse"], group["pulse_width"]
    return "unknown condition" if v is None else f"v_pulse {v:g} V, width {w:g} s"


def _spread_choice(iqr: np.ndarray, n: np.ndarray, log: bool) -> dict:
    """Shared or own spread by AIC: the conditions' spreads (IQR / 1.349 of each law, on the law's scale)
    with the normal-theory stderr ``sigma / sqrt(2 n)``; one shared value (1 parameter) against one per
    condition (as many parameters as conditions, which fit exactly)."""
    sigma = iqr / 1.349
    se = sigma / np.sqrt(2.0 * n)
    wts = 1.0 / se**2
    shared = float(np.sum(wts * sigma) / np.sum(wts))
    chi2 = float(np.sum(((sigma - shared) / se) ** 2))
    aic_shared, aic_own = chi2 + 2.0, 2.0 * len(sigma)
    return {"choice": "shared" if aic_shared <= aic_own else "own", "aic_shared": aic_shared, "aic_own": aic_own,
            "shared": shared, "shared_stderr": float(1.0 / np.sqrt(np.sum(wts))),
            "per_condition": [float(s) for s in sigma],
            "measure": ("IQR / 1.349 of each condition's law, of ln " if log else "IQR / 1.349 of each condition's "
                        "law, of ") + "the parameter (the lognormal s where the law is lognormal)"}


def summary_sections(fitter: ConditionFitter) -> dict:
    """The summary keys ``conditions`` and ``condition_law`` of a fitted :class:`ConditionFitter` (empty: one condition)."""
    if fitter.n_groups_ < 2:
        return {}
    groups = [{k: v for k, v in g.items() if not k.startswith("_")} for g in fitter.groups_]
    for g in groups:
        if g["v_pulse"] is None:
            g["condition"] = "unknown"
    out = {"conditions": groups}
    if fitter.law_summary_ is not None:
        out["condition_law"] = fitter.law_summary_
    return out


def add_conditions(summary: dict, model, rows: pd.DataFrame, conditions: pd.DataFrame | None, params,
                   pooled=None, bootstrap: int = 200, random_state: int = 0,
                   noise_source=None) -> ConditionLaw | None:
    """Fit ``rows`` per condition; add ``conditions``/``condition_law`` and the notes to ``summary``.

    With ``noise_source`` (the drift fit: ``spectrum_stats_`` and ``rtn_stats_``, one per die, in the
    order of ``conditions``), each condition also gets its pink and RTN laws (:func:`add_condition_noise`).

    ``model`` (the pooled DeviceModel) gets the condition law, or, measured at one known
    condition, ``meta["pulse_condition"]`` (so that :meth:`DeviceModel.at` can name it). The
    summary does not change with one condition. Returns the condition law, if any.
    """
    if conditions is None or not len(conditions):
        return None
    # the pooled step's guard test covers every condition's cells: where they hold no outliers, no
    # condition's fit tests the guard again
    guarded = {p for p, d in summary.get("d2d", {}).items()
               if isinstance(d, dict) and (d.get("guard_lrt") is None or d["guard_lrt"] > GUARD_LRT)}
    fitter = ConditionFitter(params, pooled, bootstrap=bootstrap, random_state=random_state,
                             guarded=guarded).fit(rows, conditions)
    if fitter.single_ is not None:
        model.meta["pulse_condition"] = {"v_pulse": fitter.single_[0], "pulse_width": fitter.single_[1]}
    extra = summary_sections(fitter)
    if not extra:
        return None
    model.condition_law = fitter.law_
    summary.update(extra)
    pooled = f"pooled over the {fitter.n_groups_} pulse conditions (each condition's law: 'conditions')"
    for d in summary.get("d2d", {}).values():
        d["note"] = f"{d['note']}; {pooled}" if d.get("note") else pooled
    if noise_source is not None:
        add_condition_noise(summary["conditions"], noise_source, conditions, bootstrap, random_state)
    summary.setdefault("notes", []).extend(fitter.notes_)
    return fitter.law_


def _condition_masks(groups: list, conditions: pd.DataFrame) -> list:
    """Bool mask over the trains of ``conditions`` for each summary group (unknown: v or width NaN)."""
    v = conditions["v_pulse"].to_numpy(float)
    w = conditions["pulse_width"].to_numpy(float)
    unknown = ~np.isfinite(v) | ~np.isfinite(w)
    return [unknown if g["v_pulse"] is None or g["pulse_width"] is None
            else ~unknown & np.isclose(v, g["v_pulse"], rtol=1e-12, atol=0.0)
            & np.isclose(w, g["pulse_width"], rtol=1e-12, atol=0.0) for g in groups]


def add_condition_noise(groups: list, source, conditions: pd.DataFrame, bootstrap: int, random_state: int) -> None:
    """Add ``pink`` and ``rtn`` to each condition of ``groups``: the noise step on that condition's trains.

    The drift fit keeps one residual spectrum and one set of RTN statistics per train, so each
    condition's laws are :func:`~hfox_fit.fitting.fit_pink_spectrum` and the RTN pooling of the
    pooled step on its own trains, with their bootstrap intervals. A condition where they cannot be
    fitted (no complete residual segment, no train long enough for the RTN detection) says why in
    the section's ``note``.
    """
    spectra, rtn = list(source.spectrum_stats_), list(source.rtn_stats_)
    masks = _condition_masks(groups, conditions)
    n_rows = [0 if s is None else len(s.count) for s in spectra]
    n_rtn = [0 if r is None else len(r.up) for r in rtn]
    if sum(n_rows) != len(conditions) or len(spectra) != len(rtn):
        why = "the residual statistics do not line up with the trains' conditions"
        for g in groups:
            g["pink"] = g["rtn"] = {"note": f"not fitted per condition: {why}"}
        return
    starts = np.cumsum([0] + n_rows)
    lengths = [s.length if s is not None else 0 for s in spectra]
    L = max(lengths) if lengths else 0
    # segments of one length only (as SpectrumStats.concat); other dies' rows count as absent
    parts = [(s, starts[i]) for i, s in enumerate(spectra) if s is not None and s.length == L and L > 0]
    good_rtn = [(r, starts[i]) for i, r in enumerate(rtn) if r is not None and n_rtn[i] == n_rows[i] and len(r.up)]
    for k, (g, mask) in enumerate(zip(groups, masks)):
        rng = np.random.default_rng([random_state, 7, k])
        g["pink"] = _condition_pink(parts, L, mask, bootstrap, rng)
        g["rtn"] = _condition_rtn(good_rtn, mask, bootstrap, rng)


def _condition_pink(parts, L, mask, bootstrap, rng) -> dict:
    rows = [(s, np.flatnonzero(mask[a:a + len(s.count)])) for s, a in parts]
    rows = [(s, i) for s, i in rows if i.size]
    if not rows:
        return {"note": "not fitted at this condition: no train with a complete residual segment"}
    stats = SpectrumStats(L, rows[0][0].taps, rows[0][0].freqs, np.concatenate([s.power_sum[i] for s, i in rows]),
                      np.concatenate([s.count[i] for s, i in rows]))
    if stats.count.sum() < 4:
        return {"note": f"not fitted at this condition: {int(stats.count.sum())} residual segment(s), fewer than 4"}
    try:
        pink = fit_pink_spectrum(stats, bootstrap=0)
    except FitError as err:
        return {"note": f"not fitted at this condition: {err}"}
    pink.std_ci90, pink.exponent_ci90, pink.white_std_ci90 = _pink_intervals(stats, pink, bootstrap, rng)
    return {"std": pink.std, "std_stderr": pink.std_stderr, "std_ci90": pink.std_ci90,
            "exponent": pink.exponent, "exponent_stderr": pink.exponent_stderr, "exponent_ci90": pink.exponent_ci90,
            "white_std": pink.white_std, "white_std_stderr": pink.white_std_stderr,
            "white_std_ci90": pink.white_std_ci90, "taps": pink.taps, "n_segments": pink.n_segments,
            "note": ("the pooled step's pink fit on this condition's trains; intervals: bootstrap over cells, "
                     "each replicate one Gauss-Newton step from the fit")}


def _pink_intervals(stats, pink, bootstrap: int, rng) -> tuple:
    """90 % intervals of (std, exponent, white std): bootstrap over cells, one Gauss-Newton step per replicate.

    The pooled step refits each replicate (least squares); a replicate's spectrum is the fit's
    within its sampling error, and the log-spectrum residual's Jacobian does not depend on the
    data, so one step from the fit is the linearised refit at the cost of a matrix product
    (nine conditions would otherwise cost nine pooled bootstraps).
    """
    has = np.flatnonzero(stats.count > 0)
    if not bootstrap or has.size < 2:
        return None, None, None

    taps, c = pink.taps, _design(stats.length, pink.taps - 1)
    x0 = np.array([pink.lmfit_result.params[k].value for k in ("alpha", "d", "white")])

    def log_model(x):
        return np.log(np.maximum(c @ pink_autocovariance(x[0], x[1], x[2], taps), 1e-300))

    step = np.maximum(np.abs(x0) * 1e-6, 1e-12)
    jac = np.column_stack([(log_model(x0 + e) - log_model(x0 - e)) / (2 * h)
                           for e, h in ((np.eye(3)[i] * step[i], step[i]) for i in range(3))])
    counts = _draw_counts(rng, has.size, bootstrap)  # (B, cells)
    spectra = (counts @ stats.power_sum[has]) / (counts @ stats.count[has])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = np.log(spectra) - log_model(x0)
    dx = np.linalg.lstsq(jac, resid.T, rcond=None)[0].T
    reps = np.clip(x0 + dx, [0.0, 0.01, 0.0], [np.inf, 1.5, np.inf])
    vals = np.column_stack([pink_std(reps[:, 0], reps[:, 1], taps), 2 * reps[:, 1], reps[:, 2]])
    vals = vals[np.isfinite(vals).all(axis=1)]
    if len(vals) < 2:
        return None, None, None
    lo, hi = np.percentile(vals, [5, 95], axis=0)
    return tuple([float(lo[k]), float(hi[k])] for k in range(3))


def _condition_rtn(parts, mask, bootstrap, rng) -> dict:
    picked = [(r, np.flatnonzero(mask[a:a + len(r.up)])) for r, a in parts]
    picked = [(r, i) for r, i in picked if i.size]
    if not picked:
        return {"note": "not fitted at this condition: no train long enough for the RTN detection"}
    block = picked[0][0].block
    if any(r.block != block for r, _ in picked):
        return {"note": "not fitted at this condition: its dies' RTN blocks differ in length"}
    sub = [r.rows(i) for r, i in picked]
    est = _pool_rtn(sub, bootstrap, rng)
    return {"p_up": est.p_up, "p_up_stderr": est.p_up_stderr, "p_up_ci90": est.p_up_ci90,
            "p_down": est.p_down, "p_down_stderr": est.p_down_stderr, "p_down_ci90": est.p_down_ci90,
            "n_trains": est.n_cells, "n_showing": est.n_showing,
            "note": est.note or "the pooled step's RTN rates on this condition's trains; intervals: bootstrap "
                                "over trains"}

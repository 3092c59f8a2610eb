r"""The wafer level: each wafer's D2D laws, the variance decomposition, and comparisons of medians.

A campaign of several wafers is fitted as one population (the top-level ``d2d``
laws pool the wafers). This module adds what varies from wafer to wafer:

* :func:`wafer_sections`: per wafer, the D2D step rerun on that wafer's cells (the same
  per-cell table, :func:`~hfox_fit.fitting.d2d.cell_values`, and the same per-parameter fit
  as the per-condition laws of :mod:`~hfox_fit.fitting.conditions`, each law in the pooled
  law's family, untruncated), with each median's bootstrap 90 % interval.
* :func:`variance_components`: a nested random-effects ANOVA of each parameter over the
  per-train table, wafer > die > cell > cycle, by the method of moments for unbalanced
  data (Henderson's method I: the sums of squares between the groups of each level within
  its parent, set equal to their expectations). A positive parameter (97 % or more of its
  values > 0) is decomposed on the log scale, the others on the linear scale. The read
  noise's share, the mean squared per-train stderr (on the same scale, each capped at the
  total variance so that a few failed trains cannot swamp it), is taken from the finest level (cycle, or cell with one train per cell); negative estimates are set to 0.
  A level that has no more groups than its parent (one wafer, one die per wafer, one train
  per cell) cannot be told apart from it: it is reported as None and its variance is in
  the level above (below, for the cycle level, which merges into the cell level).
  A parameter with right-censored values (``t_star`` past a train's end) takes its wafer share
  from the wafers' fitted laws instead, which count the censored trains
  (:func:`censored_wafer_share`): the seen values alone compress a real wafer share (a wafer
  with later breaks loses more of them) and can show one where there is none.
* :func:`compare_medians`: the ratio of two medians with a 90 % interval, from their
  90 % intervals (delta method on the log medians, each half-width taken as 1.645 sd), and
  :func:`compare_summaries` over every shared parameter, with Holm's correction (:func:`holm`)
  for testing several parameters at once.

The summary keys ``wafers`` and ``variance`` (:func:`add_wafers`) appear only when the
campaign has two or more wafers, so a one-wafer fit's summary does not change; the
decomposition without the wafer level is :func:`variance_components` on its table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._json import finite_or_none as _num
from ..exceptions import FitError
from ._medians import _ok_ci, use_sample_medians
from .conditions import _FamilyFits, d2d_section
from .d2d import cell_values

__all__ = ["add_wafers", "wafer_sections", "variance_components", "compare_medians", "compare_summaries",
           "wafer_d2d", "holm", "LEVELS", "FAMILY_ALPHA"]

#: The levels of the decomposition, outermost first.
LEVELS = ("wafer", "die", "cell", "cycle")
#: z of a two-sided 90 % interval
_Z90 = 1.6448536269514722
#: the family-wise level of Holm's rule over the compared parameters (each alone is tested at 90 %)
FAMILY_ALPHA = 0.10
#: a parameter is decomposed on the log scale when at least this share of its values is > 0
_POSITIVE_SHARE = 0.97


def wafer_sections(rows: pd.DataFrame, params, pooled: dict, bootstrap: int = 200,
                   random_state: int = 0) -> list[dict]:
    """Per wafer (sorted by name): ``wafer``, ``n_cells``, ``n_trains``, ``n_trains_fitted``, ``d2d``, ``notes``.

    ``rows`` is the D2D step's input (:func:`~hfox_fit.fitting.campaign.d2d_rows`, with ``flag``);
    ``pooled`` maps each parameter to its pooled :class:`~hfox_fit.laws.ParameterLaw`, whose
    family every wafer's law takes (untruncated), so that the wafers differ in location and
    spread only. ``d2d`` is as the summary's top-level one (``median``, ``median_ci90``, ...).
    """
    params = list(params)
    wafer_of = rows["wafer"].astype(str)
    ok = rows["flag"].eq("ok").to_numpy() if "flag" in rows else np.ones(len(rows), bool)
    cells = cell_values(rows[ok], params) if ok.any() else None
    # untruncated, as the per-condition laws: truncation to each wafer's range would double the cost
    families = {p: {"families": (law.family,), "truncate": False} for p, law in pooled.items() if p in params}
    out = []
    for k, name in enumerate(sorted(wafer_of.unique())):
        sub = rows[wafer_of.to_numpy() == name]
        entry = {"wafer": name, "n_cells": int(len(sub[["die", "device"]].drop_duplicates())),
                 "n_trains": int(len(sub)), "n_trains_fitted": int(ok[wafer_of.to_numpy() == name].sum()),
                 "d2d": {}, "notes": []}
        mine = None if cells is None else cells[cells["wafer"].astype(str).to_numpy() == name]
        try:
            fits = _FamilyFits(params, families, bootstrap, random_state + 1 + k).fit(mine)
        except FitError as err:
            entry["notes"].append(f"no D2D law for wafer {name}: {err}")
            out.append(entry)
            continue
        entry["d2d"] = d2d_section(fits, params, sub)
        entry["notes"].extend(fits.notes_)
        out.append(entry)
    # a law that misses its own cells' median (few cells, a poor family): the sample's instead, for that
    # parameter on every wafer, so that the wafers' medians compared are of one kind
    use_sample_medians(out, params, lambda e: f"wafer {e['wafer']}")
    return out


# ---------------------------------------------------------------------------- variance decomposition
def _codes(rows: pd.DataFrame) -> list[np.ndarray]:
    """Group codes of each row at the wafer, die and cell levels (nested: a die code is per wafer)."""
    keys = [["wafer"], ["wafer", "die"], ["wafer", "die", "device"]]
    return [rows.groupby(k, sort=False, observed=True).ngroup().to_numpy() for k in keys]


def _henderson(y: np.ndarray, codes: list[np.ndarray]):
    """Variance components of the nested levels ``codes`` (outermost first) plus the residual.

    Returns (levels kept, their variances): a level with no more groups than its parent is
    dropped (its variance lies in the parent's; the residual's, with one row per finest group,
    in the finest kept level).
    """
    n = len(y)
    all_codes = [np.zeros(n, int)] + codes + [np.arange(n)]
    sizes = [np.bincount(c) for c in all_codes]
    n_groups = [len(s) for s in sizes]
    kept = [i for i in range(1, len(all_codes)) if n_groups[i] > n_groups[i - 1]]
    if not kept:
        return [], np.zeros(0)
    # T_X = sum_g n_g mean_g^2; E[T_X] = N mu^2 + sum_L var_L k(X, L), k = sum_g sum_{h in L} n_gh^2 / n_g
    def total(i):
        return float(np.sum(np.bincount(all_codes[i], weights=y) ** 2 / sizes[i]))

    def k(x, level):
        if level <= x:  # the component's group contains the row group: n_gh = n_g
            return float(n)
        pair = all_codes[x].astype(np.int64) * n_groups[level] + all_codes[level]
        n_gh = np.bincount(np.unique(pair, return_inverse=True)[1])
        parent = np.unique(pair, return_index=True)[1]
        return float(np.sum(n_gh.astype(float) ** 2 / sizes[x][all_codes[x][parent]]))

    chain = [0] + kept
    ss = np.array([total(chain[j + 1]) - total(chain[j]) for j in range(len(kept))])
    coef = np.array([[k(chain[j + 1], lv) - k(chain[j], lv) for lv in kept] for j in range(len(kept))])
    return kept, np.linalg.solve(coef, ss)


def variance_components(rows: pd.DataFrame, params) -> dict:
    """Per parameter, the fractions of its variance between wafers, dies, cells and cycles.

    ``rows`` is the per-train table (D2D input: unflagged trains are used; ``t_star`` of the
    censored trains is left out). Returns ``{param: {"wafer", "die", "cell", "cycle", "scale",
    "variance", "measurement_variance", "n_trains", "n_left_out", "note"}}``; the four fractions
    of the levels that can be told apart sum to 1, the others are None (see the module text).
    """
    ok = rows["flag"].eq("ok").to_numpy() if "flag" in rows else np.ones(len(rows), bool)
    out = {}
    for p in params:
        if p not in rows:
            continue
        x = rows[p].to_numpy(float)
        se = rows[p + "_stderr"].to_numpy(float) if p + "_stderr" in rows else np.full(len(x), np.nan)
        use = ok & np.isfinite(x)
        n_censored = 0
        if p == "t_star" and "t_star_censored" in rows:
            censored = rows["t_star_censored"].fillna(False).astype(bool).to_numpy()
            n_censored = int((use & censored).sum())
            use &= ~censored
        finite = x[use]
        log = finite.size > 0 and float(np.mean(finite > 0)) >= _POSITIVE_SHARE
        left_out = int((use & ~(x > 0)).sum()) if log else 0
        if log:
            use &= x > 0
        sub = rows[use]
        y = np.log(x[use]) if log else x[use]
        err = (se[use] / x[use]) if log else se[use]
        entry = {lv: None for lv in LEVELS}
        entry.update({"scale": "log" if log else "linear", "variance": {}, "measurement_variance": None,
                      "n_trains": int(use.sum()), "n_left_out": left_out})
        if y.size < 3:
            entry["note"] = "fewer than 3 usable trains: no decomposition"
            out[p] = entry
            continue
        kept, var = _henderson(y - y.mean(), _codes(sub))
        names = [LEVELS[i - 1] for i in kept]
        var = dict(zip(names, var.tolist()))
        notes = []
        finest = names[-1] if names else None
        # a failed train's stderr can dwarf the spread of every value (a slope near 0 on the log scale):
        # no train's error counts for more than the total variance
        err2 = np.minimum(err[np.isfinite(err)] ** 2, float(np.var(y)))
        if finest is not None and err2.size:
            entry["measurement_variance"] = float(np.mean(err2))
            var[finest] -= entry["measurement_variance"]
            notes.append(f"the mean squared per-train stderr (each at most the total variance) is taken from "
                         f"the {finest} level")
        negative = [lv for lv, v in var.items() if v < 0]
        for lv in negative:
            var[lv] = 0.0
        if negative:
            notes.append(f"negative estimates set to 0: {', '.join(negative)}")
        merged = [lv for lv in LEVELS if lv not in var]
        if merged:
            notes.append(f"not separable from the level next to it (one group within each parent): {', '.join(merged)}")
        total = sum(var.values())
        for lv, v in var.items():
            entry[lv] = float(v / total) if total > 0 else None
        entry["variance"] = {lv: float(v) for lv, v in var.items()}
        entry["note"] = "; ".join([f"nested random-effects ANOVA (method of moments) on the {entry['scale']} scale"]
                                  + notes + ([f"{left_out} value(s) <= 0 left out"] if left_out else [])
                                  + ([f"{n_censored} censored train(s) left out: the shares are those of the breaks "
                                      "seen, which a wafer's other laws (m1) can select"] if n_censored else []))
        out[p] = entry
    return out


def add_wafers(summary: dict, rows: pd.DataFrame, params, pooled: dict, bootstrap: int = 200,
               random_state: int = 0, stage=None) -> None:
    """Add ``wafers`` and ``variance`` to ``summary`` when ``rows`` hold two or more wafers (else nothing).

    ``stage`` (optional) is called with one line for the progress display.
    """
    n_wafers = rows["wafer"].astype(str).nunique() if "wafer" in rows else 0
    if n_wafers < 2:
        return
    if stage is not None:
        stage(f"pooling: wafer level ({n_wafers} wafers, {bootstrap} bootstrap replicates)")
    wafers = wafer_sections(rows, params, pooled, bootstrap, random_state)
    summary["wafers"] = wafers
    summary["variance"] = variance_components(rows, params)
    for p in censored_params(rows, params):
        if p in summary["variance"]:
            censored_wafer_share(summary["variance"][p], wafers, p)
    note = f"pooled over the {len(wafers)} wafers (each wafer's law: 'wafers')"
    for d in summary.get("d2d", {}).values():
        d["note"] = f"{d['note']}; {note}" if d.get("note") else note
    summary.setdefault("notes", []).extend(f"wafer {w['wafer']}: {n}" for w in wafers for n in w["notes"])


def censored_params(rows: pd.DataFrame, params) -> list:
    """The parameters with right-censored values among the unflagged trains (``t_star`` beyond a train's end).

    A censored value is a missing one with a finite lower bound (``<p>_lo``, from
    :func:`~hfox_fit.fitting.breaks.censor_late_breaks`), or one marked ``t_star_censored``.
    """
    ok = rows["flag"].eq("ok").to_numpy() if "flag" in rows else np.ones(len(rows), bool)
    out = []
    for p in params:
        if p not in rows:
            continue
        missing = ok & ~np.isfinite(rows[p].to_numpy(float))
        n = int((missing & np.isfinite(rows[p + "_lo"].to_numpy(float))).sum()) if p + "_lo" in rows else 0
        if p == "t_star" and "t_star_censored" in rows:
            n += int((ok & rows["t_star_censored"].fillna(False).astype(bool).to_numpy()).sum())
        if n:
            out.append(p)
    return out


def _law_log_variance(d: dict):
    """The variance of ln X under the wafer's fitted law (its ``family``/``params``/``bounds``), or None."""
    from ..laws import ParameterLaw

    try:
        law = ParameterLaw.from_dict({k: d[k] for k in ("family", "params", "bounds") if k in d})
        x = np.asarray(law.ppf((np.arange(400) + 0.5) / 400), float)
    except Exception:  # noqa: BLE001 - a law that cannot be read: no law-based share
        return None
    return float(np.var(np.log(x))) if np.all(np.isfinite(x) & (x > 0)) else None


def censored_wafer_share(entry: dict, wafers: list, p: str) -> None:
    """Replace the wafer share of a censored parameter by one from the wafers' fitted laws (in place).

    The nested ANOVA sees only the values observed within the trains: a wafer whose ``t_star`` is
    longer loses more of its breaks past the train's end, which compresses a real wafer share, and
    which breaks are seen can differ between wafers by chance, which makes one where there is none.
    Each wafer's D2D law counts its censored trains (the law's mass beyond the train), so on the log
    scale the variance between wafers is the variance of the log law medians less their mean squared
    standard error (from each 90 % interval), and the variance within a wafer the mean of the laws'
    own log variances. The within-wafer share is split among die, cell and cycle as the ANOVA of the
    seen values splits it. The ANOVA's own wafer share stays as ``wafer_seen``.
    """
    logs, se2, within = [], [], []
    for w in wafers:
        d = (w.get("d2d") or {}).get(p) or {}
        # the law's median (a wafer whose law missed its cells' median shows theirs, which is of the seen breaks)
        med, ci = (d.get("law_median"), d.get("law_median_ci90")) if d.get("median_from") == "sample" else (
            d.get("median"), d.get("median_ci90"))
        var = _law_log_variance(d)
        if _num(med) is None or med <= 0 or not _ok_ci(ci) or ci[0] <= 0 or var is None:
            continue
        logs.append(np.log(med))
        se2.append((np.log(ci[1] / ci[0]) / (2 * _Z90)) ** 2)
        within.append(var)
    entry["wafer_seen"] = entry.get("wafer")
    if len(logs) < 2:
        entry["wafer_from"] = "seen values"
        entry["note"] = (f"{entry.get('note', '')}; censored values: fewer than 2 wafers have a law with an "
                         f"interval, so the wafer share is the seen values' (it can be compressed, or spurious)")
        return
    between = max(0.0, float(np.var(logs, ddof=1) - np.mean(se2)))
    inside = float(np.mean(within))
    total = between + inside
    share = between / total if total > 0 else 0.0
    rest = {lv: entry.get(lv) for lv in LEVELS[1:] if entry.get(lv) is not None}
    rest_sum = sum(rest.values())
    if not rest:
        rest, rest_sum = {"cell": 1.0}, 1.0
    entry["wafer"] = share
    for lv in LEVELS[1:]:
        if lv in rest:
            entry[lv] = (1 - share) * (rest[lv] / rest_sum if rest_sum > 0 else (1.0 if lv == "cell" else 0.0))
    entry["variance"] = {lv: entry[lv] * total for lv in LEVELS if entry.get(lv) is not None}
    entry["wafer_from"] = "wafer laws"
    entry["wafer_laws"] = {"between": between, "within": inside, "n_wafers": len(logs),
                           "mean_se2_of_log_median": float(np.mean(se2))}
    entry["note"] = (f"{entry.get('note', '')}; censored values: the wafer share is from the {len(logs)} wafers' "
                     "fitted laws, which count the censored trains (variance of the log law medians less their "
                     "squared standard errors, against the laws' mean log variance); the rest is split among the "
                     f"levels below as the seen values split it (their own wafer share was "
                     f"{100 * (entry['wafer_seen'] or 0):.1f} %, 'wafer_seen')")


# ---------------------------------------------------------------------------- comparisons
def compare_medians(median_a, ci_a, median_b, ci_b) -> dict:
    """``median_b / median_a`` with a 90 % interval and whether it excludes 1.

    From the two 90 % intervals, each half-width on the log scale taken as 1.645 standard
    errors (delta method); the interval is ``ratio * exp(+-1.645 sqrt(se_a^2 + se_b^2))``.
    Where a median or an interval is not positive the difference ``median_b - median_a`` is
    compared with 0 instead (``scale`` says which); without an interval ``significant`` is None.
    ``p_value`` is the two-sided normal p of the same test (``significant`` is ``p_value < 0.10``).
    """
    out = {"median_a": _num(median_a), "median_b": _num(median_b), "ratio": None, "ratio_ci90": None,
           "significant": None, "p_value": None, "scale": "log"}
    if out["median_a"] is None or out["median_b"] is None:
        out["note"] = "a median is missing"
        return out
    a, b = out["median_a"], out["median_b"]
    have_ci = _ok_ci(ci_a) and _ok_ci(ci_b)
    if a > 0 and b > 0 and (not have_ci or min(ci_a[0], ci_b[0]) > 0):
        out["ratio"] = b / a
        if not have_ci:
            out["note"] = "a median has no interval: no test"
            return out
        se = np.hypot(*(np.log(ci[1] / ci[0]) / (2 * _Z90) for ci in (ci_a, ci_b)))
        lo, hi = out["ratio"] * np.exp(-_Z90 * se), out["ratio"] * np.exp(_Z90 * se)
        out["ratio_ci90"] = [float(lo), float(hi)]
        out["significant"] = bool(lo > 1 or hi < 1)
        out["p_value"] = _p_two_sided(np.log(out["ratio"]), se)
        return out
    out["scale"] = "linear"
    out["difference"] = b - a
    if not have_ci:
        out["note"] = "a median has no interval: no test"
        return out
    se = np.hypot(*((ci[1] - ci[0]) / (2 * _Z90) for ci in (ci_a, ci_b)))
    out["difference_ci90"] = [float(b - a - _Z90 * se), float(b - a + _Z90 * se)]
    out["significant"] = bool(out["difference_ci90"][0] > 0 or out["difference_ci90"][1] < 0)
    out["p_value"] = _p_two_sided(b - a, se)
    out["note"] = "a median or interval is <= 0: the difference b - a is compared with 0 instead of the ratio"
    return out


def wafer_d2d(summary: dict, wafer: str | None) -> dict:
    """The ``d2d`` section of ``wafer`` in a fit summary (the pooled one for None); FitError naming the wafers."""
    if wafer is None:
        return summary.get("d2d", {})
    entries = {str(w["wafer"]): w for w in summary.get("wafers") or []}
    if str(wafer) not in entries:
        have = ", ".join(sorted(entries)) or "none (the fit has one wafer; fit again with this version for more)"
        raise FitError(f"no wafer {wafer!r} in the fit; its wafers: {have}.")
    return entries[str(wafer)].get("d2d", {})


def compare_summaries(summary_a: dict, summary_b: dict, wafer_a: str | None = None,
                      wafer_b: str | None = None) -> dict:
    """Compare every parameter the two D2D sections share: ``{"parameters": {name: compare_medians(...)}}``."""
    da, db = wafer_d2d(summary_a, wafer_a), wafer_d2d(summary_b, wafer_b)
    shared = [p for p in da if p in db]
    if not shared:
        raise FitError("the two fits share no D2D parameter to compare.")
    params = {}
    for p in shared:
        ea, eb = da[p], db[p]
        params[p] = compare_medians(ea.get("median"), ea.get("median_ci90"), eb.get("median"), eb.get("median_ci90"))
    tested = holm(params)
    return {"parameters": params,
            "multiplicity": {"rule": "holm", "family_alpha": FAMILY_ALPHA, "n_tested": tested, "decides": "significant_holm",
                             "note": (f"significant: each parameter on its own at 90 % (of {tested} parameters "
                                      "that do not differ, one in ten is flagged by chance on average); "
                                      f"significant_holm: Holm's step-down rule over the {tested} parameters "
                                      f"tested, the chance of flagging any parameter that does not differ at most "
                                      f"{FAMILY_ALPHA:g}. significant_holm decides which parameters differ.")},
            "note": ("ratio = median_b / median_a; 90 % interval by the delta method on the log medians, each "
                     "median's 90 % interval half-width taken as 1.645 standard errors; significant: the "
                     "interval excludes 1; p_value: the same test's two-sided normal p")}


def holm(params: dict, alpha: float | None = None) -> int:
    """Set ``significant_holm`` of each entry of ``params`` (Holm's step-down rule at family level ``alpha``).

    The entries with a ``p_value`` are sorted by it; the k-th smallest (k = 0, 1, ...) of m is
    significant when it and every smaller one are below ``alpha / (m - k)``. Entries without a
    p-value get None. Returns m, the number of parameters tested.
    """
    alpha = FAMILY_ALPHA if alpha is None else alpha
    tested = sorted((e["p_value"], name) for name, e in params.items() if _num(e.get("p_value")) is not None)
    m = len(tested)
    still = True
    for k, (p, name) in enumerate(tested):
        still = still and p < alpha / (m - k)
        params[name]["significant_holm"] = bool(still)
    for e in params.values():
        e.setdefault("significant_holm", None)
    return m


def _p_two_sided(estimate: float, se: float):
    """Two-sided normal p-value of ``estimate`` against 0 with standard error ``se`` (None without a positive se)."""
    from scipy.special import ndtr

    if not (np.isfinite(se) and se > 0 and np.isfinite(estimate)):
        return None
    return float(2.0 * ndtr(-abs(estimate) / se))

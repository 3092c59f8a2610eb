"""One wafer's device model, for ``hfox-fit export --wafer``.

A fit of several wafers has one pooled :class:`~hfox_fit.model.DeviceModel`. The model of one
wafer is built from the stored per-train table the same way as the pooled one: the D2D table
(:func:`~hfox_fit.fitting.campaign.d2d_rows`, over the whole campaign, so that the break
identifiability rule is the campaign's) narrowed to the wafer's trains, then
:class:`~hfox_fit.fitting.d2d.D2DFitter` (same families, truncation, bootstrap intervals,
fallback, correlations and C2C laws). The noise (pink, RTN and the RTN amplitude law) is a
property of a cell's reads and stays the pooled one; a condition law keeps its slopes, its
intercepts moved by the wafer's median against the pooled one. ``meta`` says all of this.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .._json import json_safe
from ..exceptions import FitError
from ..model import ConditionLaw, DeviceModel, scaled_law
from ._medians import law_misses_sample
from .campaign import d2d_rows
from .d2d import D2DFitter

__all__ = ["fit_wafer_model", "wafer_names"]

#: what the wafer's D2D section keeps of each law's fit (the rest is in ``hfox-fit fit --summary``)
_KEPT = ("family", "params", "bounds", "median", "median_ci90", "sample_median", "sample_median_ci90",
         "params_stderr", "params_ci90", "ks", "n_used", "n_censored", "n_excluded", "note")


def wafer_names(cells: pd.DataFrame) -> list[str]:
    """The wafers of a fit's per-train table, sorted (empty when it has no ``wafer`` column)."""
    if "wafer" not in getattr(cells, "columns", ()):
        return []
    return sorted(cells["wafer"].astype(str).unique())


def fit_wafer_model(cells: pd.DataFrame, pooled: DeviceModel, wafer: str, *, bootstrap: int = 200,
                    random_state: int = 0, max_masked: float = 0.3):
    """The model of ``wafer``: its D2D laws, correlations and C2C laws refitted on its trains.

    Parameters
    ----------
    cells : DataFrame
        The fit's per-train table (:attr:`CampaignResult.cells`), all wafers.
    pooled : DeviceModel
        The fit's pooled model (its law, noise and condition law are reused).
    wafer : str
        The wafer's name.
    bootstrap, random_state, max_masked
        As in :func:`~hfox_fit.fitting.fit_campaign` (the D2D fit's bootstrap replicates and seed,
        the masked share above which a train's drift parameters are left out).

    Returns
    -------
    (DeviceModel, dict)
        The wafer's model (``meta["wafer"]`` names it) and its D2D section, per parameter the
        law with ``median`` and ``median_ci90`` (as the summary's top-level ``d2d``).

    Raises
    ------
    FitError
        The fit has one wafer (there is nothing to choose), the wafer is not in it (the message
        names the wafers there), or none of its trains could be fitted.
    """
    names = wafer_names(cells)
    wafer = str(wafer)
    if len(names) < 2:
        raise FitError(f"--wafer {wafer}: the fit has {'one wafer, ' + names[0] if names else 'no wafer column'}; "
                       "its pooled model is that wafer's. Leave out --wafer.")
    if wafer not in names:
        raise FitError(f"no wafer {wafer!r} in the fit; its wafers: {', '.join(names)}.")
    params = [p for p in pooled.d2d if p != "rtn_amplitude"]
    rows = d2d_rows(cells, pooled.law, max_masked)
    mine = rows[rows["wafer"].astype(str).to_numpy() == wafer]
    n_ok = int(mine["flag"].eq("ok").sum()) if "flag" in mine else len(mine)
    if n_ok == 0:
        raise FitError(f"wafer {wafer}: none of its {len(mine)} train(s) was fitted (all flagged); "
                       "there is no model to export for it.")
    d2d = D2DFitter(params, bootstrap=bootstrap, random_state=random_state, fallback=True).fit(mine)
    laws, section = dict(d2d.laws_), {}
    for p in params:
        f = d2d.fits_.get(p)
        if f is not None:
            section[p] = {k: v for k, v in f.to_dict().items() if k in _KEPT}
            laws[p] = _to_sample_median(laws[p], section[p])
        else:
            law = laws[p]
            section[p] = {**law.to_dict(), "median": law.median(), "median_ci90": None,
                          "note": next((n for n in d2d.notes_ if n.startswith(f"D2D {p}:")), "fallback law")}
    corr = d2d.correlation_
    meta = {**pooled.meta, "wafer": wafer, "wafer_n_trains": int(len(mine)), "wafer_n_trains_fitted": n_ok,
            "wafer_note": ("D2D laws, correlations and C2C laws refitted on this wafer's trains; pink and RTN "
                           "noise and the RTN amplitude law are the pooled fit's"),
            "wafer_d2d_median_ci90": {p: section[p].get("median_ci90") for p in params}}
    model = replace(
        pooled,
        d2d={**{p: laws[p] for p in params}, "rtn_amplitude": pooled.d2d["rtn_amplitude"]},
        correlation_names=list(corr["names"]),
        correlation=np.asarray(corr["copula"], float),
        c2c={p: c["law"] for p, c in d2d.c2c_.items() if c.get("significant")},
        meta=json_safe(meta),
        condition_law=_moved_condition_law(pooled, laws),
    )
    if model.condition_law is not None:
        model.meta["wafer_note"] += ("; the condition law's intercepts are moved by this wafer's median against "
                                     "the pooled one (same slopes)")
    return model, json_safe({"d2d": section, "notes": list(d2d.notes_)})


def _to_sample_median(law, entry: dict):
    """``law``, moved to its cells' median when its own median misses that median's 90 % interval.

    The same rule as the summary's per-wafer medians (:func:`~hfox_fit.fitting.wafers.wafer_sections`):
    a law that misses its own cells' median (a family that fits the bulk only roughly) would hand
    the wafer a median its cells do not have. The law keeps its family and shape (scaled for a
    positive median, shifted otherwise); ``entry`` (the parameter's section) records both medians.
    """
    why = law_misses_sample(entry)
    if not why:
        return law
    target, now = float(entry["sample_median"]), float(law.median())
    moved = scaled_law(law, target / now) if target > 0 and now > 0 else scaled_law(law, 1.0, target - now)
    entry.update(law_median=entry["median"], law_median_ci90=entry.get("median_ci90"), median=moved.median(),
                 median_ci90=entry["sample_median_ci90"], median_from="sample", params=moved.params,
                 bounds=list(moved.bounds) if moved.bounds is not None else None)
    entry["note"] = "; ".join(filter(None, [entry.get("note"), f"{why}; the law is moved to the sample median "
                                            "(same family and shape), median_ci90 is the sample's, params_stderr and params_ci90 are the fitted law's"]))
    return moved


def _moved_condition_law(pooled: DeviceModel, laws: dict) -> ConditionLaw | None:
    """The pooled condition law with each intercept moved to the wafer's median (log: ratio; linear: difference)."""
    law = pooled.condition_law
    if law is None:
        return None
    params = {}
    for name, c in law.params.items():
        c = dict(c)
        if name in laws and name in pooled.d2d:
            now, was = laws[name].median(), pooled.d2d[name].median()
            if c["scale"] == "log" and now > 0 and was > 0:
                c["a"] = float(c["a"] + np.log(now / was))
            elif c["scale"] == "linear" and np.isfinite(now - was):
                c["a"] = float(c["a"] + now - was)
        params[name] = c
    return replace(law, params=params)

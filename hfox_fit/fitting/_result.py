"""Result objects of a fit: one estimate, one fitted law, one campaign.

In the lmfit / scikit-learn manner: :class:`ParamEstimate` is a value with its
standard error and 90 % interval (``None`` where unknown, never 0);
:class:`FitResult` is one fitted law (its parameters, statistics and a text
report); :class:`CampaignResult` is the whole fit of a campaign, the one object
the command line, the report and the export read, built fresh by the fitter or
loaded back from a campaign store.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import pandas as pd

from .correlation import COPULA_NOTE

__all__ = ["ParamEstimate", "FitResult", "CampaignResult", "describe_summary"]

# units of what the summary reports (w = ln(R/R0) is dimensionless)
_UNITS = {"m1": "1/pulse", "m2": "1/pulse", "t_star": "pulse", "c1": "1", "r0": "Ohm", "a": None, "b": "1",
          "tau": "pulse", "rtn_amplitude": "1", "std": "1", "exponent": "1", "white_std": "1",
          "p_up": "1/pulse", "p_down": "1/pulse"}


def _number(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _interval(ci):
    return None if ci is None else (float(ci[0]), float(ci[1]))


@dataclass(frozen=True)
class ParamEstimate:
    """A fitted number with its uncertainty.

    Attributes
    ----------
    value : float or None
    stderr : float or None
        Standard error; ``None`` when it is not known (never 0 for "unknown").
    ci90 : (float, float) or None
        90 % interval; ``None`` when it is not known.
    unit : str or None
    note : str or None
        Why there is no uncertainty, or how it was obtained.
    """

    value: float | None
    stderr: float | None = None
    ci90: tuple | None = None
    unit: str | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr,
                "ci90": list(self.ci90) if self.ci90 is not None else None, "unit": self.unit, "note": self.note}

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        text = f"{self.value:.5g}"
        if self.stderr is not None:
            text += f" +/- {self.stderr:.2g}"
        if self.ci90 is not None:
            text += f" [{self.ci90[0]:.5g}, {self.ci90[1]:.5g}]"
        if self.unit and self.unit != "1":
            text += f" {self.unit}"
        return text


@dataclass
class FitResult:
    """One fitted law: its parameters (each a :class:`ParamEstimate`) and its statistics.

    Attributes
    ----------
    name : str
        What was fitted, e.g. ``"d2d.m1"``, ``"pink"``, ``"rtn"``.
    params : dict of str to ParamEstimate
    stats : dict
        Family, goodness of fit (KS), scores, counts: whatever the fit reports.
    note : str or None
    """

    name: str
    params: dict
    stats: dict = field(default_factory=dict)
    note: str | None = None

    def report(self) -> str:
        lines = [f"[[{self.name}]]"]
        lines += [f"    {k:14s} {v}" for k, v in self.params.items()]
        for k, v in self.stats.items():
            if not isinstance(v, (dict, list)):
                lines.append(f"    {k:14s} {v}")
        if self.note:
            lines.append(f"    note: {self.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": {k: v.to_dict() for k, v in self.params.items()},
                "stats": dict(self.stats), "note": self.note}


def _d2d_result(name: str, d: dict) -> FitResult:
    unit = _UNITS.get(name)
    params = {"median": ParamEstimate(_number(d.get("median")), None, _interval(d.get("median_ci90")), unit,
                                      None if d.get("median_ci90") else "no interval: fallback law")}
    ses, cis = d.get("params_stderr") or {}, d.get("params_ci90") or {}
    for k, v in (d.get("params") or {}).items():
        ci = cis.get(k)
        if ci is not None:
            why = "bootstrap over cells, conditional on the family"
        elif k in cis or cis:
            why = "held fixed by the fit (not a free parameter of the family)" if k not in cis else \
                "the bootstrap gave too few finite replicates"
        else:
            why = "no interval: fallback law or no bootstrap"
        params[k] = ParamEstimate(_number(v), _number(ses.get(k)), _interval(ci), unit if k in ("loc", "scale") else "1",
                                  why)
    stats = {k: d[k] for k in ("family", "ks", "n_used", "n_cells", "n_censored", "bounds", "family_share")
             if k in d}
    return FitResult(f"d2d.{name}", params, stats, d.get("note"))


def _correlation_result(d: dict) -> FitResult:
    """Each pair's Gaussian-copula correlation (``copula a~b``) with its bootstrap interval."""
    names, cop = d["names"], d["copula"]
    ses, cis = d.get("copula_stderr"), d.get("copula_ci90")
    params = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ci = cis[i][j] if cis else None
            params[f"copula {names[i]}~{names[j]}"] = ParamEstimate(
                _number(cop[i][j]), _number(ses[i][j]) if ses else None, _interval(ci), "1",
                "bootstrap over cells" if ci is not None else "no interval: fewer than 5 cells or no bootstrap")
    return FitResult("correlation", params, {"names": ", ".join(names)}, d.get("note") or COPULA_NOTE)


def _noise_result(name: str, d: dict, keys) -> FitResult:
    params = {k: ParamEstimate(_number(d.get(k)), _number(d.get(k + "_stderr")), _interval(d.get(k + "_ci90")),
                               _UNITS.get(k)) for k in keys if k in d}
    stats = {k: v for k, v in d.items() if not any(k == p or k.startswith(p + "_") for p in keys)
             and k != "note" and not isinstance(v, dict)}
    return FitResult(name, params, stats, d.get("note"))


def describe_summary(s: dict, store="") -> str:
    """The short text ``hfox-fit fit`` prints for a fit summary: counts, law scores, each D2D median, noise."""
    dev = s["devices"]
    flagged = ", ".join(f"{k} {v}" for k, v in dev["flagged"].items() if v) or "none"
    scores = s["drift"]["scores"]
    best = scores[s["drift"]["law"]]["aic"]
    lines = [
        f"fitted {dev['fitted']} of {dev['total']} cells in {store} (flagged: {flagged})",
        "drift law: " + s["drift"]["law"] + " ("
        + ", ".join(f"{k} dAIC {v['aic'] - best:+.3g}" for k, v in scores.items()) + ")",
        "[lo, hi]: 90 % intervals of the fit's own bootstrap" + (" (the calibrated ones at the end)"
                                                                 if s.get("calibration") else ""),
    ]
    for p, d in s["d2d"].items():
        lines.append(f"  {p:8s} {d['family']:12s} median {_median_with_ci(d)}")
    lines += _describe_conditions(s)
    lines += _describe_wafers(s)
    pk, rt = s["pink"], s["rtn"]
    lines.append(f"pink noise: std {_with_ci(pk['std'], pk.get('std_ci90'), '.3g')}, "
                 f"exponent {_with_ci(pk['exponent'], pk.get('exponent_ci90'), '.3g')}")
    amp = rt.get("amplitude") or {}
    p_down = "n/a (no return from the high state seen)" if rt["p_down"] is None else _with_ci(
        rt["p_down"], rt.get("p_down_ci90"), ".3g")
    lines.append(f"RTN: p_up {_with_ci(rt['p_up'], rt.get('p_up_ci90'), '.3g')}, p_down {p_down}, amplitude median "
                 + _with_ci(amp.get("median"), amp.get("median_ci90"), ".3g", why=_amplitude_why(amp)))
    lines += _describe_calibration(s)
    return "\n".join(lines)


def _with_ci(value, ci, fmt=".4g", why="the summary's note says why") -> str:
    """``value [lo, hi]`` of a printed estimate, ``value (no interval: why)`` where the summary has none,
    ``n/a`` where it has no value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if ci is not None and len(ci) == 2 and None not in ci:
        return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"
    return f"{value:{fmt}} (no interval: {why})"


def _amplitude_why(amp: dict) -> str:
    """Why the RTN amplitude law's median has no interval, in words."""
    n = amp.get("n_cells")
    if n is not None and n < 5:
        return f"{n} cell(s) showed RTN, 5 needed"
    if amp.get("family") == "uniform":  # its edge is the largest amplitude seen, which a resample keeps or loses
        return "a uniform law's edge, set by the largest amplitude seen, has no bootstrap interval"
    return "the summary's note says why"


def _median_with_ci(d: dict) -> str:
    """A D2D law's median with its interval: none for the fallback law of too few values (no cells counted), or
    a law fitted without bootstrap or whose bootstrap replicates failed."""
    why = ("fallback law: too few values to fit a family" if d.get("n_used") is None
           else "no bootstrap, or too few of its replicates succeeded")
    return _with_ci(d["median"], d.get("median_ci90"), why=why)


def _describe_calibration(s: dict) -> list:
    """The lines on a calibration by simulation (``fit --calibrate``): the medians' calibrated intervals."""
    cal = s.get("calibration")
    if not cal:
        return ["population intervals: the fit's own bootstrap, not calibrated; over simulated wafers some cover "
                "less than 90 % (`hfox-fit calibrate STORE` calibrates them)"]
    medians = []
    for name, q in cal["quantities"].items():
        if name.startswith("median ") and q.get("ci90"):
            lo, hi = q["ci90"]
            medians.append(f"  {name[len('median '):]:8s} median {q['estimate']:.4g} [{lo:.4g}, {hi:.4g}] "
                           f"(bias {q['bias']:+.3g})")
    for name in ("pink std", "rtn p_up", "rtn p_down"):
        q = cal["quantities"].get(name)
        if q and q.get("ci90"):
            lo, hi = q["ci90"]
            medians.append(f"  {name:17s} {q['estimate']:.3g} [{lo:.3g}, {hi:.3g}] (bias {q['bias']:+.3g})")
    head = (f"calibrated by {cal['replicates']} simulated wafers ({cal['seconds']:.0f} s; every quantity in the "
            "summary's 'calibration' and the report)")
    lines = [head + (":" if medians else ": too few replicates gave each median for an interval (5 at least)")]
    if cal.get("pooled"):
        lines.append(f"  (each simulated wafer is one population from the pooled laws, not the {cal['pooled']} one "
                     "by one; the per-condition and per-wafer medians are not calibrated)")
    lines += medians
    return lines


def _describe_conditions(s: dict) -> list:
    """The lines on the pulse conditions (none with one condition): each condition's medians, the slopes."""
    conds = s.get("conditions")
    if not conds:
        return []
    lines = [f"pulse conditions: {len(conds)} (the laws above pool them)"]
    for c in conds:
        where = "unknown condition" if c.get("v_pulse") is None else f"{c['v_pulse']:g} V, {c['pulse_width']:g} s"
        meds = ", ".join(f"{p} {_median_with_ci(d)}" for p, d in c.get("d2d", {}).items()
                         if d.get("median") is not None)
        lines.append(f"  {where:22s} {c['n_cells']} cells: {meds}")
    law = s.get("condition_law")
    for p, e in (law or {}).get("params", {}).items():
        if "a" not in e:
            continue
        slope = "; ".join(f"{b} {e[b]:+.3g} +- {e[b + '_stderr']:.2g}" for b in ("b_v", "b_w")
                          if e.get(b + "_stderr") is not None)
        lines.append(f"  condition law {p:7s} ({e['scale']} median): {slope}")
    return lines


def _describe_wafers(s: dict) -> list:
    """The lines on the wafers (none with one wafer): each wafer's medians, the variance shares."""
    wafers = s.get("wafers")
    if not wafers:
        return []
    lines = [f"wafers: {len(wafers)} (the laws above pool them; `hfox-fit compare STORE --wafers A B` tests two)"]
    for w in wafers:
        meds = ", ".join(f"{p} {_median_with_ci(d)}" for p, d in w.get("d2d", {}).items()
                         if d.get("median") is not None)
        lines.append(f"  {w['wafer']:8s} {w['n_cells']} cells: {meds}")
    lines.append("variance shares, wafer / die / cell / cycle (- where not separable; moment estimates, "
                 "no interval: the summary's 'variance' notes say how each was split):")
    for p, v in (s.get("variance") or {}).items():
        shares = " / ".join("-" if v.get(k) is None else f"{v[k]:.2f}" for k in ("wafer", "die", "cell", "cycle"))
        lines.append(f"  {p:8s} {shares} ({v.get('scale')} scale)")
    return lines


_DEPRECATED = {"cells_": "cells", "summary_": "summary()", "model_": "model", "arrays_": "arrays",
               "law_": "law", "law_fits_": "law_fits"}


class CampaignResult:
    """The fit of a campaign: per-cell table, device model, summary, validation arrays.

    Built by :class:`~hfox_fit.fitting.CampaignFitter` (or :func:`~hfox_fit.fitting.fit_campaign`),
    or loaded back from a campaign store with :meth:`load`.

    Attributes
    ----------
    cells : DataFrame
        One row per (cell, cycle): the drift law's parameters with ``*_stderr``, ``r0``, flags.
    model : DeviceModel
    arrays : dict of str to ndarray
        Residual spectrum, ``w`` quantiles per pulse, example traces, per-cell D2D values.
    law : str
        The drift law chosen.
    law_fits : dict of str to lmfit ModelResult
        Each law fitted to the campaign's median ``w(t)`` (fresh fits only; empty when loaded).
    fitted_at : str or None
        When the fit was saved (loaded results only).
    drift, noise, d2d : fitters or None
        The fitters behind a fresh result (``None`` when loaded from a store).
    """

    def __init__(self, cells: pd.DataFrame, summary: dict, model, arrays: dict, *, law_fits: dict | None = None,
                 fitted_at: str | None = None, history: list | None = None, drift=None, noise=None, d2d=None):
        self.cells = cells
        self._summary = summary
        self.model = model
        self.arrays = arrays
        self.law = summary.get("drift", {}).get("law") or getattr(model, "law", None)
        self.law_fits = law_fits or {}
        self.fitted_at = fitted_at
        self.history = history or []
        self.drift, self.noise, self.d2d = drift, noise, d2d

    # ------------------------------------------------------------ what the user reads
    def summary(self) -> dict:
        """The summary JSON (devices, trains, drift, d2d, correlation, c2c, pink, rtn, notes)."""
        return self._summary

    @property
    def params(self) -> dict:
        """Every fitted law as a :class:`FitResult`: ``d2d.<parameter>``, ``pink``, ``rtn``, ``rtn.amplitude``,
        ``correlation`` (each pair's copula correlation)."""
        s = self._summary
        out = {f"d2d.{p}": _d2d_result(p, d) for p, d in s.get("d2d", {}).items()}
        if "pink" in s:
            out["pink"] = _noise_result("pink", s["pink"], ("std", "exponent", "white_std"))
        if "rtn" in s:
            out["rtn"] = _noise_result("rtn", s["rtn"], ("p_up", "p_down"))
            if isinstance(s["rtn"].get("amplitude"), dict):
                out["rtn.amplitude"] = _d2d_result("rtn_amplitude", s["rtn"]["amplitude"])
        if len(s.get("correlation", {}).get("names", [])) >= 2:
            out["correlation"] = _correlation_result(s["correlation"])
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """The per-(cell, cycle) table (a copy)."""
        return self.cells.copy()

    def add_calibration(self, block: dict) -> None:
        """Put a calibration by simulation (``hfox_fit.calibration.Calibration.to_dict()``) in the summary."""
        self._summary["calibration"] = block

    def describe(self, store="") -> str:
        """The short text ``hfox-fit fit`` prints: counts, law scores, each D2D median, noise."""
        return describe_summary(self._summary, store)

    def report(self) -> str:
        """Plain-text report: law scores, lmfit fits of the median curve, every fitted law with its uncertainty."""
        s = self._summary
        lines = ["[[Drift law]]", f"    chosen: {self.law} (lowest total AIC)"]
        best = s["drift"]["scores"][self.law]["aic"]
        for name, sc in s["drift"]["scores"].items():
            lines.append(f"    {name:10s} AIC {sc['aic']:.6g} (dAIC {sc['aic'] - best:+.4g})  BIC {sc['bic']:.6g}")
        for name, res in self.law_fits.items():
            lines.append(f"[[lmfit: {name} on the median w(t)]]")
            lines.append("    " + res.fit_report(show_correl=False).replace("\n", "\n    "))
        lines += [r.report() for r in self.params.values()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"CampaignResult(law={self.law!r}, trains={len(self.cells)}, "
                f"fitted={int(self.cells['flag'].eq('ok').sum()) if 'flag' in self.cells else '?'})")

    # ------------------------------------------------------------ store round trip
    def save(self, store, *, dies: dict | None = None, law: str | None = None) -> None:
        """Save into a campaign store (a :class:`~hfox_fit.store.CampaignStore` or a path), atomically.

        ``dies`` and ``law``: each die's own result and the law asked for, kept beside the fit so
        that some dies can be refitted and pooled again (see :meth:`CampaignFitter.die_trees`).
        """
        store = _as_store(store)
        store.save_fit(self.cells, self._summary, self.model.to_dict(), self.arrays, dies=dies, law=law)

    @classmethod
    def load(cls, store) -> CampaignResult:
        """Load the fit saved in a campaign store (a ``CampaignStore`` or a path).

        Raises
        ------
        StoreError
            No store, no fit in it, or a saved model that cannot be read.
        """
        from ..exceptions import StoreError
        from ..model import DeviceModel

        store = _as_store(store)
        stored = store.load_fit()
        try:
            model = DeviceModel.from_dict(stored.model)
        except (KeyError, TypeError, ValueError) as err:  # FitError is a ValueError too
            name = getattr(getattr(store, "path", None), "name", str(store))
            raise StoreError(f"the model saved in {name!r} is incomplete ({err!r}); fit again.") from err
        return cls(stored.cells, stored.summary, model, stored.arrays, fitted_at=stored.fitted_at,
                   history=stored.history)

    # ------------------------------------------------------------ one release of the old names
    def __getattr__(self, name):
        if name in _DEPRECATED:
            warnings.warn(f"CampaignResult.{name} is deprecated and goes in the next release; use "
                          f".{_DEPRECATED[name]}", DeprecationWarning, stacklevel=2)
            new = _DEPRECATED[name]
            return self.summary() if new == "summary()" else getattr(self, new)
        if name in ("drift_", "noise_", "d2d_"):
            warnings.warn(f"CampaignResult.{name} is deprecated and goes in the next release; use "
                          f".{name[:-1]}", DeprecationWarning, stacklevel=2)
            return getattr(self, name[:-1])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _as_store(store):
    if hasattr(store, "save_fit") and hasattr(store, "load_fit"):
        return store
    # a path: the store layer sits above fitting, so it is imported only here
    from ..store import CampaignStore

    return CampaignStore(store)

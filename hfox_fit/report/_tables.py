"""The fit tables of the report: what the fit summary says, beside what the report measured.

Cells per flag (fit table and summary), the flagged cells themselves (device,
flag, reason: the first :data:`FLAGGED_CAP`, shared among the flags, and the
count of the rest), how closely the fitted laws follow the reads (goodness of
fit over the usable cells), the drift-law scores (AIC/BIC), the D2D laws with
their intervals (the family cell names the candidates the data could not tell
from it, within 2 AIC), the summary's correlations, and the pink and RTN
noise laws against the model and the noise figure's numbers. A part the summary
lacks is a note, not an error.
"""

from __future__ import annotations

import numpy as np

from .._json import finite_or_none as _num


def _fit_flags():
    """The fit's flag names (:data:`hfox_fit.fitting.flags.FLAG_NAMES`), in table order; ``"ok"`` is none.

    Imported when a report is built, not with this module: :mod:`hfox_fit.fitting`
    loads lmfit, which loads matplotlib, and importing :mod:`hfox_fit.report` must not.
    """
    from ..fitting.flags import FLAG_NAMES

    return FLAG_NAMES


def _flag_counts(flag):
    """Fit-table rows per value of ``flag``: ``"ok"``, each fit flag, then ``"other"`` if any."""
    counts = {f: int((flag == f).sum()) for f in ("ok", *_fit_flags())}
    other = int(len(flag) - sum(counts.values()))
    if other:
        counts["other"] = other
    return counts


#: Flagged cells listed by name in the report (the rest are counted).
FLAGGED_CAP = 50
#: Goodness-of-fit columns of the fit table (:mod:`hfox_fit.fitting._tables`) the report summarises.
_GOF = ("resid_std", "misfit", "fit_r2")


def _flagged_cells(cells, cap: int = FLAGGED_CAP):
    """The flagged rows of the fit table: up to ``cap`` of them (device, flag, reason), and how many in all.

    The list is shared among the flags (each gets an equal part of ``cap``, what
    one does not use goes to the others) so a rare flag is not hidden behind a
    common one; within a flag, rows keep the table's order.
    """
    empty = {"total": 0, "shown": 0, "cap": int(cap), "by_flag": {}, "rows": []}
    if "flag" not in cells.columns or not len(cells):
        return empty
    flag = cells["flag"].astype(str).to_numpy()
    bad = np.nonzero(flag != "ok")[0]
    if bad.size == 0:
        return empty
    order = [f for f in _fit_flags() if (flag[bad] == f).any()]
    order += sorted(set(flag[bad]) - set(order))
    groups = {f: bad[flag[bad] == f] for f in order}
    take = {f: 0 for f in order}
    left = int(cap)
    while left > 0 and any(take[f] < len(groups[f]) for f in order):
        open_ = [f for f in order if take[f] < len(groups[f])]
        share = max(left // len(open_), 1)
        for f in open_:
            k = min(share, len(groups[f]) - take[f], left)
            take[f] += k
            left -= k
    chosen = np.concatenate([groups[f][: take[f]] for f in order])
    rows = []
    ids = [c for c in ("wafer", "die", "device", "cycle") if c in cells.columns]
    for i in chosen:
        r = cells.iloc[int(i)]
        row = {c: (int(r[c]) if c == "cycle" else str(r[c])) for c in ids}
        row["flag"] = str(r["flag"])
        row["reason"] = str(r["flag_reason"]) if "flag_reason" in cells.columns else ""
        for c in ("misfit", "fit_r2", "max_gap"):
            row[c] = _num(r[c]) if c in cells.columns else None
        rows.append(row)
    return {"total": int(bad.size), "shown": len(rows), "cap": int(cap),
            "by_flag": {f: int(len(groups[f])) for f in order}, "rows": rows}


def _goodness_of_fit(cells, usable, notes):
    """Median and 90th / 99th percentiles of the goodness-of-fit columns over the usable rows (None where absent)."""
    out = {"n": int(np.count_nonzero(usable))}
    missing = [c for c in _GOF if c not in cells.columns]
    for c in _GOF:
        v = cells[c].to_numpy(dtype=float)[usable] if c in cells.columns else np.array([])
        v = v[np.isfinite(v)]
        q = (0.5, 0.1, 0.01) if c == "fit_r2" else (0.5, 0.9, 0.99)  # the bad side of each
        out[c] = {"n": int(v.size), **{f"q{round(100 * x):02d}": (float(np.quantile(v, x)) if v.size else None)
                                       for x in q}}
    if missing:
        notes.append(f"the fit table has no goodness-of-fit column(s) {missing} (a fit stored before they existed): "
                     "re-run the fit to see how closely each law follows its reads.")
    return out


def _sec(d, key):
    """``d[key]`` when it is a dict, else an empty dict (a summary may lack or garble a part)."""
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def _family_label(family, bounds, tied):
    """The law table's family cell: the family, and the candidates the data could not tell from it."""
    if family is None or not tied:
        return family
    chosen = str(family) + ("_truncated" if bounds is not None else "")
    others = [k for k in tied if k != chosen]
    if not others:
        return family
    return f"{family} (indistinguishable within 2 AIC: {', '.join(others)}; kept by the choice rule)"


def _tables(summary, cells, usable, flag_counts, metrics, model, units, notes):
    tables = {}
    devices = _sec(summary, "devices")
    flagged = _sec(devices, "flagged")
    tables["flags"] = {
        "fit_table": flag_counts,
        "summary": {"total": devices.get("total"), "fitted": devices.get("fitted"),
                    **{f: flagged.get(f) for f in _fit_flags()}},
    }
    if not devices:
        notes.append("the fit summary has no 'devices' counts.")
    tables["flagged"] = _flagged_cells(cells)
    tables["goodness_of_fit"] = _goodness_of_fit(cells, usable, notes)
    drift = _sec(summary, "drift")
    scores = {str(k): (v if isinstance(v, dict) else {}) for k, v in _sec(drift, "scores").items()}
    rows = []
    if scores:
        aics = {k: _num(v.get("aic")) for k, v in scores.items()}
        bics = {k: _num(v.get("bic")) for k, v in scores.items()}
        best_aic = min((a for a in aics.values() if a is not None), default=None)
        best_bic = min((b for b in bics.values() if b is not None), default=None)
        for name in sorted(scores, key=lambda k: (aics[k] is None, aics[k] or 0.0)):
            aic, bic = aics[name], bics[name]
            rows.append({"law": name, "aic": aic, "bic": bic,
                         "delta_aic": aic - best_aic if aic is not None and best_aic is not None else None,
                         "delta_bic": bic - best_bic if bic is not None and best_bic is not None else None,
                         "chosen": name == drift.get("law")})
    else:
        notes.append("the fit summary has no drift-law scores (AIC/BIC).")
    tables["scores"] = {"law": drift.get("law"), "rows": rows}
    d2d = _sec(summary, "d2d")
    pfig = metrics["figures"].get("parameters", {}).get("params", {})
    cal = _sec(summary, "calibration")  # (`hfox-fit fit --calibrate N`, `hfox-fit calibrate`)
    calibrated = _sec(cal, "quantities")
    prow = []
    for p in list(d2d) + [p for p in model.parameter_names if p not in d2d and p in cells.columns]:
        s = _sec(d2d, p)
        se_col = f"{p}_stderr"
        se = cells[se_col].to_numpy(dtype=float)[usable] if se_col in cells.columns else np.array([])
        se = se[np.isfinite(se)]
        tied = [str(k) for k in s.get("indistinguishable") or []]
        prow.append({"param": p, "unit": units.get(p, ""), "family": _family_label(s.get("family"), s.get("bounds"), tied),
                     "family_fitted": s.get("family"), "indistinguishable": tied,
                     "params": s.get("params"), "params_ci90": s.get("params_ci90"), "bounds": s.get("bounds"),
                     "median": s.get("median"),
                     "median_ci90": s.get("median_ci90"), "ks_summary": s.get("ks"),
                     # (only with a calibration: the tables of a report without one stay as they were)
                     **({"median_calibrated_ci90": _sec(calibrated, f"median {p}").get("ci90")} if calibrated else {}),
                     "ks_report": pfig.get(p, {}).get("ks"),
                     "median_measured": pfig.get(p, {}).get("median_measured"),
                     "median_measured_note": pfig.get(p, {}).get("median_measured_note"),
                     "median_cell_stderr": float(np.median(se)) if len(se) else None,
                     "ks_method": pfig.get(p, {}).get("ks_method"),
                     "mass_beyond_trains": pfig.get(p, {}).get("mass_beyond"),
                     "extrapolated": bool(pfig.get(p, {}).get("extrapolated", False)),
                     "in_summary": p in d2d, "note": s.get("note")})
    if not d2d:
        notes.append("the fit summary has no D2D laws.")
    tables["d2d"] = prow
    corr = _sec(summary, "correlation")
    tables["correlation"] = {"names": corr.get("names"), "spearman": corr.get("spearman"),
                             "copula": corr.get("copula"), "spearman_ci90": corr.get("spearman_ci90"),
                             "copula_ci90": corr.get("copula_ci90"), "note": corr.get("note")}
    pink = _sec(summary, "pink")
    nfig = metrics["figures"].get("noise", {})
    tables["pink"] = {"std": pink.get("std"), "exponent": pink.get("exponent"),
                      "std_ci90": pink.get("std_ci90"), "exponent_ci90": pink.get("exponent_ci90"),
                      "white_std": pink.get("white_std"), "white_std_ci90": pink.get("white_std_ci90"),
                      "model_alpha": model.pink.alpha, "model_std": model.pink.std,
                      "model_exponent": model.pink.exponent,
                      "residual_std_measured": nfig.get("residual_std_measured"),
                      "residual_std_simulated": nfig.get("residual_std_simulated"),
                      "slope_model": nfig.get("spectrum", {}).get("slope_model"),
                      "slope_measured": nfig.get("spectrum", {}).get("slope_measured"),
                      "slope_simulated": nfig.get("spectrum", {}).get("slope_simulated")}
    rtn = _sec(summary, "rtn")
    dw = nfig.get("dwell", {})
    tables["rtn"] = {"p_up": rtn.get("p_up"), "p_down": rtn.get("p_down"),
                     "p_up_ci90": rtn.get("p_up_ci90"), "p_down_ci90": rtn.get("p_down_ci90"),
                     "amplitude_median": _sec(rtn, "amplitude").get("median"),
                     "amplitude_median_ci90": _sec(rtn, "amplitude").get("median_ci90"),
                     "model_p_up": model.rtn.p_up, "model_p_down": model.rtn.p_down,
                     "model_amplitude_median": (model.d2d["rtn_amplitude"].median()
                                                if "rtn_amplitude" in model.d2d else None),
                     "fraction_high_measured": dw.get("fraction_high_measured"),
                     "fraction_high_simulated": dw.get("fraction_high_simulated"),
                     **{f"mean_{st}_{side}": dw.get(st, {}).get(f"mean_{side}")
                        for st in ("high", "low") for side in ("measured", "simulated")}}
    for key in ("pink", "rtn", "correlation"):
        if not _sec(summary, key):
            notes.append(f"the fit summary has no '{key}' section.")
    if isinstance(cal.get("quantities"), dict):
        tables["calibration"] = cal
    return tables

"""The report's figure sections: what each figure shows, its numbers and its caption.

Each section reads the collected cells (:mod:`._collect`), computes its
statistics (:mod:`._stats`), writes them to ``metrics["figures"][name]`` and
adds ``figs[name] = (draw, size, caption)``; ``draw`` fills a matplotlib figure
through :mod:`hfox_fit.plotting` and runs only when the page is rendered.
Sections: population (traces, band, ECDF), parameters (histograms and QQ,
pairs, C2C), noise (spectrum, autocorrelation, RTN dwell times); the maps are in :mod:`._maps`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ..laws import get_law
from ._collect import _evaluable, _law_inputs, _pad
from ._html import _fmt
from ._layout import parameter_axes, parameter_figsize
from ._stats import (
    _acf,
    _dwell_hist,
    _dwell_runs,
    _geometric_windowed,
    _law_check,
    _model_spearman,
    _noise_rows,
    _normal_scores,
    _pink_acf,
    _pink_psd,
    _quantiles,
    _slope,
    _spearman,
    _welch,
)


def _population_section(col, model, pnames, pulses, metrics, figs, samples, notes,
                        n_usable_table, cap):
    P = col.n_pulses
    wm = _pad(col.w_meas, P)
    ws = _pad(col.w_sim, P)
    t = np.arange(P)
    n = len(wm)
    sub = "" if n >= n_usable_table else f" (a random {n:,} of {n_usable_table:,}, cap {cap:,})"
    # Traces: typical and extreme cells.
    tail = max(5, P // 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        final = np.nanmedian(wm[:, -tail:], axis=1).astype(float)
    rms = np.concatenate(col.rms)
    ids = pd.concat(col.ids, ignore_index=True)
    finite = np.isfinite(final)
    med = np.nanmedian(final) if finite.any() else 0.0
    order = np.argsort(np.where(finite, np.abs(final - med), np.inf))
    typical = [int(i) for i in order[:3] if finite[i]]
    extreme = []
    if finite.any():
        for i, kind in ((int(np.nanargmax(np.where(finite, final, -np.inf))), "highest final w"),
                        (int(np.nanargmin(np.where(finite, final, np.inf))), "lowest final w"),
                        (int(np.nanargmax(np.where(np.isfinite(rms), rms, -np.inf))), "largest residual")):
            if i not in [e[0] for e in extreme] and i not in typical:
                extreme.append((i, kind))
    params = {p: np.concatenate([b[p] for b in col.params]) for p in pnames}

    def _trace_info(i, kind):
        r = ids.iloc[i]
        return {"kind": kind, "wafer": r.wafer, "die": r.die, "device": r.device, "cycle": int(r.cycle),
                "final_w": float(final[i]), "rms_residual": float(rms[i]),
                **{p: float(params[p][i]) for p in pnames}}

    chosen = [(i, "typical") for i in typical] + extreme
    traces = [_trace_info(i, k) for i, k in chosen]
    metrics["figures"]["traces"] = {"n_cells": len(chosen), "pool": n, "cells": traces}

    def draw_traces(fig):
        from ..plotting import plot_traces

        axes = fig.subplots(1, 2)
        for ax, group, title in ((axes[0], [c for c in chosen if c[1] == "typical"], "typical cells"),
                                 (axes[1], [c for c in chosen if c[1] != "typical"], "extreme cells")):
            if not group:
                ax.set_title(f"{title}: none", fontsize=10)
                continue
            rows = [i for i, _ in group]
            lp = _evaluable(model.law, {p: params[p][rows] for p in pnames})
            # What the model expects of this cell: its law plus the mean of the pink term
            # (uniform innovations are not centred; the fit keeps that mean out of c1).
            fitted = model.mean_w(t, {p: lp[p][:, None] for p in pnames}) + model.pink.offset(t)
            labels = [f"{ids.die[i]} {ids.device[i]} c{int(ids.cycle[i])}" + ("" if k == "typical" else f" ({k})")
                      for i, k in group]
            plot_traces(t, wm[rows], fitted, labels, ax=ax, title=title,
                        fitted_label="fitted law + pink mean (dashed)")

    figs["traces"] = (draw_traces, (11, 4.0),
                      f"Measured w = ln(R/R0) of {len(typical)} typical cells (final w nearest the "
                      f"population median) and {len(extreme)} extreme ones, out of {n:,} cell-cycles"
                      f"{sub}; dashed: each cell's fitted drift law plus the mean of the pink-noise term "
                      f"(alpha/2 times the partial sum of the filter taps, {model.pink.offset(t[-1:])[0]:.3g} "
                      "once the history is full), i.e. what the model expects of that cell without RTN.")

    # Band.
    qm, qs = _quantiles(wm), _quantiles(ws)
    diff = qm["q50"][1:] - qs["q50"][1:]
    band = {"n_measured": n, "n_simulated": len(ws), "pulses": t,
            "measured": qm, "simulated": qs,
            "max_abs_median_diff": float(np.nanmax(np.abs(diff))) if diff.size and np.isfinite(diff).any() else None,
            "mean_abs_median_diff": float(np.nanmean(np.abs(diff))) if diff.size and np.isfinite(diff).any() else None}
    metrics["figures"]["band"] = band

    def draw_band(fig):
        from ..plotting import MEASURED, plot_band

        ax, ax2 = fig.subplots(1, 2, width_ratios=[2.2, 1])
        plot_band(t, qm, qs, ax=ax, title="population of w over pulses")
        for q, colour, lab in (("q05", "#7aa6d6", "5 %"), ("q50", MEASURED, "median"), ("q95", "#0b2d57", "95 %")):
            ax2.plot(t, qm[q] - qs[q], color=colour, lw=1.4 if q == "q50" else 0.9, label=lab)
        ax2.axhline(0, color="0.5", lw=0.8)
        ax2.set_xlabel("pulses since SET")
        ax2.set_ylabel("measured - simulated w")
        ax2.set_title("quantile differences", fontsize=10)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)

    figs["band"] = (draw_band, (11, 4.0),
                    f"Median and 5-95 % band of w over pulses: {n:,} measured cell-cycles{sub} against "
                    f"{len(ws):,} simulated from the fitted model (same cells, same pulse counts, same "
                    "missing reads). Flagged cells are left out: the model describes working cells. "
                    f"Largest |median difference| = {_fmt(band['max_abs_median_diff'], 3)}.")

    # ECDFs at chosen pulses.
    chosen_p = []
    for p in pulses:
        p = int(p)
        p = P - 1 if p < 0 else p
        if 1 <= p < P and p not in chosen_p:
            chosen_p.append(p)
    if len(chosen_p) < len(pulses):
        notes.append(f"distribution panels at pulses {chosen_p} only: trains have {P - 1} pulses.")
    ecdf = {}
    for p in chosen_p:
        a = wm[:, p].astype(float)
        b = ws[:, p].astype(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        samples[p] = (a, b)
        if len(a) and len(b):
            ks = stats.ks_2samp(a, b)
            ecdf[str(p)] = {"ks": float(ks.statistic), "pvalue": float(ks.pvalue), "n_measured": len(a),
                            "n_simulated": len(b), "median_measured": float(np.median(a)),
                            "median_simulated": float(np.median(b))}
    metrics["figures"]["ecdf"] = {"pulses": ecdf}

    def draw_ecdf(fig):
        from ..plotting import plot_ecdf

        axes = np.atleast_1d(fig.subplots(1, max(1, len(chosen_p))))
        for ax, p in zip(axes, chosen_p):
            a, b = samples[p]
            plot_ecdf(a, b, ks=ecdf.get(str(p), {}).get("ks"), ax=ax, title=f"after {p} pulses")

    if chosen_p:
        ks_txt = ", ".join(f"{p}: {ecdf[str(p)]['ks']:.3f}" for p in chosen_p if str(p) in ecdf)
        figs["ecdf"] = (draw_ecdf, (11, 3.6),
                        f"Distribution of w across cells after {', '.join(map(str, chosen_p))} pulses: "
                        f"{n:,} measured cell-cycles{sub} against as many simulated (x axis: the 0.1-99.9 % "
                        f"range). Two-sample KS distance by pulse count: {ks_txt}.")


def _parameter_section(cells, usable, col, model, pnames, units, metrics, figs, notes, rng, max_pts):
    names = [p for p in model.parameter_names if p in cells.columns]
    values = {p: cells[p].to_numpy(dtype=float)[usable] for p in names}
    values = {p: v[np.isfinite(v)] for p, v in values.items()}
    sim = {p: np.concatenate([b[p] for b in col.sim_params]) for p in names}
    # the D2D step fits the drift parameters and r0 (the RTN amplitude law comes from the noise fit)
    fitted, why = _law_inputs(cells, model, [p for p in names if p in (*pnames, "r0")])
    if why:
        notes.append(why + ".")
    longest = max(col.pulse_counts) if col.pulse_counts else None
    break_params = set(get_law(model.law).break_params)
    out = {}
    for p in names:
        law = model.d2d[p]
        v = values[p]
        counts, edges = (np.histogram(v, bins=50, density=True) if len(v) else (np.array([]), np.array([])))
        c2c = p in model.c2c
        limit = longest if units.get(p) == "pulse" else None
        if p in fitted and not c2c:
            d = fitted[p]
            chk = _law_check(d["x"], law, se=d["se"], lo=d["lo"], limit=limit)
            against = (f"fitted {law.family} law, by Kaplan-Meier below the censoring point"
                       if chk["method"] == "kaplan-meier" else
                       f"fitted {law.family} law with each cell's measurement error")
            per = {"n_left_out": d["n_left_out"], "n_fit_cells": d["n_cells"]}
        else:
            chk = _law_check(v, law, limit=limit)
            against, per = f"fitted {law.family} law", {}
            if c2c and len(v):
                chk["ks"], against = float(stats.ks_2samp(v, sim[p]).statistic), "simulated D2D+C2C population"
        out[p] = {"n": len(v), "unit": units.get(p, ""), "ks": chk["ks"], "ks_against": against,
                  "ks_method": chk["method"], "n_ks_exact": chk["n_exact"], "n_ks_censored": chk["n_censored"],
                  "ks_upto": chk["upto"], "limit": limit, "mass_beyond": chk["mass_beyond"],
                  "extrapolated": chk["extrapolated"], **per,
                  "median_measured": float(np.median(v)) if len(v) else None,
                  "median_model": law.median(),
                  "hist": {"edges": edges, "density": counts}, "qq": chk["qq"]}
        if chk["method"] == "kaplan-meier":
            # the breaks seen are the early ones: their median is not the cells' median
            km = chk["km"]
            half = np.flatnonzero(km["cdf"] >= 0.5)
            out[p]["median_measured"] = float(km["t"][half[0]]) if half.size else None
            out[p]["median_measured_note"] = (
                "Kaplan-Meier median" if half.size else
                f"> {chk['upto']:.0f} (Kaplan-Meier reaches {chk['km_at_upto']:.2f} there)")
        for key in ("km", "with_errors"):
            if key in chk:
                out[p][key] = chk[key]
        if chk["extrapolated"]:
            notes.append(f"the fitted {p} law has {100 * chk['mass_beyond']:.0f} % of its mass beyond the "
                         f"longest train ({limit} pulses): that part is extrapolated, not measured.")
        if p in break_params and p in fitted and not c2c and fitted[p]["n_left_out"] and not chk["n_censored"]:
            out[p]["note"] = (f"{p} is measured only on the {chk['n_exact']:,} of {fitted[p]['n_cells']:,} "
                              "cells with a break seen within their train, before the point where t_star's law "
                              "censors the late ones")
    n_cells = int(usable.sum())
    metrics["figures"]["parameters"] = {"n_cells": n_cells, "params": out}

    def draw_params(fig):
        from ..plotting import plot_censored_cdf, plot_parameter_hist, plot_qq

        axes = parameter_axes(fig, 2, len(names))
        for j, p in enumerate(names):
            o, u = out[p], units.get(p, "")
            if o["ks_method"] == "kaplan-meier":
                plot_censored_cdf(o["km"]["t"], o["km"]["cdf"], model.d2d[p], name=p, unit=u, ks=o["ks"],
                                  upto=o["ks_upto"], limit=o["limit"], mass_beyond=o["mass_beyond"],
                                  n_exact=o["n_ks_exact"], n_censored=o["n_ks_censored"], ax=axes[0, j])
            else:
                seen = o.get("with_errors")
                plot_parameter_hist(values[p], model.d2d[p], name=p, unit=u, ks=o["ks"],
                                    simulated=sim[p] if p in model.c2c else None, ax=axes[0, j],
                                    with_errors=(seen["x"], seen["pdf"]) if seen else None)
            qq_note = (f"Kaplan-Meier, up to p = {o['qq']['p'][-1]:.2f}\n(beyond: censored)"
                       if o["ks_method"] == "kaplan-meier" and len(o["qq"]["p"]) else None)
            plot_qq(o["qq"]["model"], o["qq"]["measured"], name=p, unit=u, note=qq_note, ax=axes[1, j],
                    xlabel="law + cells' errors, quantile" if "with_errors" in o else "fitted law quantile")

    censored = [p for p in names if out[p]["ks_method"] == "kaplan-meier"]
    cens_txt = "".join(
        f" {p}: {out[p]['n_ks_censored']:,} of {out[p]['n_ks_censored'] + out[p]['n_ks_exact']:,} cells are "
        f"right-censored (no break before {out[p]['ks_upto']:.0f} pulses)"
        + (f", {out[p]['n_left_out']:,} more are left out as the fit leaves them out (a break that could not "
           "be seen wherever it lay, or a mostly masked train)" if out[p].get("n_left_out") else "")
        + ", so its top panel is the "
        "Kaplan-Meier CDF of the cells against the fitted law's CDF, its KS distance sup |KM - F| over "
        f"[0, {out[p]['ks_upto']:.0f}] (the censoring point: the fit's likelihood counts each censored "
        "cell as F beyond it), and its QQ plot stops where the Kaplan-Meier estimate does"
        + (f"; shaded: beyond the longest train ({out[p]['limit']} pulses), "
           f"{100 * out[p]['mass_beyond']:.0f} % of the law, extrapolated." if out[p]["mass_beyond"] else ".")
        for p in censored) + "".join(f" {out[p]['note']}." for p in names if out[p].get("note"))
    figs["parameters"] = (draw_params, parameter_figsize(len(names), 5.8),
                          f"Per-cell fitted parameters of {n_cells:,} usable cell-cycles (n in each legend: a "
                          "cell whose fit leaves a parameter unset, e.g. no break within the train, is not in "
                          "that histogram, which is then cut near the train length): histograms with the "
                          "fitted D2D density (top) and QQ plots against the fitted law at 199 probabilities "
                          "from 0.5 % to 99.5 % (bottom). KS distance: of the values the law was fitted to "
                          "(per cell, as the fit's D2D step saw them) to the law convolved with each cell's "
                          "measurement error, or to the simulated D2D+C2C population where the model has "
                          "C2C." + cens_txt)

    # Pairs in normal-score space (pairwise-complete: a cell without t_star still shows m1 vs c1).
    pair_names = [p for p in names if len(values[p]) >= 3]
    mat = np.column_stack([cells[p].to_numpy(dtype=float)[usable] for p in pair_names]) if pair_names else np.empty((0, 0))
    simmat = np.column_stack([sim[p] for p in pair_names]) if pair_names else np.empty((0, 0))
    rho_m, rho_s = _spearman(mat), _spearman(simmat)
    rho_model = _model_spearman(model, pair_names)
    metrics["figures"]["pairs"] = {"names": pair_names, "n_cells": n_cells, "n_simulated": len(simmat),
                                   "n_per_param": {p: len(values[p]) for p in pair_names},
                                   "n_scatter": min(max_pts, n_cells),
                                   "spearman_measured": rho_m, "spearman_simulated": rho_s,
                                   "spearman_model": rho_model}
    if len(pair_names) >= 2 and n_cells >= 3:
        zm = np.column_stack([_normal_scores(c) for c in mat.T])
        zs = np.column_stack([_normal_scores(c) for c in simmat.T])
        pick_m = rng.choice(len(zm), size=min(max_pts, len(zm)), replace=False)
        pick_s = rng.choice(len(zs), size=min(max_pts, len(zs)), replace=False)

        def draw_pairs(fig):
            from ..plotting import plot_pairs

            k = len(pair_names)
            axes = fig.subplots(k, k, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
            fig.subplots_adjust(left=0.05, right=0.99, bottom=0.05, top=0.95)
            fig.suptitle("below diagonal: fitted cells (blue) · above: simulated population (orange)",
                         fontsize=10)
            plot_pairs(zm[pick_m], zs[pick_s], pair_names, rho_measured=rho_m, rho_simulated=rho_s, ax=axes)

        k = len(pair_names)
        figs["pairs"] = (draw_pairs, (1.75 * k + 0.6, 1.75 * k + 0.3),
                         f"Parameter pairs as normal scores (Phi^-1 of rank/(n+1)): below the diagonal "
                         f"{len(pick_m):,} of the {n_cells:,} fitted cell-cycles (blue), above it "
                         f"{len(pick_s):,} simulated ones (orange). rho = Spearman correlation over all "
                         "cells of each side (each pair over the cells that have both values); the fit "
                         "summary's correlations are in the tables below.")

    # C2C: deviation of each cycle from its cell's mean over cycles, measured against simulated.
    c2c_names = [p for p in names if p in model.c2c]
    if c2c_names:
        ids = pd.concat(col.ids, ignore_index=True)
        key = ids["wafer"] + "/" + ids["die"] + "/" + ids["device"].astype(str)
        meas_par = {p: np.concatenate([b[p] for b in col.params]) for p in c2c_names if p in col.params[0]}
        multi = key.map(key.value_counts()).to_numpy() > 1
        if not multi.any():
            notes.append("the model has C2C laws but no cell has two usable cycles: no C2C figure.")
        else:
            res = {}
            for p in list(meas_par):
                dm = meas_par[p] - pd.Series(meas_par[p]).groupby(key.to_numpy()).transform("mean").to_numpy()
                dsim = sim[p] - pd.Series(sim[p]).groupby(key.to_numpy()).transform("mean").to_numpy()
                dm, dsim = dm[multi], dsim[multi]
                res[p] = {"measured": dm, "simulated": dsim,
                          "ks": float(stats.ks_2samp(dm, dsim).statistic),
                          "std_measured": float(np.std(dm)), "std_simulated": float(np.std(dsim))}
            metrics["figures"]["c2c"] = {"n_cells": int(multi.sum()),
                                         "params": {p: {k: v for k, v in r.items()
                                                        if k not in ("measured", "simulated")}
                                                    for p, r in res.items()}}

            def draw_c2c(fig):
                from ..plotting import plot_ecdf, plot_parameter_hist

                axes = parameter_axes(fig, 2, len(res))
                for j, (p, r) in enumerate(res.items()):
                    plot_parameter_hist(r["measured"], None, name=f"{p} - cell mean", unit=units.get(p, ""),
                                        ks=r["ks"], simulated=r["simulated"], ax=axes[0, j])
                    plot_ecdf(r["measured"], r["simulated"], ks=r["ks"], ax=axes[1, j],
                              xlabel=f"{p} - cell mean ({units.get(p, '')})")

            figs["c2c"] = (draw_c2c, parameter_figsize(len(res), 6.0, 7.0),
                           f"Cycle-to-cycle variation: deviation of each cycle's parameter from its cell's "
                           f"mean over cycles, for {int(multi.sum()):,} cell-cycles of cells with two or more "
                           "usable cycles, against the same statistic of the simulated population.")


def _noise_section(col, model, metrics, figs, notes):
    first = int(model.pink.taps) + 1
    P = col.n_pulses
    xm = _noise_rows(_pad(col.r_meas, P), first)
    xs = _noise_rows(_pad(col.r_sim, P), first)
    length = xm.shape[1] if xm.ndim == 2 else 0
    if length < 32:
        notes.append(f"noise figures left out: they need trains of more than {first + 31} pulses "
                     f"(found {P - 1}).")
        return
    if len(xm) == 0:
        notes.append(f"noise figures left out: every cell has more than 10 % failed reads after pulse "
                     f"{first}.")
        return
    nperseg = min(256, length)
    f, pm = _welch(xm, nperseg)
    _, ps = _welch(xs, nperseg)
    pmod = _pink_psd(model, f)
    maxlag = min(60, length // 4)
    lags = np.arange(maxlag + 1)
    am, n_acf = _acf(xm, maxlag)
    asim, _ = _acf(xs, maxlag)
    amod = _pink_acf(model, lags)
    window = max(3, min(31, length // 8))
    sigma = model.pink.alpha * np.sqrt(
        np.sum(np.convolve(model.pink.coefficients, np.ones(window) / window) ** 2) / 12.0)
    hi_m, lo_m, frac_m, ncell_m, L = _dwell_runs(xm, window, sigma)
    hi_s, lo_s, frac_s, ncell_s, _ = _dwell_runs(xs, window, sigma)
    k0 = max(1, window // 2)  # shorter dwells are smoothed away: not binned
    edges = np.unique(np.round(np.geomspace(k0, max(L, k0 + 1) + 1, 20)).astype(int)).astype(float)
    dwell = {"window": window, "sigma_smoothed_pink": sigma, "k_spread": 6.0, "hysteresis": 0.2,
             "trace_length": L, "rtn_cells_measured": ncell_m, "rtn_cells_simulated": ncell_s,
             "fraction_high_measured": frac_m, "fraction_high_simulated": frac_s,
             "fraction_high_model_stationary": model.rtn.stationary_high, "edges": edges}
    for state, rm, rs, p in (("high", hi_m, hi_s, model.rtn.p_down), ("low", lo_m, lo_s, model.rtn.p_up)):
        cm, dm = _dwell_hist(rm, edges)
        cs, ds = _dwell_hist(rs, edges)
        dwell[state] = {"p_leave": p, "n_runs_measured": len(rm), "n_runs_simulated": len(rs),
                        "counts_measured": cm, "counts_simulated": cs,
                        "density_measured": dm, "density_simulated": ds,
                        "density_model": _geometric_windowed(p, edges, L),
                        "mean_measured": float(np.mean(rm)) if len(rm) else None,
                        "mean_simulated": float(np.mean(rs)) if len(rs) else None}
    noise = {"n_cells": len(xm), "n_simulated": len(xs), "first_pulse": first, "trace_length": length,
             "residual_std_measured": float(np.sqrt(np.mean(xm**2))),
             "residual_std_simulated": float(np.sqrt(np.mean(xs**2))),
             "pink_std_model": model.pink.std,
             "spectrum": {"f": f, "measured": pm, "simulated": ps, "model": pmod, "nperseg": nperseg,
                          "slope_measured": _slope(f, pm), "slope_simulated": _slope(f, ps),
                          "slope_model": _slope(f, pmod), "exponent_model": model.pink.exponent},
             "acf": {"lags": lags, "measured": am, "simulated": asim, "model": amod, "n_cells": n_acf},
             "dwell": dwell}
    metrics["figures"]["noise"] = noise

    def draw_noise(fig):
        from ..plotting import plot_acf, plot_dwell, plot_spectrum

        axes = fig.subplots(2, 2)
        plot_spectrum(f, pm, ps, pmod, ax=axes[0, 0],
                      model_label=f"fitted pink law (alpha={model.pink.alpha:.3g}, beta={model.pink.exponent:.2g})")
        axes[0, 0].set_title("residual spectrum (Welch, mean over cells)", fontsize=10)
        plot_acf(lags, am, asim, amod, ax=axes[0, 1], model_label="fitted pink law alone")
        axes[0, 1].set_title("residual autocorrelation", fontsize=10)
        for ax, state in ((axes[1, 0], "high"), (axes[1, 1], "low")):
            d = dwell[state]
            densities = (d["density_measured"], d["density_simulated"], d["density_model"])
            if not any(np.any(np.asarray(y, float) > 0) for y in densities):
                # nothing to draw on log axes (matplotlib would warn that it cannot log-scale)
                ax.text(0.5, 0.5, f"no {state}-state dwell runs measured, simulated or expected\n"
                        f"in {L}-pulse windows", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                ax.set_axis_off()
            else:
                plot_dwell(edges, *densities, state=state, ax=ax,
                           model_label=f"geometric, p={d['p_leave']:.2g}/pulse, seen in {L}-pulse windows")
            ax.set_title(f"RTN {state}-state dwell: {d['n_runs_measured']} measured, "
                         f"{d['n_runs_simulated']} simulated runs", fontsize=10)

    sub = f"{len(xm):,} measured and {len(xs):,} simulated cell-cycles"
    figs["noise"] = (draw_noise, (11, 7.6),
                     f"Noise of the residuals (measured w minus each cell's fitted law; simulated w minus "
                     f"its own law) from pulse {first} on (after the {model.pink.taps}-tap pink history "
                     f"fills), {sub}, each trace mean-removed. RTN dwell times: each residual is smoothed over "
                     f"{window} pulses; a cell whose smoothed spread (98th minus 25th percentile) exceeds 6 "
                     f"times the fitted pink noise after the same smoothing ({sigma:.2g}) is an RTN cell "
                     f"({ncell_m:,} measured, {ncell_s:,} simulated); it is high above the middle of that "
                     "spread plus 20 % of it and low again below the middle minus 20 % (hysteresis). Only "
                     "complete runs (not touching either end of the train) count, so long dwells are "
                     "under-represented on both sides, and dwells shorter than half the smoothing are not binned; "
                     "the geometric law is drawn as seen through the same window.")

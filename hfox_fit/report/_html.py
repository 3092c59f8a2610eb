"""The page: the figures drawn to PNG and one self-contained HTML file that embeds them.

:func:`_render` draws each figure a section described (matplotlib, imported
here only) to a PNG beside the page; :func:`_html` assembles ``report.html``
(inline CSS, figures as base64 PNG, no script, no external file) with the
header, notes, at-a-glance cards, figures and fit tables; :func:`_fmt` formats
a number for the page and the captions.
"""

from __future__ import annotations

import base64
import html

import numpy as np

from ._collect import _NO_COORDS
from ._layout import legends_off_data, legible, ticks_apart

#: Figure names (PNG file stems) in page order.
FIGURES = ("traces", "band", "ecdf", "parameters", "pairs", "c2c", "condition_medians", "condition_mean_w",
           "wafer_medians", "wafer_variance", "noise", "die_map", "array_map", "training")


def _beyond(mass, extrapolated):
    """The D2D table's cell for the law's mass beyond the longest train: "82 %, extrapolated"."""
    if mass is None:
        return "–"
    return f"{100 * mass:.0f} %" + (", extrapolated" if extrapolated else "")


def _fmt(x, digits=4):
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return html.escape(str(x))
    if not np.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"


#: Width of the page's column in inches at the figures' 100 dpi (main's 1180 px less its padding).
PAGE_WIDTH_IN = 11.28
#: The figures' style: one place for the report's font sizes and frame.
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "figure.titlesize": 11,
          "axes.spines.top": False, "axes.spines.right": False}


def _render(figs, out, dpi, progress=None):
    if not figs:
        return {}, {}
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths, embedded = {}, {}
    names = [n for n in FIGURES if n in figs]
    with matplotlib.rc_context(_STYLE):
        for k, name in enumerate(names):
            if progress is not None:
                progress(f"drawing figure {k + 1}/{len(names)} ({name})")
            draw, (width, height), _ = figs[name]
            # no wider than the page's column: the browser would shrink the PNG, and its text with it
            fig = Figure(figsize=(min(width, PAGE_WIDTH_IN), height),
                         layout="constrained" if name != "pairs" else None)
            FigureCanvasAgg(fig)
            draw(fig)
            legible(fig)
            legends_off_data(fig)
            ticks_apart(fig)
            path = out / f"{name}.png"
            fig.savefig(path, dpi=dpi)
            paths[name] = path
            embedded[name] = base64.b64encode(path.read_bytes()).decode("ascii")
    return paths, embedded


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;
 margin:0;background:#f4f5f7;color:#1d2127;font-size:15px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:18px 26px 40px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:6px 0 2px}h2{font-size:20px;margin:30px 0 8px;border-bottom:2px solid #1f5fa8;
 padding-bottom:3px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#555;font-size:13px}
.notes{background:#fff6e0;border-left:5px solid #e0a100;padding:8px 14px;margin:14px 0}
.notes li{margin:3px 0}
.glance{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#eef3fa;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px;color:#1f5fa8}.card span{font-size:12px;color:#444}
figure{margin:14px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;color:#333;margin-top:4px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:right}th{background:#e6ebf2}
td.l,th.l{text-align:left}tr:nth-child(even) td{background:#f7f9fc}
.chosen td{font-weight:bold}
.missing{color:#8a5a00;font-style:italic}
nav a{margin-right:12px;font-size:13px}
footer{margin-top:30px;font-size:12px;color:#666}
"""

_TITLES = {
    "traces": "Cell traces with their fitted law",
    "band": "Population over pulses: measured vs simulated",
    "ecdf": "Distributions of w at chosen pulse counts",
    "parameters": "D2D parameters: histograms and QQ plots",
    "pairs": "Parameter correlations",
    "c2c": "Cycle-to-cycle variation",
    "condition_medians": "Pulse conditions: medians and the condition law",
    "condition_mean_w": "Pulse conditions: mean w, measured vs the model at each condition",
    "wafer_medians": "Wafers: each wafer's medians",
    "wafer_variance": "Wafers: variance between wafers, dies, cells and cycles",
    "noise": "Noise: spectrum, autocorrelation, RTN dwell times",
    "die_map": "Die map",
    "array_map": "Array map: cells by row and column",
    "training": "Training study: which imperfection costs accuracy",
}


def _table(header, rows, left=1):
    h = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(header))
    body = []
    for r in rows:
        cls = ' class="chosen"' if isinstance(r, tuple) and r and r[0] == "__chosen__" else ""
        cells = r[1] if cls else r
        body.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(cells)) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _ci(ci, digits=4) -> str:
    """`` [lo, hi]`` of a 90 % interval, or "" when the summary gives none (or a garbled one)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return ""
    return f" [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"


def _with_ci(x, ci, digits=4) -> str:
    """A fitted number with its 90 % interval, or "(no interval)" when the summary gives none."""
    if x is None:
        return _fmt(x, digits)
    return _fmt(x, digits) + (_ci(ci, digits) or " (no interval)")


def _matrix(names, mat, ci=None):
    """A correlation matrix; each off-diagonal cell with its 90 % interval ``ci`` (n x n x 2) when given."""
    try:
        names = [str(n) for n in names]
        mat = np.asarray(mat, dtype=float).reshape(len(names), len(names))
    except (TypeError, ValueError):
        return '<p class="missing">not in the fit summary</p>'
    if not names:
        return '<p class="missing">not in the fit summary</p>'

    def interval(i, j):  # the summary writes null on the diagonal
        try:
            return _ci(ci[i][j], 2) if i != j else ""
        except (TypeError, IndexError, KeyError):
            return ""

    rows = [[html.escape(n)] + [_fmt(v, 3) + interval(i, j) for j, v in enumerate(row)]
            for i, (n, row) in enumerate(zip(names, mat))]
    return _table([""] + names, rows)


def _html(metrics, figs, embedded, notes, tables):
    e = html.escape
    meta = metrics["meta"]
    cells = metrics["cells"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>Validation report – {e(meta['store'])}</title><style>{_CSS}</style></head><body><main>"]
    parts.append(f"<h1>Validation report: {e(meta['store'])}</h1>")
    parts.append(
        f"<div class='sub'>wafer(s) {e(', '.join(meta['wafers']) or '–')} · {meta['n_dies']} die(s) · "
        f"{e(', '.join(map(str, meta['pulses_per_train'])) or '–')} pulses per train · drift law "
        f"<b>{e(meta['law'])}</b> · fitted {e(str(meta.get('fitted_at') or 'at an unknown time'))} · "
        f"report {e(meta['generated_at'])} by hfox_fit {e(meta['hfox_fit_version'])}, seed {meta['seed']}</div>")
    nav = " ".join(f"<a href='#{n}'>{e(_TITLES[n])}</a>" for n in FIGURES if n in figs)
    parts.append(f"<nav>{nav} <a href='#tables'>Fit tables</a></nav>")
    if notes:
        parts.append("<div class='notes'><b>What this report could not show or left out</b><ul>"
                     + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul></div>")
    figm = metrics["figures"]
    cards = [(f"{cells['usable']:,}", f"usable cell-cycles of {cells['fit_table_rows']:,} fitted"),
             (f"{sum(v for k, v in cells['by_flag'].items() if k != 'ok'):,}", "flagged cell-cycles")]
    ecdf = figm.get("ecdf", {}).get("pulses", {})
    if ecdf:
        last = max(ecdf, key=int)
        cards.append((f"{ecdf[last]['ks']:.3f}", f"KS distance of w after {last} pulses"))
    if figm.get("band", {}).get("max_abs_median_diff") is not None:
        cards.append((_fmt(figm["band"]["max_abs_median_diff"], 3), "largest |median w difference|"))
    if "noise" in figm:
        cards.append((_fmt(figm["noise"]["residual_std_measured"], 3), "residual std of w (measured)"))
    parts.append("<div class='glance'>" + "".join(
        f"<div class='card'><b>{v}</b><span>{e(t)}</span></div>" for v, t in cards) + "</div>")
    for name in FIGURES:
        if name == "die_map" and name not in figs:
            entry = figm.get("die_map", {})
            msg = entry.get("message", _NO_COORDS) + (f": {entry['hint']}" if entry.get("hint") else "")
            parts.append(f"<h2 id='die_map'>{e(_TITLES[name])}</h2><p class='missing'>{e(msg)}.</p>")
            continue
        if name not in figs:
            continue
        _, _, caption = figs[name]
        parts.append(f"<h2 id='{name}'>{e(_TITLES[name])}</h2><figure>"
                     f"<img src='data:image/png;base64,{embedded[name]}' data-file='{name}.png' "
                     f"alt='{e(_TITLES[name])}'><figcaption>{e(caption)} "
                     f"<span class='sub'>[{name}.png]</span></figcaption></figure>")
    parts.append(_tables_html(tables))
    parts.append(f"<footer>Every number above is in metrics.json beside this page. Measured w = ln(R/R0) "
                 f"uses each cell-cycle's fitted r0; simulated cells come from the fitted model with seed "
                 f"{meta['seed']}. Report built in {meta['elapsed_s']:.1f} s.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _flagged_html(flagged, gof):
    """The flagged cells (device, flag, reason; capped) and how closely the laws follow the reads."""
    e = html.escape
    out = []
    if gof:
        rows = [[e(c), _fmt(gof[c].get("n")), *(_fmt(v, 3) for k, v in gof[c].items() if k != "n")]
                for c in ("resid_std", "misfit", "fit_r2") if isinstance(gof.get(c), dict)]
        out.append("<h3>Goodness of fit (usable cell-cycles)</h3><p>resid_std: robust std of w − law; misfit: "
                   "mean square of the residual's block means over what the noise gives (about 1 for a law that "
                   "follows the reads); fit_r2: share of w's slow change the law explains. Quantiles on the bad "
                   "side: median, 90th and 99th percentiles (fit_r2: median, 10th and 1st).</p>"
                   + _table(["column", "cells", "median", "90 % / 10 %", "99 % / 1 %"], rows))
    if not flagged or not flagged.get("total"):
        return "".join(out + ["<h3>Flagged cells</h3><p>none</p>"])
    rows = [[e(f"{r.get('wafer', '')}/{r.get('die', '')}/{r.get('device', '')}"), _fmt(r.get("cycle")),
             e(r["flag"]), e(r["reason"])] for r in flagged["rows"]]
    rest = flagged["total"] - flagged["shown"]
    head = (f"<h3>Flagged cells</h3><p>{flagged['total']:,} flagged cell-cycle(s)"
            + (f"; the first {flagged['shown']:,} are listed (at most {flagged['cap']} in all, shared among the "
               f"flags), {rest:,} more are in the devices table (<code>hfox-fit devices</code>)" if rest else "")
            + ".</p>")
    return "".join(out) + head + _table(["wafer/die/device", "cycle", "flag", "reason"], rows, left=4)


def _conditions_html(c):
    """The per-condition medians (with their 90 % intervals) and the condition law's slopes."""
    e = html.escape

    def med(m):
        return _with_ci(m.get("median"), m.get("ci90"))

    units = c.get("units", {})
    head = ["condition", "cells", "trains fitted"] + [
        f"median {p}" + (f" ({units[p]})" if units.get(p) not in (None, "", "1") else "") for p in c["params"]]
    noted = any(r.get("note") for r in c["rows"])
    head += ["note"] if noted else []
    rows = [[e(r["condition"]), _fmt(r.get("n_cells")), _fmt(r.get("n_trains_fitted"))]
            + [med(r["medians"][p]) for p in c["params"]] + ([e(r.get("note") or "")] if noted else [])
            for r in c["rows"]]
    out = [f"<h3>{e(c['name'])}: each condition's medians [90 % interval]</h3>", _table(head, rows)]
    own = [r["param"] for r in c.get("law") or [] if r.get("location") == "sample_median"]
    if own:
        out.append(f"<p>Medians of the D2D laws, but the cells' own (family-free) for {e(', '.join(own))}: the "
                   "condition law follows those where no cell is censored.</p>")
    if c.get("law"):
        out.append(f"<p>Condition law, ln median = a + b_v (V − V_ref) + b_w ln(w / w_ref) (the median itself on the "
                   f"linear scale), {e(c.get('reference') or '')}; ± one standard error:</p>")
        pm = [[e(r["param"]), e(str(r.get("scale") or "–")),
               *(_fmt(r.get(k), 4) + (f" ± {_fmt(r.get(k + '_stderr'), 2)}" if r.get(k + "_stderr") is not None else "")
                 for k in ("a", "b_v", "b_w")), _fmt(r.get("birge_ratio"), 3), e(str(r.get("spread") or "–")),
               e(r.get("note") or "")] for r in c["law"]]
        out.append(_table(["parameter", "scale", "a", "b_v (per V)", "b_w (per e-fold of width)", "Birge ratio", "spread",
                           "note"], pm,
                          left=2))
    return "".join(out)


def _wafers_html(c):
    """Each wafer's D2D medians (with their 90 % intervals) and the variance shares per level."""
    e = html.escape

    def med(m):
        cells = m.get("median") is not None and m.get("from") == "sample"
        return _with_ci(m.get("median"), m.get("ci90")) + (" (cells)" if cells else "")

    units = c.get("units", {})
    head = ["wafer", "cells", "trains fitted"] + [
        f"median {p}" + (f" ({units[p]})" if units.get(p) not in (None, "", "1") else "") for p in c["params"]]
    rows = [[e(r["wafer"]), _fmt(r.get("n_cells")), _fmt(r.get("n_trains_fitted"))]
            + [med(r["medians"][p]) for p in c["params"]] + [e(r.get("note") or "")] for r in c["rows"]]
    out = [f"<h3>{e(c['name'])}: each wafer's D2D medians [90 % interval]; (cells): the cells' median where the "
           "wafer's law missed it</h3>", _table(head + ["note"], rows)]
    if c.get("variance"):
        def pct(v):
            return "merged" if v is None else f"{100 * v:.1f} %"

        out.append("<p>Share of each parameter's variance per level (merged: not separable from its neighbour):</p>")
        out.append(_table(["parameter", "scale", "wafer", "die", "cell", "cycle", "trains", "note"],
                          [[e(r["param"]), e(str(r.get("scale") or "–"))] + [pct(r.get(lv)) for lv in
                                                                             ("wafer", "die", "cell", "cycle")]
                           + [_fmt(r.get("n_trains")), e(r.get("note") or "")] for r in c["variance"]], left=2))
    return "".join(out)


def _interval(ci) -> str:
    """``[lo, hi]`` of a 90 % interval, or the value as :func:`_fmt` writes it ("–" for none)."""
    return "[" + ", ".join(_fmt(b) for b in ci) + "]" if isinstance(ci, (list, tuple)) else _fmt(ci)


def _calibration_html(cal):
    """The calibrated intervals (``fit --calibrate``): each quantity's bias and spread over the simulated wafers."""
    e = html.escape
    rows = []
    for name, q in cal["quantities"].items():
        bias = _fmt(q.get("bias"), 3) + (f" ± {_fmt(q.get('bias_stderr'), 2)}" if q.get("bias_stderr") else "")
        rows.append([e(name), _with_ci(q.get("estimate"), q.get("ci90")), bias, _fmt(q.get("sd"), 3),
                     _fmt(q.get("n_replicates")), e(q.get("note") or "")])
    failed = cal.get("failed") or []
    head = (f"<h3>Calibrated intervals ({_fmt(cal.get('replicates'))} wafers simulated from the fitted model, "
            f"{_fmt(cal.get('devices'))} cells × {_fmt(cal.get('pulses'))} pulses × {_fmt(cal.get('cycles'))} "
            f"train(s), fitted again in {_fmt(cal.get('seconds'), 3)} s)</h3>"
            f"<p>{e(cal.get('note') or '')} ({_fmt(cal.get('n_cells'))} cells). Where it differs from the fit's "
            "own interval (the D2D, correlation and noise tables above), this one also holds what the per-cell fit does to the population: breaks seen or not, an edge's few "
            "cells, the family chosen." + (f" Replicates that failed: {e('; '.join(failed))}." if failed else "")
            + "</p>")
    return head + _table(["quantity", "estimate [calibrated 90 % interval]", "bias ± its stderr",
                          "spread (sd)", "replicates", "note"], rows)


def _tables_html(tables):
    e = html.escape
    out = ["<h2 id='tables'>Fit tables</h2>"]
    fl = tables["flags"]
    rows = []
    for f in fl["fit_table"]:  # "ok", the fit's flags, "other" if any
        rows.append([f, _fmt(fl["fit_table"].get(f, 0)),
                     _fmt(fl["summary"].get(f)) if f != "ok" else _fmt(fl["summary"].get("fitted"))])
    rows.append(["total", _fmt(sum(fl["fit_table"].values())), _fmt(fl["summary"].get("total"))])
    out.append("<h3>Cells per flag</h3>" + _table(["flag", "fit table (cell-cycles)", "summary (devices; ok = fitted)"], rows))
    sc = tables["scores"]
    out.append("<h3>Drift-law scores</h3>")
    if sc["rows"]:
        rows = []
        for r in sc["rows"]:
            cells = [e(r["law"]) + (" ✔" if r["chosen"] else ""), _fmt(r["aic"], 8), _fmt(r["bic"], 8),
                     _fmt(r["delta_aic"], 4), _fmt(r["delta_bic"], 4)]
            rows.append(("__chosen__", cells) if r["chosen"] else cells)
        out.append(_table(["law", "AIC", "BIC", "ΔAIC", "ΔBIC"], rows))
    else:
        out.append("<p class='missing'>no law scores in the fit summary</p>")
    out.append(_flagged_html(tables.get("flagged"), tables.get("goodness_of_fit")))
    out.append("<h3>D2D laws (every fitted number with its 90 % interval as the summary gives it)</h3>")
    rows = []
    calibrated = "calibration" in tables  # (`fit --calibrate N`: each median's calibrated interval beside its own)
    for r in tables["d2d"]:
        params = r["params"]
        pci = r.get("params_ci90") if isinstance(r.get("params_ci90"), dict) else {}
        params = (", ".join(f"{e(str(k))}={_fmt(v)}{_ci(pci.get(k), 3)}" for k, v in params.items())
                  if isinstance(params, dict) else _fmt(params)) or "–"
        bounds, ci = r["bounds"], r["median_ci90"]
        bounds = "[" + ", ".join(_fmt(b) for b in bounds) + "]" if isinstance(bounds, (list, tuple)) else (
            "none" if bounds is None else _fmt(bounds))
        name = e(r["param"]) + ("" if r["in_summary"] else " <span class='missing'>(not in summary)</span>")
        cal = [_interval(r.get("median_calibrated_ci90"))] if calibrated else []
        rows.append([name, e(r["unit"] if r["unit"] not in ("", "1") else "–"), e(str(r["family"] or "–")),
                     params, bounds, _fmt(r["median"]), _interval(ci), *cal,
                     e(r["median_measured_note"]) if r.get("median_measured") is None and r.get("median_measured_note")
                     else _fmt(r["median_measured"]),
                     _fmt(r["median_cell_stderr"], 3), _fmt(r["ks_summary"], 3),
                     _fmt(r["ks_report"], 3) + (" (Kaplan-Meier)" if r.get("ks_method") == "kaplan-meier" else ""),
                     _beyond(r.get("mass_beyond_trains"), r.get("extrapolated"))])
    out.append(_table(["parameter", "unit", "family", "law parameters", "bounds", "median", "median 90 % CI",
                       *(["median 90 % CI, calibrated (see below)"] if calibrated else []),
                       "median of fitted cells", "median per-cell stderr", "KS (fit)", "KS (this report)",
                       "law's mass beyond the longest train"],
                      rows, left=5))
    if not calibrated:
        out.append("<p class='missing'>These intervals are the fit's own: a bootstrap of its cells and trains, not "
                   "calibrated. Over simulated wafers some of them cover less than 90 % (a law at the edge of "
                   "its range, the copula of a parameter whose per-cell fits are noisy). <code>hfox-fit calibrate "
                   "STORE</code> calibrates them without fitting again (<code>fit</code>, <code>run</code> and "
                   "<code>demo</code> do unless given <code>--calibrate 0</code>).</p>")
    law_notes = [f"<li><b>{e(r['param'])}</b>: {e(r['note'])}</li>" for r in tables["d2d"] if r.get("note")]
    if law_notes:  # what the fit says of its laws: ties between families, an edge's interval, outliers set aside
        out.append("<ul>" + "".join(law_notes) + "</ul>")
    if tables.get("conditions"):
        out.append(_conditions_html(tables["conditions"]))
    if tables.get("wafers"):
        out.append(_wafers_html(tables["wafers"]))
    c = tables["correlation"]
    out.append("<h3>Correlation (fit summary, [90 % interval])</h3>"
               "<div style='display:flex;gap:30px;flex-wrap:wrap'>"
               f"<div><b>Spearman</b>{_matrix(c['names'], c['spearman'], c.get('spearman_ci90'))}</div>"
               f"<div><b>Gaussian copula</b>{_matrix(c['names'], c['copula'], c.get('copula_ci90'))}</div></div>"
               + (f"<p>{e(c['note'])}.</p>" if c.get("note") else ""))
    p = tables["pink"]
    out.append("<h3>Noise</h3>" + _table(
        ["quantity", "fit summary [90 % interval]", "model", "measured here"],
        [["pink std of w", _with_ci(p["std"], p.get("std_ci90")), _fmt(p["model_std"]), "–"],
         ["pink spectral exponent β", _with_ci(p["exponent"], p.get("exponent_ci90")), _fmt(p["model_exponent"]), "–"],
         ["read (white) noise std of w", _with_ci(p.get("white_std"), p.get("white_std_ci90")), "–", "–"],
         ["pink α", "–", _fmt(p["model_alpha"]), "–"],
         ["residual std of w (pink + RTN + read noise)", "–",
          _fmt(p["residual_std_simulated"], 3) + " (simulated)", _fmt(p["residual_std_measured"], 3)],
         ["residual PSD log-log slope, 0.02-0.2 cycles/pulse", "–",
          f"{_fmt(p['slope_simulated'], 3)} (simulated; pink law alone {_fmt(p['slope_model'], 3)})",
          _fmt(p["slope_measured"], 3)]]))
    r = tables["rtn"]
    out.append(_table(
        ["RTN", "fit summary [90 % interval]", "model", "measured here"],
        [["p_up (low→high, 1/pulse)", _with_ci(r["p_up"], r.get("p_up_ci90")), _fmt(r["model_p_up"]), "–"],
         ["p_down (high→low, 1/pulse)", _with_ci(r["p_down"], r.get("p_down_ci90")), _fmt(r["model_p_down"]), "–"],
         ["amplitude median", _with_ci(r["amplitude_median"], r.get("amplitude_median_ci90")),
          _fmt(r["model_amplitude_median"]), "–"],
         ["fraction of smoothed reads detected high", "–", _fmt(r["fraction_high_simulated"], 3) + " (simulated)",
          _fmt(r["fraction_high_measured"], 3)],
         ["mean complete high dwell (pulses)", "–", _fmt(r["mean_high_simulated"], 3) + " (simulated)",
          _fmt(r["mean_high_measured"], 3)],
         ["mean complete low dwell (pulses)", "–", _fmt(r["mean_low_simulated"], 3) + " (simulated)",
          _fmt(r["mean_low_measured"], 3)]]))
    if calibrated:
        out.append(_calibration_html(tables["calibration"]))
    return "\n".join(out)

"""Plots of measurements against a fitted :class:`~hfox_fit.model.DeviceModel`.

Every function draws on an existing Axes when one is given (``ax=...``) and
otherwise opens a new figure with :func:`matplotlib.pyplot.subplots`; each
returns the Axes it drew on. matplotlib is imported inside the functions, so
``import hfox_fit`` (and ``import hfox_fit.plotting``) never loads it.

The functions take numbers, not fit objects: the statistics they show are
computed by :mod:`hfox_fit.report`, which also writes them to ``metrics.json``.
``w = ln(R/R0)`` is dimensionless; pulse counts are in pulses.
"""

from __future__ import annotations

import numpy as np

from ._plot_conditions import (
    CONDITION_COLOURS,
    format_width,
    plot_condition_mean_w,
    plot_condition_medians,
)
from ._plot_maps import FLAG_COLOURS, plot_array_map, plot_die_map
from ._plot_wafers import LEVEL_COLOURS, plot_variance_shares, plot_wafer_medians

__all__ = [
    "plot_ablation",
    "MEASURED",
    "SIMULATED",
    "MODEL",
    "plot_traces",
    "plot_band",
    "plot_ecdf",
    "plot_parameter_hist",
    "plot_qq",
    "plot_censored_cdf",
    "plot_pairs",
    "plot_spectrum",
    "plot_acf",
    "plot_dwell",
    "plot_die_map",
    "plot_array_map",
    "FLAG_COLOURS",
    "plot_condition_medians",
    "plot_condition_mean_w",
    "CONDITION_COLOURS",
    "format_width",
    "plot_wafer_medians", "plot_variance_shares", "LEVEL_COLOURS",
    "axis_label",
    "scale_unit",
]

#: Colours used throughout: measured data, the simulated population, the fitted law.
MEASURED = "#1f5fa8"
SIMULATED = "#e07b00"
MODEL = "#222222"

_TRACE_COLOURS = ("#1f5fa8", "#2a9d4b", "#8e44ad", "#c0392b", "#d35400", "#16a085")


def _axes(ax, **kw):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(**kw)
    return ax


def axis_label(name: str, unit: str = "") -> str:
    """Return ``"name (unit)"``, or ``name`` when ``unit`` is empty or dimensionless."""
    return f"{name} ({unit})" if unit and unit != "1" else name


def scale_unit(values, unit: str = "") -> tuple[float, str]:
    """Return ``(factor, unit_label)`` so that ``values / factor`` reads without an offset.

    Values whose magnitude lies within [1e-2, 1e4) are left alone (factor 1);
    otherwise ``factor`` is a power of ten and the label carries it,
    e.g. ``"1e-3/pulse"`` for ``unit="1/pulse"``.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top == 0.0 or 1e-2 <= top < 1e4:
        return 1.0, unit
    k = int(np.floor(np.log10(top)))
    factor = 10.0**k
    if not unit or unit == "1":
        return factor, f"1e{k}"
    if unit.startswith("1/"):
        return factor, f"1e{k}/{unit[2:]}"
    return factor, f"1e{k} {unit}"


def _textbox(ax, text, loc="upper left"):
    x, ha = (0.03, "left") if "left" in loc else (0.97, "right")
    y, va = (0.96, "top") if "upper" in loc else (0.04, "bottom")
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=8,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9})


def plot_traces(t, w, fitted=None, labels=None, *, ax=None, title=None, fitted_label="fitted law (dashed)"):
    """Plot measured traces ``w = ln(R/R0)`` with each cell's fitted drift law.

    Parameters
    ----------
    t : array-like of shape (n_pulses,)
        Pulse counts since SET.
    w : array-like of shape (n_traces, n_pulses)
        Measured ``w`` (NaN for failed reads).
    fitted : array-like of shape (n_traces, n_pulses), optional
        Fitted drift law of each trace, drawn dashed in the same colour.
    labels : list of str, optional
    ax : matplotlib Axes, optional
    title : str, optional
    fitted_label : str
        Legend entry of the dashed lines.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    t = np.asarray(t)
    w = np.atleast_2d(np.asarray(w, float))
    for i, row in enumerate(w):
        colour = _TRACE_COLOURS[i % len(_TRACE_COLOURS)]
        label = labels[i] if labels is not None else None
        ax.plot(t, row, color=colour, lw=0.7, alpha=0.75, label=label)
        if fitted is not None:
            ax.plot(t, np.asarray(fitted[i], float), color=colour, lw=1.6, ls="--")
    ax.set_xlabel("pulses since SET")
    ax.set_ylabel("w = ln(R/R0)")
    if fitted is not None:
        ax.plot([], [], color="0.3", lw=1.6, ls="--", label=fitted_label)
    if labels is not None or fitted is not None:
        ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def plot_band(t, measured, simulated=None, *, ax=None, title=None):
    """Plot the population median and 5-95 % band of ``w`` over pulses.

    Parameters
    ----------
    t : array-like of shape (n_pulses,)
        Pulse counts since SET.
    measured, simulated : dict
        Keys ``"q05"``, ``"q50"``, ``"q95"``, arrays of shape (n_pulses,).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    t = np.asarray(t)
    ax.fill_between(t, measured["q05"], measured["q95"], color=MEASURED, alpha=0.25, lw=0,
                    label="measured 5-95 %")
    ax.plot(t, measured["q50"], color=MEASURED, lw=2, label="measured median")
    if simulated is not None:
        ax.plot(t, simulated["q50"], color=SIMULATED, lw=1.6, ls="--", label="simulated median")
        ax.plot(t, simulated["q05"], color=SIMULATED, lw=1.0, ls=":", label="simulated 5-95 %")
        ax.plot(t, simulated["q95"], color=SIMULATED, lw=1.0, ls=":")
    ax.set_xlabel("pulses since SET")
    ax.set_ylabel("w = ln(R/R0)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_ecdf(measured, simulated=None, *, ks=None, ax=None, title=None, xlabel="w = ln(R/R0)",
              clip_tails=True):
    """Plot the empirical distribution functions of measured and simulated values.

    Parameters
    ----------
    measured, simulated : array-like of shape (n,)
        Values (NaN ignored).
    ks : float, optional
        Two-sample Kolmogorov-Smirnov distance, written on the plot.
    ax : matplotlib Axes, optional
    title, xlabel : str
    clip_tails : bool, default=True
        Limit the x axis to the 0.1-99.9 % quantiles, so a few outliers do not
        squeeze the body of the distributions.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    shown = []
    for values, colour, label, ls in ((measured, MEASURED, "measured", "-"),
                                      (simulated, SIMULATED, "simulated", "--")):
        if values is None:
            continue
        v = np.asarray(values, float)
        v = np.sort(v[np.isfinite(v)])
        if v.size:
            shown.append(v)
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=colour, lw=1.5,
                    ls=ls, label=f"{label} (n={v.size:,})")
    if shown and clip_tails:
        lo, hi = np.quantile(np.concatenate(shown), [0.001, 0.999])
        if hi > lo:
            pad = 0.05 * (hi - lo)
            ax.set_xlim(lo - pad, hi + pad)
    if ks is not None:
        _textbox(ax, f"KS D = {ks:.3f}", loc="lower right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of cells")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_parameter_hist(values, law=None, *, name="", unit="", ks=None, simulated=None,
                        bins=50, ax=None, rescale=True, with_errors=None):
    """Plot a histogram of fitted per-cell values with the fitted density.

    Parameters
    ----------
    values : array-like of shape (n,)
        Fitted parameter of each cell, in ``unit``.
    law : ParameterLaw, optional
        The fitted D2D law; its (truncated) density is drawn.
    name, unit : str
    ks : float, optional
        KS distance of ``values`` to ``law``, written in the title.
    simulated : array-like, optional
        Values drawn from the model (e.g. D2D plus C2C), drawn as a step histogram.
    bins : int, default=50
    ax : matplotlib Axes, optional
    rescale : bool, default=True
        Show very small or large values in a power-of-ten unit (see :func:`scale_unit`).
    with_errors : (x, density), optional
        The law's density with the cells' measurement errors added (dashed): what the
        values look like where those errors are not small.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return ax
    # Range: the bulk of the values and of the law; a few outliers do not squash the plot.
    lo, hi = np.quantile(v, [0.01, 0.99]) if v.size >= 100 else (v.min(), v.max())
    if law is not None:
        llo, lhi = law.ppf([0.002, 0.998])
        if v.size < 100:
            lo, hi = np.quantile(v, [0.05, 0.95])
        lo, hi = min(lo, llo), max(hi, lhi)
    if not hi > lo:
        lo, hi = lo - 0.5 * abs(lo) - 1e-12, hi + 0.5 * abs(hi) + 1e-12
    pad = 0.02 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    factor, shown = scale_unit([lo, hi], unit) if rescale else (1.0, unit)
    edges = np.linspace(lo, hi, int(bins) + 1)
    off = int(((v < lo) | (v > hi)).sum())
    label = f"fitted cells (n={v.size:,}" + (f"; {off:,} off scale)" if off else ")")
    width = (edges[1] - edges[0]) / factor  # density over all n values, off-scale ones included
    ax.hist(v / factor, bins=edges / factor, weights=np.full(v.size, 1.0 / (v.size * width)),
            color=MEASURED, alpha=0.45, label=label)
    if simulated is not None:
        sv = np.asarray(simulated, float)
        ax.hist(sv[np.isfinite(sv)] / factor, bins=edges / factor, density=True, histtype="step",
                color=SIMULATED, lw=1.4, label="simulated")
    if law is not None:
        x = np.linspace(lo, hi, 400)
        ax.plot(x / factor, law.pdf(x) * factor, color=MODEL, lw=1.5, label=f"fitted {law.family}")
    if with_errors is not None:
        ex, ey = (np.asarray(a, float) for a in with_errors)
        ex, ey = ex[(ex >= lo) & (ex <= hi)], ey[(ex >= lo) & (ex <= hi)]
        ax.plot(ex / factor, ey * factor, color=MODEL, lw=1.2, ls="--", label="fitted law + cells' errors")
    title = name + (f"   KS D = {ks:.3f}" if ks is not None else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(axis_label(name, shown))
    ax.set_ylabel(f"density (1/({shown}))" if shown and shown != "1" else "density")
    ax.legend(fontsize=6.5, loc="best")
    return ax


def plot_qq(model_quantiles, sample_quantiles, *, name="", unit="", ax=None,
            xlabel="fitted law quantile", ylabel="fitted cells quantile", rescale=True, note=None):
    """Plot sample quantiles against the fitted law's quantiles (QQ plot).

    Parameters
    ----------
    model_quantiles, sample_quantiles : array-like of shape (n_probs,)
        Quantiles at the same probabilities, in ``unit``.
    name, unit : str
    ax : matplotlib Axes, optional
    xlabel, ylabel : str
    rescale : bool, default=True
        Show very small or large values in a power-of-ten unit (see :func:`scale_unit`).
    note : str, optional
        Written in the lower right corner (e.g. where censored quantiles stop).

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    if note:
        _textbox(ax, note, loc="upper left")
    x = np.asarray(model_quantiles, float)
    y = np.asarray(sample_quantiles, float)
    factor, shown = scale_unit(np.concatenate([x, y]), unit) if rescale else (1.0, unit)
    x, y = x / factor, y / factor
    ax.plot(x, y, "o", ms=2.5, color=MEASURED)
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.any():
        lo = min(x[finite].min(), y[finite].min())
        hi = max(x[finite].max(), y[finite].max())
        ax.plot([lo, hi], [lo, hi], color=MODEL, lw=1, ls="--")
    if name:
        ax.set_title(f"QQ: {name}", fontsize=10)
    ax.set_xlabel(axis_label(xlabel, shown))
    ax.set_ylabel(axis_label(ylabel, shown))
    ax.grid(alpha=0.3)
    return ax


def plot_censored_cdf(t, km_cdf, law, *, name="", unit="", ks=None, upto=None, limit=None,
                      mass_beyond=None, n_exact=None, n_censored=None, ax=None, rescale=True):
    """Plot the Kaplan-Meier CDF of right-censored per-cell values against the fitted law's CDF.

    Parameters
    ----------
    t, km_cdf : array-like of shape (k,)
        Observed values (ascending) and the Kaplan-Meier CDF just after each
        (:func:`hfox_fit.report._stats.kaplan_meier`), in ``unit``.
    law : ParameterLaw
        The fitted law (untruncated by the censoring: its CDF is drawn beyond it).
    name, unit : str
    ks : float, optional
        Censored KS distance (``sup |KM - F|`` up to ``upto``), written in the title.
    upto : float, optional
        Censoring point: the Kaplan-Meier estimate stops there (dotted line).
    limit : float, optional
        Longest train: beyond it is shaded and the law is extrapolated.
    mass_beyond : float, optional
        The law's mass beyond ``limit``, written in the shaded region.
    n_exact, n_censored : int, optional
        Observed and censored values, for the legend.
    ax : matplotlib Axes, optional
    rescale : bool, default=True

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    t, f = np.asarray(t, float), np.asarray(km_cdf, float)
    edge = float(upto) if upto is not None else (float(t[-1]) if t.size else 1.0)
    right = max(edge, float(limit or 0.0))
    top = float(law.ppf(0.95))
    xmax = min(max(1.3 * right, top), 4.0 * right) if np.isfinite(top) else 1.3 * right
    factor, shown = scale_unit([0.0, xmax], unit) if rescale else (1.0, unit)
    counts = f"{n_exact:,} seen, {n_censored:,} censored" if n_exact is not None else ""
    ax.step(np.r_[0.0, t, edge] / factor, np.r_[0.0, f, f[-1] if f.size else 0.0], where="post",
            color=MEASURED, lw=1.6, label="Kaplan-Meier" + (f" ({counts})" if counts else ""))
    x = np.linspace(0.0, xmax, 400)
    ax.plot(x / factor, law.cdf(x), color=MODEL, lw=1.4, label=f"fitted {law.family}")
    if upto is not None:
        ax.axvline(edge / factor, color="0.35", ls=":", lw=1.0, label="censoring point")
    if limit is not None and limit < xmax:
        ax.axvspan(limit / factor, xmax / factor, color="0.88", zorder=0)
        text = "beyond the\nlongest train" + (
            f":\n{100 * mass_beyond:.0f} % of the law,\nextrapolated" if mass_beyond is not None else "")
        ax.text((limit + 0.04 * (xmax - limit)) / factor, 0.03, text, fontsize=7, va="bottom", ha="left",
                color="0.25")
    ax.set_xlim(0.0, xmax / factor)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(name + (f"   KS D = {ks:.3f} (censored)" if ks is not None else ""), fontsize=10)
    ax.set_xlabel(axis_label(name, shown))
    ax.set_ylabel("fraction of cells (CDF)")
    ax.legend(fontsize=6.5, loc="upper left")
    ax.grid(alpha=0.3)
    return ax


def plot_pairs(measured, simulated=None, names=None, *, rho_measured=None, rho_simulated=None,
               ax=None):
    """Pair plot of per-cell parameters in normal-score space.

    Below the diagonal: measured (fitted) cells; above: the simulated population.
    Each panel carries its Spearman correlation.

    Parameters
    ----------
    measured, simulated : ndarray of shape (n, k)
        Normal scores ``Phi^-1(rank / (n + 1))`` of each parameter.
    names : list of str of length k
    rho_measured, rho_simulated : ndarray of shape (k, k), optional
        Spearman correlations written on the panels.
    ax : ndarray of Axes of shape (k, k), optional
        A grid of axes; a new figure is made when omitted.

    Returns
    -------
    ndarray of Axes of shape (k, k)
    """
    measured = np.asarray(measured, float)
    k = measured.shape[1]
    names = list(names) if names is not None else [f"p{i}" for i in range(k)]
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(k, k, figsize=(2 * k, 2 * k))
    axes = np.asarray(ax).reshape(k, k)
    for i in range(k):
        for j in range(k):
            a = axes[i, j]
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlim(-3.5, 3.5)
            a.set_ylim(-3.5, 3.5)
            if i == j:
                a.text(0.5, 0.5, names[i], ha="center", va="center", fontsize=11, weight="bold",
                       transform=a.transAxes)
                continue
            data, rho, colour = (measured, rho_measured, MEASURED) if i > j else (
                simulated, rho_simulated, SIMULATED)
            if data is None:
                a.axis("off")
                continue
            data = np.asarray(data, float)
            a.plot(data[:, j], data[:, i], ".", ms=1.2, alpha=0.35, color=colour, rasterized=True)
            if rho is not None:
                a.text(0.04, 0.94, f"rho={rho[i, j]:+.2f}", transform=a.transAxes, fontsize=7.5,
                       va="top", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
    for j in range(k):
        axes[-1, j].set_xlabel(names[j], fontsize=8)
        axes[j, 0].set_ylabel(names[j], fontsize=8)
    return axes


def plot_spectrum(f, measured, simulated=None, model=None, *, ax=None, model_label="fitted pink law"):
    """Plot residual power spectral densities on log-log axes.

    Parameters
    ----------
    f : array-like of shape (n_freq,)
        Frequency in cycles/pulse.
    measured, simulated, model : array-like of shape (n_freq,)
        One-sided PSD of ``w`` residuals, in 1/(cycles/pulse).
    ax : matplotlib Axes, optional
    model_label : str

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    f = np.asarray(f, float)
    keep = f > 0
    ax.loglog(f[keep], np.asarray(measured)[keep], color=MEASURED, lw=1.6, label="measured residuals")
    if simulated is not None:
        ax.loglog(f[keep], np.asarray(simulated)[keep], color=SIMULATED, lw=1.3, ls="--",
                  label="simulated residuals")
    if model is not None:
        ax.loglog(f[keep], np.asarray(model)[keep], color=MODEL, lw=1.2, ls=":", label=model_label)
    ax.set_xlabel("frequency (cycles/pulse)")
    ax.set_ylabel("PSD of w residual (1/(cycles/pulse))")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_acf(lags, measured, simulated=None, model=None, *, ax=None, model_label="fitted pink law"):
    """Plot the residual autocorrelation against lag.

    Parameters
    ----------
    lags : array-like of shape (n_lags,)
        Lag in pulses.
    measured, simulated, model : array-like of shape (n_lags,)
        Autocorrelation (1 at lag 0).
    ax : matplotlib Axes, optional
    model_label : str

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    ax.plot(lags, measured, "o-", ms=2.5, lw=1.2, color=MEASURED, label="measured residuals")
    if simulated is not None:
        ax.plot(lags, simulated, "--", lw=1.3, color=SIMULATED, label="simulated residuals")
    if model is not None:
        ax.plot(lags, model, ":", lw=1.3, color=MODEL, label=model_label)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("lag (pulses)")
    ax.set_ylabel("autocorrelation")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    return ax


def plot_dwell(edges, measured, simulated=None, model=None, *, state="high", ax=None,
               model_label="fitted geometric law"):
    """Plot dwell-time densities of one RTN state on log-log axes.

    Parameters
    ----------
    edges : array-like of shape (n_bins + 1,)
        Bin edges in pulses.
    measured, simulated, model : array-like of shape (n_bins,)
        Density of complete dwell runs per bin, in 1/pulse.
    state : {"high", "low"}
    ax : matplotlib Axes, optional
    model_label : str

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    edges = np.asarray(edges, float)
    centres = np.sqrt(edges[:-1] * edges[1:])

    def _step(y, **kw):
        y = np.asarray(y, float)
        ax.stairs(np.where(y > 0, y, np.nan), edges, **kw)

    _step(measured, color=MEASURED, lw=1.8, label="measured residuals")
    if simulated is not None:
        _step(simulated, color=SIMULATED, lw=1.3, ls="--", label="simulated residuals")
    if model is not None:
        m = np.asarray(model, float)
        ax.plot(centres, np.where(m > 0, m, np.nan), ":", color=MODEL, lw=1.5, label=model_label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{state}-state dwell time (pulses)")
    ax.set_ylabel("density (1/pulse)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_ablation(rows, *, ax=None, title="Test accuracy per condition (mean +/- std over seeds)"):
    """Test accuracy over epochs for each condition of a training study, mean +/- std over seeds.

    Parameters
    ----------
    rows : iterable of dict
        One per condition, seed and epoch, with ``condition``, ``seed``, ``epoch`` and
        ``test_accuracy`` (the rows of ``ablation.csv``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    rows = list(rows)
    for i, cond in enumerate(dict.fromkeys(r["condition"] for r in rows)):
        epochs = sorted({int(r["epoch"]) for r in rows if r["condition"] == cond})
        acc = [[float(r["test_accuracy"]) for r in rows if r["condition"] == cond and int(r["epoch"]) == e]
               for e in epochs]
        mean = np.array([np.mean(a) for a in acc])
        std = np.array([np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in acc])
        colour = _TRACE_COLOURS[i % len(_TRACE_COLOURS)]
        few = len(epochs) < 3  # a line of one or two points needs its markers and error bars to show
        ax.plot(epochs, mean, color=colour, lw=1.6, label=cond, ls="--" if cond == "software" else "-",
                marker="o" if few else None, ms=4)
        if few:
            ax.errorbar(epochs, mean, yerr=std, fmt="none", ecolor=colour, capsize=3, lw=1)
        else:
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax

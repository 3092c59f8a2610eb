"""Coverage of the fit's 90 % intervals of the population laws over synthetic wafers.

Usage::

    python benchmarks/bench_coverage.py [--seeds 40] [--devices 512] [--pulses 1000] [--bootstrap 200]
                                        [--presets paper wafer_b] [--first-seed 3000] [--calibrate N] [--jobs N]

For every preset and seed a wafer is simulated (:func:`hfox_fit.synth.make_wafer`) and
fitted (:func:`hfox_fit.fitting.fit_campaign`, two-slope law); every interval the
summary gives is checked against the model that made the wafer:

* ``median <p>``: the D2D law's median (``d2d[p]["median_ci90"]``) against the true
  law's median;
* ``<p>.<param>``: the chosen family's free parameters (``d2d[p]["params_ci90"]``), on
  the seeds where the family chosen is the true one and the true law's truncation
  holds less than 0.5 % of its mass (otherwise the family's parameters describe
  another law and have no true value to cover);
* ``copula <a>~<b>``: the Gaussian-copula correlation of each pair (truth: the
  model's, 0 for pairs it does not correlate);
* ``pink std``, ``rtn p_up``, ``rtn p_down``: the noise figures.

Prints one row per (quantity, preset): coverage, mean interval width (relative to
the truth's absolute value; absolute for correlations), number of seeds, and the
band that is consistent with a true 90 % coverage at that number of seeds
(``90 % +- 2 binomial sd``). As a baseline measured in the same run, the cells' own
(Kaplan-Meier) median interval ``KM median <p>`` (family-free) is scored too, and
the time of one fit with and without the bootstrap is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from hfox_fit.calibration import calibrate
from hfox_fit.fitting import fit_campaign
from hfox_fit.synth import make_wafer

#: Largest mass of the true law outside its truncation bounds for its family's parameters to count.
MAX_TRUNCATED_MASS = 0.005


def _truncated_mass(law):
    if law.bounds is None:
        return 0.0
    free = type(law)(law.family, law.params, None)
    lo, hi = free.cdf(np.array(law.bounds, float))
    return float(lo + 1.0 - hi)


def _row(quantity, truth, ci, value, relative=True):
    return {"quantity": quantity, "truth": float(truth), "ci": None if ci is None else (float(ci[0]), float(ci[1])),
            "value": float("nan") if value is None else float(value), "relative": relative}


def interval_checks(preset, seed, devices=512, pulses=1000, bootstrap=200, calibrate_replicates=0, jobs=1):
    """Fit one synthetic wafer; one row per interval: quantity, truth, ci (None where the fit gave none).

    With ``calibrate_replicates``, the fit is also calibrated (:func:`hfox_fit.calibration.calibrate`) and
    every row is repeated as ``calibrated <quantity>`` with the calibrated interval (its simulated wafers fitted
    on ``jobs`` worker processes: the same numbers).
    """
    wafer = make_wafer(preset, devices=devices, pulses=pulses, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_campaign(wafer.dies, law="two_slope", bootstrap=bootstrap, progress=False)
    rows = _rows(result.summary(), wafer.model)
    if calibrate_replicates:
        cal = calibrate(result, replicates=calibrate_replicates, seed=seed, jobs=jobs).table.set_index("quantity")
        for r in list(rows):
            q = r["quantity"]
            if q in cal.index and not q.startswith("KM "):
                row = cal.loc[q]
                ci = None if not np.isfinite(row["calibrated_lo"]) else (row["calibrated_lo"], row["calibrated_hi"])
                rows.append(_row(f"calibrated {q}", r["truth"], ci, row["estimate"], relative=r["relative"]))
    return rows


def _rows(s, model):
    """The rows of :func:`interval_checks` from a fit's summary ``s`` and the wafer's true ``model``."""
    rows = []
    for p, d in s["d2d"].items():
        law = model.d2d.get(p)
        if law is None:
            continue
        rows.append(_row(f"median {p}", law.median(), d.get("median_ci90"), d.get("median")))
        rows.append(_row(f"KM median {p}", law.median(), d.get("sample_median_ci90"), d.get("sample_median")))
        # the family's parameters have a true value only when both laws are that family, untruncated
        if d.get("family") == law.family and d.get("bounds") is None and _truncated_mass(law) < MAX_TRUNCATED_MASS:
            for k, ci in (d.get("params_ci90") or {}).items():
                if k in law.params:
                    rows.append(_row(f"{p}.{k}", law.params[k], ci, d["params"].get(k)))
    corr = s["correlation"]
    names = corr["names"]
    true_names = list(model.correlation_names)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            truth = 0.0
            if names[i] in true_names and names[j] in true_names:
                truth = float(np.asarray(model.correlation)[true_names.index(names[i]), true_names.index(names[j])])
            ci = (corr.get("copula_ci90") or [[None] * len(names)] * len(names))[i][j]
            rows.append(_row(f"copula {names[i]}~{names[j]}", truth, ci, corr["copula"][i][j], relative=False))
    rows.append(_row("pink std", model.pink.std, s["pink"].get("std_ci90"), s["pink"].get("std")))
    rows.append(_row("rtn p_up", model.rtn.p_up, s["rtn"].get("p_up_ci90"), s["rtn"].get("p_up")))
    rows.append(_row("rtn p_down", model.rtn.p_down, s["rtn"].get("p_down_ci90"), s["rtn"].get("p_down")))
    return rows


def coverage_table(rows_by_preset):
    """{(quantity, preset): (coverage, mean width, mean error, n seeds with an interval, n seeds without)}.

    Width and error are relative to the truth (absolute for correlations); the mean
    error of the estimate is its bias (a bias, unlike a narrow interval, is not mended
    by widening the interval)."""
    out = {}
    for preset, rows in rows_by_preset.items():
        for q in dict.fromkeys(r["quantity"] for r in rows):
            these = [r for r in rows if r["quantity"] == q]
            have = [r for r in these if r["ci"] is not None]
            if not have:
                out[q, preset] = (np.nan, np.nan, np.nan, 0, len(these))
                continue
            cov = np.mean([r["ci"][0] <= r["truth"] <= r["ci"][1] for r in have])
            scale = [abs(r["truth"]) if r["relative"] and r["truth"] else 1.0 for r in have]
            width = np.mean([(r["ci"][1] - r["ci"][0]) / u for r, u in zip(have, scale)])
            error = np.nanmean([(r["value"] - r["truth"]) / u for r, u in zip(have, scale)])
            out[q, preset] = (float(cov), float(width), float(error), len(have), len(these) - len(have))
    return out


def band(n, level=0.90):
    """90 % +- 2 binomial standard deviations at ``n`` seeds."""
    sd = np.sqrt(level * (1 - level) / max(n, 1))
    return level - 2 * sd, level + 2 * sd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--first-seed", type=int, default=3000)
    ap.add_argument("--devices", type=int, default=512)
    ap.add_argument("--pulses", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--presets", nargs="+", default=["paper", "wafer_b"])
    ap.add_argument("--calibrate", type=int, default=0, metavar="N",
                    help="also calibrate each fit by N simulated wafers and score the calibrated intervals")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="worker processes for the calibration's simulated wafers (the same numbers)")
    args = ap.parse_args(argv)

    # baseline in the same run: the cost of the bootstrap (one fit with and without it)
    wafer = make_wafer(args.presets[0], devices=args.devices, pulses=args.pulses, seed=args.first_seed)
    times = {}
    for b in (0, args.bootstrap):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_campaign(wafer.dies, law="two_slope", bootstrap=b, progress=False)
        times[b] = time.perf_counter() - t0
    print(f"one fit of {args.devices} cells x {args.pulses} pulses ({args.presets[0]}): "
          f"{times[0]:.2f} s without bootstrap, {times[args.bootstrap]:.2f} s with bootstrap={args.bootstrap}")

    t0 = time.perf_counter()
    rows = {}
    for preset in args.presets:
        rows[preset] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows[preset] += interval_checks(preset, seed, args.devices, args.pulses, args.bootstrap,
                                             args.calibrate, args.jobs)
            print(f"\r{preset}: seed {seed - args.first_seed + 1}/{args.seeds}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    elapsed = time.perf_counter() - t0
    table = coverage_table(rows)
    lo, hi = band(args.seeds)
    print(f"\ncoverage of the 90 % intervals over {args.seeds} seeds per preset ({args.devices} cells x "
          f"{args.pulses} pulses, bootstrap={args.bootstrap}); consistent with 90 % at {args.seeds} seeds: "
          f"{lo:.1%}..{hi:.1%} (2 binomial sd)")
    print("width and error: relative to the truth (absolute for correlations); error: mean of (estimate - truth)")
    print(f"{'quantity':26s} {'preset':8s} {'coverage':>8s} {'width':>9s} {'error':>9s} {'n':>4s} {'no ci':>5s}  in band")
    for (q, preset), (cov, width, error, n, missing) in table.items():
        lo_n, hi_n = band(n)
        flag = "" if not n else ("yes" if lo_n <= cov <= hi_n else "NO")
        print(f"{q:26s} {preset:8s} {cov:8.1%} {width:9.4f} {error:+9.4f} {n:4d} {missing:5d}  {flag}")
    print(f"\n{sum(len(r) for r in rows.values())} intervals from {args.seeds * len(args.presets)} fits in "
          f"{elapsed:.0f} s ({elapsed / (args.seeds * len(args.presets)):.1f} s per wafer)")


if __name__ == "__main__":
    main()

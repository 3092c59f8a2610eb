"""Time the campaign fit and compare the vectorised drift fit with a plain per-cell lmfit loop.

Usage::

    python benchmarks/bench_fit.py [--devices 16384] [--pulses 1000] [--law auto] [--jobs 1]
                                   [--loop-cells 200] [--seed 0]

Prints

* the end-to-end time of :func:`hfox_fit.fitting.fit_campaign` (drift with flags
  and RTN masking, noise, D2D, C2C, the summary and the DeviceModel) on a
  ``paper``-preset campaign (budget: 60 s for 16,384 cells x 1000 pulses on a
  2-core machine), with the main accuracy figures against the ground truth;
* the per-cell cost and accuracy of the vectorised two-slope fit on one die
  against a plain per-cell ``lmfit.Model.fit`` loop on ``--loop-cells`` cells of
  the same die (target: at least 20x faster at equal or better accuracy), and
  of the whole robust per-die step (which also flags cells, detects and masks
  RTN and fits the noise).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from hfox_fit.fitting import DRIFT_MODELS, fit_campaign, fit_drift_die
from hfox_fit.fitting import drift as drift_module
from hfox_fit.laws import DRIFT_LAWS
from hfox_fit.synth import make_wafer

BUDGET_S = 60.0
SPEEDUP_TARGET = 20.0


def _relerr(est, truth):
    est, truth = np.asarray(est, float), np.asarray(truth, float)
    ok = np.isfinite(est) & np.isfinite(truth) & (truth != 0)
    return float(np.median(np.abs(est[ok] / truth[ok] - 1))) if ok.any() else float("nan")


def lmfit_loop(die, rows):
    """Plain per-cell lmfit fits of two_slope on every valid read (a generic start from the data)."""
    model = DRIFT_MODELS["two_slope"]
    res = die.resistance[:, 0, :]
    out = np.full((len(rows), 4), np.nan)
    t = np.arange(1, res.shape[1], dtype=float)
    for k, i in enumerate(rows):
        w = np.log(res[i, 1:] / res[i, 0])
        m = np.isfinite(w)
        tt, ww = t[m], w[m]
        half = len(tt) // 3
        m1 = np.polyfit(tt[:half], ww[:half], 1)[0]
        m2 = np.polyfit(tt[-half:], ww[-half:], 1)[0]
        params = model.make_params(m1=m1, t_star=float(np.median(tt)), m2=m2, c1=float(ww[:5].mean()))
        params["t_star"].set(min=tt[0] + 1, max=tt[-1] - 1)
        try:
            r = model.fit(ww, params, t=tt, method="leastsq")
        except Exception:  # noqa: BLE001 - a failed fit counts as a miss
            continue
        out[k] = [r.params[p].value for p in ("m1", "t_star", "m2", "c1")]
    return out


def vectorised_plain(die):
    """The vectorised two-slope fit alone (least squares on every valid read, the lmfit loop's job).

    Returns the per-cell parameters (m1, t_star, m2, c1) and their covariance diagonal, shape (N, 4) each.
    """
    res = die.resistance[:, 0, :]
    w = np.log(res[:, 1:] / res[:, :1])
    t = np.arange(1, res.shape[1], dtype=float)
    valid = np.isfinite(w)
    y, wt = np.where(valid, w, 0.0), valid.astype(float)
    first = t[np.argmax(valid, axis=1)]
    last = t[valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)]
    f = drift_module._fit_law("two_slope", t, t[-1], y, wt, first, last)
    law = drift_module.sep.SEPARABLE_LAWS["two_slope"]
    params, jac = law.to_params(f.beta, f.theta, t[-1])
    cov = jac @ np.linalg.pinv(f.info) @ np.swapaxes(jac, 1, 2) * (f.sse / (wt.sum(1) - 4))[:, None, None]
    values = np.stack([params[p] for p in DRIFT_LAWS["two_slope"].params], axis=1)
    return values, np.einsum("npp->np", cov)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=16384)
    ap.add_argument("--pulses", type=int, default=1000)
    ap.add_argument("--law", default="auto")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--loop-cells", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    wafer = make_wafer("paper", devices=args.devices, pulses=args.pulses, seed=args.seed)
    print(f"make_wafer: {time.perf_counter() - t0:.1f} s for {args.devices} cells x {args.pulses} pulses "
          f"({len(wafer.dies)} dies)")
    truth = wafer.truth.set_index(["die", "device"])

    # --- end to end ------------------------------------------------------------------------
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        c0 = time.process_time()
        fit = fit_campaign(wafer.dies, law=args.law, jobs=args.jobs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = fit.summary_
    verdict = "OK" if wall <= BUDGET_S else "OVER BUDGET"
    print(f"fit_campaign(law={args.law!r}, jobs={args.jobs}): {wall:.1f} s wall ({cpu:.1f} s CPU in this "
          f"process) for {args.devices} cells x {args.pulses} pulses; budget {BUDGET_S:.0f} s: {verdict}; "
          f"{len(caught)} warning(s)")
    cells = fit.cells_.set_index(["die", "device"])
    tr = truth.loc[cells.index]
    ok = (cells["flag"] == "ok").to_numpy() & (tr["flag"] == "ok").to_numpy()
    print(f"  law {s['drift']['law']}; flagged {s['devices']['flagged']}")
    if fit.law_ == "two_slope":
        inside = ok & (tr["t_star"].to_numpy() < args.pulses)
        print(f"  per cell: median |rel err| m1 {_relerr(cells['m1'][ok], tr['m1'][ok]):.3f} (<= 0.10), "
              f"t* {_relerr(cells['t_star'][inside], tr['t_star'][inside]):.3f} (<= 0.15), "
              f"R0 {_relerr(cells['r0'][ok], tr['r0'][ok]):.4f} (<= 0.01)")
    for p in ("m1", "t_star", "r0"):
        if p in s["d2d"]:
            d = s["d2d"][p]
            true = wafer.model.d2d[p]
            print(f"  D2D {p:7s} {d['family']:12s} (truth {true.family}) median {d['median']:.4g} "
                  f"(truth {true.median():.4g}, {d['median'] / true.median() - 1:+.1%}) CI90 {d['median_ci90']}")
    print(f"  pink std {s['pink']['std']:.4g} (truth {wafer.model.pink.std:.4g}); RTN p_up {s['rtn']['p_up']:.3g} "
          f"(truth {wafer.model.rtn.p_up:.3g}), p_down {s['rtn']['p_down']:.3g} (truth {wafer.model.rtn.p_down:.3g})")

    # --- vectorised drift fit vs a plain lmfit loop, same die --------------------------------
    die = wafer.dies[0]
    tr_die = wafer.truth[wafer.truth["die"] == die.die].set_index("device").loc[list(die.devices)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = fit_drift_die(die, ("two_slope",))
        t_vec = time.perf_counter() - t0
    tab = res.tables["two_slope"]
    good = np.nonzero(((tab["flag"] == "ok") & (tr_die["flag"] == "ok").to_numpy()).to_numpy())[0]
    rows = good[np.linspace(0, len(good) - 1, min(args.loop_cells, len(good))).astype(int)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop = lmfit_loop(die, rows)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain, _ = vectorised_plain(die)
    t_plain = time.perf_counter() - t0
    per_vec = t_vec / die.n_cells
    per_plain = t_plain / die.n_cells
    per_loop = t_loop / len(rows)
    speedup = per_loop / per_plain
    tm1, tts = tr_die["m1"].to_numpy()[rows], tr_die["t_star"].to_numpy()[rows]
    inside = tts < args.pulses
    vec_m1 = tab["m1"].to_numpy()[rows]
    vec_ts = tab["t_star"].to_numpy()[rows]
    print(f"drift fit, one die ({die.n_cells} cells) against a plain lmfit loop ({len(rows)} of its cells, "
          f"{per_loop * 1e3:.2f} ms/cell, {t_loop:.1f} s):")
    print(f"  vectorised two-slope fit (global break search + LM-free closed form + stderr, every valid read): "
          f"{per_plain * 1e3:.3f} ms/cell ({t_plain:.2f} s): {speedup:.0f}x faster (target >= {SPEEDUP_TARGET:.0f}x): "
          f"{'OK' if speedup >= SPEEDUP_TARGET else 'TOO SLOW'}")
    print(f"  whole robust per-die step (flags, RTN detection and masking, noise, all stderr): "
          f"{per_vec * 1e3:.2f} ms/cell ({t_vec:.2f} s): {per_loop / per_vec:.0f}x faster")
    print(f"  accuracy on those {len(rows)} cells, median |rel err| m1: lmfit loop {_relerr(loop[:, 0], tm1):.3f}, "
          f"vectorised plain {_relerr(plain[rows, 0], tm1):.3f}, robust {_relerr(vec_m1, tm1):.3f}; "
          f"t* (break inside): lmfit loop {_relerr(loop[inside, 1], tts[inside]):.3f}, vectorised plain "
          f"{_relerr(plain[rows, 1][inside], tts[inside]):.3f}, robust {_relerr(vec_ts[inside], tts[inside]):.3f}")
    return 0 if wall <= BUDGET_S and speedup >= SPEEDUP_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

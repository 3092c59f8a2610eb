"""Time :func:`hfox_fit.report.build_report` on a 16,384-cell x 1000-pulse campaign.

Usage::

    python benchmarks/bench_report.py [--devices 16384] [--pulses 1000] [--out DIR]

The wafer comes from :func:`hfox_fit.synth.make_wafer` (paper preset, die
coordinates added); the "fit" is the wafer's ground truth turned into a fit
table and summary, so only the report is timed. The budget is 60 s on a
2-core machine. Prints one line: ``build_report: <s> s for <cells> cells x
<pulses> pulses (<figures> figures)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hfox_fit.fitting import FLAG_NAMES
from hfox_fit.synth import make_wafer

BUDGET_S = 60.0


def truth_fit(wafer):
    """Return (cells, summary, model) from a synthetic wafer's ground truth (a perfect fit)."""
    model = wafer.model
    params = ("m1", "t_star", "m2", "c1", "r0")
    truth = wafer.truth
    ok = (truth["flag"] == "ok").to_numpy()
    cells = truth[["wafer", "die", "device", "cycle", "flag"]].copy()
    for p in params:
        v = np.where(ok, truth[p].to_numpy(float), np.nan)
        cells[p] = v
        cells[f"{p}_stderr"] = 0.02 * np.abs(v)
    counts = pd.Series(cells["flag"]).value_counts()
    d2d = {p: {**model.d2d[p].to_dict(), "median": model.d2d[p].median(),
               "median_ci90": [0.98 * model.d2d[p].median(), 1.02 * model.d2d[p].median()], "ks": None}
           for p in params}
    summary = {
        "devices": {"total": len(cells), "fitted": int(ok.sum()),
                    "flagged": {f: int(counts.get(f, 0)) for f in FLAG_NAMES}},
        "drift": {"law": "two_slope", "scores": {"two_slope": {"aic": 0.0, "bic": 0.0}}},
        "d2d": d2d,
        "correlation": {"names": list(params[:4]), "spearman": np.eye(4).tolist(), "copula": np.eye(4).tolist()},
        "pink": {"std": model.pink.std, "exponent": model.pink.exponent},
        "rtn": {"p_up": model.rtn.p_up, "p_down": model.rtn.p_down,
                "amplitude": {"median": model.d2d["rtn_amplitude"].median()}},
    }
    return cells, summary, model


def main(argv=None) -> int:
    from hfox_fit.report import build_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=16384)
    ap.add_argument("--pulses", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the report here (default: a temporary folder)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    wafer = make_wafer("paper", devices=args.devices, pulses=args.pulses, seed=args.seed)
    side = int(np.ceil(np.sqrt(len(wafer.dies))))
    for i, d in enumerate(wafer.dies):
        d.attrs.update({"x": i % side, "y": i // side})
    cells, summary, model = truth_fit(wafer)
    t_make = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "report"
        t1 = time.perf_counter()
        res = build_report(wafer.dies, cells, summary, model, out, store_name="bench", seed=args.seed)
        elapsed = time.perf_counter() - t1
        size = res.html.stat().st_size / 1e6
    print(f"(wafer made in {t_make:.1f} s; report.html {size:.1f} MB; {res.n_cells:,} cell-cycles compared)",
          file=sys.stderr)
    print(f"build_report: {elapsed:.1f} s for {args.devices:,} cells x {args.pulses} pulses "
          f"({len(res.figures)} figures; budget {BUDGET_S:.0f} s)")
    return 0 if elapsed <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time the calibration of a fit's population intervals, its replicates here and on worker processes.

Usage::

    python benchmarks/bench_calibrate.py [--devices 500] [--pulses 300] [--replicates 20] [--jobs 2]
                                         [--rounds 2] [--seed 0]

Fits a ``paper``-preset campaign of the bundled example's size (500 cells x 300 pulses)
once, then times :func:`hfox_fit.calibration.calibrate` with ``--replicates`` simulated
wafers fitted one after the other in this process (``jobs=1``, the baseline) and on
``--jobs`` worker processes, in ``--rounds`` alternating rounds (so that a change of load
on the machine hits both alike), and prints the median times, the speed-up and whether
both gave the same table (each replicate has its own seed). Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

from hfox_fit.calibration import calibrate
from hfox_fit.fitting import fit_campaign
from hfox_fit.synth import make_wafer


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--pulses", type=int, default=300)
    ap.add_argument("--replicates", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    wafer = make_wafer("paper", devices=args.devices, pulses=args.pulses, seed=args.seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_campaign(wafer.dies, law="two_slope", progress=False)
    fit_s = time.perf_counter() - t0
    print(f"{os.cpu_count()} CPU(s); campaign: paper preset, {args.devices} cells x {args.pulses} pulses, "
          f"fitted in {fit_s:.1f} s (with the bootstrap of its intervals); {args.replicates} replicates")
    times = {1: [], args.jobs: []}
    tables = {}
    for _ in range(args.rounds):
        for jobs in times:
            t0 = time.perf_counter()
            cal = calibrate(fit, replicates=args.replicates, seed=args.seed, jobs=jobs)
            times[jobs].append(time.perf_counter() - t0)
            tables[jobs] = cal.table
    serial, parallel = (statistics.median(times[k]) for k in times)
    print(f"calibrate, replicates in this process (baseline): {serial:.1f} s "
          f"({serial / args.replicates:.2f} s per replicate; rounds: {', '.join(f'{t:.1f}' for t in times[1])})")
    print(f"calibrate, replicates on {args.jobs} worker processes: {parallel:.1f} s "
          f"(rounds: {', '.join(f'{t:.1f}' for t in times[args.jobs])}); speed-up {serial / parallel:.2f}x")
    same = tables[1].equals(tables[args.jobs])
    print(f"same calibration table both ways: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

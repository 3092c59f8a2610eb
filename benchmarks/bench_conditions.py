"""Time the fit of a campaign measured at 9 pulse conditions against the same cells pooled.

Usage::

    python benchmarks/bench_conditions.py [--devices 128] [--pulses 600] [--rounds 3] [--seed 1]

A ``paper``-preset campaign over 3 amplitudes x 3 widths (``--devices`` cells each) drawn
from the default condition law is fitted twice per round: as stored (per-condition D2D laws
and the condition law) and with every train's condition set to one value (the baseline: one
pooled population, the fit of before). The rounds alternate so that a change of load hits
both alike; the figures are the medians over rounds, in wall time and in CPU time of this
process. Target: the 9-condition fit takes at most 1.3x the pooled one. The fitted slopes are
printed against the truth, in standard errors.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

import numpy as np

from hfox_fit.fitting import CampaignFitter
from hfox_fit.synth import make_condition_campaign


def _timed(dies):
    w0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CampaignFitter(law="two_slope").fit(dies).result_
    return time.perf_counter() - w0, time.process_time() - c0, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=128, help="cells per condition (default 128)")
    ap.add_argument("--pulses", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    wafer = make_condition_campaign("paper", devices=args.devices, pulses=args.pulses, seed=args.seed)
    pooled = copy.deepcopy(wafer.dies)
    for die in pooled:
        die.v_pulse[:] = 1.25
        die.pulse_width[:] = 1e-6
    load_before = os.getloadavg()[0]
    times = {"conditions": [], "pooled": []}
    for _ in range(args.rounds):
        for name, dies in (("pooled", pooled), ("conditions", wafer.dies)):
            wall, cpu, result = _timed(dies)
            times[name].append((wall, cpu))
            if name == "conditions":
                fitted = result
    med = {k: np.median(np.asarray(v), axis=0) for k, v in times.items()}
    print(f"campaign: 9 conditions x {args.devices} cells x {args.pulses} pulses, seed {args.seed}, "
          f"{args.rounds} round(s); load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"(on {os.cpu_count()} CPUs: above that, other processes share them and the wall times stretch)")
    for k in ("pooled", "conditions"):
        print(f"  {k:10s} wall {med[k][0]:7.2f} s   cpu {med[k][1]:7.2f} s")
    ratio = med["conditions"] / med["pooled"]
    print(f"  ratio      wall {ratio[0]:7.3f}     cpu {ratio[1]:7.3f}     (target <= 1.3)")
    law = fitted.summary()["condition_law"]
    truth = wafer.condition_law.params
    for p, t in truth.items():
        e = law["params"][p]
        for b in ("b_v", "b_w"):
            z = (e[b] - t[b]) / e[b + "_stderr"]
            print(f"  {p:7s} {b}: fitted {e[b]:+.3f} +- {e[b + '_stderr']:.3f}, truth {t[b]:+.3f} (z {z:+.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

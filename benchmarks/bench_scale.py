"""Memory and worker scaling of ``hfox-fit fit`` on a campaign store: does the fit stream, does it scale?

Usage::

    python benchmarks/bench_scale.py [--cells 1024] [--pulses 1000] [--bootstrap 200] [--quick]

Prints

* the peak RSS of the fit of ``hfox-fit fit STORE --jobs 1`` (CampaignFitter on the store's dies, each
  read by the worker that fits it, then saved in the store) on a store of one chunk (one die of
  ``--cells`` cells x ``--pulses`` pulses) and on one of 8 such dies, each fit in a fresh
  process (its ``VmHWM``; target: the 8-die fit at most 2x the one-die fit), with the RSS of a
  process that only imported hfox_fit (what no streaming can save) and the growth above it;
* the throughput (cells/s) of ``--jobs 1`` and ``--jobs 2`` on a 16-die store, each in a fresh
  process, end to end (read, per-die step, pooling, save) and for the per-die step alone
  (target: 2 workers at least 1.6x one, end to end).

The machine's load average is printed with the figures: on a shared machine the
two-worker speed-up is bounded by the free cores, not by the fit. ``--quick`` is a smoke
test (small dies, a few seconds). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

MEMORY_TARGET = 2.0
SPEEDUP_TARGET = 1.6
CHUNKS = 8
THROUGHPUT_DIES = 16


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(argv) -> int:
    """In a fresh process: fit a store (or only import) and print the figures as JSON."""
    import resource

    store, jobs, bootstrap = argv[0], int(argv[1]), int(argv[2])
    out = {}
    if store != "-":
        from hfox_fit.fitting import campaign
        from hfox_fit.store import CampaignStore, StoredDie

        mapped = {}
        real_map = campaign.map_dies

        def timed_map(*args, **kwargs):  # the per-die step's own wall time
            t0 = time.perf_counter()
            try:
                return real_map(*args, **kwargs)
            finally:
                mapped["s"] = time.perf_counter() - t0

        campaign.map_dies = timed_map
        t0 = time.perf_counter()
        # what `hfox-fit fit STORE --jobs N --quiet` does, with the bootstrap of --quick
        sources = [StoredDie(Path(store).resolve(), wafer, die) for wafer, die in CampaignStore(store).dies()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitter = campaign.CampaignFitter("auto", jobs, bootstrap=bootstrap).fit(sources)
        fitter.result_.save(CampaignStore(store), dies=fitter.die_trees(), law="auto")
        out.update(wall_s=time.perf_counter() - t0, map_s=mapped.get("s", float("nan")))
    else:
        import hfox_fit.cli  # noqa: F401
        import hfox_fit.fitting  # noqa: F401
        import hfox_fit.store  # noqa: F401
    out["rss_mb"] = _peak_rss_mb()
    out["workers_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def _run_child(store, jobs: int, bootstrap: int) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, "--child", str(store), str(jobs), str(bootstrap)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: the fit of {store} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dies(n_dies: int, cells: int, pulses: int, seed: int):
    """``n_dies`` simulated dies of ``cells`` cells (the first cells of 1024-cell synthetic dies)."""
    from hfox_fit.schema import DieData
    from hfox_fit.synth import make_wafer

    wafer = make_wafer("paper", devices=1024 * n_dies, pulses=pulses, seed=seed)
    out = []
    for die in wafer.dies[:n_dies]:
        k = min(cells, die.n_cells)
        out.append(DieData(die.wafer, die.die, die.devices[:k], die.cycles, die.resistance[:k], die.present[:k],
                           die.v_read[:k], die.v_pulse[:k], die.pulse_width[:k], dict(die.attrs)))
    return out


def _store(path: Path, dies) -> Path:
    """A campaign store holding ``dies``, ingested one die at a time."""
    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore
    from hfox_fit.store._ingest import TableResult, sha256_table

    def tables():
        for die in dies:
            table = dies_to_table([die])
            yield TableResult(table=table, path=f"{die.wafer}_{die.die}", format="table", sha256=sha256_table(table))

    CampaignStore(path).ingest(tables())
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1024, help="cells per die (a chunk), at most 1024")
    ap.add_argument("--pulses", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates of the pooled laws (fit's)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 64 cells x 120 pulses per die, 10 replicates")
    args = ap.parse_args(argv)
    cells, pulses, boot = (64, 120, 10) if args.quick else (min(args.cells, 1024), args.pulses, args.bootstrap)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        dies = _dies(THROUGHPUT_DIES, cells, pulses, args.seed)
        one = _store(tmp / "one.h5", dies[:1])
        eight = _store(tmp / "eight.h5", dies[:CHUNKS])
        sixteen = _store(tmp / "sixteen.h5", dies)
        del dies
        print(f"stores: 1, {CHUNKS} and {THROUGHPUT_DIES} dies of {cells} cells x {pulses} pulses "
              f"({time.perf_counter() - t0:.1f} s); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

        # --- memory: one chunk against eight -------------------------------------------------
        base = _run_child("-", 1, boot)["rss_mb"]
        m1 = _run_child(one, 1, boot)
        m8 = _run_child(eight, 1, boot)
        ratio = m8["rss_mb"] / m1["rss_mb"]
        grow1, grow8 = m1["rss_mb"] - base, m8["rss_mb"] - base
        mem_ok = ratio <= MEMORY_TARGET
        ok &= mem_ok
        print(f"peak RSS of the fit (--jobs 1, bootstrap {boot}): 1 die {m1['rss_mb']:.0f} MB, {CHUNKS} dies {m8['rss_mb']:.0f} MB: "
              f"{ratio:.2f}x (target <= {MEMORY_TARGET:.1f}x): {'OK' if mem_ok else 'OVER'}")
        print(f"  a process that only imports hfox_fit: {base:.0f} MB; above it, 1 die {grow1:.0f} MB, {CHUNKS} dies "
              f"{grow8:.0f} MB ({grow8 / max(grow1, 1e-9):.2f}x; the reads of one die: "
              f"{cells * pulses * 8 / 2**20:.1f} MB as float64)")

        # --- throughput: 1 and 2 workers -----------------------------------------------------
        n_cells = THROUGHPUT_DIES * cells
        load = os.getloadavg()[0]
        t1 = _run_child(sixteen, 1, boot)
        t2 = _run_child(sixteen, 2, boot)
        speed, speed_map = t1["wall_s"] / t2["wall_s"], t1["map_s"] / t2["map_s"]
        fast = speed >= SPEEDUP_TARGET
        ok &= fast
        print(f"throughput on {THROUGHPUT_DIES} dies ({n_cells} cells x {pulses} pulses), end to end (read, fit, "
              f"pool, save): --jobs 1 {n_cells / t1['wall_s']:.0f} cells/s ({t1['wall_s']:.1f} s), --jobs 2 "
              f"{n_cells / t2['wall_s']:.0f} cells/s ({t2['wall_s']:.1f} s): {speed:.2f}x (target >= "
              f"{SPEEDUP_TARGET:.1f}x): {'OK' if fast else 'BELOW'}")
        print(f"  the per-die step alone: --jobs 1 {n_cells / t1['map_s']:.0f} cells/s ({t1['map_s']:.1f} s), "
              f"--jobs 2 {n_cells / t2['map_s']:.0f} cells/s ({t2['map_s']:.1f} s): {speed_map:.2f}x; the rest "
              f"(pooling, its independent parts on the workers with --jobs 2; save; start-up) "
              f"{t1['wall_s'] - t1['map_s']:.1f} s / {t2['wall_s'] - t2['map_s']:.1f} s")
        print(f"  peak RSS --jobs 2: client {t2['rss_mb']:.0f} MB, largest worker {t2['workers_rss_mb']:.0f} MB; "
              f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after (2 free cores needed for 2x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

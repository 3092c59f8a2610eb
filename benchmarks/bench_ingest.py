"""Benchmark of the ingest path: bench files -> read_measurements -> CampaignStore.ingest.

Writes a simulated wafer as bench files (one per wafer/die/array) in a temporary
folder, then ingests them into a fresh store in a child process and prints the
throughput (reads/s) and the child's peak memory against the raw files' size.

Targets: >= 1e6 reads/s, peak memory <= 3 x the raw files' size.

Usage::

    python benchmarks/bench_ingest.py [--devices 4096] [--pulses 1000] [--cycles 1] [--repeat 1]

The HDF5 write time is what the store reports (``IngestSummary.write_seconds``);
parse+validate is timed around the reader; the rest is split/merge and the
store's bookkeeping. The child reports its peak resident set (``VmHWM``, reset
after the imports) in full and above its resident set after imports (what the
ingest itself needs); the ratio uses the latter. ``ru_maxrss`` is not used: on
Linux it keeps the parent's peak across fork + exec.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATE = 1e6
TARGET_MEMORY = 3.0


def _status(field: str) -> int:
    """A memory figure of this process in bytes (Linux /proc, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the ingest's own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def child(raw_dir: str, store_path: str) -> None:
    """Ingest every file of raw_dir into store_path; print figures as JSON."""
    from hfox_fit.parsers import read_measurements
    from hfox_fit.store import CampaignStore

    baseline = _status("VmRSS")
    _reset_peak()
    files = sorted(p for p in Path(raw_dir).iterdir() if p.is_file() and p.name != "truth.json")
    parse_s = 0.0

    def results():
        nonlocal parse_s
        for f in files:
            t = time.perf_counter()
            r = read_measurements(f, "bench")
            parse_s += time.perf_counter() - t
            yield r
            del r

    t0 = time.perf_counter()
    summary = CampaignStore(store_path).ingest(results())
    total_s = time.perf_counter() - t0
    peak = _status("VmHWM")
    print(json.dumps({
        "files": len(summary.files),
        "reads": summary.rows_stored,
        "total_s": total_s,
        "parse_s": parse_s,
        "write_s": summary.write_seconds,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "store_bytes": os.path.getsize(store_path),
    }))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=4096)
    ap.add_argument("--pulses", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="ingest runs (fresh store each time)")
    ap.add_argument("--child", nargs=2, metavar=("RAW_DIR", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    from hfox_fit.synth import make_wafer, write_wafer

    with tempfile.TemporaryDirectory(prefix="hfox_bench_") as tmp:
        raw = Path(tmp) / "raw"
        t = time.perf_counter()
        wafer = make_wafer("paper", devices=args.devices, pulses=args.pulses, cycles=args.cycles, seed=0)
        files = [p for p in write_wafer(wafer, raw, "bench") if p.name != "truth.json"]
        gen_s = time.perf_counter() - t
        raw_bytes = sum(p.stat().st_size for p in files)
        n_reads = sum(d.n_reads for d in wafer.dies)
        del wafer
        print(f"raw: {len(files)} bench files, {n_reads:,} reads, {raw_bytes / 1e6:.1f} MB "
              f"(generated in {gen_s:.1f} s)")
        for run in range(args.repeat):
            store = Path(tmp) / f"store{run}.h5"
            out = subprocess.run([sys.executable, __file__, "--child", str(raw), str(store)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert r["reads"] == n_reads, (r["reads"], n_reads)
            rate = r["reads"] / r["total_s"]
            above = r["peak_bytes"] - r["baseline_bytes"]
            print(
                f"run {run + 1}: {r['total_s']:.2f} s -> {rate:,.0f} reads/s "
                f"(parse+validate {r['parse_s']:.2f} s, HDF5 write {r['write_s']:.2f} s, "
                f"split/merge {r['total_s'] - r['parse_s'] - r['write_s']:.2f} s); "
                f"target >= {TARGET_RATE:,.0f}: {'OK' if rate >= TARGET_RATE else 'MISSED'}"
            )
            print(
                f"       peak RSS {r['peak_bytes'] / 1e6:.0f} MB, of which {above / 1e6:.0f} MB above the "
                f"{r['baseline_bytes'] / 1e6:.0f} MB after imports = {above / raw_bytes:.2f} x raw "
                f"(total {r['peak_bytes'] / raw_bytes:.2f} x); target <= {TARGET_MEMORY} x: "
                f"{'OK' if above <= TARGET_MEMORY * raw_bytes else 'MISSED'}; "
                f"store {r['store_bytes'] / 1e6:.1f} MB ({r['store_bytes'] / raw_bytes:.2f} x raw)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

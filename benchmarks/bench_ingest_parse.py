"""Benchmark: parse ``bench`` files with :func:`hfox_fit.parsers.read_measurements`.

Writes a simulated wafer (``hfox_fit.synth.make_wafer``) as bench files into a
temporary folder, then reads them back in a fresh Python process and prints

* the throughput in reads per second (``read_measurements`` end to end,
  validation included; best of ``--repeat`` passes),
* the peak memory of the read: the growth of the process's peak RSS
  (VmHWM, reset just before) while every file is read and its table kept, and
  the ``tracemalloc`` peak of reading the largest file alone, each against the
  raw size of what was read. The peak RSS is read from /proc (Linux).

Targets: >= 1e6 reads/s, peak memory <= 3x the raw size.

Usage::

    python benchmarks/bench_ingest_parse.py                 # 4096 cells x 1001 reads
    python benchmarks/bench_ingest_parse.py --devices 1024  # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATE = 1e6
TARGET_MEMORY = 3.0


def generate(folder: Path, devices: int, pulses: int, cycles: int, seed: int) -> list[Path]:
    from hfox_fit.parsers import write_measurements
    from hfox_fit.schema import dies_to_table
    from hfox_fit.synth import make_wafer

    wafer = make_wafer("paper", devices=devices, pulses=pulses, cycles=cycles, seed=seed)
    return write_measurements(dies_to_table(wafer.dies), folder, "bench")


def _rss() -> tuple[int, int]:
    """(current RSS, peak RSS since the last reset) of this process in bytes (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1]) * 1024
    return out["VmRSS"], out["VmHWM"]


def _reset_peak_rss() -> None:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def measure(files: list[Path], repeat: int) -> dict:
    """Run in a fresh process: the memory of the reads, then their speed."""
    import gc
    import tracemalloc

    from hfox_fit.parsers import read_measurements

    sizes = [f.stat().st_size for f in files]
    read_measurements(files[0])  # warm-up: lazy imports and first-call costs
    gc.collect()
    # Peak RSS growth while every file is read and its table kept, as an ingest would.
    base, _ = _rss()
    _reset_peak_rss()
    kept = [read_measurements(f).table for f in files]
    _, peak = _rss()
    reads = sum(len(t) for t in kept)
    del kept
    gc.collect()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = 0
        for f in files:
            n += len(read_measurements(f).table)
        best = min(best, time.perf_counter() - t0)
        assert n == reads
    largest = max(range(len(files)), key=sizes.__getitem__)
    gc.collect()
    tracemalloc.start()
    table = read_measurements(files[largest]).table
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "files": len(files),
        "reads": reads,
        "raw_bytes": sum(sizes),
        "seconds": best,
        "rss_growth": peak - base,
        "largest_bytes": sizes[largest],
        "largest_reads": len(table),
        "traced_peak": traced,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4096, help="cells (1024 per die, 256 per file)")
    ap.add_argument("--pulses", type=int, default=1000, help="pulses per train (reads = pulses + 1)")
    ap.add_argument("--cycles", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        json.dump(measure([Path(p) for p in args.measure], args.repeat), sys.stdout)
        return 0
    with tempfile.TemporaryDirectory(prefix="hfox_bench_") as tmp:
        t0 = time.perf_counter()
        files = generate(Path(tmp), args.devices, args.pulses, args.cycles, args.seed)
        gen = time.perf_counter() - t0
        out = subprocess.run(
            [sys.executable, __file__, "--repeat", str(args.repeat), "--measure", *map(str, files)],
            check=True, capture_output=True, text=True,
        )
        r = json.loads(out.stdout)
    mb = 1e6
    rate = r["reads"] / r["seconds"]
    rss_ratio = r["rss_growth"] / r["raw_bytes"]
    traced_ratio = r["traced_peak"] / r["largest_bytes"]
    print(f"generated {r['files']} bench files, {r['reads']:,} reads, {r['raw_bytes'] / mb:.1f} MB "
          f"({r['raw_bytes'] / r['reads']:.1f} B/read) in {gen:.1f} s")
    print(f"parse: {r['seconds']:.2f} s for {r['reads']:,} reads = {rate / 1e6:.2f} M reads/s "
          f"(target >= {TARGET_RATE / 1e6:.0f} M/s: {'ok' if rate >= TARGET_RATE else 'MISSED'})")
    print(f"memory, all files read and kept: peak RSS growth {r['rss_growth'] / mb:.1f} MB = "
          f"{rss_ratio:.2f} x raw {r['raw_bytes'] / mb:.1f} MB "
          f"(target <= {TARGET_MEMORY:.0f}x: {'ok' if rss_ratio <= TARGET_MEMORY else 'MISSED'})")
    print(f"memory, largest file alone: tracemalloc peak {r['traced_peak'] / mb:.1f} MB = "
          f"{traced_ratio:.2f} x raw {r['largest_bytes'] / mb:.1f} MB "
          f"(target <= {TARGET_MEMORY:.0f}x: {'ok' if traced_ratio <= TARGET_MEMORY else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

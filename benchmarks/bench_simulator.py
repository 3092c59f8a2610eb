"""Cell-updates per second of WeakResetArray against the authors' style of update.

Usage::

    python benchmarks/bench_simulator.py [--cells 1000000] [--steps 30] [--threads N] [--no-compile]

Both simulators run in the same process on this machine, at float32, with
random 0..14 pulses per cell per step (a new draw each step), in alternating
rounds (WeakResetArray, reference, ...) so that a burst of load from other
processes hits both; the medians of the step times are reported, with the load
average before and after. The reference re-implements the update of the
authors' training code from ``weak-reset-model.md``: per cell a row of 17 values
(RTN level, 15 noise taps, pulse count) plus the D2D parameters; every step
draws 15 fresh innovations per cell, shifts the tap history of the cells given
``k`` pulses with one roll per distinct ``k``, and advances the RTN with a table
of transition-matrix powers. Both use torch's default thread count here (or
``--threads``). WeakResetArray's CPU update runs in blocks of
``hfox_fit.torch.CPU_BLOCK`` cells on that many worker threads, whose
torch operations are single-threaded (no operation waits at torch's thread-pool
barrier), falling back to one thread while the process gets about one core; the
reference's whole-array operations go to torch's thread pool. The ``compile=True``
row is WeakResetArray with its per-block drift and pink update fused by
``torch.compile`` (the first call, which compiles, is left out). A row with
only 10 % of the cells given pulses (the others 0, which the update skips block
by block) shows the case of training, and the ``pulse_pairs`` row the update of
the training loop (training-like signed counts per pair: its class path, the
default, against its select path, the default before, in alternating rounds; and at 4 % of the pairs
pulsed, as in bench_train's last steps, its blocks listing their few pulsed pairs against one sort of every
pair, the path before). The floors (drawing the normal numbers
alone, copying the state once) state what bounds the update, and a torch.profiler
table of one thread's update shows where its time goes. Figures are printed, not
asserted; the CUDA rows appear when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from hfox_fit import preset_model
from hfox_fit.laws import pink_coefficients
from hfox_fit.torch import CPU_BLOCK, WeakResetArray

MAX_PULSES = 14
SPARSE_SHARE_BENCH = 0.1  # share of the cells given pulses in the sparse row


class ReferenceArray:
    """The authors' per-cell update, in torch, written from the description.

    State per cell: one row of 17 values (RTN level, 15 noise taps, pulse
    count) plus the D2D parameters. Every step draws ``taps`` fresh innovations
    per cell, shifts the history of the cells given ``k`` pulses with one
    ``torch.roll`` per distinct ``k`` (boolean-mask indexing), advances the RTN
    with a table of transition-matrix powers, and rebuilds the state row.
    """

    def __init__(self, model, num_devices, *, seed=0, device="cpu", dtype=torch.float32):
        self.n, self.device, self.dtype = num_devices, torch.device(device), dtype
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        params = model.sample_parameters(num_devices, np.random.default_rng(seed))
        kw = {"device": self.device, "dtype": dtype}
        self.m1, self.t_star, self.m2, self.c1, self.r0, self.amp = (
            torch.as_tensor(params[k], **kw) for k in ("m1", "t_star", "m2", "c1", "r0", "rtn_amplitude")
        )
        self.alpha = model.pink.alpha
        self.ntaps = model.pink.taps
        self.b = torch.as_tensor(pink_coefficients(self.ntaps, model.pink.d), **kw)
        self.state = torch.zeros(num_devices, self.ntaps + 2, **kw)  # [RTN, taps..., t]
        pu, pd = model.rtn.p_up, model.rtn.p_down
        trans = torch.tensor([[1 - pu, pu], [pd, 1 - pd]], dtype=torch.float64)
        # P(switch | low) and P(switch | high) after k = 0..MAX_PULSES pulses.
        powers = [torch.linalg.matrix_power(trans, k) for k in range(MAX_PULSES + 1)]
        self.p_switch = torch.tensor([[pk[0, 1] for pk in powers], [pk[1, 0] for pk in powers]], **kw)

    def state_bytes_per_cell(self) -> float:
        tensors = (self.m1, self.t_star, self.m2, self.c1, self.r0, self.amp, self.state)
        return sum(x.numel() * x.element_size() for x in tensors) / self.n

    def pulse(self, n: torch.Tensor) -> torch.Tensor:
        rtn = self.state[:, 0]
        hold = self.state[:, 1:1 + self.ntaps]
        t = self.state[:, -1]
        # RTN: switch with the probability of the k-step transition.
        r = torch.rand(self.n, generator=self.gen, device=self.device, dtype=self.dtype)
        level = torch.ceil(rtn)
        p_up, p_down = self.p_switch[0, n], self.p_switch[1, n]
        switch = r < p_down * level + p_up * (1 - level)
        amp = torch.rand(self.n, generator=self.gen, device=self.device, dtype=self.dtype) * self.amp
        new_rtn = torch.where(switch, 1 - level, level) * (
            torch.rand(self.n, generator=self.gen, device=self.device, dtype=self.dtype) * amp)
        # Pink noise: fresh innovations for every cell, one roll per distinct pulse count.
        fresh = torch.rand(hold.shape, generator=self.gen, device=self.device, dtype=self.dtype)
        expanded = torch.cat([hold, fresh], dim=-1)
        for k in torch.unique(n).tolist():
            sel = n == k
            expanded[sel] = torch.roll(expanded[sel], k, -1)
        hold = expanded[:, : self.ntaps]
        pink = self.alpha * torch.sum(hold * self.b, -1)
        # Drift law.
        t = t + n
        mean = torch.where(t < self.t_star, self.m1 * t + self.c1,
                           self.m2 * t + self.t_star * (self.m1 - self.m2) + self.c1)
        w = mean + new_rtn + pink
        self.state = torch.cat([new_rtn[:, None], hold, t[:, None]], dim=-1)
        return self.r0 * torch.exp(w)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(sim, counts, device) -> list:
    """Seconds of each step over the pulse counts (after one warm-up step)."""
    sim.pulse(counts[0])
    times = []
    for n in counts[1:]:
        _sync(device)
        t0 = time.perf_counter()
        sim.pulse(n)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def run(device, cells, steps, seed=0, compiled=True, rounds=3) -> dict:
    """Median step time of each simulator, measured in alternating rounds (fast, reference, ...)."""
    device = torch.device(device)
    model = preset_model("paper")
    g = torch.Generator(device=device).manual_seed(seed + 1)
    counts = [torch.randint(0, MAX_PULSES + 1, (cells,), generator=g, device=device) for _ in range(steps + 1)]
    fast = WeakResetArray(model, cells, seed=seed, device=device)
    ref = ReferenceArray(model, cells, seed=seed, device=device)
    per_round = max(2, steps // rounds)
    t_fast, t_ref = [], []
    for r in range(rounds):
        t_fast += step_times(fast, counts[r * per_round: (r + 1) * per_round + 1], device)
        t_ref += step_times(ref, counts[r * 2: r * 2 + 3], device)  # the reference is slow: 2 steps a round
    t_fast, t_ref = float(np.median(t_fast)), float(np.median(t_ref))
    # few cells pulsed (training: most weights get no pulse in a step): the cells given 0 are skipped
    few = [c * (torch.rand(cells, generator=g, device=device) < SPARSE_SHARE_BENCH) for c in counts[: per_round + 1]]
    t_sparse = float(np.median(step_times(fast, few, device)))
    t_comp = compile_s = None
    if compiled:
        comp = WeakResetArray(model, cells, seed=seed, device=device, compile=True)
        t0 = time.perf_counter()
        comp.pulse(counts[0])  # compiles
        compile_s = time.perf_counter() - t0
        if comp.compile:  # still compiled (no fallback)
            t_comp = float(np.median(step_times(comp, counts, device)))
    return {
        "compiled_updates_per_s": cells / t_comp if t_comp else None,
        "compiled_ms": 1e3 * t_comp if t_comp else None,
        "compile_s": compile_s,
        "device": str(device),
        "cells": cells,
        "ref_updates_per_s": cells / t_ref,
        "fast_updates_per_s": cells / t_fast,
        "speedup": t_ref / t_fast,
        "ref_ms": 1e3 * t_ref,
        "fast_ms": 1e3 * t_fast,
        "sparse_updates_per_s": cells / t_sparse,
        "sparse_ms": 1e3 * t_sparse,
        "fast_bytes_per_cell": fast.bytes_per_cell(),
        "ref_bytes_per_cell": ref.state_bytes_per_cell(),
    }


#: The training case of pulse_pairs: share of the pairs pulsed in a step, and how the pulsed ones' counts split
#: (1, 2, 3 pulses, then 4..14), about what benchmarks/bench_train.py's BinarizedMLP asks after its first steps.
PAIRS_SHARE = 0.44
PAIRS_SPLIT = (0.70, 0.20, 0.08)


def pair_counts(half, steps, device, seed=0, share=PAIRS_SHARE) -> list:
    """Signed counts per pair for ``steps`` training-like steps (see :data:`PAIRS_SHARE`)."""
    g = torch.Generator(device=device).manual_seed(seed + 3)
    edges = torch.tensor(np.cumsum(PAIRS_SPLIT), device=device, dtype=torch.float32)
    out = []
    for _ in range(steps):
        u = torch.rand(half, generator=g, device=device)
        big = torch.randint(4, MAX_PULSES + 1, (half,), generator=g, device=device)
        n = torch.where(u < edges[0], 1, torch.where(u < edges[1], 2, torch.where(u < edges[2], 3, big)))
        n = n * (torch.rand(half, generator=g, device=device) < share)
        sign = torch.where(torch.rand(half, generator=g, device=device) < 0.5, 1, -1)
        out.append((n * sign).to(torch.int32))
    return out


def run_pairs(device, cells, steps, seed=0, rounds=3) -> dict:
    """pulse_pairs on training-like counts: the compiled loop (where numba is installed), the torch class path
    and the select path, alternating rounds."""
    from hfox_fit.torch import _fused, _pairs

    device = torch.device(device)
    counts = pair_counts(cells // 2, steps + 1, device, seed)
    ways = {"compiled": ("classes", True), "classes": ("classes", False), "select": ("select", False)}
    if device.type != "cpu" or not _fused.AVAILABLE:
        del ways["compiled"]
    arrays = {k: WeakResetArray(preset_model("paper"), cells, seed=seed, device=device) for k in ways}
    times = {k: [] for k in arrays}
    per_round = max(2, steps // rounds)
    for k, arr in arrays.items():  # warm-up
        with _pairs.settings(FUSED=ways[k][1]):
            _pairs.pulse_pairs(arr, counts[0], path=ways[k][0])
    for r in range(rounds):
        for k, arr in arrays.items():
            with _pairs.settings(FUSED=ways[k][1]):
                for n in counts[1 + r * per_round: 1 + (r + 1) * per_round]:
                    _sync(device)
                    t0 = time.perf_counter()
                    _pairs.pulse_pairs(arr, n, path=ways[k][0])
                    _sync(device)
                    times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(t)) for k, t in times.items()}
    return {"pairs": cells // 2, **{f"{k}_ms": 1e3 * v for k, v in med.items()},
            "pulsed": float(np.mean([float((n != 0).float().mean()) for n in counts]))}


#: The share of the pairs pulsed in bench_train's last steps (its BinarizedMLP settles): the listing row.
LOW_SHARE = 0.04


def run_listing(device, cells, steps, seed=0, rounds=3, share=LOW_SHARE) -> dict:
    """pulse_pairs' torch class path, four ways of listing the pulsed pairs of a block class by class: by numpy
    from the signed counts (its default on a CPU), by numpy after checking and keying every pair (main at dd88c98), by torch with blocks of few pulsed pairs listing them (below ``_pairs.LIST_SHARE``; the path
    before), and by one torch sort of every pair's key (the path before that); alternating rounds, wall and
    CPU time per call (the three give the same numbers to the same cells: checked after)."""
    from hfox_fit.torch import _pairs

    device = torch.device(device)
    counts = pair_counts(cells // 2, steps + 1, device, seed, share=share)
    ways = {"numpy": {"NUMPY_LISTING": True}, "keyed": {"SIGNED_LISTING": False}, "listed": {"NUMPY_LISTING": False},
            "one sort": {"NUMPY_LISTING": False, "LIST_SHARE": 0.0}}
    ways = {k: {**v, "FUSED": False} for k, v in ways.items()}  # (the torch paths: the compiled loop lists its own)
    arrays = {k: WeakResetArray(preset_model("paper"), cells, seed=seed, device=device) for k in ways}
    wall = {k: [] for k in ways}
    cpu = {k: [] for k in ways}
    per_round = max(2, steps // rounds)
    for k, arr in arrays.items():  # warm-up
        with _pairs.settings(**ways[k]):
            _pairs.pulse_pairs(arr, counts[0])
    for r in range(rounds):
        for k, arr in arrays.items():
            with _pairs.settings(**ways[k]):
                for n in counts[1 + r * per_round: 1 + (r + 1) * per_round]:
                    _sync(device)
                    c0, t0 = time.process_time(), time.perf_counter()
                    _pairs.pulse_pairs(arr, n)
                    _sync(device)
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
    states = [arr.state_dict() for arr in arrays.values()]
    same = all(torch.equal(a, b) for other in states[1:] for a, b in zip(states[0].values(), other.values())
               if isinstance(a, torch.Tensor))
    return {"pairs": cells // 2, "share": share, "same": same,
            **{f"{k}_ms": 1e3 * float(np.median(wall[k])) for k in ways},
            **{f"{k}_cpu_ms": 1e3 * float(np.median(cpu[k])) for k in ways}}


def floors(device, cells, draws, state_bytes, threads, reps=5) -> dict:
    """What bounds the update: drawing its normal random numbers, and moving its state, measured alone.

    The draws are made as WeakResetArray makes them (one generator per block of
    ``CPU_BLOCK`` cells, the blocks on ``threads`` worker threads on the CPU); the
    state traffic is a copy of ``state_bytes`` per cell (read once, written once).
    """
    from concurrent.futures import ThreadPoolExecutor

    device = torch.device(device)
    block = CPU_BLOCK if device.type == "cpu" else cells
    sizes = [min(block, cells - s) for s in range(0, cells, block)]
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(len(sizes))]

    def draw(i):
        torch.randn(draws, sizes[i], generator=gens[i], device=device)

    def all_draws(pool):
        if pool is None:
            for i in range(len(sizes)):
                draw(i)
        else:
            list(pool.map(draw, range(len(sizes))))
        if device.type == "cuda":
            torch.cuda.synchronize()

    pool = ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else None
    try:
        all_draws(pool)
        t0 = time.perf_counter()
        for _ in range(reps):
            all_draws(pool)
        t_rng = (time.perf_counter() - t0) / reps
    finally:
        if pool is not None:
            pool.shutdown()
    src = torch.empty(int(state_bytes * cells) // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_mem = (time.perf_counter() - t0) / reps
    return {"rng_ms": 1e3 * t_rng, "mem_ms": 1e3 * t_mem}


def op_profile(cells, steps=4, top=7, seed=0) -> list:
    """Share of the update's time per torch operation (one thread, block by block, CPU; torch.profiler).

    Returns ``[(name, share, calls_per_step)]``, largest first, then the rest.
    """
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(seed + 2)
    arr = WeakResetArray(preset_model("paper"), cells, seed=seed)
    arr._constants()["threaded"] = False  # on this thread, where the profiler sees the operations
    counts = [torch.randint(0, MAX_PULSES + 1, (cells,), generator=g) for _ in range(steps + 1)]
    arr.pulse(counts[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for n in counts[1:]:
            arr.pulse(n)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    out = [(e.key.replace("aten::", ""), e.self_cpu_time_total / total, e.count / steps) for e in rows[:top]]
    out.append(("(the rest)", sum(e.self_cpu_time_total for e in rows[top:]) / total, 0))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), float32, "
          f"{args.cells:,} cells, random 0..{MAX_PULSES} pulses per cell per step; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPU(s)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        r = run(dev, args.cells, args.steps, compiled=not args.no_compile)
        print(f"[{r['device']}] reference (authors' update): {r['ref_updates_per_s']:.3g} cell-updates/s "
              f"({r['ref_ms']:.1f} ms/step, {r['ref_bytes_per_cell']:.0f} B/cell)")
        print(f"[{r['device']}] WeakResetArray:              {r['fast_updates_per_s']:.3g} cell-updates/s "
              f"({r['fast_ms']:.1f} ms/step, {r['fast_bytes_per_cell']:.1f} B/cell)")
        print(f"[{r['device']}] WeakResetArray, {SPARSE_SHARE_BENCH:.0%} of the cells pulsed (the others 0, "
              f"skipped): {r['sparse_updates_per_s']:.3g} cell-updates/s counting every cell "
              f"({r['sparse_ms']:.1f} ms/step)")
        if r["compiled_updates_per_s"]:
            print(f"[{r['device']}] WeakResetArray(compile=True): {r['compiled_updates_per_s']:.3g} cell-updates/s "
                  f"({r['compiled_ms']:.1f} ms/step; first call {r['compile_s']:.0f} s, compiling)")
        elif r["compile_s"] is not None:
            print(f"[{r['device']}] WeakResetArray(compile=True): torch.compile failed here; eager only")
        rp = run_pairs(dev, args.cells, args.steps)
        compiled = (f"the compiled loop (numba; the CPU default where it is installed) "
                    f"{rp['pairs'] / rp['compiled_ms'] * 1e3:.3g} pair-updates/s ({rp['compiled_ms']:.1f} ms/step, "
                    f"{rp['classes_ms'] / rp['compiled_ms']:.2f}x the torch class path); " if "compiled_ms" in rp else "")
        print(f"[{r['device']}] pulse_pairs, training-like counts ({rp['pulsed']:.0%} of {rp['pairs']:,} pairs "
              f"pulsed, mostly 1-2 pulses): {compiled}torch class path (pulsed pairs only, 2/3/4 draws by count) "
              f"{rp['pairs'] / rp['classes_ms'] * 1e3:.3g} pair-updates/s ({rp['classes_ms']:.1f} ms/step); "
              f"select path (every pair, 4 draws; the default before) {rp['pairs'] / rp['select_ms'] * 1e3:.3g} "
              f"pair-updates/s ({rp['select_ms']:.1f} ms/step): {rp['select_ms'] / rp['classes_ms']:.2f}x")
        for share in (LOW_SHARE, PAIRS_SHARE):
            rl = run_listing(dev, args.cells, args.steps, share=share)
            print(f"[{r['device']}] pulse_pairs' torch class path with {rl['share']:.0%} of the pairs pulsed, listing "
                  f"the pulsed pairs by numpy from the signed counts (its CPU default) {rl['numpy_ms']:.1f} ms/step (CPU "
                  f"{rl['numpy_cpu_ms']:.1f} ms); by numpy after keying every pair (main at dd88c98) "
                  f"{rl['keyed_ms']:.1f} ms/step (CPU {rl['keyed_cpu_ms']:.1f} ms): "
                  f"{rl['keyed_ms'] / rl['numpy_ms']:.2f}x (CPU {rl['keyed_cpu_ms'] / rl['numpy_cpu_ms']:.2f}x); by "
                  f"torch, blocks of few pulsed pairs listing them (the path before) {rl['listed_ms']:.1f} ms/step "
                  f"(CPU {rl['listed_cpu_ms']:.1f} ms): {rl['listed_ms'] / rl['numpy_ms']:.2f}x (CPU "
                  f"{rl['listed_cpu_ms'] / rl['numpy_cpu_ms']:.2f}x); one torch sort of every pair "
                  f"{rl['one sort_ms']:.1f} ms/step (CPU {rl['one sort_cpu_ms']:.1f} ms): "
                  f"{rl['one sort_ms'] / rl['numpy_ms']:.2f}x (CPU {rl['one sort_cpu_ms'] / rl['numpy_cpu_ms']:.2f}x); "
                  f"same state after: {rl['same']}")
        pm = WeakResetArray(preset_model("paper"), 16, seed=0).pink_markov
        draws = pm.states + (1 if pm.white_scale > 0 else 0)
        f = floors(dev, args.cells, draws, r["fast_bytes_per_cell"], torch.get_num_threads())
        print(f"[{r['device']}] floors: drawing the {draws} normal numbers per cell alone takes {f['rng_ms']:.1f} ms "
              f"({args.cells / f['rng_ms'] * 1e3:.3g} cell-updates/s at most; {100 * f['rng_ms'] / r['fast_ms']:.0f} % "
              f"of WeakResetArray's step); copying its {r['fast_bytes_per_cell']:.0f} B/cell state takes "
              f"{f['mem_ms']:.1f} ms ({100 * f['mem_ms'] / r['fast_ms']:.0f} %)")
        cap = args.cells / f["rng_ms"] * 1e3
        print(f"[{r['device']}] bound: the normal draws alone cap the rate at {cap:.3g} cell-updates/s "
              f"({'below' if cap < 1e8 else 'above'} the 1e8 target); WeakResetArray runs at "
              f"{100 * r['fast_updates_per_s'] / cap:.0f} % of that cap, the rest of its step going to the "
              f"operations below")
        if dev == "cpu":
            prof = op_profile(min(args.cells, 4 * CPU_BLOCK))
            print(f"[{r['device']}] profile of the update (share of its CPU time per torch operation, one thread; "
                  f"normal_: the draws, index_select: the n-step coefficients and pink tables, nonzero: the "
                  f"telegraph chains that switch and the high ones): "
                  + ", ".join(f"{name} {100 * share:.0f} %" for name, share, _ in prof))
        print(f"[{r['device']}] speed-up: {r['speedup']:.1f}x (target >= 10x); "
              f"bytes per cell: {r['fast_bytes_per_cell']:.1f} (target <= 64); "
              f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

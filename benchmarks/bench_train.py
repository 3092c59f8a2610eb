"""Time of one training step with the device in the loop against the same network in software.

Usage::

    python benchmarks/bench_train.py [--hidden 3000] [--inputs 784] [--batch 100] [--steps 30] [--warmup 50]
                                     [--threads N]

The network is the paper's binarized MLP (784-3000-10 by default, 2.4 million
weights, so 4.8 million cells); the data are random images of that size, a fresh
batch each step, the same sequence for every variant (the step's cost depends on how
many pairs the update pulses: one batch repeated is learnt within about 40 steps and
the pulses fade, 96 % of the pairs pulsed at step 5 and 2 % at step 40, where fresh
batches keep 42-45 %). The first ``--warmup`` steps (50) are not timed: the start of
training, where Adam's first updates pulse nearly every pair, is not the step a
training run repeats. Both variants run in the same
process, in alternating rounds so that a burst of load from other processes hits
both, and the medians of the step times are printed with their ratio (target:
device ≤ 3x software on the CPU), with the CPU time per step of each (all
threads; less sensitive to the load of other processes than the wall time). A
device step is the software step (forward, backward, Adam) plus
``CellBackedWeights.step()`` (the update becomes pulses on one cell of each pair,
``WeakResetArray.pulse_pairs``, and the weights are read back; where numba is installed, the compiled
loop pulses and reads the pulsed pairs in one call, ``_pulse_pairs_reading``, timed as the pulses) and the re-SET
check; the script prints the time of these parts, and the floors of the pulses:
drawing their normal numbers alone (as the update draws them) and moving the
cells' state once. The baseline row times the same device step through the path
before (main at 859b130: every pair read back after the pulses, into a new read
tensor) in the same alternating rounds, and checks that both end with the same
cells; a second baseline row times main's path at dd88c98 (whole-tensor passes
over every weight in ``CellBackedWeights.step``, every pair keyed before the
listing in ``pulse_pairs``) the same way. The CUDA rows appear when ``torch.cuda.is_available()``.
Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from hfox_fit import preset_model
from hfox_fit.torch import BinarizedMLP, CellBackedWeights, _fused, _pairs, headroom_pulses
from hfox_fit.torch._threads import CPU_BLOCK, _run_blocks, block_threads
from hfox_fit.torch._update import NEVER, draw_classes


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _make(sizes, device, with_cells, seed=0):
    torch.manual_seed(seed)
    net = BinarizedMLP(sizes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    cells = None
    if with_cells:
        cells = CellBackedWeights(net, preset_model("paper"), scale=0.0025, seed=seed, device=device)
    return net, opt, cells


class _Timer:
    """Wall seconds spent in a wrapped function (the device step's parts)."""

    def __init__(self, fn, device):
        self.fn, self.device, self.seconds, self.calls = fn, device, 0.0, 0

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def _step(net, opt, cells, x, y, headroom, parts=None):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    if parts is not None:
        _sync(x.device)
        parts["network"] += time.perf_counter() - t0
    if cells is not None:
        t1 = time.perf_counter()
        stats = getattr(cells, "main_step", cells.step)()
        cells.reset_saturated(headroom)
        if parts is not None:
            _sync(x.device)
            parts["cells"] += time.perf_counter() - t1
            # (counted after the timing; only the last KEPT_COUNTS kept: a training loop keeps none, and a tensor
            # kept every step made the next step's counts land on fresh pages, 1-2 ms of page faults a step)
            parts["counts"] = (parts["counts"] + [stats["counts"]])[-KEPT_COUNTS:]
    else:
        net.clip_weights()


#: The counts of the last timed steps kept for the figures after the timing.
KEPT_COUNTS = 6


def _count_pulsed(cells, parts) -> None:
    """The pulsed pairs per step of the last timed steps, and the normal numbers the class path drew for them:
    1 per pulsed cell, 1 more from a pulses on, 1 more from b on (draw_classes), and the white one."""
    a, b = draw_classes(cells.cells)
    c = cells.cells._constants()
    white = c["states"] > 0 and c["white"] > 0
    kept = parts["counts"]
    for counts in kept:
        mag = counts.abs()
        pulsed = int(torch.count_nonzero(mag))
        parts["pulsed"] += pulsed / len(kept)
        parts["normals"] += (pulsed * (1 + white) + sum(
            int(torch.count_nonzero(mag >= k)) for k in (a, b) if k < NEVER)) / len(kept)


def _floors(cells, pulsed: int, normals: int, reps: int = 3) -> dict:
    """What the pulses cost at the least: the normal draws of the pulsed cells, and moving the pairs' state.

    The draws as the update makes them (``normals`` numbers for the ``pulsed`` cells, one call per
    block of ``CPU_BLOCK`` pairs, from the block's generator, the blocks on the update's worker
    threads); the state traffic: a copy of the bytes per cell of both cells of every pair (each
    pair's state is read, its pulsed cell written).
    """
    arr = cells.cells
    device = arr.device
    block = arr._block_size
    per_cell = normals / max(pulsed, 1)
    sizes = [round(per_cell * min(block, pulsed - s)) for s in range(0, pulsed, block)]
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(len(sizes))]

    def all_draws():
        if device.type == "cpu" and len(sizes) > 1:
            _run_blocks(lambda i: torch.randn(sizes[i], generator=gens[i], device=device), len(sizes),
                        block_threads())
        else:
            for i, k in enumerate(sizes):
                torch.randn(k, generator=gens[i], device=device)
        _sync(device)

    def timed(fn):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    src = torch.empty(int(arr.bytes_per_cell() * arr.num_devices) // 4, device=device)
    dst = torch.empty_like(src)
    return {"draws": per_cell, "rng_s": timed(all_draws), "mem_s": timed(lambda: (dst.copy_(src), _sync(device)))}


def run(device, sizes, batch, steps, rounds=5, select=True, profile=False, levers=False, warmup=50):
    device = torch.device(device)
    per_round = max(steps // rounds, 1)
    gen = torch.Generator().manual_seed(1)
    # a fresh batch each step (made before the timing), the same sequence for every variant
    data = [(torch.rand(batch, sizes[0], generator=gen).to(device), torch.randint(0, sizes[-1], (batch,),
                                                                                 generator=gen).to(device))
            for _ in range(max(warmup, 1) + rounds * per_round)]
    headroom = headroom_pulses(preset_model("paper"))
    variants = {"software": _make(sizes, device, False), "device": _make(sizes, device, True)}
    fused = device.type == "cpu" and _fused.usable(variants["device"][2].cells)
    if fused:  # the same device step with the pulses by torch operations (the class path, without numba)
        variants["device, torch class path"] = _make(sizes, device, True)
        _by_torch(variants["device, torch class path"][2])
    if device.type == "cpu":  # the path before (main at 859b130): every pair read back after the pulses, a new read
        variants["device, path before"] = _make(sizes, device, True)
        _path_before(variants["device, path before"][2])
        _by_torch(variants["device, path before"][2])
    if device.type == "cpu":  # main at dd88c98: whole-tensor passes over every weight, the pairs listed after
        variants["device, main's path"] = _make(sizes, device, True)
        _path_main(variants["device, main's path"][2])
        _by_torch(variants["device, main's path"][2])
    if select:  # the same device step with pulse_pairs' reference path (every pair updated, by selects)
        variants["device, select path"] = _make(sizes, device, True)
        sel = variants["device, select path"][2]
        arr = sel.cells
        arr.pulse_pairs = lambda n, arr=arr, **options: _pairs.pulse_pairs(arr, n, path="select")
        counts = sel._counts_by_block  # (no bounds: the step pulses by pulse_pairs, not the compiled loop's read)
        sel._counts_by_block = lambda before, blocks, counts=counts: (counts(before, blocks)[0], None)
    for v in variants.values():  # warm-up: first-call costs, and training past its start
        for i in range(max(warmup, 1)):
            _step(*v, *data[i], headroom)
    cells = variants["device"][2]
    pulse_timer = _Timer(cells.cells.pulse_pairs, device)
    cells.cells.pulse_pairs = pulse_timer  # (an instance attribute: times the pulses inside cells.step())
    reading_timer = _Timer(cells.cells._pulse_pairs_reading, device)  # (the compiled path's pulses and read)
    cells.cells._pulse_pairs_reading = reading_timer
    times = {k: [] for k in variants}
    cpu = {k: 0.0 for k in variants}
    parts = {"network": 0.0, "cells": 0.0, "pulsed": 0, "normals": 0, "counts": []}
    cpu_rounds = {k: [] for k in variants}
    for r in range(rounds):
        for name, v in variants.items():
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(per_round):
                _step(*v, *data[max(warmup, 1) + r * per_round + i], headroom, parts if name == "device" else None)
            _sync(device)
            times[name].append((time.perf_counter() - t0) / per_round)
            cpu[name] += time.process_time() - c0
            cpu_rounds[name].append(time.process_time() - c0)
    del cells.cells.pulse_pairs, cells.cells._pulse_pairs_reading
    _count_pulsed(cells, parts)
    n_steps = rounds * per_round
    sw, dev = statistics.median(times["software"]), statistics.median(times["device"])
    cpu_sw, cpu_dev = cpu["software"] / n_steps, cpu["device"] / n_steps
    tag = f"[{device.type}]"
    print(f"{tag} software step: {sw * 1e3:.1f} ms; device step: {dev * 1e3:.1f} ms "
          f"({2 * cells.numel:,} cells, {cells.numel:,} weights); device / software = {dev / sw:.2f}x "
          f"(target <= 3x on the CPU): {'OK' if dev / sw <= 3 or device.type != 'cpu' else 'ABOVE TARGET'}")
    if device.type == "cpu":
        print(f"{tag} CPU time per step (all threads; less sensitive to other processes' load): software "
              f"{cpu_sw * 1e3:.1f} ms, device {cpu_dev * 1e3:.1f} ms: {cpu_dev / cpu_sw:.2f}x; by round "
              f"(alternating): " + ", ".join(f"{d / w:.2f}x" for d, w in zip(cpu_rounds["device"],
                                                                            cpu_rounds["software"])))
    baselines = {
        "device, torch class path": "the same device step by torch operations (the pulses by pulse_pairs' class "
                                    "path: the pulsed cells gathered field by field, updated by whole-tensor "
                                    "passes, scattered back; the passes over every weight by torch too; what "
                                    "runs without numba)",
        "device, path before": "the same device step through the path before (every pair read back after the "
                               "pulses, the pulses into a new read tensor, the update in pulses from a "
                               "concatenation, the pulses summed over every pair; pulses by torch)",
        "device, main's path": "main's path (dd88c98: the update into pulses, the read of every pair and the copy "
                               "into the parameters as whole-tensor passes, pulse_pairs checking and keying every "
                               "pair before listing; pulses by torch)"}
    for name, what in baselines.items():
        if name not in variants:
            continue
        ref = statistics.median(times[name])
        cpu_ref = cpu[name] / n_steps
        print(f"{tag} baseline, {what}: {ref * 1e3:.1f} ms ({ref / sw:.2f}x software; CPU time "
              f"{cpu_ref * 1e3:.1f} ms, {cpu_ref / cpu_sw:.2f}x); by round (alternating, CPU time): "
              + ", ".join(f"{d / w:.2f}x" for d, w in zip(cpu_rounds[name], cpu_rounds["software"]))
              + f"; the step now is {ref / dev:.2f}x faster (CPU time {cpu_ref / cpu_dev:.2f}x; by round: "
              + ", ".join(f"{b / d:.2f}x" for b, d in zip(cpu_rounds[name], cpu_rounds["device"])) + ")")
        if name == "device, torch class path":
            print(f"{tag} the compiled loop and {_compare_cells(cells.cells, parts['counts'][-1])}")
            continue
        print(f"{tag} {name.removeprefix('device, ')} and "
              + ("the torch class path, cells after the same steps: " + (
                "identical" if _identical(variants["device, torch class path"][2].cells,
                                          variants[name][2].cells) else "DIFFERENT")
                 if fused else "this one, cells after the same steps: " + (
                     "identical" if _identical(cells.cells, variants[name][2].cells) else "DIFFERENT")))
    if select:
        ref = statistics.median(times["device, select path"])
        cpu_ref = cpu["device, select path"] / n_steps
        print(f"{tag} baseline, the device step through pulse_pairs' select path (every pair updated, 4 draws "
              f"each; the default before the class path): {ref * 1e3:.1f} ms ({ref / sw:.2f}x software; "
              f"CPU time {cpu_ref * 1e3:.1f} ms, {cpu_ref / cpu_sw:.2f}x); the class path's step is "
              f"{ref / dev:.2f}x faster (CPU time {cpu_ref / cpu_dev:.2f}x)")
    # where a device step's time goes (the wall time of its parts, summed over the timed steps)
    pulsed = parts["pulsed"]
    net_s, cells_s, pulse_s = parts["network"] / n_steps, parts["cells"] / n_steps, (pulse_timer.seconds + reading_timer.seconds) / n_steps
    print(f"{tag} device step, by part: network (forward, backward, Adam) {net_s * 1e3:.1f} ms; pulses "
          f"(WeakResetArray.pulse_pairs, {pulsed:,.0f} pairs pulsed, {pulsed / cells.numel:.0%}) "
          f"{pulse_s * 1e3:.1f} ms; the rest of CellBackedWeights.step and reset_saturated (update -> counts, "
          f"readout, copies) {(cells_s - pulse_s) * 1e3:.1f} ms")
    f = _floors(cells, max(int(pulsed), 1), max(int(parts["normals"]), 1))
    print(f"{tag} floors of the pulses: drawing their {f['draws']:.2f} normal numbers per pulsed cell alone (by torch, "
          f"as the class path does) takes "
          f"{f['rng_s'] * 1e3:.1f} ms ({f['rng_s'] / sw:.2f}x the software step, "
          f"{100 * f['rng_s'] / max(pulse_s, 1e-12):.0f} % of the pulses' time); moving the cells' "
          f"{cells.cells.bytes_per_cell():.0f} B/cell state once takes {f['mem_s'] * 1e3:.1f} ms "
          f"({f['mem_s'] / sw:.2f}x); the pulses take {pulse_s / max(f['rng_s'] + f['mem_s'], 1e-12):.1f}x "
          "the two together")
    if device.type == "cpu":
        # what the pulses would have to take for the 3x target, the network and the rest as measured
        room = 3 * sw - net_s - (cells_s - pulse_s)
        if room <= 0:
            print(f"{tag} the network and the rest alone take more than 3x the software step")
        elif pulse_s > room:
            print(f"{tag} for device <= 3x software the pulses would have to take <= {room * 1e3:.1f} ms "
                  f"({pulse_s / room:.1f}x less than now)")
        else:
            print(f"{tag} the pulses take {pulse_s * 1e3:.1f} ms, within the {room * 1e3:.1f} ms that device <= 3x "
                  "software leaves them (the network and the rest as measured)")
    counts = parts["counts"]
    if device.type == "cpu":
        late = counts  # (the last KEPT_COUNTS timed steps)
        r = _listing_vs_sort(cells.cells, late)
        print(f"{tag} pulses at the counts of the last {len(late)} timed steps ({r['share']:.0%} of the pairs "
              f"pulsed), CPU time per call in alternating rounds: the compiled loop (the default where numba is "
              f"installed) {r['fused_ms']:.1f} ms; by torch, listed by numpy from the signed counts (the default "
              f"without numba) {r['numpy_ms']:.1f} ms ({r['numpy_ms'] / r['fused_ms']:.2f}x the loop); by numpy after keying every pair (main at dd88c98) "
              f"{r['keyed_ms']:.1f} ms ({r['keyed_ms'] / r['numpy_ms']:.2f}x); by torch, blocks with at most {_pairs.LIST_SHARE:.0%} pulsed listing them "
              f"{r['listed_ms']:.1f} ms ({r['listed_ms'] / r['numpy_ms']:.2f}x numpy), one sort of every pair "
              f"{r['sorted_ms']:.1f} ms ({r['sorted_ms'] / r['numpy_ms']:.2f}x)")
    if profile and device.type == "cpu":
        ops, per_cell, ns_cpu = _profile_pulses(cells.cells, [counts[0], counts[len(counts) // 2], counts[-1]])
        print(f"{tag} profile of pulse_pairs' torch class path (torch.profiler, one thread, blocks in turn, on the "
              f"counts of 3 timed steps): {ns_cpu:.0f} ns of CPU time per pulsed pair unprofiled; by operation "
              f"(ns per pulsed pair under the profiler, share): "
              + ", ".join(f"{name} {ns:.1f} ({share:.0%})" for name, ns, share in ops))
    if profile and device.type == "cpu":
        fixed, by_share = _cost_by_share(cells.cells)
        print(f"{tag} pulse_pairs' CPU time by share of the pairs pulsed (one thread, 1 pulse for 80 % of the pulsed "
              f"pairs, 2-4 for the rest): {fixed:.1f} ms per call with 0.05 % pulsed (the fixed part: the counts' "
              f"checks, each block's key and listing); above it, per pulsed pair: "
              + ", ".join(f"{sh:.0%} {ns:.0f} ns" for sh, ns in by_share)
              + " (few pulsed pairs each cost a cache line per field gathered or written, many share them)")
    if levers and device.type == "cpu":
        share = parts["pulsed"] / cells.numel
        rt = _state_round_trip(cells.cells, share)
        print(f"{tag} lever, one [N, 8] state tensor (one gather and one index_copy_ of all fields, through a "
              f"float64 view, the fields unpacked to contiguous columns and packed back) against a gather and a "
              f"scatter_ per field, {share:.0%} of a block's pairs pulsed, one thread, CPU time: fused "
              f"{rt['fused_ns']:.1f} ns per pulsed cell, per field {rt['separate_ns']:.1f} ns: "
              f"{rt['fused_ns'] / rt['separate_ns']:.2f}x")
        arr_sel = variants["device, select path"][2].cells if select else None
        for label, n in (("first timed step", counts[0]), ("last timed step", counts[-1])):
            if arr_sel is None:
                break
            r = _paths_by_share(cells.cells, arr_sel, n)
            print(f"{tag} lever, every pair updated with masks (the select path) against the pulsed pairs "
                  f"gathered (the class path), counts of the {label} ({r['share']:.0%} of the pairs pulsed), CPU "
                  f"time per call: class {r['classes_ms']:.1f} ms, select {r['select_ms']:.1f} ms: "
                  f"{r['select_ms'] / r['classes_ms']:.2f}x")


def _by_torch(cells) -> None:
    """Make ``cells`` step by torch operations (``FUSED`` off: the pulses by the class path, and the passes over
    every weight), whatever its step is now: what runs without numba."""
    run = getattr(cells, "main_step", cells.step)

    def step():
        with _pairs.settings(FUSED=False):
            return run()

    cells.main_step = step


def _identical(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in ((a.w, b.w), (a.pulses, b.pulses), (a.resistance, b.resistance)))


def _compare_cells(arr, counts) -> str:
    """The fused loop against the torch class path on one call from the same cells (copies of ``arr``): the
    loop draws its own random numbers, so the two agree in law (the tests compare it), not number by number."""
    import copy

    runs = []
    for fused in (True, False):
        twin = copy.deepcopy(arr)
        with _pairs.settings(FUSED=fused):
            twin.pulse_pairs(counts, in_place=True)
        runs.append(twin)
    a, b = runs
    moved = torch.cat([counts > 0, counts < 0])

    def noise(x):  # w less the cell's drift at its pulse count, where the chain is low: the pink term
        p = {k: v.double() for k, v in x.cell_parameters.items()}
        return (x.w.double() - x._law(x.pulses.double(), p))[moved & ~x.rtn_high]

    na, nb = noise(a), noise(b)
    return (f"the torch class path from the same cells, one call at the counts of the last timed step: pulse counts "
            f"{'identical' if torch.equal(a.pulses, b.pulses) else 'DIFFERENT'}; over the {int(moved.sum()):,} "
            f"pulsed cells, pink term (w less drift, chain low) mean {float(na.mean()):.5f} vs {float(nb.mean()):.5f}, sd "
            f"{float(na.std()):.5f} vs {float(nb.std()):.5f}; RTN high {float(a.rtn_high[moved].double().mean()):.4f} "
            f"vs {float(b.rtn_high[moved].double().mean()):.4f} (own random numbers: the laws agree, the numbers do "
            "not)")


def _path_before(cells) -> None:
    """Make ``cells`` take the path before (main at 859b130): ``step`` reads every pair back after the pulses
    and sums the pulses over every pair, the pulses go to a new read tensor (``pulse_pairs`` without
    ``in_place`` or ``record``). The same numbers: only the work differs."""
    arr = cells.cells
    real = arr.pulse_pairs

    def pulse_pairs(n, **options):
        return real(n)

    @torch.no_grad()
    def main_step():
        before = cells._read_flat()
        steps = cells._flat_params().sub_(before).div_(cells.scale)
        if not all(map(torch.isfinite, torch.aminmax(steps))):
            raise ValueError("the optimizer left NaN or infinite weights; no pulses were applied.")
        n = steps.round_().clamp_(-cells.max_pulses, cells.max_pulses).to(torch.int32)
        cells._pulse_pairs(n)
        after = cells._read_flat()
        for p, value in zip(cells._params, cells._split(after)):
            p.copy_(value.to(p.device))
        return {"pulses": n.abs().sum(), "flips": torch.count_nonzero(torch.ne(after, before)), "counts": n}

    arr.pulse_pairs = pulse_pairs
    cells.main_step = main_step


def _path_main(cells) -> None:
    """Make ``cells`` take main's path at dd88c98: ``step`` turns the update into pulses and reads every pair back
    (above ``READ_PULSED_SHARE``) by whole-tensor passes, copies the weights into the parameters by whole
    tensors, ``reset_saturated`` tests every pair by whole-tensor passes, and ``pulse_pairs`` checks the counts'
    magnitudes and keys every pair before listing (``SIGNED_LISTING=False``). The same numbers."""
    from hfox_fit.torch._weights import _versions, sign_readout

    arr = cells.cells
    real = arr.pulse_pairs

    def pulse_pairs(n, **options):
        with _pairs.settings(SIGNED_LISTING=False):
            return real(n, **options)

    @torch.no_grad()
    def main_step():
        before = cells._read_flat()
        read_before = cells._readout[0]
        steps = cells._update_in_pulses(before)
        if not all(map(torch.isfinite, torch.aminmax(steps))):
            raise ValueError("the optimizer left NaN or infinite weights; no pulses were applied.")
        n = steps.round_().clamp_(-cells.max_pulses, cells.max_pulses).to(torch.int32)
        record = {}
        r = cells._pulse_pairs(n, in_place=True, record=record)
        listed = record.get("pairs")
        if (listed is not None and r is read_before and cells.readout is sign_readout
                and sum(p.numel() for p in listed) <= cells.READ_PULSED_SHARE * cells.numel):
            pairs = torch.cat(listed) if listed else torch.zeros(0, dtype=torch.int64, device=r.device)
            now = sign_readout(r.index_select(0, pairs), r.index_select(0, pairs + cells.numel))
            flips = torch.count_nonzero(torch.ne(now, before.index_select(0, pairs)))
            after = before.index_copy_(0, pairs, now)
            cells._readout = (r, _versions(r, after), after)
            pulses = record["pulses"]
        else:
            after = cells._read_flat()
            flips = torch.count_nonzero(torch.ne(after, before))
            pulses = n.abs().sum()
        for p, value in zip(cells._params, cells._split(after)):
            p.copy_(value.to(p.device))
        return {"pulses": pulses, "flips": flips, "counts": n}

    arr.pulse_pairs = pulse_pairs
    cells.main_step = main_step
    cells._weight_blocks = lambda: None  # (reset_saturated: the whole-tensor test)


def _listing_vs_sort(arr, counts, rounds=3) -> dict:
    """CPU time of pulse_pairs over ``counts``, four ways of listing the pulsed pairs of a block: by numpy from the
    signed counts (the default on a CPU), by numpy after keying every pair (main at dd88c98), by torch with blocks of few pulsed pairs listing them, and by one torch sort of every pair's
    key in every block (``LIST_SHARE = 0``); alternating rounds."""

    def calls(**setting):
        def go():
            with _pairs.settings(**setting):
                for n in counts:
                    arr.pulse_pairs(n)
        return go

    t = _cpu_alternating({"fused": calls(), "numpy": calls(NUMPY_LISTING=True, FUSED=False),
                          "keyed": calls(SIGNED_LISTING=False, FUSED=False),
                          "listed": calls(NUMPY_LISTING=False, FUSED=False),
                          "sorted": calls(NUMPY_LISTING=False, LIST_SHARE=0.0, FUSED=False)}, rounds=rounds)
    pulsed = sum(int(torch.count_nonzero(n)) for n in counts) / (len(counts) * counts[0].numel())
    return {"share": pulsed, **{f"{k}_ms": v * 1e3 / len(counts) for k, v in t.items()}}


def _profile_pulses(arr, counts, top=8):
    """Where pulse_pairs' class path spends its time: torch.profiler over ``counts``, one thread, blocks in turn.

    Returns ``[(operation, ns per pulsed pair, share)]`` (largest first, then the rest) and the
    unprofiled CPU time per pulsed pair (ns) of the same calls, on the same thread.
    """
    from torch.profiler import ProfilerActivity, profile

    c = arr._constants()
    threaded, threads = c["threaded"], torch.get_num_threads()
    c["threaded"] = False  # on this thread, where the profiler sees the operations
    torch.set_num_threads(1)
    fused_before = _pairs.FUSED
    _pairs.FUSED = False  # (the torch operations: the compiled loops are one opaque call each)
    try:
        pulsed = sum(int(torch.count_nonzero(n)) for n in counts)
        c0 = time.process_time()
        for n in counts:
            arr.pulse_pairs(n)
        ns_cpu = (time.process_time() - c0) * 1e9 / max(pulsed, 1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for n in counts:
                arr.pulse_pairs(n)
    finally:
        c["threaded"] = threaded
        torch.set_num_threads(threads)
        _pairs.FUSED = fused_before
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    per = 1e3 / max(pulsed, 1)  # microseconds over all calls -> ns per pulsed pair
    ops = [(e.key.replace("aten::", ""), e.self_cpu_time_total * per, e.self_cpu_time_total / total)
           for e in rows[:top]]
    rest = sum(e.self_cpu_time_total for e in rows[top:])
    ops.append(("(the rest)", rest * per, rest / total))
    return ops, total * per, ns_cpu


def _cost_by_share(arr, shares=(0.03, 0.06, 0.2, 0.99), seed=0) -> tuple:
    """CPU time of ``pulse_pairs`` on one thread: the ms of a call with 0.05 % of the pairs pulsed, and the ns per
    pulsed pair above that at each share (on a copy of ``arr``'s state: the array is put back)."""
    half = arr.num_devices // 2
    g = torch.Generator().manual_seed(seed)
    saved = {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}
    bound = arr._pulse_bound

    def counts(share):
        mag = torch.where(torch.rand(half, generator=g) < 0.8, 1, torch.randint(2, 5, (half,), generator=g))
        mag = torch.where(torch.rand(half, generator=g) < share, mag, 0)
        return torch.where(torch.rand(half, generator=g) < 0.5, mag, -mag).to(torch.int32)

    def cpu_ms(n):
        arr.pulse_pairs(n, in_place=True)
        c0 = time.process_time()
        arr.pulse_pairs(n, in_place=True)
        return (time.process_time() - c0) * 1e3

    c = arr._constants()
    threaded, threads = c["threaded"], torch.get_num_threads()
    c["threaded"] = False
    torch.set_num_threads(1)
    try:
        fixed = min(cpu_ms(counts(0.0005)) for _ in range(2))
        by_share = [(sh, (min(cpu_ms(n) for _ in range(2)) - fixed) * 1e6 / max(int(torch.count_nonzero(n)), 1))
                    for sh, n in ((sh, counts(sh)) for sh in shares)]
    finally:
        c["threaded"] = threaded
        torch.set_num_threads(threads)
        arr.load_state_dict({**arr.state_dict(), **saved})
        arr._pulse_bound = max(bound, arr._pulse_bound)
    return fixed, by_share


def _cpu_alternating(fns: dict, rounds: int = 5) -> dict:
    """CPU seconds per call of each function, median over alternating rounds (one call each per round)."""
    out = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            c0 = time.process_time()
            fn()
            out[k].append(time.process_time() - c0)
    return {k: statistics.median(v) for k, v in out.items()}


def _state_round_trip(arr, share: float, seed: int = 0) -> dict:
    """The state's round trip of one block's pulsed cells: a gather and a scatter_ per field (what the class path
    does) against one fused [2 * block, 8] 32-bit tensor moved by one gather and one index_copy_ (float64 view),
    its columns unpacked to contiguous tensors for the update and packed back. On copies; one thread."""
    block = min(CPU_BLOCK, arr.num_devices // 2)
    cells = 2 * block
    g = torch.Generator().manual_seed(seed)
    m = max(1, int(share * block))
    pairs = torch.randperm(block, generator=g)[:m].sort().values
    idx = pairs + block * (torch.rand(m, generator=g) < 0.5)  # BL or BLb of each pulsed pair
    fields = [arr.pulses, arr.rtn_wait, arr.rtn_high.to(torch.int32), arr.pink_x, arr.pink_xi[0], arr.pink_xi[1],
              arr.w]
    sep = [f[:cells].clone() for f in fields]
    fused = torch.zeros(cells, 8, dtype=torch.int32)
    for j, f in enumerate(fields):
        fused[:, j] = f[:cells].view(torch.int32) if f.element_size() == 4 else f[:cells].to(torch.int32)
    wide = fused.view(torch.float64)

    def separate():
        got = [f.index_select(0, idx) for f in sep]
        for f, x in zip(sep, got):
            f.scatter_(0, idx, x)

    def one_tensor():
        got = wide.index_select(0, idx).view(torch.int32)
        cols = [got[:, j].contiguous() for j in range(len(fields))]
        for j, col in enumerate(cols):
            got[:, j].copy_(col)
        wide.index_copy_(0, idx, got.view(torch.float64))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = _cpu_alternating({"separate": separate, "fused": one_tensor})
    finally:
        torch.set_num_threads(threads)
    return {"separate_ns": t["separate"] * 1e9 / m, "fused_ns": t["fused"] * 1e9 / m}


def _paths_by_share(arr_classes, arr_select, n) -> dict:
    """CPU time of one pulse_pairs call with counts ``n``, class path against select path, alternating rounds."""
    t = _cpu_alternating({"classes": lambda: _pairs.pulse_pairs(arr_classes, n, path="classes"),
                          "select": lambda: _pairs.pulse_pairs(arr_select, n, path="select")}, rounds=3)
    return {"share": float(torch.count_nonzero(n)) / n.numel(), "classes_ms": t["classes"] * 1e3,
            "select_ms": t["select"] * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=784)
    ap.add_argument("--hidden", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=50, help="training steps before the timed ones (not timed)")
    ap.add_argument("--no-select", action="store_true",
                    help="skip the baseline row (the device step through pulse_pairs' select path)")
    ap.add_argument("--profile", action="store_true",
                    help="print a torch.profiler table of the pulses (one thread): where their time goes")
    ap.add_argument("--levers", action="store_true",
                    help="measure the layouts tried for the pulses: one fused state tensor, every pair by masks")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's); 1 is steadiest on a machine busy with other work")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = (args.inputs, args.hidden, args.classes)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), network {sizes}, batch {args.batch}, "
          f"a fresh batch each step, {args.steps} timed steps after {args.warmup}; load average {load:.2f}")
    run("cpu", sizes, args.batch, args.steps, select=not args.no_select, profile=args.profile, levers=args.levers,
        warmup=args.warmup)
    if torch.cuda.is_available():
        run("cuda", sizes, args.batch, args.steps, select=not args.no_select, warmup=args.warmup)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

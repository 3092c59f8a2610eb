"""Time of one training step with the device in the loop against the same network in software.

Usage::

    python benchmarks/bench_train.py [--hidden 3000] [--inputs 784] [--batch 100] [--steps 30]

The network is the paper's binarized MLP (784-3000-10 by default, 2.4 million
weights, so 4.8 million cells); the data are random images of that size (the
step's cost does not depend on the pixels). Both variants run in the same
process, in alternating rounds so that a burst of load from other processes hits
both, and the medians of the step times are printed with their ratio (target:
device ≤ 3x software on the CPU). A device step is the software step (forward,
backward, Adam) plus ``CellBackedWeights.step()`` (the update becomes pulses, the
weights are read back) and the re-SET check. The CUDA rows appear when
``torch.cuda.is_available()``. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from hfox_fit import preset_model
from hfox_fit.torch import BinarizedMLP, CellBackedWeights, headroom_pulses


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


def _step(net, opt, cells, x, y, headroom):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    if cells is not None:
        cells.step()
        cells.reset_saturated(headroom)
    else:
        net.clip_weights()


def run(device, sizes, batch, steps, rounds=5):
    device = torch.device(device)
    x = torch.rand(batch, sizes[0], device=device)
    y = torch.randint(0, sizes[-1], (batch,), device=device)
    headroom = headroom_pulses(preset_model("paper"))
    variants = {"software": _make(sizes, device, False), "device": _make(sizes, device, True)}
    for v in variants.values():  # warm-up: first-call costs
        _step(*v, x, y, headroom)
    times = {k: [] for k in variants}
    per_round = max(steps // rounds, 1)
    for _ in range(rounds):
        for name, v in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(per_round):
                _step(*v, x, y, headroom)
            _sync(device)
            times[name].append((time.perf_counter() - t0) / per_round)
    sw, dev = statistics.median(times["software"]), statistics.median(times["device"])
    cells = variants["device"][2]
    print(f"[{device.type}] software step: {sw * 1e3:.1f} ms; device step: {dev * 1e3:.1f} ms "
          f"({2 * cells.numel:,} cells, {cells.numel:,} weights); device / software = {dev / sw:.2f}x "
          f"(target <= 3x on the CPU): {'OK' if dev / sw <= 3 or device.type != 'cpu' else 'ABOVE TARGET'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=784)
    ap.add_argument("--hidden", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    sizes = (args.inputs, args.hidden, args.classes)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), network {sizes}, batch {args.batch}; "
          f"load average {load:.2f}")
    run("cpu", sizes, args.batch, args.steps)
    if torch.cuda.is_available():
        run("cuda", sizes, args.batch, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

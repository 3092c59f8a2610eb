"""The paper's ablation on a fitted wafer: train under every condition and seed, then say what costs accuracy.

:func:`run_ablation` trains a :class:`~hfox_fit.torch.BinarizedMLP` (or the network
a ``build_net`` function gives) under each condition of
:data:`~hfox_fit.torch.CONDITIONS` and each seed, and writes ``ablation.csv`` (one
row per condition, seed and epoch), ``ablation.png`` (test accuracy over epochs,
mean ± std over seeds) and ``summary.txt`` / ``summary.json``: each condition's
final accuracy with its spread, and the imperfection whose removal recovers the
most accuracy, with the difference, its standard error and whether it exceeds the
seed-to-seed spread. The finding is what the run measured.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..exceptions import HfoxError
from ._bnn import BinarizedMLP
from ._checkpoint import load_checkpoint
from ._data import load_dataset, make_loader
from ._training import CONDITIONS, check_conditions, train_network

__all__ = ["run_ablation", "summarize_ablation", "default_hidden"]

COLUMNS = ["condition", "seed", "epoch", "train_accuracy", "test_accuracy", "loss", "test_loss", "pulses",
           "resets", "sign_lost", "set_ops", "max_cell_pulses", "wall_s"]


def default_hidden(n_inputs: int) -> int:
    """Hidden width scaled to the data: the paper's 3000 for 784 pixels, 256 for the 64 of the digits."""
    return 3000 if n_inputs >= 784 else 256


def summarize_ablation(rows: list) -> dict:
    """Final test accuracy per condition (mean, std, n over seeds) and what removing each imperfection recovers."""
    final = {}
    for r in rows:
        key = (r["condition"], r["seed"])
        if key not in final or r["epoch"] > final[key]["epoch"]:
            final[key] = r
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    per = {}
    for c in conditions:
        acc = np.array([r["test_accuracy"] for (cc, _), r in final.items() if cc == c], float)
        std = float(acc.std(ddof=1)) if len(acc) > 1 else None
        per[c] = {"final_test_accuracy": float(acc.mean()), "std": std, "n_seeds": int(len(acc)),
                  "stderr": std / math.sqrt(len(acc)) if std is not None else None,
                  "pulses": int(sum(r["pulses"] for r in rows if r["condition"] == c)),
                  "resets": int(sum(r["resets"] for r in rows if r["condition"] == c)),
                  "sign_lost": int(sum(r.get("sign_lost", 0) for r in rows if r["condition"] == c)),
                  "max_cell_pulses": int(max(r["max_cell_pulses"] for r in rows if r["condition"] == c))}
    out = {"conditions": per, "notes": []}
    if "device" in per and "software" in per:
        out["device_cost"] = _difference(per["software"], per["device"], "software", "device")
    if "device" in per:
        recoveries = {c: _difference(per[c], per["device"], c, "device") for c in per if c.startswith("no_")}
        if recoveries:
            best = max(recoveries, key=lambda c: recoveries[c]["difference"])
            out["recovery"] = recoveries
            out["most_harmful"] = {"imperfection": best[3:], "condition": best, **recoveries[best],
                                   "recovers_accuracy": bool(recoveries[best]["difference"] > 0)}
            others = [c for c in recoveries if c != best]
            if others:  # (is the largest recovery measurably larger than the next? 3 seeds rarely tell)
                second = max(others, key=lambda c: recoveries[c]["difference"])
                out["most_harmful"]["runner_up"] = {"imperfection": second[3:], "condition": second,
                                                    **_difference(per[best], per[second], best, second)}
    if any(p["std"] is None for p in per.values()):
        out["notes"].append("one seed per condition: no spread, so no difference can be called significant; "
                            "run with --seeds 3 or more")
    return out


def _difference(a: dict, b: dict, name_a: str, name_b: str) -> dict:
    """``a - b`` of the final accuracies, its standard error, and whether it exceeds the seed-to-seed spread."""
    diff = a["final_test_accuracy"] - b["final_test_accuracy"]
    if a["stderr"] is None or b["stderr"] is None:
        return {"difference": diff, "stderr": None, "exceeds_spread": None,
                "note": f"{name_a} - {name_b}; one seed: no spread to compare with"}
    se = math.hypot(a["stderr"], b["stderr"])
    exceeds = bool(diff > 2 * se) if se > 0 else bool(diff > 0)
    return {"difference": diff, "stderr": se, "exceeds_spread": exceeds,
            "note": f"{name_a} - {name_b}; exceeds the spread when above 2 standard errors of the difference"}


def summary_text(summary: dict, meta: dict) -> str:
    lines = [f"hfox-fit train-demo: {meta['dataset']} ({meta['n_train']} train / {meta['n_test']} test), "
             f"network {meta['sizes']}, {meta['epochs']} epoch(s), {meta['seeds']} seed(s), model {meta['model']}",
             "", f"{'condition':10s} {'final test accuracy':>22s}   pulses      re-SETs  signs lost  max pulses/cell"]
    for c, p in summary["conditions"].items():
        spread = f"+/- {p['std']:.3f}" if p["std"] is not None else "(1 seed)"
        lines.append(f"{c:10s} {p['final_test_accuracy']:>12.3f} {spread:>9s}   {p['pulses']:>10d} {p['resets']:>10d} "
                     f"{p['sign_lost']:>11d} {p['max_cell_pulses']:>10d}")
    if "device_cost" in summary:
        d = summary["device_cost"]
        se = f" +/- {d['stderr']:.3f}" if d["stderr"] is not None else ""
        lines += ["", f"the device costs {d['difference']:+.3f}{se} of test accuracy against software"
                  + ("" if d["exceeds_spread"] is None else
                     (" (beyond the seed-to-seed spread)" if d["exceeds_spread"] else
                      " (not beyond the seed-to-seed spread: the device is not measurably worse here)"))]
    if "most_harmful" in summary:
        m = summary["most_harmful"]
        se = f" +/- {m['stderr']:.3f}" if m["stderr"] is not None else ""
        verdict = ("" if m["exceeds_spread"] is None else
                   " - beyond the seed-to-seed spread" if m["exceeds_spread"] else
                   " - within the seed-to-seed spread: no imperfection stands out in this run")
        if m["difference"] > 0:
            lines.append(f"removing {m['imperfection']} recovers the most: {m['difference']:+.3f}{se}{verdict}")
            r = m.get("runner_up")
            if r is not None and r["exceeds_spread"] is not None:
                lines.append(f"  its lead over removing {r['imperfection']}: {r['difference']:+.3f} +/- {r['stderr']:.3f}"
                             + (" - beyond the seed-to-seed spread" if r["exceeds_spread"] else
                                f" - within the seed-to-seed spread: {m['imperfection']} and {r['imperfection']} "
                                "cannot be told apart with these seeds"))
        else:  # every removal left the accuracy as it was or lower: nothing was recovered
            lines.append(f"no removal recovers accuracy in this run: the best, removing {m['imperfection']}, "
                         f"changes it by {m['difference']:+.3f}{se}")
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines) + "\n"


def _write_csv(rows: list, path: Path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.17g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def run_ablation(model, out_dir, *, dataset="digits", epochs: int = 20, seeds: int = 3, conditions=None,
                 device=None, hidden: int | None = None, batch_size: int = 64, lr: float = 0.01,
                 build_net=None, progress: bool = False) -> dict:
    """Train under every condition and seed; write the study to ``out_dir``; return its summary.

    Parameters
    ----------
    model : path of a checkpoint
        The fitted model (``hfox-fit export``).
    out_dir : path
        Written only when the whole study has run (files go to a temporary folder first).
    dataset : "digits" or path of an MNIST-style IDX folder
    epochs, seeds : int
    conditions : list of str, optional
        Default: all of :data:`CONDITIONS`.
    device : str, optional
        ``"cpu"`` or ``"cuda"``; the CPU by default.
    hidden : int, optional
        Hidden width of the default network (:func:`default_hidden` of the data).
    batch_size, lr : training settings (Adam)
    build_net : callable, optional
        ``build_net(n_inputs, n_classes) -> nn.Module`` in place of the binarized MLP.
    progress : bool
        A progress bar over conditions × seeds × epochs.

    Returns
    -------
    dict
        The summary (also in ``summary.json``), with ``meta``.
    """
    conditions = check_conditions(list(CONDITIONS) if conditions is None else conditions)
    if int(epochs) < 1 or int(seeds) < 1:
        raise HfoxError(f"epochs and seeds must be >= 1; got epochs={epochs}, seeds={seeds}.")
    if int(batch_size) < 1:
        raise HfoxError(f"the batch size must be >= 1; got {batch_size}.")
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise HfoxError(f"the learning rate must be a finite number > 0; got {lr}.")
    if hidden is not None and int(hidden) < 1:
        raise HfoxError(f"the hidden width must be >= 1 (or left out for the default); got {hidden}.")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise HfoxError(f"{str(out_dir)!r} exists and is not a folder; give a folder for the study's files.")
    model_path = Path(model)
    # read whatever the conditions: a file that is not ours, or was altered, is refused even for `software`
    checkpoint = load_checkpoint(model_path)[0]  # CheckpointError names the file
    dm = checkpoint if any(CONDITIONS[c] is not None for c in conditions) else None
    x_train, y_train, x_test, y_test = load_dataset(dataset)
    n_in, n_classes = int(x_train.shape[1]), int(max(int(y_train.max()), int(y_test.max())) + 1)
    sizes = (n_in, int(default_hidden(n_in) if hidden is None else hidden), n_classes)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # whole lines when stderr is not a terminal (a log file, CI), tqdm's bar on one
    bar = Progress("train", len(conditions) * int(seeds) * int(epochs), "epoch", enabled=progress)
    rows = []
    t0 = time.perf_counter()
    try:
        for c in conditions:
            for seed in range(int(seeds)):
                net = (lambda: build_net(n_in, n_classes)) if build_net else (lambda: BinarizedMLP(sizes))
                train = make_loader(x_train, y_train, batch_size=batch_size, shuffle=True)
                test = make_loader(x_test, y_test, batch_size=512, shuffle=False)
                for r in train_network(net, train, test, condition=c, model=dm, seed=seed, epochs=epochs, lr=lr,
                                       device=device, progress=bar.advance):
                    rows.append({"condition": c, "seed": seed, **r})
    finally:
        bar.close()
    summary = summarize_ablation(rows)
    if dm is not None:
        empty = {"no_c2c": not dm.c2c, "no_pink": dm.pink.alpha == 0, "no_rtn": dm.rtn.p_up == 0}
        for c in conditions:
            if empty.get(c):
                summary["notes"].append(f"the fitted model has no {c[3:]} to switch off: {c} trains the same "
                                        "cells as device")
    summary["meta"] = {"dataset": str(dataset), "n_train": int(len(y_train)), "n_test": int(len(y_test)),
                       "sizes": list(sizes) if not build_net else "user network", "epochs": int(epochs),
                       "seeds": int(seeds), "conditions": conditions, "model": str(model_path), "lr": lr,
                       "batch_size": batch_size, "device": str(device or "cpu"),
                       "total_wall_s": time.perf_counter() - t0}
    _write_outputs(rows, summary, out_dir)
    return summary


def _write_outputs(rows, summary, out_dir: Path) -> None:
    """All files to a temporary folder beside ``out_dir``, then moved in: nothing half-written."""
    from ..plotting import plot_ablation

    tmp = Path(tempfile.mkdtemp(prefix=".train-demo-", dir=out_dir.parent))
    try:
        _write_csv(rows, tmp / "ablation.csv")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "summary.txt").write_text(summary_text(summary, summary["meta"]))
        ax = plot_ablation(rows)
        ax.figure.savefig(tmp / "ablation.png", dpi=100, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(ax.figure)
        out_dir.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            f.replace(out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""The training study's section of the report: accuracy per condition over epochs, when a study was run.

Reads what ``hfox-fit train-demo`` (or ``run --train``) wrote, ``ablation.csv`` and
``summary.json``; the report draws the figure again from those rows and carries the
summary's numbers in ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["training_section"]


def _rows(path: Path) -> list:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["epoch"] = int(r["epoch"])
        r["test_accuracy"] = float(r["test_accuracy"])
    return rows


def training_section(training_dir, metrics, figs, notes) -> None:
    """Add the ``training`` figure when ``training_dir`` holds a study; a note when it cannot be read."""
    folder = Path(training_dir)
    try:
        rows = _rows(folder / "ablation.csv")
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError, KeyError) as err:
        notes.append(f"no training study shown: {folder} holds no readable ablation.csv / summary.json ({err}).")
        return
    if not rows:
        notes.append(f"no training study shown: {folder / 'ablation.csv'} has no rows.")
        return
    conditions = summary.get("conditions", {})
    parts = [f"{c} {p['final_test_accuracy']:.3f}" + (f" ± {p['std']:.3f}" if p.get("std") is not None else "")
             for c, p in conditions.items()]
    caption = "Test accuracy over epochs per condition (mean ± std over seeds); final: " + ", ".join(parts) + "."
    worst = summary.get("most_harmful")
    if worst:
        verdict = {True: "beyond the seed-to-seed spread", False: "within the seed-to-seed spread",
                   None: "one seed: no spread"}[worst.get("exceeds_spread")]
        se = f" ± {worst['stderr']:.3f}" if worst.get("stderr") is not None else ""
        if worst["difference"] > 0:
            caption += (f" Removing {worst['imperfection']} recovers the most accuracy: "
                        f"{worst['difference']:+.3f}{se} ({verdict}).")
        else:
            caption += (f" No removal recovers accuracy in this run: the best, removing {worst['imperfection']}, "
                        f"changes it by {worst['difference']:+.3f}{se}.")
    metrics["figures"]["training"] = {"source": str(folder), "summary": summary}

    def draw(fig):
        from ..plotting import plot_ablation

        plot_ablation(rows, ax=fig.add_subplot(1, 1, 1))

    figs["training"] = (draw, (8, 4.2), caption)

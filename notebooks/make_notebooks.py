"""Write the example notebooks of this folder (stored without outputs).

Run from anywhere: ``python notebooks/make_notebooks.py``. Edit the cells here,
not in the .ipynb files, so the three notebooks stay consistent.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Shared first code cell: find the example campaign (data/raw of the source checkout) and the
# working folder (notebooks/_work/, or $HFOX_FIT_NOTEBOOK_WORK), and a fitted store that the three
# notebooks share there. Paths are resolved, never filtered by their spelling: Jupyter runs a
# notebook in its own folder, so the campaign is ../data/raw there and data/raw from the root.
SETUP = '''\
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

import hfox_fit
from hfox_fit.fitting import fit_campaign
from hfox_fit.parsers import read_measurements
from hfox_fit.store import CampaignStore
from hfox_fit.synth import TRUTH_NAME, make_wafer, write_wafer


def _checkout():
    """The source checkout that holds the example campaign (data/raw), or None."""
    here = Path.cwd().resolve()
    for root in (here, here.parent, Path(hfox_fit.__file__).resolve().parents[1]):
        if (root / "data" / "raw").is_dir() and (root / "hfox_fit").is_dir():
            return root
    return None


def shown(path):
    """A path as short as it gets from here (../data/raw in notebooks/)."""
    return os.path.relpath(path)


ROOT = _checkout()
DATA = ROOT / "data" / "raw" if ROOT else None   # the example campaign: 512 cells x 300 pulses
# Working files (store, report, checkpoint): notebooks/_work/ of this checkout (git ignores it),
# or the folder named by $HFOX_FIT_NOTEBOOK_WORK (the tests give each run its own). Never data/.
WORK = Path(os.environ.get("HFOX_FIT_NOTEBOOK_WORK") or (ROOT / "notebooks" if ROOT else Path.cwd()) / "_work")
WORK.mkdir(parents=True, exist_ok=True)
STORE = WORK / "campaign.h5"
if FRESH:                                         # notebook 1 starts from the raw files
    for old in (STORE, WORK / "model.pt", WORK / "report", WORK / "train"):
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)


def raw_files(folder):
    """Raw measurement files under a folder, as `hfox-fit ingest FOLDER` reads them
    (recursively; hidden files and folders and truth.json skipped)."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != TRUTH_NAME
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def example_campaign():
    """Folder of raw files: data/raw of the checkout, else a small simulated wafer (said so)."""
    if raw_files(DATA):
        return DATA
    folder = WORK / "raw"
    if not raw_files(folder):
        wafer = make_wafer("paper", devices=256, pulses=300, seed=1)
        write_wafer(wafer, folder, "bench")
    return folder


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fitted_store(refit=False):
    """The campaign store with a fit of the example campaign (ingest and fit it when the store
    holds no fit, or a fit of other files)."""
    store = CampaignStore(STORE)
    files = raw_files(example_campaign())
    if store.exists() and not refit:
        try:
            same = {s["sha256"] for s in store.sources()} == {_sha256(p) for p in files}
            if same:
                store.load_fit()
                return store
        except hfox_fit.StoreError:
            pass
    if store.exists():
        STORE.unlink()
    store.ingest(read_measurements(p) for p in files)
    fit = fit_campaign(store.iter_dies(), law="auto")
    fit.save(store)
    return store


CAMPAIGN = example_campaign()
if CAMPAIGN != DATA:
    print("NOTE: no example campaign (data/raw of the source checkout) here, in its parent folder or "
          "beside the hfox_fit package: it ships with the source checkout, not with an installed package. "
          f"These notebooks use a small SIMULATED wafer instead (256 cells): {shown(CAMPAIGN)}")
print("hfox_fit", hfox_fit.__version__)
print("example campaign:", shown(CAMPAIGN), f"({len(raw_files(CAMPAIGN))} raw files)")
print("working folder:  ", shown(WORK))
'''

NB1 = [
    new_markdown_cell(
        "# 1. Fit a new wafer\n\n"
        "From raw measurement files to a fitted weak-RESET model: read the files, store them in a "
        "campaign store (HDF5), fit every cell's drift law, the device-to-device laws and the noise, "
        "and look at what the fit says. Uses the example campaign in `data/` (made with "
        "`hfox-fit synth`), or a small simulated wafer when `data/` is empty."
    ),
    new_code_cell("FRESH = True   # start from the raw files\n" + SETUP),
    new_markdown_cell("## Read the raw files into a campaign store\n\n"
                      "Each file goes through a reader (recognised from its first bytes) and the "
                      "schema check; the store keeps one array per die, with failed reads as NaN."),
    new_code_cell(
        'files = raw_files(CAMPAIGN)\n'
        'print(len(files), "raw file(s), e.g.", files[0].name)\n'
        'first = read_measurements(files[0])\n'
        'print(first.format, "reader:", len(first.table), "reads;", first.notes[:2])\n'
        'first.table.head()'
    ),
    new_code_cell(
        'store = CampaignStore(STORE)\n'
        'store.ingest(read_measurements(p) for p in files)\n'
        'counts = store.summary()\n'
        'print(f"{counts[\'cells\']} cells, {counts[\'reads\']:,} reads ({counts[\'failed_reads\']} failed) "\n'
        '      f"from {counts[\'sources\']} file(s) of {shown(CAMPAIGN)}; dies {store.dies()[:4]}")\n'
        'die = store.read_die(*store.dies()[0])\n'
        'print("one die:", die.resistance.shape, "(cells, cycles, pulses); failed reads:",\n'
        '      int(np.isnan(die.resistance).sum()))'
    ),
    new_markdown_cell("## Fit\n\n`fit_campaign` fits each cell-cycle's drift law (or chooses among "
                      "the registered laws with `law=\"auto\"`), flags broken cells (stuck, abrupt, "
                      "open, failed), then fits the D2D laws, their correlation, the pink noise and "
                      "the RTN."),
    new_code_cell(
        'fit = fit_campaign(store.iter_dies(), law="auto")\n'
        'fit.save(store)                      # atomic; CampaignResult.load(store) reads it back\n'
        'summary = fit.summary()\n'
        'print("devices:", summary["devices"])\n'
        'print("drift law:", summary["drift"]["law"], {k: round(v["bic"]) for k, v in summary["drift"]["scores"].items()})\n'
        'fit.cells.head()'
    ),
    new_code_cell(
        'print(f"{\'parameter\':>14} {\'family\':>10} {\'median\':>11}  90 % interval")\n'
        'for name, law in summary["d2d"].items():\n'
        '    lo, hi = law["median_ci90"]\n'
        '    print(f"{name:>14} {law[\'family\']:>10} {law[\'median\']:11.4g}  [{lo:.4g}, {hi:.4g}]")\n'
        'print("pink:", summary["pink"], "| RTN:", summary["rtn"])'
    ),
    new_markdown_cell("## Against the ground truth\n\nA simulated campaign carries its truth "
                      "(`truth.json`); compare the fitted medians with the true laws."),
    new_code_cell(
        'truth_path = CAMPAIGN / TRUTH_NAME\n'
        'if truth_path.is_file():\n'
        '    true_model = hfox_fit.DeviceModel.from_dict(json.loads(truth_path.read_text())["model"])\n'
        '    for name, law in summary["d2d"].items():\n'
        '        if name in true_model.d2d:\n'
        '            print(f"{name:>14}: fitted median {law[\'median\']:.4g}, true {true_model.d2d[name].median():.4g}")\n'
        'else:\n'
        '    print("no ground truth beside these files")'
    ),
    new_markdown_cell("## Intervals to sign off: calibrated by simulation\n\n"
                      "The intervals above come from a bootstrap over cells. `calibrate` fits wafers simulated "
                      "from the fitted model with this campaign's design again and gives every population "
                      "quantity its bias over them and a calibrated 90 % interval (20 wafers is a good start; "
                      "10 here, on two worker processes). Saved with the fit, the report shows it; from the "
                      "shell, `hfox-fit calibrate STORE.h5 --jobs 2`."),
    new_code_cell(
        'from hfox_fit.calibration import calibrate\n\n'
        'cal = calibrate(fit, replicates=10, jobs=2, seed=0)\n'
        'print(cal)\n'
        'fit.add_calibration(cal.to_dict())\n'
        'fit.save(store)                      # the report of notebook 2 shows the calibration\n'
        'cal.table[["quantity", "estimate", "ci90_lo", "ci90_hi", "calibrated_lo", "calibrated_hi", "bias"]].head(8)'
    ),
    new_markdown_cell("Next: `02_validation_plots.ipynb` draws the validation report of this fit; "
                      "from the shell, `hfox-fit report STORE.h5 -o DIR` does the same."),
]

NB2 = [
    new_markdown_cell(
        "# 2. Validation plots\n\n"
        "Does the fitted model reproduce the measurements? The validation report compares the "
        "measured cells with a population simulated from the fitted model (same cells, same pulse "
        "counts), the fitted D2D laws with the per-cell parameters, and the noise laws with the "
        "residuals. It writes one self-contained `report.html`, one PNG per figure and `metrics.json`."
    ),
    new_code_cell("FRESH = False  # reuse the fit of notebook 1 when there is one\n" + SETUP),
    new_code_cell(
        'from IPython.display import Image, display\n'
        'from hfox_fit.report import report_store\n\n'
        'store = fitted_store()\n'
        'result = report_store(STORE, WORK / "report", seed=0)\n'
        'print(result.html, f"({result.elapsed_s:.1f} s,", result.n_cells, "cell-cycles compared)")\n'
        'for note in result.notes:\n'
        '    print("note:", note)'
    ),
    new_markdown_cell("## The population: measured against simulated"),
    new_code_cell(
        'display(Image(filename=str(result.figures["band"])))\n'
        'for pulse, entry in result.metrics["figures"]["ecdf"]["pulses"].items():\n'
        '    print(f"after {pulse:>4} pulses: KS distance {entry[\'ks\']:.3f} (n = {entry[\'n_measured\']})")'
    ),
    new_markdown_cell("## D2D parameters and noise"),
    new_code_cell('display(Image(filename=str(result.figures["parameters"])))'),
    new_code_cell('display(Image(filename=str(result.figures["noise"])))'),
    new_markdown_cell("## Your own plots\n\n`hfox_fit.plotting` draws on any matplotlib Axes; the "
                      "numbers come from the fit (or from `metrics.json`)."),
    new_code_cell(
        'import matplotlib.pyplot as plt\n'
        'from hfox_fit import DeviceModel\n'
        'from hfox_fit.plotting import plot_parameter_hist, plot_band\n\n'
        'fit = store.load_fit()\n'
        'model = DeviceModel.from_dict(fit.model)\n'
        'ok = fit.cells["flag"] == "ok"\n'
        'fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")\n'
        'name = model.parameter_names[0]\n'
        'plot_parameter_hist(fit.cells.loc[ok, name], model.d2d[name], name=name, ax=a)\n'
        'band = result.metrics["figures"]["band"]\n'
        'plot_band(band["pulses"], band["measured"], band["simulated"], ax=b)\n'
        'plt.show()'
    ),
]

NB3 = [
    new_markdown_cell(
        "# 3. Export to training\n\n"
        "Write the fitted model as a PyTorch checkpoint (plain tensors, loads with "
        "`torch.load(..., weights_only=True)`), rebuild a simulated cell array from it and check it "
        "against the numpy model, then drive it the way binarized-network training does: a signed "
        "number of weak RESET pulses per weight update."
    ),
    new_code_cell("FRESH = False  # reuse the fit of notebook 1 when there is one\n" + SETUP),
    new_code_cell(
        'import torch\n'
        'from hfox_fit import DeviceModel\n'
        'from hfox_fit.torch import WeakResetArray, export_checkpoint, load_checkpoint\n\n'
        'store = fitted_store()\n'
        'fit = store.load_fit()\n'
        'model = DeviceModel.from_dict(fit.model)\n'
        'cells_used = int((fit.cells["flag"] == "ok").sum())\n'
        'path = export_checkpoint(model, WORK / "model.pt",\n'
        '                         provenance={"store": STORE.name, "cells_used": cells_used,\n'
        '                                     "fitted_at": fit.fitted_at})\n'
        'raw = torch.load(path, weights_only=True)\n'
        'print(path.name, raw["format"], "v", raw["format_version"], "| state:", sorted(raw["state_dict"])[:5])\n'
        'model_back, provenance = load_checkpoint(path)\n'
        'print("law", model_back.law, "| cells used", provenance["cells_used"])'
    ),
    new_markdown_cell("## The cell array against the numpy model\n\nPulse 2048 simulated cells "
                      "200 times and compare the median of `w = ln(R/R0)` with `DeviceModel.simulate`."),
    new_code_cell(
        'n, pulses = 2048, 200\n'
        'arr = WeakResetArray.from_checkpoint(path, n, seed=0)\n'
        'r0 = arr.r0.clone()\n'
        'w_torch = [torch.log(arr.pulse(1) / r0).median().item() for _ in range(pulses)]\n'
        'w_np, _ = model_back.simulate(n, pulses, rng=0)\n'
        'w_np = np.median(w_np[:, 0, 1:], axis=0)\n'
        'for p in (10, 100, 200):\n'
        '    print(f"pulse {p:>3}: median w torch {w_torch[p - 1]:.4f}, numpy {w_np[p - 1]:.4f}")'
    ),
    new_markdown_cell("## Driving it like a training step\n\nEach binary weight is held by two cells "
                      "(BL and BLb), `W = sign(R_BL - R_BLb)`; an update is a signed pulse count "
                      "clipped to ±14: positive pulses BL, negative pulses BLb."),
    new_code_cell(
        'n_weights = 1000\n'
        'bl = WeakResetArray(model_back, n_weights, seed=1)\n'
        'blb = WeakResetArray(model_back, n_weights, seed=2)\n'
        'g = torch.Generator().manual_seed(0)\n'
        'for step in range(20):\n'
        '    update = torch.randint(-14, 15, (n_weights,), generator=g)\n'
        '    bl.pulse(update.clamp(min=0))\n'
        '    blb.pulse((-update).clamp(min=0))\n'
        'weights = torch.sign(bl.resistance - blb.resistance)\n'
        'print("weights +1:", int((weights > 0).sum()), "| -1:", int((weights < 0).sum()))'
    ),
    new_markdown_cell("## The paper's ablation on this wafer\n\n"
                      "Train a binarized MLP on scikit-learn's 8×8 digits with its weights in cell pairs of "
                      "this model, under `software`, `device` and `no_d2d` (D2D switched off), a few epochs "
                      "and one seed here; `hfox-fit train-demo --model model.pt --out DIR` runs all six "
                      "conditions over 3 seeds. Your own network goes through `train_network` the same way."),
    new_code_cell(
        'from hfox_fit.torch import BinarizedMLP, load_dataset, make_loader, run_ablation, train_network\n\n'
        'summary = run_ablation(path, WORK / "train", epochs=3, seeds=1,\n'
        '                       conditions=["software", "device", "no_d2d"])\n'
        'print((WORK / "train" / "summary.txt").read_text())\n\n'
        'x, y, x_test, y_test = load_dataset("digits")\n'
        'rows = train_network(lambda: BinarizedMLP((64, 128, 10)), make_loader(x, y),\n'
        '                     make_loader(x_test, y_test, shuffle=False), condition="device",\n'
        '                     model=model_back, seed=0, epochs=2)\n'
        'print(rows[-1])'
    ),
]


def main():
    for name, cells in (("01_fit_new_wafer.ipynb", NB1), ("02_validation_plots.ipynb", NB2),
                        ("03_export_to_training.ipynb", NB3)):
        for i, cell in enumerate(cells):
            cell["id"] = f"{name[:2]}-{i:02d}"  # stable ids: regenerating changes nothing
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()

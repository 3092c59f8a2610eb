"""``hfox-fit export``: write the fit of a campaign store as a PyTorch checkpoint.

torch is imported inside the command only, so ``hfox-fit --help`` and the
other commands never load it.
"""

from __future__ import annotations

from pathlib import Path

from ..exceptions import FitError, StoreError
from ._common import add_command, add_output, add_quiet, add_store


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "export",
        run_export,
        help="write the store's fit as a PyTorch checkpoint (model.pt)",
        description=(
            "Write the device model fitted in a campaign store as a checkpoint that "
            "hfox_fit.torch.WeakResetArray.from_checkpoint reads (a plain dict of tensors that "
            "opens with torch.load(path, weights_only=True)), with its provenance: the store's "
            "SHA-256, the cells used, the fit time and the hfox_fit version."
        ),
    )
    add_store(p, "campaign store holding a fit (`hfox-fit fit`)")
    add_output(p, "MODEL.pt", "checkpoint to write (default: the store's name with .pt)", default=None)
    p.add_argument("--wafer", metavar="W", default=None,
                   help=("export this wafer's laws (its D2D laws, correlations and C2C laws refitted on its "
                         "cells, with bootstrap intervals) instead of the pooled ones of a several-wafer fit"))
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap replicates of the wafer's D2D intervals, with --wafer (default: 200, as fit)")
    add_quiet(p, "no progress lines")


def _cells_columns(cells, wafer=None) -> dict:
    """The fit's cell table as plain columns (ids and flags), for the provenance (one wafer's rows with ``wafer``)."""
    if wafer is not None:
        cells = cells[cells["wafer"].astype(str).to_numpy() == str(wafer)]
    out = {}
    for col in ("wafer", "die", "device", "cycle", "flag"):
        if col in getattr(cells, "columns", ()):
            values = cells[col].tolist()
            out[col] = [int(v) if col == "cycle" else str(v) for v in values]
    return out


def run_export(args) -> int:
    from .._progress import DEFAULT_DELAY, Progress

    with Progress("export", enabled=not getattr(args, "quiet", False), delay=DEFAULT_DELAY) as bar:
        return _export(args, bar)


def _export(args, bar) -> int:
    from ..fitting import CampaignResult
    from ..store import CampaignStore

    bar.stage("reading the fit")
    store = CampaignStore(args.store)
    fit = CampaignResult.load(store)  # StoreError: no store, no fit, an unreadable model
    devices = (fit.summary() or {}).get("devices") or {}
    fitted = devices.get("fitted")
    if fitted is None:
        raise StoreError(
            f"the fit in {store.path.name!r} has no summary['devices']['fitted'] count; "
            f"run `hfox-fit fit {store.path}` again."
        )
    if int(fitted) <= 0:
        raise FitError(
            f"the fit in {store.path.name!r} used no cells (0 fitted of {devices.get('total', '?')}): "
            "there is no model to export. Check the cell flags with `hfox-fit report` and the "
            "fit options, then fit again."
        )
    if args.bootstrap < 1:
        raise FitError(f"--bootstrap {args.bootstrap}: give at least 1 replicate (default 200).")
    model, wafer_d2d = fit.model, None
    if args.wafer is not None:
        from ..fitting.wafer_model import fit_wafer_model

        bar.stage(f"fitting wafer {args.wafer}'s D2D laws ({args.bootstrap} bootstrap replicates)")
        model, wafer_d2d = fit_wafer_model(fit.cells, fit.model, args.wafer, bootstrap=args.bootstrap)
        fitted = _wafer_cells_used(fit.cells, args.wafer)
    out = Path(args.output) if args.output else store.path.with_suffix(".pt")
    if out.is_dir():
        raise StoreError(f"-o {str(out)!r} is a folder; give the checkpoint's file name (model.pt).")

    bar.stage("loading torch")
    from ..torch import export_checkpoint

    bar.stage("hashing the store (SHA-256)")
    provenance = {
        "store": store.path.name,
        "store_sha256": store.sha256(),
        "cells_used": int(fitted),
        "cells": _cells_columns(fit.cells, args.wafer),
        "fitted_at": fit.fitted_at,
    }
    if wafer_d2d is not None:
        provenance.update(wafer=str(args.wafer), wafer_d2d=wafer_d2d)
    bar.stage(f"writing {out}")
    export_checkpoint(model, out, provenance=provenance)
    getattr(args, "completed", []).append(f"written {out}")
    bar.close(f"done in {bar.elapsed():.1f} s")
    which = f"wafer {args.wafer}, " if args.wafer is not None else ""
    print(f"wrote {out} ({which}law {model.law}, {int(fitted)} cells, store sha256 {provenance['store_sha256'][:12]}...)")
    return 0


def _wafer_cells_used(cells, wafer) -> int:
    """The wafer's cells with at least one fitted train (the pooled count's rule, on one wafer)."""
    mine = cells[cells["wafer"].astype(str).to_numpy() == str(wafer)]
    ok = mine[mine["flag"].eq("ok")] if "flag" in mine else mine
    return int(len(ok[["die", "device"]].drop_duplicates()))

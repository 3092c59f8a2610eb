"""``hfox-fit devices``: write the fitted per-cell table of a campaign store as CSV."""

from __future__ import annotations

from pathlib import Path

from .._atomic import atomic_path
from ..exceptions import HfoxError
from ._common import add_command, add_output, add_store


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "devices",
        run_devices,
        help="write the fitted per-cell table of a store as CSV",
        description=(
            "Write one row per cell and cycle of the store's fit: wafer, die, device, cycle, the drift "
            "law's parameters with their standard errors, r0 and r0_stderr (Ohm), flag and flag_reason, and "
            "how well the law follows the train's reads: resid_std (robust std of w - law), misfit (mean "
            "square of the residual's block means over what the noise gives: about 1 for a good fit), "
            "fit_r2 (share of the slow change of w the law explains) and max_gap (w - law where the law is "
            "farthest from the reads); a train whose law leaves its reads is flagged poor_fit."
        ),
    )
    add_store(p, "campaign store holding a fit (see `hfox-fit fit`)")
    add_output(p, "FILE.csv", "CSV file to write", required=True)


def run_devices(args) -> int:
    from ..fitting import CampaignResult
    from ..fitting._tables import GOF_COLUMNS
    from ..laws import get_law

    fit = CampaignResult.load(args.store)  # StoreError when there is no fit
    cells = fit.cells
    law = fit.law
    params = list(get_law(law).params)
    cols = ["wafer", "die", "device", "cycle"]
    for p in params:
        cols += [p, p + "_stderr"]
    cols += ["r0", "r0_stderr", "flag", "flag_reason"]
    missing = [c for c in cols if c not in cells.columns]
    if missing:
        raise HfoxError(f"devices: the stored fit lacks column(s) {missing}; re-run `hfox-fit fit {args.store}`.")
    # goodness of fit (fits stored before it existed lack these columns)
    extra = [c for c in (*GOF_COLUMNS, "note") if c in cells.columns]
    out = Path(args.output)
    try:
        with atomic_path(out, suffix=".csv", what="the devices table") as tmp:  # never half-written
            cells[cols + extra].to_csv(tmp, index=False)
    except OSError as err:
        raise HfoxError(f"devices: cannot write {str(out)!r}: {err}.") from err
    getattr(args, "completed", []).append(f"written {out}")
    print(f"wrote {len(cells)} row(s) ({law} parameters) to {out}")
    return 0

"""``hfox-fit fit`` and ``hfox-fit devices``: fit a campaign store, export its per-cell table."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ..exceptions import HfoxError
from ..laws import AUTO_LAWS

LAW_CHOICES = ("auto", *AUTO_LAWS)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit the weak-RESET model to a campaign store",
        description=(
            "Fit the drift law of every cell and cycle (robust to RTN), the pink and RTN noise laws, "
            "the D2D and C2C laws and their correlations; save the fit in the store (replacing the "
            "previous one) and print a short summary."
        ),
    )
    p.add_argument("store", metavar="STORE.h5", help="campaign store (see `hfox-fit ingest`)")
    p.add_argument("--law", choices=LAW_CHOICES, default="auto",
                   help="drift law; auto fits them all and keeps the lowest total AIC (default: auto)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes, one die each (default: 1)")
    p.add_argument("--summary", metavar="FILE.json", help="also write the summary JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed summary")
    p.set_defaults(func=run_fit)

    d = subparsers.add_parser(
        "devices",
        help="write the fitted per-cell table of a store as CSV",
        description=(
            "Write one row per cell and cycle of the store's fit: wafer, die, device, cycle, the drift "
            "law's parameters with their standard errors, r0 and r0_stderr (Ohm), flag and flag_reason."
        ),
    )
    d.add_argument("store", metavar="STORE.h5", help="campaign store holding a fit (see `hfox-fit fit`)")
    d.add_argument("-o", "--output", required=True, metavar="FILE.csv", help="CSV file to write")
    d.set_defaults(func=run_devices)


def run_fit(args) -> int:
    from ..fitting import fit_campaign
    from ..store import CampaignStore

    if args.jobs < 1:
        raise HfoxError(f"fit: --jobs must be >= 1; got {args.jobs}.")
    store = CampaignStore(args.store)
    dies = store.dies()  # raises StoreError when the store is missing or damaged
    if not dies:
        raise HfoxError(f"fit: {args.store!r} holds no measurements; run `hfox-fit ingest` first.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_campaign(store.iter_dies(), law=args.law, jobs=args.jobs, progress=not args.quiet,
                           n_dies=len(dies))
    fit.save(store)
    if args.summary:
        path = Path(args.summary)
        try:
            path.write_text(json.dumps(fit.summary(), indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise HfoxError(f"fit: cannot write the summary to {str(path)!r}: {err}.") from err
    for w in caught:
        print(f"hfox-fit fit: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(fit.describe(args.store))
    return 0


def run_devices(args) -> int:
    from ..laws import get_law
    from ..store import CampaignStore

    fit = CampaignStore(args.store).load_fit()  # StoreError when there is no fit
    cells = fit.cells
    law = fit.summary.get("drift", {}).get("law") or fit.model.get("law")
    params = list(get_law(law).params)
    cols = ["wafer", "die", "device", "cycle"]
    for p in params:
        cols += [p, p + "_stderr"]
    cols += ["r0", "r0_stderr", "flag", "flag_reason"]
    missing = [c for c in cols if c not in cells.columns]
    if missing:
        raise HfoxError(f"devices: the stored fit lacks column(s) {missing}; re-run `hfox-fit fit {args.store}`.")
    extra = [c for c in ("note",) if c in cells.columns]
    out = Path(args.output)
    try:
        cells[cols + extra].to_csv(out, index=False)
    except OSError as err:
        raise HfoxError(f"devices: cannot write {str(out)!r}: {err}.") from err
    print(f"wrote {len(cells)} row(s) ({law} parameters) to {out}")
    return 0

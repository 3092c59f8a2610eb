"""``hfox-fit fit``: fit the weak-RESET model to a campaign store and save the fit in it."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from .._atomic import atomic_path, refuse_read_only
from ..exceptions import HfoxError
from ..laws import AUTO_LAWS

LAW_CHOICES = ("auto", *AUTO_LAWS)


def register(subparsers) -> None:
    from ._common import add_command, add_quiet, add_store

    p = add_command(
        subparsers,
        "fit",
        run_fit,
        help="fit the weak-RESET model to a campaign store",
        description=(
            "Fit the drift law of every cell and cycle (robust to RTN), the pink and RTN noise laws, "
            "the D2D and C2C laws and their correlations; save the fit in the store (replacing the "
            "previous one) and print a short summary."
        ),
    )
    add_store(p, "campaign store (see `hfox-fit ingest`)")
    p.add_argument("--law", choices=LAW_CHOICES, default="auto",
                   help="drift law; auto fits them all and keeps the lowest total AIC (default: auto)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes, one die each (default: 1)")
    p.add_argument("--summary", metavar="FILE.json", help="also write the summary JSON to this file")
    add_quiet(p, "no progress bar and no printed summary")


def run_fit(args) -> int:
    from ..fitting import fit_campaign
    from ..store import CampaignStore

    if args.jobs < 1:
        raise HfoxError(f"fit: --jobs must be >= 1; got {args.jobs}.")
    store = CampaignStore(args.store)
    dies = store.dies()  # raises StoreError when the store is missing or damaged
    if not dies:
        raise HfoxError(f"fit: {args.store!r} holds no measurements; run `hfox-fit ingest` first.")
    store.check_writable()  # before the fit, not after it: saving the fit rewrites the store
    if args.summary:
        refuse_read_only(Path(args.summary))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_campaign(store.iter_dies(), law=args.law, jobs=args.jobs, progress=not args.quiet,
                           n_dies=len(dies))
    fit.save(store)
    getattr(args, "completed", []).append(f"saved the fit in {args.store}")
    if args.summary:
        path = Path(args.summary)
        try:
            with atomic_path(path, suffix=".json") as tmp:
                tmp.write_text(json.dumps(fit.summary(), indent=2) + "\n", encoding="utf-8")
            getattr(args, "completed", []).append(f"written {path}")
        except OSError as err:
            raise HfoxError(f"fit: cannot write the summary to {str(path)!r}: {err}.") from err
    for w in caught:
        print(f"hfox-fit fit: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(fit.describe(args.store))
    return 0

"""``hfox-fit calibrate``: calibrate the population intervals of the fit saved in a store, without refitting it."""

from __future__ import annotations

import warnings
from pathlib import Path

from .._atomic import refuse_read_only
from ._common import (
    DEFAULT_REPLICATES,
    calibration_workers,
    check_calibrate,
    check_workers,
    print_warnings,
    write_summary,
)


def register(subparsers) -> None:
    from ._common import add_command, add_quiet, add_store

    p = add_command(
        subparsers,
        "calibrate",
        run_calibrate,
        help="calibrate the population intervals of a saved fit by simulated wafers",
        description=(
            "Calibrate the population intervals of the fit saved in STORE (as `hfox-fit fit --calibrate N` "
            "does, without fitting the store again): N wafers are simulated from the fitted model with the "
            "campaign's design and fitted again, and every population quantity (D2D medians and law "
            "parameters, copula correlations, pink std, RTN rates) gets its bias over them and a calibrated "
            "90 % interval. The fit's summary in the store gains them (the rest of the fit stays as it was); "
            "`hfox-fit report` shows them."
        ),
    )
    add_store(p, "campaign store holding a fit (see `hfox-fit fit`)")
    p.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, metavar="N",
                   help=f"simulated wafers (each costs about one fit of up to 1024 cells; default: {DEFAULT_REPLICATES})")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local worker processes, one simulated wafer each (default: the machine's cores up to 4)")
    p.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="fit the simulated wafers on Dask instead (needs `pip install 'hfox_fit[dask]'`)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the simulated wafers (default: 0)")
    p.add_argument("--summary", metavar="FILE.json", help="also write the updated summary JSON to this file")
    add_quiet(p, "no progress bar and no printed lines")


def run_calibrate(args) -> int:
    from ..calibration import calibrate
    from ..fitting import CampaignResult
    from ..fitting._result import _describe_calibration
    from ..store import CampaignStore

    check_workers("calibrate", args.jobs, args.scheduler)
    jobs = calibration_workers(args.jobs, args.scheduler)
    check_calibrate(args.replicates, "calibrate: --replicates", zero=False)
    store = CampaignStore(args.store)
    fit = CampaignResult.load(store)  # StoreError: no store, no fit in it (names the command to run)
    store.check_writable()  # before the simulated wafers, not after them
    if args.summary:
        refuse_read_only(Path(args.summary))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = calibrate(fit, replicates=args.replicates, seed=args.seed, progress=not args.quiet, jobs=jobs,
                        scheduler=args.scheduler)
    fit.add_calibration(cal.to_dict())
    store.save_fit_summary(fit.summary(), fit.fitted_at)
    getattr(args, "completed", []).append(f"saved the calibration with the fit in {args.store}")
    write_summary(args, "calibrate", fit.summary())
    print_warnings("calibrate", caught)
    if not args.quiet:
        print("\n".join(_describe_calibration(fit.summary())))
        if cal.failed:
            print(f"{len(cal.failed)} of {cal.replicates} simulated wafers could not be fitted: "
                  + "; ".join(cal.failed[:3]) + (" ..." if len(cal.failed) > 3 else ""))
    return 0

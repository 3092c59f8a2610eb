"""``hfox-fit fit``: fit the weak-RESET model to a campaign store and save the fit in it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .._atomic import refuse_read_only
from ..exceptions import HfoxError
from ..laws import AUTO_LAWS
from ._common import (
    add_calibrate,
    calibration_workers,
    check_calibrate,
    check_workers,
    print_warnings,
    write_summary,
)

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
    p.add_argument("--law", choices=LAW_CHOICES, default=None,
                   help=("drift law; auto fits them all and keeps the lowest total AIC (default: auto; with "
                         "--only, the saved fit's)"))
    p.add_argument("--only", nargs="+", metavar="WAFER/DIE",
                   help=("refit only these dies and pool them with the other dies' results kept in the saved "
                         "fit (the same numbers as a full fit); dies without a kept result are fitted too"))
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help=("local worker processes, one die each, and one --calibrate wafer each (default: 1 for "
                         "the dies, the machine's cores up to 4 for the calibration)"))
    p.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help=("run the dies on Dask: local:N starts N worker processes here, tcp://HOST:PORT uses a "
                         "running scheduler whose workers can read STORE at the same path (needs "
                         "`pip install 'hfox_fit[dask]'`); the numbers are the same as with --jobs"))
    p.add_argument("--summary", metavar="FILE.json", help="also write the summary JSON to this file")
    add_calibrate(p, "also `hfox-fit calibrate STORE` later")
    add_quiet(p, "no progress bar and no printed summary")


def run_fit(args) -> int:
    from ..fitting import CampaignFitter
    from ..store import CampaignStore, StoredDie

    scheduler = getattr(args, "scheduler", None)
    jobs = check_workers("fit", args.jobs, scheduler)
    calibrate = getattr(args, "calibrate", 0) or 0
    calibration_jobs = calibration_workers(args.jobs, scheduler)
    check_calibrate(calibrate)
    store = CampaignStore(args.store)
    dies = store.dies()  # raises StoreError when the store is missing or damaged
    if not dies:
        raise HfoxError(f"fit: {args.store!r} holds no measurements; run `hfox-fit ingest` first.")
    only = getattr(args, "only", None)
    law, known = (args.law or "auto"), {}
    if only:
        law, known = _kept_results(store, args.store, dies, only, args.law)
    store.check_writable()  # before the fit, not after it: saving the fit rewrites the store
    if args.summary:
        refuse_read_only(Path(args.summary))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # each worker reads its die from the store; only this process writes the store
        sources = [StoredDie(Path(args.store).resolve(), wafer, die) for wafer, die in dies]
        fitter = CampaignFitter(law, jobs, not args.quiet, scheduler=scheduler, keep_going=True)
        fit = fitter.fit(sources, n_dies=len(dies), known=known).result_
        if calibrate:
            from ..calibration import calibrate as calibrate_fit

            fit.add_calibration(calibrate_fit(fit, replicates=calibrate, seed=0, progress=not args.quiet,
                                            jobs=calibration_jobs, scheduler=scheduler).to_dict())
    fit.save(store, dies=fitter.die_trees(), law=law)
    getattr(args, "completed", []).append(f"saved the fit in {args.store}")
    write_summary(args, "fit", fit.summary())
    print_warnings("fit", caught)
    if not args.quiet:
        print(fit.describe(args.store))
    return _report_failed(fitter.failed_, len(dies), args.store)


def _report_failed(failed: dict, n_dies: int, store) -> int:
    """Name each die that failed twice on the cluster (its fit was saved without them); 1 when any did."""
    if not failed:
        return 0
    for name, err in failed.items():
        print(f"hfox-fit fit: die {name} failed twice, left out of the fit: {err}", file=sys.stderr)
    print(f"hfox-fit fit: the fit saved in {store} covers the other {n_dies - len(failed)} of {n_dies} dies; "
          f"once the cause is fixed, refit only the failed dies and merge them into it with "
          f"`hfox-fit fit {store} --only {' '.join(failed)}`.", file=sys.stderr)
    return 1


def _kept_results(store, path, dies, only, law):
    """``(law, {"W03/D07": (result, conditions)})`` of the saved fit for the dies not in ``only``; HfoxError if none."""
    from ..fitting._parts import part_from_tree

    names = {f"{w}/{d}" for w, d in dies}
    unknown = [name for name in only if name not in names]
    if unknown:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        raise HfoxError(f"fit --only: {', '.join(unknown)} not in {path!r} (give WAFER/DIE as the store names "
                        f"them: {shown}; `hfox-fit info {path}` lists them).")
    kept_law, trees, stale = store.load_die_results()  # StoreError (no fit yet) names the command to run
    if stale:
        raise HfoxError(f"fit --only: measurements were ingested into {path!r} after its fit, so the other dies' "
                        f"kept results may miss reads; refit the whole store with `hfox-fit fit {path}`.")
    if kept_law is None:
        raise HfoxError(f"fit --only: the fit saved in {path!r} keeps no per-die results (it was made by an older "
                        f"hfox-fit); refit the whole store with `hfox-fit fit {path}`.")
    if law is not None and law != kept_law:
        raise HfoxError(f"fit --only: the fit saved in {path!r} was made with --law {kept_law}, not {law}; refit "
                        f"the dies with --law {kept_law} (or leave --law out), or refit the whole store with "
                        f"--law {law}.")
    return kept_law, {name: part_from_tree(tree) for name, tree in trees.items() if name in names - set(only)}

"""``hfox-fit run``: ingest → fit → devices → export → report in one go, each step run as its own command."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..exceptions import HfoxError
from ._common import add_command, add_output, add_pipeline_options, check_calibrate, check_ids


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "run",
        run_pipeline,
        help="ingest, fit, export and report in one go",
        description="Ingest raw files into OUTDIR/campaign.h5, fit the weak-RESET model, write the "
        "fitted cells to OUTDIR/devices.csv, export OUTDIR/model.pt and write the validation report to "
        "OUTDIR/report/. Every option is checked before anything is written. Re-running on the same "
        "OUTDIR skips files already ingested and replaces the fit.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="raw files or folders")
    add_output(p, "OUTDIR", "output folder", required=True)
    add_pipeline_options(p)
    p.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help=("fit the dies on Dask instead of --jobs local processes (passed to `hfox-fit fit`): "
                         "local:N starts N worker processes here, tcp://HOST:PORT uses a running scheduler whose "
                         "workers can read OUTDIR/campaign.h5 at the same path"))
    p.add_argument("--strict", action="store_true",
                   help=("refuse a folder that holds a file no reader recognises, before anything is written "
                         "(passed to `hfox-fit ingest`; without it such files are skipped and named)"))
    p.set_defaults(jobs=None)  # None: not given, so that --jobs with --scheduler can be refused


def _step_args(args, out: Path) -> dict[str, list[str]]:
    store = str(out / "campaign.h5")
    quiet = ["--quiet"] if args.quiet else []
    ingest = [*map(str, args.paths), "--store", store, *quiet]
    if getattr(args, "die_positions", None):
        ingest += ["--die-positions", str(args.die_positions)]
    if getattr(args, "strict", False):
        ingest.append("--strict")
    for flag, value in (("--format", args.format), ("--wafer", args.wafer), ("--die", args.die),
                        ("--v-read", args.v_read)):
        if value is not None:
            ingest += [flag, str(value)]
    steps = {
        "ingest": ingest,
        "fit": [store, "--law", args.law, *_workers(args), "--summary", str(out / "fit_summary.json"),
                "--calibrate", str(args.calibrate), *quiet],
        "devices": [store, "-o", str(out / "devices.csv")],
        "export": [store, "-o", str(out / "model.pt"), *quiet],
    }
    report = [store, "-o", str(out / "report"), "--seed", str(args.seed), *quiet]
    if getattr(args, "train", False):
        # train-demo has no base-seed option (its --seeds is a count), so the seed goes to the report only
        steps["train-demo"] = ["--model", str(out / "model.pt"), "--out", str(out / "train"), *quiet]
        report += ["--training", str(out / "train")]
    steps["report"] = report
    return steps


def _workers(args) -> list[str]:
    """The fit's workers: ``--scheduler S`` or ``--jobs N`` when given, else the fit's defaults."""
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None:
        return ["--scheduler", str(scheduler)]
    return [] if args.jobs is None else ["--jobs", str(args.jobs)]


def check_options(args) -> None:
    """Refuse a bad option of ``run`` or ``demo`` before anything is written (:class:`HfoxError`)."""
    from ..parsers import list_formats
    from ._fit import LAW_CHOICES

    check_ids(args)
    if getattr(args, "train", False):
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:  # the study's digits; before anything is written
            raise HfoxError("--train trains on scikit-learn's 8x8 digits, and scikit-learn is not installed: "
                            "pip install 'hfox_fit[train]' (or pip install scikit-learn), or leave out --train "
                            "and run `hfox-fit train-demo --dataset PATH` on a local MNIST-style folder.")
    if args.law not in LAW_CHOICES:
        raise HfoxError(f"--law must be one of {', '.join(LAW_CHOICES)}; got {args.law!r}. "
                        "Pick one, or leave it out to let the fit choose (auto).")
    if args.jobs is not None and args.jobs < 1:
        raise HfoxError(f"--jobs must be >= 1 (the number of fit workers); got {args.jobs}.")
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None:
        from ..fitting._executor import _import_distributed, parse_scheduler

        if args.jobs is not None:
            raise HfoxError(f"--jobs {args.jobs} and --scheduler {scheduler}: give one (--jobs N: local processes; "
                            "--scheduler: Dask), not both.")
        parse_scheduler(scheduler)  # a bad address, or dask missing, is refused before anything is written
        _import_distributed()
    if args.seed < 0:
        raise HfoxError(f"--seed must be >= 0; got {args.seed}.")
    check_calibrate(getattr(args, "calibrate", 0))
    if args.v_read is not None and not (math.isfinite(args.v_read) and args.v_read > 0):
        raise HfoxError(f"--v-read must be a read voltage > 0 in V (e.g. 0.1); got {args.v_read}.")
    if args.format is not None:
        names = [str(p.name) for p in list_formats()]
        if args.format not in names:
            raise HfoxError(f"--format must name an installed reader ({', '.join(names)}); got "
                            f"{args.format!r}. See `hfox-fit formats`, or leave it out to recognise each file.")
    if getattr(args, "die_positions", None):
        from ..store import read_die_positions

        read_die_positions(args.die_positions)  # a bad line fails here, before anything is written
    for raw in args.paths:
        if not Path(raw).exists():
            raise HfoxError(f"input {str(raw)!r} does not exist; give existing raw files or folders.")
    if getattr(args, "strict", False):
        from ._ingest import select_files

        # a stray file is refused before OUTDIR exists; the store a rerun left there is skipped, as ingest does
        select_files(args.paths, exclude=[Path(args.output) / "campaign.h5"], format=args.format, strict=True)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise HfoxError(f"output {str(out)!r} exists and is not a folder; choose another -o OUTDIR.")


def run_pipeline(args) -> int:
    from . import build_parser

    check_options(args)
    out = Path(args.output)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HfoxError(f"cannot create the output folder {str(out)!r}: {err.strerror or err}; "
                        "choose another -o OUTDIR.") from err
    parser = build_parser()
    completed = args.completed if isinstance(getattr(args, "completed", None), list) else []
    try:
        for step, argv in _step_args(args, out).items():
            if not args.quiet:
                print(f"== {step}", flush=True)
            t0 = time.perf_counter()
            step_args = parser.parse_args([step, *argv])
            step_args.completed = completed  # each step's finished writes, for the interrupt's one line
            try:
                code = int(step_args.func(step_args) or 0)
            except KeyboardInterrupt:
                args.unfinished = step
                raise
            if code:
                print(f"hfox-fit run: stopped at {step} (exit {code}); outputs of earlier steps are in {str(out)!r}.")
                return code
            if not args.quiet:
                print(f"   {step} done in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a first step that failed or was interrupted leaves no empty folder behind
    study = f", training study {out / 'train'}" if getattr(args, "train", False) else ""
    print(f"hfox-fit run: done. Store {out / 'campaign.h5'}, devices {out / 'devices.csv'}, "
          f"model {out / 'model.pt'}, report {out / 'report' / 'report.html'}{study}")
    return 0

"""``hfox-fit run``: ingest → fit → export → report in one go, each step run as its own command."""

from __future__ import annotations

import time
from pathlib import Path

from ..exceptions import HfoxError
from ._common import add_command, add_output, add_pipeline_options


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "run",
        run_pipeline,
        help="ingest, fit, export and report in one go",
        description="Ingest raw files into OUTDIR/campaign.h5, fit the weak-RESET model, export "
        "OUTDIR/model.pt and write the validation report to OUTDIR/report/. Re-running on the same "
        "OUTDIR skips files already ingested and replaces the fit.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="raw files or folders")
    add_output(p, "OUTDIR", "output folder", required=True)
    add_pipeline_options(p)


def _step_args(args, out: Path) -> dict[str, list[str]]:
    store = str(out / "campaign.h5")
    quiet = ["--quiet"] if args.quiet else []
    ingest = [*map(str, args.paths), "--store", store, *quiet]
    for flag, value in (("--format", args.format), ("--wafer", args.wafer), ("--die", args.die),
                        ("--v-read", args.v_read)):
        if value is not None:
            ingest += [flag, str(value)]
    steps = {
        "ingest": ingest,
        "fit": [store, "--law", args.law, "--jobs", str(args.jobs),
                "--summary", str(out / "fit_summary.json"), *quiet],
        "export": [store, "-o", str(out / "model.pt")],
        "report": [store, "-o", str(out / "report")],
    }
    if getattr(args, "train", False):
        steps = {k: v for k, v in steps.items() if k != "report"}
        steps["train-demo"] = ["--model", str(out / "model.pt"), "--out", str(out / "train"), *quiet]
        steps["report"] = [store, "-o", str(out / "report"), "--training", str(out / "train")]
    return steps


def run_pipeline(args) -> int:
    from . import build_parser

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise HfoxError(f"output {str(out)!r} exists and is not a folder; choose another -o OUTDIR.")
    out.mkdir(parents=True, exist_ok=True)
    parser = build_parser()
    for step, argv in _step_args(args, out).items():
        if not args.quiet:
            print(f"== {step}", flush=True)
        t0 = time.perf_counter()
        step_args = parser.parse_args([step, *argv])
        code = int(step_args.func(step_args) or 0)
        if code:
            print(f"hfox-fit run: stopped at {step} (exit {code}); outputs of earlier steps are in {str(out)!r}.")
            return code
        if not args.quiet:
            print(f"   {step} done in {time.perf_counter() - t0:.1f} s", flush=True)
    study = f", training study {out / 'train'}" if getattr(args, "train", False) else ""
    print(f"hfox-fit run: done. Store {out / 'campaign.h5'}, model {out / 'model.pt'}, "
          f"report {out / 'report' / 'report.html'}{study}")
    return 0

"""``hfox-fit run`` (ingest → fit → export → report in one go) and ``hfox-fit demo``."""

from __future__ import annotations

import time
from pathlib import Path

from ..exceptions import HfoxError

#: The example campaign beside the package in a source checkout (data/ is not installed).
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "data" / "raw"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="ingest, fit, export and report in one go",
        description="Ingest raw files into OUTDIR/campaign.h5, fit the weak-RESET model, export "
        "OUTDIR/model.pt and write the validation report to OUTDIR/report/. Re-running on the same "
        "OUTDIR skips files already ingested and replaces the fit.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="raw files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    _common_options(p)
    p.set_defaults(func=run_pipeline)

    d = subparsers.add_parser(
        "demo",
        help="run the whole job on the example campaign in data/",
        description=f"Run `hfox-fit run` on the example campaign ({EXAMPLE_DATA}).",
    )
    d.add_argument("-o", "--output", default="hfox-demo", metavar="OUTDIR",
                   help="output folder (default: ./hfox-demo)")
    _common_options(d)
    d.set_defaults(func=run_demo, paths=None)


def _common_options(p) -> None:
    p.add_argument("--format", default=None, metavar="NAME", help="reader to use (default: sniffed)")
    p.add_argument("--wafer", default=None, help="wafer id where the files give none")
    p.add_argument("--die", default=None, help="die id where the files give none")
    p.add_argument("--v-read", type=float, default=None, metavar="V", help="read voltage (V) where the files give none")
    p.add_argument("--law", default="auto", help="drift law: auto|two_slope|power|log (default: auto)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel fit workers")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _step_args(args, out: Path) -> dict[str, list[str]]:
    store = str(out / "campaign.h5")
    quiet = ["--quiet"] if args.quiet else []
    ingest = [*map(str, args.paths), "--store", store, *quiet]
    for flag, value in (("--format", args.format), ("--wafer", args.wafer), ("--die", args.die),
                        ("--v-read", args.v_read)):
        if value is not None:
            ingest += [flag, str(value)]
    return {
        "ingest": ingest,
        "fit": [store, "--law", args.law, "--jobs", str(args.jobs),
                "--summary", str(out / "fit_summary.json"), *quiet],
        "export": [store, "-o", str(out / "model.pt")],
        "report": [store, "-o", str(out / "report")],
    }


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
    print(f"hfox-fit run: done. Store {out / 'campaign.h5'}, model {out / 'model.pt'}, "
          f"report {out / 'report' / 'report.html'}")
    return 0


def run_demo(args) -> int:
    if not EXAMPLE_DATA.is_dir():
        raise HfoxError(
            f"the example campaign {str(EXAMPLE_DATA)!r} is missing: it ships with the source checkout, "
            "not with an installed package. Run from a clone, or give your own files to `hfox-fit run`."
        )
    args.paths = [str(EXAMPLE_DATA)]
    return run_pipeline(args)

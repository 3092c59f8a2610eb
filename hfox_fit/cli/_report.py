"""``hfox-fit report``: write the HTML validation report of a fitted campaign store."""

from __future__ import annotations

from ..exceptions import HfoxError
from ._common import add_command, add_output, add_quiet, add_store


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "report",
        run_report,
        help="write the validation report (HTML, PNGs, metrics.json) of a fitted store",
        description=(
            "Compare a campaign's measurements with its fitted model: cell traces, the population "
            "band and distributions against a simulated population, D2D parameter laws and "
            "correlations, noise (spectrum, autocorrelation, RTN dwell times), die maps and the fit "
            "tables. Writes DIR/report.html (self-contained, opens offline), one PNG per figure and "
            "DIR/metrics.json with every number shown."
        ),
    )
    add_store(p, "campaign store holding a fit (hfox-fit fit)")
    add_output(p, "DIR", "output folder (created when missing)", required=True)
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the simulated population and cell subsamples (default: 0)")
    p.add_argument("--pulses", default="10,100,last", metavar="LIST",
                   help="pulse counts of the distribution panels, 'last' for the last pulse (default: 10,100,last)")
    p.add_argument("--max-noise-cells", type=int, default=2048, metavar="N",
                   help="cell-cycles used by the noise figures (default: 2048)")
    p.add_argument("--training", default=None, metavar="DIR",
                   help="also show the training study in DIR (written by `hfox-fit train-demo --out DIR`)")
    add_quiet(p, "no progress lines")


def _pulses(text: str) -> tuple:
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item in ("last", "-1"):
            out.append(-1)
            continue
        try:
            value = int(item)
        except ValueError:
            raise HfoxError(f"report: --pulses takes pulse counts separated by commas or 'last'; got {item!r}.") from None
        if value < 1:
            raise HfoxError(f"report: --pulses must be >= 1 (or 'last'); got {value}.")
        out.append(value)
    if not out:
        raise HfoxError("report: --pulses is empty; give e.g. 10,100,last.")
    return tuple(out)


def run_report(args) -> int:
    from .._progress import DEFAULT_DELAY, Progress
    from ..report import report_store

    if args.max_noise_cells < 1:
        raise HfoxError(f"report: --max-noise-cells must be >= 1; got {args.max_noise_cells}.")
    pulses = _pulses(args.pulses)
    with Progress("report", enabled=not getattr(args, "quiet", False), delay=DEFAULT_DELAY) as bar:
        res = report_store(args.store, args.output, seed=args.seed, pulses=pulses,
                           max_noise_cells=args.max_noise_cells, training=args.training, progress=bar.stage)
        bar.close(f"done in {bar.elapsed():.1f} s")
    getattr(args, "completed", []).append(f"written {res.html}")
    print(f"wrote {res.html} ({len(res.figures)} figures, {res.n_cells:,} cell-cycles compared, "
          f"{res.elapsed_s:.1f} s); numbers in {res.metrics_path}")
    for note in res.notes:
        print(f"note: {note}")
    return 0

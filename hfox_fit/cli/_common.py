"""What the ``hfox-fit`` command modules share: adding a command's sub-parser and the options several take.

Each command module's ``register(subparsers)`` calls :func:`add_command`, then
adds its own arguments, using the helpers here for the ones that recur (the
campaign store, ``-o/--output``, ``--quiet`` and the pipeline options of
``run`` and ``demo``). Argument order and help texts are the module's to choose:
the helpers only spell each option once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from .._atomic import atomic_path
from ..exceptions import HfoxError, HfoxWarning
from ..laws import AUTO_LAWS


def add_command(subparsers, name: str, func, *, help: str, description: str,
                **defaults) -> argparse.ArgumentParser:
    """Add command ``name``, run by ``func(args)`` (which returns an exit code), and return its parser.

    ``help`` is its line in ``hfox-fit --help``, ``description`` the text of
    ``hfox-fit NAME --help``; ``defaults`` are further attributes set on ``args``.
    """
    p = subparsers.add_parser(name, help=help, description=description)
    p.set_defaults(func=func, **defaults)
    return p


def add_store(p: argparse.ArgumentParser, help: str) -> None:
    """The positional campaign store, ``STORE.h5``."""
    p.add_argument("store", metavar="STORE.h5", help=help)


def add_output(p: argparse.ArgumentParser, metavar: str, help: str, **kwargs) -> None:
    """``-o/--output`` (``required=True`` or a ``default=`` go in ``kwargs``)."""
    p.add_argument("-o", "--output", metavar=metavar, help=help, **kwargs)


def add_quiet(p: argparse.ArgumentParser, help: str) -> None:
    """``--quiet``, a flag."""
    p.add_argument("--quiet", action="store_true", help=help)


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The reader, fit and report options of ``run`` and ``demo``, passed on to ``ingest``, ``fit`` and ``report``."""
    p.add_argument("--format", default=None, metavar="NAME", help="reader to use (default: sniffed)")
    p.add_argument("--wafer", default=None, help="wafer id where the files give none")
    p.add_argument("--die-positions", default=None, metavar="FILE.csv",
                   help="the dies' positions on the wafer (columns wafer,die,x,y), for the report's die map")
    p.add_argument("--die", default=None, help="die id where the files give none")
    p.add_argument("--v-read", type=float, default=None, metavar="V", help="read voltage (V) where the files give none")
    p.add_argument("--law", default="auto", help="drift law: " + "|".join(("auto", *AUTO_LAWS)) + " (default: auto)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="parallel fit workers (default: 1 for the dies, the machine's cores up to 4 for --calibrate)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the report's simulated population and cell subsamples (default: 0)")
    add_calibrate(p, "passed to `hfox-fit fit --calibrate`")
    add_quiet(p, "no progress bars")
    p.add_argument("--train", action="store_true",
                   help="also run the training study (`hfox-fit train-demo`: digits, default settings) into "
                        "OUTDIR/train and show it in the report")


#: :data:`hfox_fit.calibration.DEFAULT_REPLICATES` and ``MIN_REPLICATES``, restated: building the parser imports no
#: fitting code (1.5 s); ``tests/cli/test_cli_modules.py`` holds them equal.
DEFAULT_REPLICATES = 20
MIN_REPLICATES = 5


def add_calibrate(p: argparse.ArgumentParser, how: str) -> None:
    """``--calibrate N`` of ``fit``, ``run`` and ``demo`` (default: :data:`DEFAULT_REPLICATES`)."""
    p.add_argument("--calibrate", type=int, default=DEFAULT_REPLICATES, metavar="N",
                   help=(f"calibrate the population intervals by fitting N wafers simulated from the fitted model "
                         f"(default: {DEFAULT_REPLICATES}; {how}): a parametric bootstrap of the whole fit, each "
                         "wafer about one fit of up to 1024 cells, on --jobs or --scheduler like the dies. The "
                         "summary and the report give each population quantity its calibrated 90 %% interval. 0 "
                         "skips it: the fit's own (bootstrap) intervals then stand alone, and they can cover less "
                         "than 90 %% (a law at its edge, a copula between noisy parameters)"))


def calibration_workers(jobs, scheduler) -> int:
    """Local processes of the calibration: ``--jobs`` when given (or 1 beside ``--scheduler``, which runs them),
    else the machine's cores up to 4 (the wafers are independent; the dies default to one process)."""
    if jobs is not None or scheduler is not None:
        return 1 if jobs is None else jobs
    return max(1, min(4, os.cpu_count() or 1))


def check_ids(args) -> None:
    """Refuse an empty ``--wafer`` or ``--die`` (it would be dropped, the files' own ids used in silence)."""
    for option in ("wafer", "die"):
        value = getattr(args, option, None)
        if value is not None and not str(value).strip():
            raise HfoxError(f"--{option} must name a {option} (an id such as W01); got an empty one. Give an id, "
                            "or leave it out to keep the ids the files give.")


def check_calibrate(replicates, option: str = "--calibrate", zero: bool = True) -> None:
    """Refuse ``--calibrate N`` (or ``option``) between 1 and :data:`MIN_REPLICATES` - 1 before anything is written:
    fewer simulated wafers give no calibrated interval. 0 skips the calibration where ``zero``."""
    if (replicates or not zero) and replicates < MIN_REPLICATES:
        skip = " (0 skips it)" if zero else ""
        raise HfoxError(f"{option} needs {MIN_REPLICATES} simulated wafers at least for a calibrated interval{skip}; "
                        f"{DEFAULT_REPLICATES} is the default; got {replicates}.")


def print_warnings(command: str, caught) -> None:
    """Print the warnings a command caught, once each, on stderr.

    The package's own warnings are messages for the user and print as they are (with a
    count when one repeats). Any other warning (a numpy ``RuntimeWarning``, a pandas
    deprecation) says nothing to a user as it stands: it is named as an internal warning,
    with where it came from, so that it can be reported and handled at its cause.
    """
    counts = Counter()
    for w in caught:
        own = issubclass(w.category, HfoxWarning)
        where = "" if own else f"{Path(str(w.filename)).name}:{w.lineno}"
        counts[(own, str(w.message), w.category.__name__, where)] += 1
    for (own, message, category, where), n in counts.items():
        times = f" ({n} times)" if n > 1 else ""
        if own:
            print(f"hfox-fit {command}: warning: {message}{times}", file=sys.stderr)
        else:
            print(f"hfox-fit {command}: note: an internal step warned{times} ({category} at {where}: "
                  f"{message}). The command completed; please report this note with the data it ran on so "
                  "that its cause can be handled.", file=sys.stderr)


def write_summary(args, command: str, summary: dict) -> None:
    """Write ``summary`` as JSON to ``args.summary`` (``--summary FILE.json``), atomically, when it was given."""
    if not getattr(args, "summary", None):
        return
    path = Path(args.summary)
    try:
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        getattr(args, "completed", []).append(f"written {path}")
    except OSError as err:
        raise HfoxError(f"{command}: cannot write the summary to {str(path)!r}: {err}.") from err


def check_workers(command: str, jobs, scheduler) -> int:
    """Refuse ``--jobs`` with ``--scheduler``, or below 1, and a bad scheduler address (or dask missing), before
    any work; returns the number of local processes (1 when ``--jobs`` was not given)."""
    if scheduler is not None and jobs is not None:
        raise HfoxError(f"{command}: give --jobs N (local processes) or --scheduler (Dask), not both.")
    jobs = 1 if jobs is None else jobs
    if jobs < 1:
        raise HfoxError(f"{command}: --jobs must be >= 1; got {jobs}.")
    if scheduler is not None:  # a bad address or a missing dask costs nothing and writes nothing
        from ..fitting._executor import _import_distributed, parse_scheduler

        parse_scheduler(scheduler)
        _import_distributed()
    return jobs

"""The ``hfox-fit`` command line.

Each command lives in its own module ``hfox_fit.cli._<name>`` exposing
``register(subparsers)``, which adds a sub-parser whose ``func(args)`` returns
an exit code (through :func:`hfox_fit.cli._common.add_command`, with the
options several commands share). User errors (:class:`hfox_fit.HfoxError`) print one clear
message and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .._version import __version__
from ..exceptions import HfoxError

# Order in which commands appear in --help.
COMMAND_MODULES = (
    "ingest", "formats", "measurements", "info", "synth", "fit", "devices", "export", "report", "run", "demo",
    "train_demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfox-fit",
        description="Fit the weak-RESET model of HfOx RRAM cells to raw measurements.",
    )
    parser.add_argument("--version", action="version", version=f"hfox_fit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        modname = f"{__name__}._{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HfoxError as err:
        print(f"hfox-fit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hfox-fit {args.command}: interrupted; files were left as they were.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

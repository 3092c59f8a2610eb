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
import signal
import sys
import threading

from .._version import __version__
from ..exceptions import HfoxError

# Order in which commands appear in --help.
COMMAND_MODULES = (
    "ingest", "formats", "measurements", "info", "synth", "fit", "calibrate", "devices", "compare", "export", "report", "run",
    "demo", "train_demo",
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


def _command_name(argv) -> str:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not str(a).startswith("-")]
    return str(words[0]) if words else "command"


def main(argv=None) -> int:
    command = _command_name(argv)
    args = None
    interrupted = []

    def on_sigint(signum, frame):  # as Python's own handler, but remembered: an import it breaks
        interrupted.append(signum)  # surfaces as an ImportError, which is still an interrupt
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        parser = build_parser()  # imports the commands: an interrupt here is handled too
        args = parser.parse_args(argv)
        command = args.command or command
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.completed = []  # what a command finished (a store rewritten, a file written), for an interrupt
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(command, args)
    except BrokenPipeError:
        return 0
    except Exception as err:
        if interrupted:  # what the interrupt broke (an import, say) is still the interrupt
            return _interrupted(command, args)
        if isinstance(err, HfoxError):
            print(f"hfox-fit {command}: error: {err}", file=sys.stderr)
            return 2
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted(command: str, args) -> int:
    done = getattr(args, "completed", None)
    step = getattr(args, "unfinished", None)  # the step of `run` / `demo` it was in
    if done and step:
        print(f"hfox-fit {command}: interrupted in its {step} step after it had {'; '.join(done)} (complete); "
              f"what the {step} step had begun may be partial: rerun the command to finish it.", file=sys.stderr)
    elif done:
        print(f"hfox-fit {command}: interrupted after it had {'; '.join(done)} (complete); nothing else "
              "was changed.", file=sys.stderr)
    else:
        print(f"hfox-fit {command}: interrupted; files were left as they were.", file=sys.stderr)
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

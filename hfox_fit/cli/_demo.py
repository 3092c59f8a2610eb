"""``hfox-fit demo``: ``hfox-fit run`` on the example campaign of a source checkout."""

from __future__ import annotations

from pathlib import Path

from ..exceptions import HfoxError
from ._common import add_command, add_output, add_pipeline_options
from ._run import run_pipeline

#: The example campaign beside the package in a source checkout (data/ is not installed).
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "data" / "raw"


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "demo",
        run_demo,
        help="run the whole job on the example campaign in data/",
        description=f"Run `hfox-fit run` on the example campaign ({EXAMPLE_DATA}).",
        paths=None,
    )
    add_output(p, "OUTDIR", "output folder (default: ./hfox-demo)", default="hfox-demo")
    add_pipeline_options(p)


def run_demo(args) -> int:
    if not EXAMPLE_DATA.is_dir():
        raise HfoxError(
            f"the example campaign {str(EXAMPLE_DATA)!r} is missing: it ships with the source checkout, "
            "not with an installed package. Run from a clone, or give your own files to `hfox-fit run`."
        )
    args.paths = [str(EXAMPLE_DATA)]
    return run_pipeline(args)

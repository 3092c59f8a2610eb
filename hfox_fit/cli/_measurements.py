"""``hfox-fit measurements``: write the reads of a campaign store as the tidy table (.csv or .parquet)."""

from __future__ import annotations

from pathlib import Path

from .._atomic import atomic_path
from ..exceptions import FormatError, StoreError
from ._common import add_command, add_output, add_store

#: Suffixes ``measurements -o`` can write.
TIDY_SUFFIXES = (".csv", ".parquet")


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "measurements",
        run_measurements,
        help="write the reads of a campaign store as a tidy table",
        description="Write every read of a campaign store as the tidy measurement table (.csv or .parquet).",
    )
    add_store(p, "campaign store")
    add_output(p, "FILE", "output file, .csv or .parquet", required=True)


def run_measurements(args) -> int:
    from ..parsers import write_measurements
    from ..store import CampaignStore

    out = Path(args.output)
    if out.suffix.lower() not in TIDY_SUFFIXES:
        raise FormatError(
            f"cannot write {str(out)!r}: the tidy table is written as {' or '.join(TIDY_SUFFIXES)}; "
            f"got suffix {out.suffix or '(none)'!r}. Name the output e.g. 'reads.csv'."
        )
    if out.is_dir():
        raise StoreError(f"{str(out)!r} is a folder; pass a file name ending in .csv or .parquet.")
    if not out.parent.is_dir():
        raise StoreError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist.")
    table = CampaignStore(args.store).read_table()
    with atomic_path(out, suffix=out.suffix) as tmp:  # the tidy writer picks CSV or Parquet by suffix
        write_measurements(table, tmp, "tidy")
    print(f"wrote {len(table):,} reads of {args.store} to {out}")
    return 0

"""``hfox-fit ingest``: read raw measurement files into a campaign store, all or nothing.

``hfox-fit formats`` lists the readers it can use; ``hfox-fit measurements``
writes a store's reads back as a tidy table.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..exceptions import HfoxError, IngestWarning, ParseError, StoreError
from ._common import add_command, add_quiet

#: File names ``ingest`` never reads when it walks a folder (besides hidden files).
SKIPPED_NAMES = ("truth.json",)
#: Rejected-line messages printed after an ingest.
SHOW_REJECTED = 5


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "ingest",
        run_ingest,
        help="read raw measurement files into a campaign store",
        description=(
            "Read raw measurement files into a campaign store (HDF5), all or nothing: when one file "
            "cannot be read, nothing is written and the store stays as it was. A file already in "
            "the store (same SHA-256) is skipped. A folder means every file in it, recursively, "
            "in sorted order, except hidden files and folders (names starting with '.'), files "
            f"named {', '.join(SKIPPED_NAMES)} (the ground truth written by `hfox-fit synth`) and "
            "the store itself."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="raw file or folder of raw files")
    p.add_argument("--store", required=True, metavar="STORE.h5", help="campaign store (created if absent)")
    p.add_argument("--format", metavar="NAME", help="reader to use (default: recognise each file; see `hfox-fit formats`)")
    p.add_argument("--wafer", metavar="W", help="wafer id for files that name none")
    p.add_argument("--die", metavar="D", help="die id for files that name none")
    p.add_argument("--v-read", type=float, metavar="V", help="read voltage in V for files that give none")
    p.add_argument(
        "--on-bad-lines",
        choices=("error", "skip"),
        default="error",
        help="'error' (default): a malformed line stops the ingest; 'skip': drop it, count it "
        "and record the count in the store",
    )
    add_quiet(p, "no progress bar and no per-file notes")


def collect_files(paths, *, exclude=()) -> list[Path]:
    """Expand files and folders into the list of files to ingest.

    Folders are walked recursively in sorted order; hidden entries (a name
    starting with '.'), files named in :data:`SKIPPED_NAMES` and the paths in
    ``exclude`` are left out. A file named explicitly is always taken.

    Raises
    ------
    ParseError
        A path does not exist, or a folder holds no file to ingest.
    """
    excluded = {Path(p).resolve() for p in exclude}
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if name.startswith(".") or name in SKIPPED_NAMES or f.resolve() in excluded:
                        continue
                    found.append(f)
            if not found:
                raise ParseError(
                    "folder holds no file to ingest (hidden files and "
                    f"{', '.join(SKIPPED_NAMES)} are skipped).",
                    path=p,
                )
            files.extend(found)
        elif p.exists():
            raise ParseError("is neither a file nor a folder.", path=p)
        else:
            raise ParseError("no such file or folder. Check the path.", path=p)
    return files


def _read_all(files, args, progress):
    from ..parsers import read_measurements

    for path in files:
        try:
            result = read_measurements(
                path,
                args.format,
                wafer=args.wafer,
                die=args.die,
                v_read=args.v_read,
                on_bad_lines=args.on_bad_lines,
            )
        except OSError as err:
            raise ParseError(f"cannot read the file: {err.strerror or err}.", path=path) from err
        if progress is not None:
            progress.update(_size(path))
        yield result
        del result  # let the store drop this table before the next file is parsed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_ingest(args) -> int:
    from ..store import CampaignStore

    store = CampaignStore(args.store)
    if store.exists():
        store.summary()  # a path that is not a store fails here, before any file is read
    files = collect_files(args.paths, exclude=[store.path])
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm(
            total=sum(_size(f) for f in files), unit="B", unit_scale=True, unit_divisor=1024,
            desc="ingest", file=sys.stderr, delay=1.0, leave=False,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IngestWarning)
        try:
            summary = store.ingest(_read_all(files, args, progress))
        except HfoxError as err:
            sep = "" if str(err).rstrip().endswith((".", "!")) else "."
            raise StoreError(f"{err}{sep} Nothing was ingested; {str(store.path)!r} is as it was.") from err
        finally:
            if progress is not None:
                progress.close()
            _replay(caught)
    _print_summary(summary, store, quiet=args.quiet)
    return 0


def _replay(caught) -> None:
    """Print the readers' IngestWarnings as one line each; let other warnings through."""
    seen = set()
    for w in caught:
        if issubclass(w.category, IngestWarning):
            msg = str(w.message)
            if msg not in seen:
                seen.add(msg)
                print(f"hfox-fit ingest: warning: {msg}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _print_summary(summary, store, *, quiet: bool) -> None:
    n_new, n_dup = len(summary.files), len(summary.duplicates)
    line = f"ingested {n_new} file(s) into {summary.store}"
    if n_dup:
        line += f"; {n_dup} file(s) already present, skipped"
    print(line)
    if n_new:
        print(
            f"  rows read {summary.rows_read:,}, stored {summary.rows_stored:,}, "
            f"rejected {summary.rows_rejected:,}"
        )
    if summary.rejected:
        print(f"  rejected lines (first {min(SHOW_REJECTED, len(summary.rejected))}):")
        for msg in summary.rejected[:SHOW_REJECTED]:
            print(f"    {msg}")
    if summary.notes and not quiet:
        print("  notes:")
        for msg in summary.notes:
            print(f"    {msg}")
    s = store.summary()
    print(
        f"store: {s['wafers']} wafer(s), {s['dies']} die(s), {s['cells']:,} cells, {s['reads']:,} reads "
        f"({s['failed_reads']:,} failed), {s['sources']} source file(s), {s['size_bytes'] / 1e6:.1f} MB"
    )


__all__ = ["register", "collect_files", "SKIPPED_NAMES"]

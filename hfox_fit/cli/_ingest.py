"""``hfox-fit ingest``: read raw measurement files into a campaign store, all or nothing.

``hfox-fit formats`` lists the readers it can use; ``hfox-fit measurements``
writes a store's reads back as a tidy table.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..exceptions import FormatError, HfoxError, IngestWarning, ParseError, StoreError
from ._common import add_command, add_quiet, check_ids, print_warnings

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
            "the store itself; a file of a folder that no reader recognises (by its content or suffix; "
            "with --format, that reader alone) is skipped and named (--strict refuses instead). A file "
            "named on the command line is always read. A file that holds no read (a header alone) is "
            "refused. --die-positions places the dies on the wafer (for the report's die map), with "
            "the files or alone on an existing store."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="raw file or folder of raw files")
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
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a folder that holds a file no reader recognises (default: skip that file, "
        "name it and record it in the store)",
    )
    p.add_argument(
        "--die-positions",
        metavar="FILE.csv",
        help="CSV of the dies' positions on the wafer, columns wafer,die,x,y (wafer may be left out when "
        "every wafer has the same layout; x, y in die pitches or mm); kept in the store for the report's "
        "die map. Without PATHs, sets the positions of an existing store",
    )
    add_quiet(p, "no progress bar and no per-file notes")


def _walk(paths, exclude=()):
    """Yield ``(file, folder)`` for the files to consider: ``folder`` is None for a file named explicitly.

    Raises
    ------
    ParseError
        A path does not exist, or a folder holds no file to ingest.
    """
    excluded = {Path(p).resolve() for p in exclude}
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            yield p, None
        elif p.is_dir():
            found = 0
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if name.startswith(".") or name in SKIPPED_NAMES or f.resolve() in excluded:
                        continue
                    found += 1
                    yield f, p
            if not found:
                raise ParseError(
                    "folder holds no file to ingest (hidden files and "
                    f"{', '.join(SKIPPED_NAMES)} are skipped).",
                    path=p,
                )
        elif p.exists():
            raise ParseError("is neither a file nor a folder.", path=p)
        else:
            raise ParseError("no such file or folder. Check the path.", path=p)


def collect_files(paths, *, exclude=()) -> list[Path]:
    """Expand files and folders into the list of files to consider.

    Folders are walked recursively in sorted order; hidden entries (a name
    starting with '.'), files named in :data:`SKIPPED_NAMES` and the paths in
    ``exclude`` are left out. A file named explicitly is always taken.
    :func:`select_files` then leaves out the files of a folder that no reader
    recognises.

    Raises
    ------
    ParseError
        A path does not exist, or a folder holds no file to ingest.
    """
    return [f for f, _ in _walk(paths, exclude)]


def select_files(paths, *, exclude=(), format=None, strict=False):
    """The files to read, each with its format, and the files of folders left out.

    A file named explicitly is always read (with ``format``, or the format
    recognised when it is read). A file found in a folder is read when a reader
    recognises it (its content, else its suffix; only the ``format`` reader when
    one is given); one that no reader recognises is left out, or refused when
    ``strict``; one that several readers recognise is refused (which to use
    cannot be guessed).

    Returns
    -------
    (list of (Path, str or None), list of (Path, str))
        The files to read with the format name to read them with (None: recognise
        it when it is read), and the files left out with the reason.

    Raises
    ------
    ParseError
        A path does not exist; a folder holds no file that a reader recognises;
        ``strict`` and a folder holds a file that no reader recognises.
    FormatError
        A file of a folder fits several formats.
    """
    from ..parsers import list_formats, recognise

    names = ", ".join(p.name for p in list_formats())
    take: list = []
    skipped: list = []
    kept_in: dict = {}
    for f, folder in _walk(paths, exclude):
        if folder is None:
            take.append((f, format))
            continue
        kept_in.setdefault(folder, [])
        try:
            matches, how = recognise(f, format)
        except OSError as err:
            raise ParseError(f"cannot read the file: {err.strerror or err}.", path=f) from err
        if len(matches) == 1:
            take.append((f, matches[0].name))
            kept_in[folder].append(f)
            continue
        if not matches:
            reason = (
                f"the {format} reader recognises neither its content nor its {how}" if format
                else f"no reader recognises its content or its {how}"
            )
            if strict:
                raise ParseError(
                    f"{reason}; --strict refuses a folder that holds such a file. Move the file out of "
                    f"{str(folder)!r}, or leave out --strict to skip it. Nothing was ingested.",
                    path=f,
                )
            skipped.append((f, reason))
            continue
        found = [p.name for p in matches]
        detail = (
            f"its content fits several formats {found}" if how == "content"
            else f"no format recognises its content and its {how} fits several formats {found}"
        )
        raise FormatError(
            f"cannot tell the format of {str(f)!r} (in the folder {str(folder)!r}): {detail}. If it is not "
            "measurements, move it out of the folder; if it is, ingest it on its own with --format NAME "
            f"(one of {names}), or give --format NAME for the whole folder when every file in it is of "
            "that format. Nothing was ingested."
        )
    for folder, kept in kept_in.items():
        if not kept:
            left = [f"{f.name} ({why})" for f, why in skipped if folder in f.parents][:SHOW_REJECTED]
            raise ParseError(
                f"folder holds no file that a reader recognises; left out: {'; '.join(left)}. If they "
                "are measurements, name them on the command line with --format NAME "
                f"(one of {names}). Nothing was ingested.",
                path=folder,
            )
    return take, skipped


def _read_all(files, args, progress):
    from ..parsers import read_measurements

    for path, fmt in files:
        try:
            result = read_measurements(
                path,
                fmt,
                wafer=args.wafer,
                die=args.die,
                v_read=args.v_read,
                on_bad_lines=args.on_bad_lines,
            )
        except OSError as err:
            raise ParseError(f"cannot read the file: {err.strerror or err}.", path=path) from err
        if progress is not None:
            progress.advance(_size(path))
        yield result
        del result  # let the store drop this table before the next file is parsed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_ingest(args) -> int:
    from ..store import CampaignStore

    check_ids(args)
    store = CampaignStore(args.store)
    if not args.paths and not args.die_positions:
        raise HfoxError("give raw files or folders to read (PATH ...), or --die-positions FILE.csv.")
    existed = store.exists()  # (nothing below writes the store before its ingest)
    if existed:
        store.summary()  # a path that is not a store fails here, before any file is read
    positions = None
    if args.die_positions:
        from ..store import read_die_positions

        positions = read_die_positions(args.die_positions)  # a bad line fails here, before any raw file
        if not args.paths:
            if not existed:
                raise HfoxError(f"{str(store.path)!r} does not exist; give the raw files with "
                                "--die-positions, or ingest them first.")
            summary = store.set_die_positions(positions)
            getattr(args, "completed", []).append(f"stored the die positions in {store.path}")
            for note in summary.notes:
                print(note)
            return 0
    if args.format is not None:
        from ..parsers import get_parser

        get_parser(args.format)  # an unknown name fails here, before any file is looked at
    files, skipped = select_files(args.paths, exclude=[store.path], format=args.format, strict=args.strict)
    for f, why in skipped:
        print(
            f"hfox-fit ingest: skipped {f}: {why}. To read it anyway, name it on the command line "
            "with --format NAME; --strict refuses the folder instead.",
            file=sys.stderr,
        )
    progress = None
    if not args.quiet:
        from .._progress import DEFAULT_DELAY, Progress

        progress = Progress("ingest", sum(_size(f) for f, _ in files), "B", unit_scale=True, delay=DEFAULT_DELAY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IngestWarning)
        try:
            summary = store.ingest(_read_all(files, args, progress), skipped=skipped, positions=positions)
            getattr(args, "completed", []).append(f"stored the ingest in {store.path}")
        except HfoxError as err:
            sep = "" if str(err).rstrip().endswith((".", "!")) else "."
            state = "is as it was" if existed else "was not created"
            raise StoreError(f"{err}{sep} Nothing was ingested; {str(store.path)!r} {state}.") from err
        finally:
            if progress is not None:
                progress.close()
            print_warnings("ingest", caught)
    _print_summary(summary, store, quiet=args.quiet)
    return 0


def _print_summary(summary, store, *, quiet: bool) -> None:
    n_new, n_dup = len(summary.files), len(summary.duplicates)
    line = f"ingested {n_new} file(s) into {summary.store}"
    if n_dup:
        line += f"; {n_dup} file(s) already present, skipped"
    if summary.left_out:
        line += f"; {len(summary.left_out)} unrecognised file(s) skipped (named above)"
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


__all__ = ["register", "collect_files", "select_files", "SKIPPED_NAMES"]

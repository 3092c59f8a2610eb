"""Readers of raw weak-RESET measurement files (one small plug-in per format).

Public API (contract used by the store, the CLI and ``synth``)::

    read_measurements(path, format=None, *, wafer=None, die=None, v_read=None,
                      on_bad_lines="error") -> ReadResult
    recognise(path, format=None) -> (list[Parser], how)
    write_measurements(table, path, format, **options) -> list[pathlib.Path]
    list_formats() -> list[Parser]
    get_parser(name) -> Parser

``ReadResult`` holds the validated table and the accounting of the read:
``rows_read == len(table) + rows_rejected``.

The formats are described in ``formats.md``: ``bench``, ``b1500``, ``ramps``,
``hdf5`` and ``tidy`` (CSV or Parquet). Third-party formats plug in through the
entry-point group ``hfox_fit.parsers``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..exceptions import FormatError, IngestWarning, ParseError
from ..schema import validate_table
from ._base import Parser, ReadResult
from ._common import check_file, check_on_bad_lines, check_v_read_arg, read_head
from ._registry import BUILTIN_PARSERS, ENTRY_POINT_GROUP, get_parser, list_formats

__all__ = [
    "BUILTIN_PARSERS",
    "ENTRY_POINT_GROUP",
    "Parser",
    "ReadResult",
    "get_parser",
    "list_formats",
    "read_measurements",
    "recognise",
    "write_measurements",
]

#: Bytes of a file's start that the parsers' ``sniff`` methods see.
SNIFF_BYTES = 8192


def read_measurements(path, format=None, *, wafer=None, die=None, v_read=None,
                      on_bad_lines="error") -> ReadResult:
    """Read one raw measurement file into a validated measurement table.

    Parameters
    ----------
    path : str or path-like
        The file.
    format : str, optional
        A name of :func:`list_formats`. By default the format is recognised
        from the file's first bytes, then from its suffix.
    wafer, die : str, optional
        Identifiers for files that do not name them (else taken from the file
        name ``{wafer}_{die}_...``; the result's ``notes`` say so).
    v_read : float, optional
        Read voltage in V for files that do not give it (default 0.1 V, noted).
    on_bad_lines : {"error", "skip"}, default="error"
        ``"error"`` raises at the first bad row; ``"skip"`` leaves bad rows out,
        counts them in ``rows_rejected`` and keeps the first messages in
        ``rejected``. A failed read (empty or ``nan``) is not a bad row: it is
        kept with a NaN resistance.

    Returns
    -------
    ReadResult
        ``table`` sorted by (wafer, die, device, cycle, pulse), with
        ``rows_read == len(table) + rows_rejected``.

    Raises
    ------
    ParseError
        The file cannot be read, or holds no read at all (a header alone); the
        message names the file and line (or HDF5 path).
    FormatError
        No installed format (or several) recognises the file, or ``format`` is unknown.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from hfox_fit.parsers import read_measurements
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "W07_D12_A2.csv"
    >>> _ = p.write_text("# hfox-bench v1\\n# v_read: 0.1\\nrow,col,cycle,pulse,i_read\\n0,0,0,0,1e-05\\n0,0,0,1,\\n")
    >>> res = read_measurements(p)
    >>> res.table[["device", "pulse", "resistance"]]
          device  pulse  resistance
    0  A2/r00c00      0     10000.0
    1  A2/r00c00      1         NaN
    >>> res.notes[0]
    "wafer 'W07' taken from the file name"
    """
    check_on_bad_lines(on_bad_lines)
    check_v_read_arg(v_read)
    path = check_file(path)
    parser = get_parser(format) if format is not None else _choose(path)
    try:
        result = parser.read(path, wafer=wafer, die=die, v_read=v_read, on_bad_lines=on_bad_lines)
    except OSError as err:
        raise ParseError(f"cannot read the file: {err.strerror or err}.", path=path) from err
    if not isinstance(result, ReadResult):
        raise FormatError(
            f"parser {parser.name!r} returned {type(result).__name__} for {str(path)!r}, not a ReadResult; "
            "fix that parser plug-in."
        )
    if result.rows_read == 0:
        raise ParseError(_no_reads(path), path=path)
    table = validate_table(result.table, source=f"{parser.name} reader of {str(path)!r}")
    if result.rows_read != len(table) + result.rows_rejected:
        raise FormatError(
            f"parser {parser.name!r} miscounted {str(path)!r}: rows_read {result.rows_read} != "
            f"{len(table)} stored + {result.rows_rejected} rejected; fix that parser."
        )
    if result.rows_rejected:
        first = result.rejected[0] if result.rejected else ""
        warnings.warn(
            f"{str(path)!r}: {result.rows_rejected} bad row(s) skipped on request; first: {first}",
            IngestWarning,
            stacklevel=2,
        )
    return replace(result, table=table, path=path, format=parser.name)


def _no_reads(path: Path) -> str:
    """The message for a file that holds no data row at all (a header alone)."""
    head = read_head(path, SNIFF_BYTES)
    if b"\x00" in head:  # binary (HDF5, Parquet): no lines to count
        what = "holds no reads: only its header (groups, columns or metadata), no data"
    else:
        with open(path, "rb") as fh:
            data = fh.read()
        n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        what = f"holds no reads: only its header ({n} line(s)), no data row below it"
    return (
        f"{what}; expected at least one read. If the run measured nothing, leave the file out of the "
        "ingest (move it out of the folder you ingest); if it did, export it again with its data."
    )


def recognise(path, format=None) -> tuple[list, str]:
    """Which formats recognise a file, without reading it: by its content, else by its suffix.

    Parameters
    ----------
    path : str or path-like
        The file (only its first bytes are read).
    format : str, optional
        Consider this format alone (as ``--format`` does).

    Returns
    -------
    (list of Parser, str)
        The parsers that recognise the file (none, one or several) and how:
        ``"content"`` or ``"suffix '.csv'"``. ``read_measurements(path)``
        reads a file that exactly one parser recognises.
    """
    path = Path(path)
    head = read_head(path, SNIFF_BYTES)
    parsers = [get_parser(format)] if format is not None else list_formats()
    matches = []
    for parser in parsers:
        try:
            if _sniff(parser, head, path):
                matches.append(parser)
        except Exception as err:  # a plug-in's sniff must not break the choice
            warnings.warn(
                f"parser {parser.name!r} failed to sniff {str(path)!r} ({type(err).__name__}: {err}); "
                "it is not considered.",
                IngestWarning,
                stacklevel=3,
            )
    if matches:
        return matches, "content"
    suffix = path.suffix.lower()
    matches = [p for p in parsers if suffix and suffix in tuple(s.lower() for s in p.suffixes)]
    return matches, f"suffix {suffix!r}"


def _choose(path: Path) -> Parser:
    """The parser for ``path``: the ones that sniff its content, else those of its suffix."""
    matches, how = recognise(path)
    if len(matches) == 1:
        return matches[0]
    head = read_head(path, SNIFF_BYTES)
    parsers = list_formats()
    names = [p.name for p in parsers]
    hint = ""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:512]:
        hint = " The file looks UTF-16 encoded (or binary): text formats must be UTF-8; re-save it as UTF-8."
    if matches:
        raise FormatError(
            f"cannot tell the format of {str(path)!r}: its {how} fits several formats "
            f"{[p.name for p in matches]}. Installed formats: {names}. "
            f"Pass format=... (--format on the command line).{hint}"
        )
    raise FormatError(
        f"cannot infer the format of {str(path)!r}: no installed format recognises its content or "
        f"suffix. Installed formats: {names}. Pass format=... (--format on the command line).{hint}"
    )


def _sniff(parser, head: bytes, path: Path) -> bool:
    """``parser.sniff(head, path)``; plug-ins written as ``sniff(head)`` work too."""
    try:
        return bool(parser.sniff(head, path))
    except TypeError:
        return bool(parser.sniff(head))


def write_measurements(table: pd.DataFrame, path, format: str, **options) -> list[Path]:
    """Write a measurement table as raw files of ``format``.

    Parameters
    ----------
    table : pandas.DataFrame
        A measurement table (validated first; it is not modified).
    path : str or path-like
        A folder for the per-run formats (``bench``: one file per wafer/die/array,
        ``b1500``: one per die, ``ramps``: one per device), a file for ``hdf5``
        and ``tidy`` (``.csv`` or ``.parquet``).
    format : str
        A format of :func:`list_formats` that can write.
    **options
        Passed to the format's writer (e.g. ``newline="\\r\\n"``, ``bom=True``).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    parser = get_parser(format)
    if not callable(getattr(parser, "write", None)):
        raise FormatError(f"the {format!r} format can be read but not written.")
    table = validate_table(table, source=f"table given to the {format} writer")
    return [Path(p) for p in parser.write(table, Path(path), **options)]

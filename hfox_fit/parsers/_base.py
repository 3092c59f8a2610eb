"""The reader contract: the :class:`Parser` plug-in interface and the :class:`ReadResult` it returns.

Readers subclass :class:`Parser` (plug-ins may just quack like one); the built-in
ones end their read with :func:`read_result`. This module imports no reader:
the registry of formats is :mod:`hfox_fit.parsers._registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..exceptions import FormatError

__all__ = ["Parser", "ReadResult", "read_result"]


@dataclass
class ReadResult:
    """What a reader returns: the measurement table and the accounting of the read.

    Attributes
    ----------
    table : pandas.DataFrame
        The validated measurement table (columns of ``hfox_fit.schema.COLUMNS``).
    path : pathlib.Path
        The file read.
    format : str
        Name of the parser that read it.
    rows_read : int
        Data rows seen in the file (reads, bad ones included).
    rows_rejected : int
        Rows left out because they were bad (``on_bad_lines="skip"``).
        Always ``rows_read == len(table) + rows_rejected``.
    rejected : list of str
        The first messages about rejected rows, each ``file:line: ...``.
    notes : list of str
        What the reader assumed, e.g. ``"wafer 'W07' taken from the file name"``.
    metadata : dict
        What the file says beyond the table (metadata blocks, record headers).
    """

    table: pd.DataFrame
    path: Path
    format: str
    rows_read: int
    rows_rejected: int = 0
    rejected: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


class Parser:
    """Base class of the readers (and writers) of one raw format.

    Subclasses set ``name``, ``suffixes`` and ``description`` and implement
    :meth:`sniff` and :meth:`read`; those that can write implement :meth:`write`.
    """

    #: Format name, as passed to ``format=`` and ``--format``.
    name: str = ""
    #: File suffixes (lower case, with the dot) tried when no parser sniffs the content.
    suffixes: tuple = ()
    #: One line for ``hfox-fit formats``.
    description: str = ""

    def sniff(self, head: bytes, path: Path) -> bool:
        """Return True when ``head`` (the first few KB of the file) is in this format."""
        return False

    def read(self, path: Path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read ``path`` into a :class:`ReadResult`; raise ``ParseError`` naming file and line."""
        raise NotImplementedError

    def write(self, table: pd.DataFrame, path: Path, **options) -> list[Path]:
        """Write a validated measurement table as raw files; return the files written."""
        raise FormatError(f"the {self.name!r} format can be read but not written by hfox_fit.")

    @property
    def can_write(self) -> bool:
        """True when the parser implements :meth:`write`."""
        return type(self).write is not Parser.write

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def read_result(table: pd.DataFrame, path: Path, format: str, *, rows_read: int, rejects, notes,
                metadata: dict) -> ReadResult:
    """The :class:`ReadResult` a built-in reader ends with.

    ``rejects`` is the read's :class:`~hfox_fit.parsers._common.Rejects` (its
    ``count`` and kept ``messages`` become ``rows_rejected`` and ``rejected``),
    ``notes`` its :class:`~hfox_fit.parsers._common.Notes`; both are copied.
    """
    return ReadResult(
        table=table,
        path=path,
        format=format,
        rows_read=rows_read,
        rows_rejected=rejects.count,
        rejected=list(rejects.messages),
        notes=list(notes),
        metadata=metadata,
    )

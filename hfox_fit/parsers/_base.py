"""The parser plug-in interface, the read result and the registry of formats.

Built-in parsers are listed in :data:`BUILTIN_PARSERS`; third-party parsers
join through the entry-point group ``hfox_fit.parsers`` (in their own
setup.cfg: ``mylab = mylab_hfox:MyLabParser``), the way flake8 plug-ins do.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..exceptions import FormatError, IngestWarning

__all__ = ["Parser", "ReadResult", "BUILTIN_PARSERS", "ENTRY_POINT_GROUP", "list_formats", "get_parser"]

#: Entry-point group third-party parsers register under.
ENTRY_POINT_GROUP = "hfox_fit.parsers"


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


def _entry_points():
    """The installed entry points of ``ENTRY_POINT_GROUP`` (a seam for tests)."""
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


_cache: dict = {}


def _plugins(taken: set) -> list[Parser]:
    """Load the plug-ins once per process (again if ``_entry_points`` is replaced, as tests do)."""
    key = (_entry_points, frozenset(taken))
    if key not in _cache:
        _cache.clear()
        _cache[key] = _load_plugins(taken)
    return list(_cache[key])


def _load_plugins(taken: set) -> list[Parser]:
    found = []
    for ep in _entry_points():
        try:
            obj = ep.load()
            parser = obj() if isinstance(obj, type) else obj
            name = getattr(parser, "name", None)
            if not (isinstance(name, str) and name and callable(getattr(parser, "read", None))
                    and callable(getattr(parser, "sniff", None))):
                raise TypeError("it is not a Parser (needs a str 'name', 'sniff' and 'read')")
        except Exception as err:  # a broken plug-in must not break hfox_fit
            warnings.warn(
                f"hfox_fit parser plug-in {ep.name!r} ({ep.value}) failed to load and is ignored: "
                f"{type(err).__name__}: {err}. Reinstall or fix the package that provides it.",
                IngestWarning,
                stacklevel=3,
            )
            continue
        if name in taken:
            warnings.warn(
                f"hfox_fit parser plug-in {ep.name!r} ({ep.value}) uses the format name {name!r}, "
                "which is already taken; it is ignored. Rename the format in that plug-in.",
                IngestWarning,
                stacklevel=3,
            )
            continue
        taken.add(name)
        found.append(parser)
    return found


def list_formats() -> list[Parser]:
    """Return one instance of every parser: the built-ins, then the entry-point plug-ins.

    Plug-ins are loaded once per process. One that fails to load gives an
    :class:`~hfox_fit.exceptions.IngestWarning` naming it and is left out.
    """
    builtins = [cls() for cls in BUILTIN_PARSERS]
    return builtins + _plugins({p.name for p in builtins})


def get_parser(name: str) -> Parser:
    """Return the parser of format ``name``.

    Raises
    ------
    FormatError
        No installed parser has that name; the message lists them.
    """
    parsers = list_formats()
    for parser in parsers:
        if parser.name == name:
            return parser
    raise FormatError(
        f"unknown format {name!r}. Installed formats: {[p.name for p in parsers]}. "
        "Pass one of them as format=... (--format on the command line)."
    )


# The built-in formats import Parser from this module, so they come last.
from .b1500 import B1500Parser  # noqa: E402
from .bench import BenchParser  # noqa: E402
from .hdf5 import Hdf5Parser  # noqa: E402
from .ramps import RampsParser  # noqa: E402
from .tidy import TidyParser  # noqa: E402

#: The parsers that ship with hfox_fit, in the order they are tried.
BUILTIN_PARSERS = (BenchParser, B1500Parser, RampsParser, Hdf5Parser, TidyParser)

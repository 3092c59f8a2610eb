"""The registry of formats: the built-in readers, the entry-point plug-ins, lookup by name.

Built-in parsers are listed in :data:`BUILTIN_PARSERS`; third-party parsers
join through the entry-point group ``hfox_fit.parsers`` (in their own
setup.cfg: ``mylab = mylab_hfox:MyLabParser``), the way flake8 plug-ins do.
Only the package's ``__init__`` imports this module; the readers import
:mod:`hfox_fit.parsers._base`, never this one, so there is no import circle.
"""

from __future__ import annotations

import importlib.metadata
import warnings

from ..exceptions import FormatError, IngestWarning
from ._base import Parser
from .b1500 import B1500Parser
from .bench import BenchParser
from .hdf5 import Hdf5Parser
from .ramps import RampsParser
from .tidy import TidyParser

__all__ = ["BUILTIN_PARSERS", "ENTRY_POINT_GROUP", "list_formats", "get_parser"]

#: Entry-point group third-party parsers register under.
ENTRY_POINT_GROUP = "hfox_fit.parsers"

#: The parsers that ship with hfox_fit, in the order they are tried.
BUILTIN_PARSERS = (BenchParser, B1500Parser, RampsParser, Hdf5Parser, TidyParser)


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

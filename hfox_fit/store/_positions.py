"""Die positions on the wafer: read from a small CSV, kept in each die's attributes (``x``, ``y``).

The file (``hfox-fit ingest ... --die-positions FILE.csv``)::

    wafer,die,x,y
    W01,D01,0,0
    W01,D02,1,0

``x`` and ``y`` are numbers in any unit (die pitches, mm) as long as one file uses
one; the ``wafer`` column may be left out when every wafer has the same layout (a
row then places that die on every wafer). Blank lines and lines starting with
``#`` are skipped; other columns are ignored. The report draws its die map from
these positions (:func:`hfox_fit.report.die_coordinates`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ParseError, StoreError
from ._h5 import attr, dumps

__all__ = ["DiePositions", "read_die_positions", "apply_positions"]

REQUIRED = ("die", "x", "y")


@dataclass
class DiePositions:
    """The positions of a file: ``{(wafer or None, die): (x, y)}`` and where each came from."""

    path: str
    xy: dict = field(default_factory=dict)
    line: dict = field(default_factory=dict)

    def find(self, wafer: str, die: str):
        """The (x, y) of a die, or None."""
        return self.xy.get((wafer, die), self.xy.get((None, die)))


def _fail(path, line, message):
    raise ParseError(f"{message} The die positions file needs the columns wafer,die,x,y "
                     "(wafer optional), one die per line.", path=path, line=line)


def read_die_positions(path) -> DiePositions:
    """Read and check a die positions CSV (see module doc).

    Raises
    ------
    ParseError
        The file cannot be read, lacks a column, or a line is malformed (its line
        number is given): a missing or non-numeric x/y, a die twice, two dies at one
        position of a wafer.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ParseError(f"is not UTF-8 text ({err.reason}); save the die positions as a UTF-8 CSV.",
                         path=path) from err
    except OSError as err:
        raise ParseError(f"cannot read the die positions file: {err.strerror or err}.", path=path) from err
    out = DiePositions(str(path))
    header = None
    taken = {}  # (wafer, x, y) -> line
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            header = [c.lower() for c in cells]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                _fail(path, lineno, f"the header {','.join(cells)!r} lacks the column(s) {', '.join(missing)}.")
            continue
        if len(cells) != len(header):
            _fail(path, lineno, f"has {len(cells)} field(s) where the header has {len(header)} "
                                f"({','.join(header)}).")
        rec = dict(zip(header, cells))
        wafer = rec.get("wafer") if "wafer" in header else None
        if wafer == "" or not rec["die"]:
            _fail(path, lineno, f"the {'wafer' if wafer == '' else 'die'} is empty.")
        xy = []
        for c in ("x", "y"):
            try:
                v = float(rec[c])
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                _fail(path, lineno, f"{c} is {rec[c]!r}; expected a finite number.")
            xy.append(v)
        key = (wafer, rec["die"])
        if key in out.xy:
            _fail(path, lineno, f"die {rec['die']!r}{f' of wafer {wafer!r}' if wafer else ''} is already placed "
                                f"on line {out.line[key]}.")
        spot = (wafer, *xy)
        if spot in taken:
            _fail(path, lineno, f"position ({rec['x']}, {rec['y']}) is already taken by the die of line "
                                f"{taken[spot]}.")
        out.xy[key], out.line[key], taken[spot] = tuple(xy), lineno, lineno
    if header is None or not out.xy:
        _fail(path, None, "holds no die position.")
    return out


def apply_positions(measurements, positions: DiePositions) -> list[str]:
    """Set ``x``/``y`` in the attributes of every die group under ``measurements`` that ``positions`` places.

    Returns notes for the ingest summary (dies placed, positions naming no die, dies left
    without a position).

    Raises
    ------
    StoreError
        No position names a die of the store (the ids differ, most likely).
    """
    placed, unplaced, used = 0, [], set()
    for wgroup in measurements.values():
        for dgroup in wgroup.values():
            wafer, die = attr(dgroup, "wafer"), attr(dgroup, "die")
            xy = positions.find(wafer, die)
            if xy is None:
                unplaced.append(f"{wafer}/{die}")
                continue
            used.add((wafer, die) if (wafer, die) in positions.xy else (None, die))
            attrs = json.loads(attr(dgroup, "attrs") or "{}")
            attrs.update({"x": xy[0], "y": xy[1]})
            dgroup.attrs["attrs"] = dumps(attrs)
            placed += 1
    name = Path(positions.path).name
    unused = [k for k in positions.xy if k not in used]
    if not placed:
        shown = ", ".join(f"{w + '/' if w else ''}{d}" for w, d in list(positions.xy)[:3])
        raise StoreError(
            f"none of the {len(positions.xy)} position(s) in {positions.path!r} names a die of the store "
            f"(the file names e.g. {shown}; the store holds {', '.join(unplaced[:3])}"
            f"{' ...' if len(unplaced) > 3 else ''}). Use the wafer and die ids of `hfox-fit info`. Nothing was written."
        )
    notes = [f"die positions from {name}: {placed} die(s) placed"]
    if unused:
        notes.append(f"die positions from {name}: {len(unused)} position(s) name no die of the store (e.g. "
                     f"line {positions.line[unused[0]]}: {unused[0][1]}); ignored")
    if unplaced:
        notes.append(f"die positions from {name}: {len(unplaced)} die(s) of the store have no position "
                     f"({', '.join(unplaced[:5])}{' ...' if len(unplaced) > 5 else ''}); the die map leaves them out")
    return notes

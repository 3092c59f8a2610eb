"""The campaign store object: one HDF5 file per measurement campaign, and reading it.

:class:`CampaignStore` is the public face of the package; changing the file is
done by :mod:`._ingest` (measurements) and :mod:`._fit` (the fit), opening and
the atomic rewrite by :mod:`._file`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import StoreError
from ..schema import CONDITIONS, DieData, dies_to_table
from ._dies import die_index, read_die
from ._file import open_store
from ._fit import StoredFit, load_die_results, load_fit, save_fit, save_fit_summary
from ._h5 import attr, key
from ._ingest import IngestSummary, TableResult, ingest, read_sources, sha256_file, sha256_table
from ._positions import DiePositions, read_die_positions


class CampaignStore:
    """One HDF5 file per measurement campaign: reads per die, provenance, fit.

    Parameters
    ----------
    path : str or path-like
        The store file. It need not exist for :meth:`ingest`, which creates it;
        the reading methods raise :class:`~hfox_fit.StoreError` when it is absent.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from hfox_fit.synth import make_wafer
    >>> from hfox_fit.schema import dies_to_table
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> store = CampaignStore(tmp / "campaign.h5")
    >>> table = dies_to_table(make_wafer(devices=8, pulses=5, seed=0).dies)
    >>> store.ingest_table(table, name="simulated").rows_stored
    48
    >>> store.dies()
    [('W01', 'D01')]
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CampaignStore({str(self.path)!r})"

    def check_writable(self) -> None:
        """Refuse (:class:`~hfox_fit.StoreError`) a read-only store before a long job that ends by rewriting it."""
        from ._file import check_writable

        check_writable(self.path)

    def exists(self) -> bool:
        """True when the store file exists."""
        return self.path.exists()

    # ------------------------------------------------------------------ ingest
    def ingest(self, results: Iterable, *, skipped=(), positions=None) -> IngestSummary:
        """Add the tables of several read files to the store, all or nothing.

        Parameters
        ----------
        results : iterable of ReadResult
            What :func:`hfox_fit.parsers.read_measurements` returned for each
            file. A generator is consumed one result at a time, so only one
            file's table is in memory at once.
        skipped : iterable of (path, reason), optional
            Files of the same ingest that were left out (no reader recognises
            them): they go into ``IngestSummary.left_out`` and
            into the provenance record of each file added (``skipped_beside``).
        positions : str, path-like or DiePositions, optional
            A die positions CSV (columns ``wafer,die,x,y``; see :func:`read_die_positions`), set on
            the dies of the store in the same rewrite (the die map of the report uses them).

        Returns
        -------
        IngestSummary

        Raises
        ------
        StoreError
            A read (wafer, die, device, cycle, pulse) of a new file is already
            in the store or in another new file (the message names both files),
            a pulse train gets reads under other conditions, or the store cannot
            be read or written. The store is then left as it was.

        Notes
        -----
        A file whose SHA-256 is already in the store (or earlier in ``results``)
        adds nothing and is listed in ``IngestSummary.duplicates``. Exceptions
        raised while ``results`` is consumed (a reader's ParseError, Ctrl-C)
        also leave the store untouched.
        """
        if positions is not None and not isinstance(positions, DiePositions):
            positions = read_die_positions(positions)  # checked before any file is read
        return ingest(self.path, results, skipped, positions)

    def set_die_positions(self, positions) -> IngestSummary:
        """Set the dies' positions on the wafer from a CSV (``wafer,die,x,y``) or a :class:`DiePositions`.

        One atomic rewrite; its ``notes`` say how many dies were placed, which positions
        name no die of the store and which dies have none.

        Raises
        ------
        ParseError
            The CSV is malformed (the message names the file and line).
        StoreError
            No position names a die of the store, or the store cannot be rewritten.
        """
        if not self.exists():
            raise StoreError(f"{str(self.path)!r} does not exist; ingest measurements first.")
        return self.ingest([], positions=positions)

    def ingest_table(self, table: pd.DataFrame, *, name: str = "table", format: str = "table") -> IngestSummary:
        """Ingest a measurement table that does not come from a file.

        The table's content (its SHA-256) stands for the file in the provenance,
        so the same table ingested twice adds nothing the second time. A table
        without rows is refused (StoreError) and the store is left as it was.
        """
        if isinstance(table, pd.DataFrame) and len(table) == 0:
            raise StoreError(f"{name}: the table holds no reads (0 rows, columns {list(table.columns)}); "
                             f"nothing was written to {str(self.path)!r}.")
        result = TableResult(table=table, path=name, format=format, sha256=sha256_table(table))
        return self.ingest([result])

    # ------------------------------------------------------------------ reading
    def dies(self) -> list[tuple[str, str]]:
        """Return the (wafer, die) pairs in the store, sorted."""
        with open_store(self.path) as f:
            return sorted(die_index(f))

    def read_die(self, wafer: str, die: str) -> DieData:
        """Return the reads of one die as :class:`~hfox_fit.schema.DieData`."""
        with open_store(self.path) as f:
            return read_die(self._die_group(f, wafer, die))

    def iter_dies(self) -> Iterator[DieData]:
        """Yield every die of the store as :class:`~hfox_fit.schema.DieData`, one at a time."""
        with open_store(self.path) as f:
            index = die_index(f)
            for k in sorted(index):
                yield read_die(f[index[k]])

    def read_table(self) -> pd.DataFrame:
        """Return every read as the measurement table, sorted by (wafer, die, device, cycle, pulse).

        The dtypes are those of :data:`hfox_fit.schema.DTYPES` (as made by
        :func:`hfox_fit.schema.dies_to_table`); failed reads are rows with a NaN
        resistance, exactly as ingested.
        """
        return dies_to_table(list(self.iter_dies()))

    def sources(self) -> list[dict]:
        """Return the provenance of every ingested file, in ingest order."""
        with open_store(self.path) as f:
            return read_sources(f)

    def sha256(self) -> str:
        """Return the SHA-256 (hex) of the store file."""
        open_store(self.path).close()
        return sha256_file(self.path)[0]

    def summary(self) -> dict:
        """Return counts: wafers, dies, cells, trains, reads, failed reads, sources, rejected rows, fit."""
        with open_store(self.path) as f:
            index = die_index(f)
            out = {
                "path": str(self.path),
                "format_version": int(f.attrs["format_version"]),
                "created_at": attr(f, "created_at"),
                "modified_at": attr(f, "modified_at"),
                "wafers": len({w for w, _ in index}),
                "dies": len(index),
                "cells": 0,
                "trains": 0,
                "reads": 0,
                "failed_reads": 0,
            }
            for g in index.values():
                a = f[g].attrs
                out["cells"] += int(a["n_cells"])
                out["trains"] += int(a["n_trains"])
                out["reads"] += int(a["n_reads"])
                out["failed_reads"] += int(a["n_failed"])
            records = read_sources(f)
            out["sources"] = len(records)
            out["rows_read"] = sum(int(s["rows_read"]) for s in records)
            out["rows_rejected"] = sum(int(s["rows_rejected"]) for s in records)
            out["fitted_at"] = attr(f["fit"], "fitted_at") if "fit" in f else None
            out["size_bytes"] = self.path.stat().st_size
            return out

    def inventory(self) -> dict:
        """Return what the store holds, read from its attributes and small datasets only.

        No per-read array (resistance, present) is read, so this stays fast on a large store.

        Returns
        -------
        dict
            JSON-safe: ``path``, ``format_version``, ``hfox_fit_version``, ``created_at``,
            ``modified_at``, ``size_bytes``; ``dies`` (one dict per die, sorted: wafer, die,
            cells, cycles, pulses, trains, reads, failed_reads); ``conditions`` (for each of
            v_read, v_pulse, pulse_width: one ``{"value", "cells", "trains"}`` per distinct value,
            ``value`` None for trains that give none; a cell counts once per value it was
            measured at); ``sources`` (the provenance records without their rejected-line
            messages and notes); ``fit`` (None, or ``fitted_at``, ``history``,
            ``hfox_fit_version`` and the fit's ``summary``, without its per-cell table).
        """
        with open_store(self.path) as f:
            try:
                return self._inventory(f)
            except (KeyError, OSError, ValueError, TypeError) as err:
                raise StoreError(
                    f"{str(self.path)!r} is a campaign store but part of it cannot be read ({err}); the file "
                    "may be damaged. Restore it from a backup or ingest the raw files again."
                ) from err

    def _inventory(self, f) -> dict:
        index = die_index(f)
        dies = []
        counts = {col: {} for col in CONDITIONS}
        for (wafer, die), name in sorted(index.items()):
            g = f[name]
            a = g.attrs
            dies.append({
                "wafer": wafer, "die": die, "cells": int(a["n_cells"]), "cycles": int(a["n_cycles"]),
                "pulses": int(a["n_pulses"]), "trains": int(a["n_trains"]), "reads": int(a["n_reads"]),
                "failed_reads": int(a["n_failed"]),
            })
            trained = g["source"][...] >= 0
            for col in CONDITIONS:
                _count_values(counts[col], g[col][...], trained)
        sources = [{k: v for k, v in s.items() if k not in ("rejected", "notes")} for s in read_sources(f)]
        fit = None
        if "fit" in f:
            g = f["fit"]
            fit = {
                "fitted_at": attr(g, "fitted_at"),
                "history": json.loads(attr(g, "history") or "[]"),
                "hfox_fit_version": attr(g, "hfox_fit_version"),
                "summary": json.loads(g["summary"].asstr()[()]),
            }
        return {
            "path": str(self.path),
            "format_version": int(f.attrs["format_version"]),
            "hfox_fit_version": attr(f, "hfox_fit_version"),
            "created_at": attr(f, "created_at"),
            "modified_at": attr(f, "modified_at"),
            "size_bytes": self.path.stat().st_size,
            "dies": dies,
            "conditions": {
                col: [{"value": v, "cells": c, "trains": t}
                      for v, (c, t) in sorted(counts[col].items(), key=lambda kv: (kv[0] is None, kv[0] or 0.0))]
                for col in CONDITIONS
            },
            "sources": sources,
            "fit": fit,
        }

    def _die_group(self, f, wafer, die):
        path = f"measurements/{key(wafer)}/{key(die)}"
        if path not in f:
            known = sorted(die_index(f))
            shown = ", ".join(f"{w}/{d}" for w, d in known[:10]) + (" ..." if len(known) > 10 else "")
            raise StoreError(
                f"{str(self.path)!r} holds no die {wafer}/{die}; it holds {len(known)} die(s): "
                f"{shown or 'none'}."
            )
        return f[path]

    # ------------------------------------------------------------------ fit
    def save_fit(self, cells: pd.DataFrame, summary: dict, model: dict, arrays: dict | None = None, *,
                 dies: dict | None = None, law: str | None = None) -> None:
        """Save a fit, replacing the previous one (its time stays in the history).

        Parameters
        ----------
        cells : pandas.DataFrame
            One row per cell (or per train): stored one dataset per column.
        summary, model : dict
            JSON-safe results (numpy scalars and arrays are converted).
        arrays : dict of str to ndarray, optional
            Extra arrays (e.g. residuals), stored as they are.
        dies : dict, optional
            ``{"W03/D07": tree}``: each die's own result (dicts of arrays, data frames and JSON
            values), so that some dies can be refitted later and pooled with the others.
        law : str, optional
            The law the fit was asked for (``"auto"`` or one law), kept with ``dies``.
        """
        save_fit(self.path, cells, summary, model, arrays, dies, law)

    def save_fit_summary(self, summary: dict, fitted_at: str) -> None:
        """Replace the saved fit's summary (e.g. with a calibration added), atomically; the rest of the fit,
        its time and history stay. ``fitted_at``: the time of the fit the summary belongs to
        (:attr:`StoredFit.fitted_at`); a store whose fit was replaced since is refused (:class:`StoreError`)."""
        save_fit_summary(self.path, summary, fitted_at)

    def load_die_results(self) -> tuple:
        """``(law, {"W03/D07": tree}, stale)`` saved with the fit (see :meth:`save_fit`; law None when none
        was kept); ``stale`` when files were ingested after the fit."""
        return load_die_results(self.path)

    def load_fit(self) -> StoredFit:
        """Return the saved fit.

        Raises
        ------
        StoreError
            When the store holds no fit yet.
        """
        return load_fit(self.path)


def _count_values(counts: dict, values: np.ndarray, trained: np.ndarray) -> None:
    """Add to ``counts`` ({value or None: [cells, trains]}) the trains of one die's (cells, cycles) ``values``."""
    values = np.where(trained, values, np.nan)
    known = ~np.isnan(values)
    for v in np.unique(values[known]):
        hit = values == v
        c = counts.setdefault(float(v), [0, 0])
        c[0] += int(hit.any(axis=1).sum())
        c[1] += int(hit.sum())
    unknown = trained & ~known
    if unknown.any():
        c = counts.setdefault(None, [0, 0])
        c[0] += int(unknown.any(axis=1).sum())
        c[1] += int(unknown.sum())

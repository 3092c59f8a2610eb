"""The campaign store: one HDF5 file holding a measurement campaign and its fit.

Layout (format ``hfox_fit.campaign``, version :data:`FORMAT_VERSION`)::

    /                          attrs: format, format_version, hfox_fit_version,
                                      created_at, modified_at (UTC ISO), units (JSON)
    /measurements/<wafer>/<die>/   attrs: wafer, die, n_cells, n_cycles, n_pulses,
                                          n_trains, n_reads, n_failed, attrs (JSON)
        devices      str   [cells]                   cell ids, sorted (UTF-8)
        cycles       int64 [cycles]                  cycle numbers, sorted
        resistance   float64 [cells, cycles, pulses]  Ohm; NaN = failed or not taken
        present      bool  [cells, cycles, pulses]   True where a read (maybe failed) exists
        v_read, v_pulse, pulse_width  float64 [cells, cycles]   V, V, s (attr ``unit``)
        source       int32 [cells, cycles]           index in /sources of the file of each
                                                     train (-1: no train)
    /sources                   str [files]: one JSON record per ingested file (path,
                               sha256, size, ingested_at, hfox_fit_version, format,
                               rows_read / rows_stored / rows_rejected, rejected,
                               notes, metadata, dies)
    /fit/                      attrs: fitted_at, history (JSON list of fit times)
        summary, model         str: JSON
        cells/                 one dataset per column (strings as UTF-8)
        arrays/<name>          free-form arrays of the fit

Group names are the ids with ``%`` and ``/`` (and a leading ``.``) percent-encoded;
the true ids are in the attributes. The per-read arrays are chunked (about 1 MiB)
and compressed with LZF + shuffle, which keeps ingest far faster than parsing.

Every change (ingest, fit) writes a new file beside the store and moves it in
place with :func:`os.replace`: a failed or interrupted change leaves the store
byte for byte as it was. Groups a change does not touch are copied with
``h5py``'s ``copy`` (raw chunks, no decompression).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import h5py
import numpy as np
import pandas as pd

from ._atomic import mode_for
from ._version import __version__
from .exceptions import SchemaError, StoreError
from .schema import (
    COLUMNS,
    CONDITIONS,
    UNITS,
    DieData,
    dies_to_table,
    table_to_dies,
    validate_table,
)

__all__ = ["CampaignStore", "IngestSummary", "StoredFit", "FORMAT", "FORMAT_VERSION", "split_dies"]

#: Value of the root attribute ``format`` of a campaign store.
FORMAT = "hfox_fit.campaign"
#: Layout version written by this hfox_fit; stores of a higher version are refused.
FORMAT_VERSION = 1
#: Filter of the per-read arrays (measured: ~20e6 reads/s written, 30 % smaller than raw).
COMPRESSION = {"compression": "lzf", "shuffle": True}
_CHUNK_BYTES = 1 << 20
#: Rejected-line messages kept per source file.
MAX_REJECTED = 20

_STR = h5py.string_dtype("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json(obj) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _key(name: str) -> str:
    """HDF5 link name of an id (``/`` and ``%`` are not allowed or ambiguous)."""
    k = quote(str(name), safe=" !#$&'()*+,-.:;<=>?@[]^_`{|}~")
    return "%2E" + k[1:] if k.startswith(".") else k


@dataclass
class IngestSummary:
    """What one :meth:`CampaignStore.ingest` did.

    Attributes
    ----------
    store : str
        Path of the store.
    files : list of str
        Files newly ingested.
    duplicates : list of (str, str)
        Files not ingested because a file of the same SHA-256 is already in the
        store or earlier in the same call: (path, path of the file it repeats).
    rows_read, rows_stored, rows_rejected : int
        Totals over the newly ingested files.
    rejected : list of str
        The first rejected-line messages, prefixed with their file.
    notes : list of str
        Readers' notes (defaults taken, ...) and the store's own remarks.
    dies : list of (str, str)
        (wafer, die) written or changed.
    """

    store: str
    files: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    rows_read: int = 0
    rows_stored: int = 0
    rows_rejected: int = 0
    rejected: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    dies: list = field(default_factory=list)

    @property
    def skipped(self) -> list:
        """Paths of the duplicate files that added nothing."""
        return [p for p, _ in self.duplicates]

    @property
    def changed(self) -> bool:
        """True when the store was rewritten."""
        return bool(self.files)


@dataclass
class StoredFit:
    """A fit saved in a campaign store (see :meth:`CampaignStore.save_fit`)."""

    cells: pd.DataFrame
    summary: dict
    model: dict
    arrays: dict
    fitted_at: str
    history: list


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

    # ------------------------------------------------------------------ opening
    def exists(self) -> bool:
        """True when the store file exists."""
        return self.path.exists()

    def _open(self, *, create_hint: bool = True) -> h5py.File:
        """Open the store read-only, checking that it is a campaign store we can read."""
        p = self.path
        if not p.exists():
            hint = f" Create it with `hfox-fit ingest RAW_FILES... --store {p}`." if create_hint else ""
            raise StoreError(f"campaign store {str(p)!r} does not exist.{hint}")
        if p.is_dir():
            raise StoreError(f"{str(p)!r} is a directory, not a campaign store file (.h5). Pass the store file.")
        try:
            is_hdf5 = h5py.is_hdf5(p)
        except OSError as err:
            raise StoreError(f"cannot read {str(p)!r}: {err}. Check the path and its permissions.") from err
        if not is_hdf5:
            raise StoreError(
                f"{str(p)!r} is not an HDF5 file, so not a campaign store. Pass the .h5 file "
                "written by `hfox-fit ingest`; raw measurement files go to `hfox-fit ingest`."
            )
        try:
            f = h5py.File(p, "r")
        except OSError as err:
            raise StoreError(
                f"cannot open the campaign store {str(p)!r} ({err}); the file may be damaged or "
                "still being written. Restore it from a backup or ingest the raw files again."
            ) from err
        try:
            self._check_format(f)
        except BaseException:
            f.close()
            raise
        return f

    def _check_format(self, f: h5py.File) -> None:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise StoreError(
                f"{str(self.path)!r} is an HDF5 file but not a hfox_fit campaign store (its root "
                f"attribute 'format' is {fmt!r}, expected {FORMAT!r}). If it is a raw HDF5 dump, "
                f"ingest it: `hfox-fit ingest {self.path} --store campaign.h5`."
            )
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{str(self.path)!r} has store format_version {version}; this hfox_fit "
                f"({__version__}) reads versions 1-{FORMAT_VERSION}. Upgrade hfox_fit."
            )
        if version < 1:
            raise StoreError(
                f"{str(self.path)!r} has an invalid store format_version ({version}); the file is "
                "damaged. Ingest the raw files again into a new store."
            )

    @contextmanager
    def _rewrite(self):
        """Yield ``(old, new)`` h5py files; on success move ``new`` over the store.

        ``old`` is the current store opened read-only (None when there is none).
        Any exception, KeyboardInterrupt included, removes the new file and
        leaves the store untouched.
        """
        p = self.path
        old_stat = None
        if p.exists():
            self._open().close()  # refuse non-stores before writing anything
            old_stat = os.stat(p)
        elif not p.parent.is_dir():
            raise StoreError(
                f"cannot create the campaign store {str(p)!r}: folder {str(p.parent)!r} does not "
                "exist. Create it first or pass another --store path."
            )
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        except OSError as err:
            raise StoreError(f"cannot write beside the campaign store {str(p)!r}: {err}.") from err
        os.close(fd)
        try:
            old = self._open() if old_stat is not None else None
            try:
                with h5py.File(tmp, "w") as new:
                    yield old, new
            finally:
                if old is not None:
                    old.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if old_stat is not None:
                now = os.stat(p)
                if (now.st_ino, now.st_size, now.st_mtime_ns) != (
                    old_stat.st_ino, old_stat.st_size, old_stat.st_mtime_ns
                ):
                    raise StoreError(
                        f"the campaign store {str(p)!r} was changed by another process while this "
                        "change was prepared; nothing was written. Run the command again."
                    )
            os.chmod(tmp, mode_for(p))
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:  # make the rename durable
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    @staticmethod
    def _init_root(old, new) -> None:
        now = _now()
        if old is not None:
            for k, v in old.attrs.items():
                new.attrs[k] = v
        else:
            new.attrs["format"] = FORMAT
            new.attrs["created_at"] = now
        new.attrs["format_version"] = FORMAT_VERSION
        new.attrs["hfox_fit_version"] = __version__
        new.attrs["modified_at"] = now
        new.attrs["units"] = _json(UNITS)
        new.attrs["columns"] = _json(list(COLUMNS))

    # ------------------------------------------------------------------ ingest
    def ingest(self, results: Iterable) -> IngestSummary:
        """Add the tables of several read files to the store, all or nothing.

        Parameters
        ----------
        results : iterable of ReadResult
            What :func:`hfox_fit.parsers.read_measurements` returned for each
            file. A generator is consumed one result at a time, so only one
            file's table is in memory at once.

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
        old_sources = self.sources() if self.exists() else []
        known = {s["sha256"]: s["path"] for s in old_sources}
        summary = IngestSummary(store=str(self.path))
        parts: dict[tuple[str, str], list] = {}
        new_sources: list[dict] = []
        for res in results:
            path = getattr(res, "path", None)
            label = str(path) if path is not None else "<table>"
            sha, size = _sha256_of(res)
            if sha in known:
                summary.duplicates.append((label, known[sha]))
                summary.notes.append(
                    f"{label}: same SHA-256 as {known[sha]!r}, already ingested; skipped."
                )
                del res
                continue
            index = len(old_sources) + len(new_sources)
            table = _as_table(res.table, label)
            dies = split_dies(table, source=label)
            stored = len(table)
            del table  # with ``del res`` below: only one file's table is alive at a time
            record = {
                "index": index,
                "path": label,
                "sha256": sha,
                "size": size,
                "ingested_at": _now(),
                "hfox_fit_version": __version__,
                "format": str(getattr(res, "format", "") or ""),
                "rows_read": int(getattr(res, "rows_read", stored)),
                "rows_stored": stored,
                "rows_rejected": int(getattr(res, "rows_rejected", 0)),
                "rejected": [str(m) for m in list(getattr(res, "rejected", []) or [])[:MAX_REJECTED]],
                "notes": [str(m) for m in (getattr(res, "notes", []) or [])],
                "metadata": json.loads(_json(getattr(res, "metadata", {}) or {})),
                "dies": [[d.wafer, d.die] for d in dies],
            }
            for d in dies:
                src = np.where(d.present.any(axis=2), np.int32(index), np.int32(-1))
                parts.setdefault((d.wafer, d.die), []).append((d, src))
            new_sources.append(record)
            known[sha] = label
            summary.files.append(label)
            summary.rows_read += record["rows_read"]
            summary.rows_stored += stored
            summary.rows_rejected += record["rows_rejected"]
            summary.rejected.extend(f"{label}: {m}" for m in record["rejected"])
            summary.notes.extend(f"{label}: {m}" for m in record["notes"])
            del res
        if not new_sources and self.exists():
            return summary
        paths = [s["path"] for s in old_sources] + [s["path"] for s in new_sources]
        with self._rewrite() as (old, new):
            self._init_root(old, new)
            meas = new.create_group("measurements")
            if old is not None and "measurements" in old:
                for wkey, wgroup in old["measurements"].items():
                    for dkey, dgroup in wgroup.items():
                        key = (_attr(dgroup, "wafer"), _attr(dgroup, "die"))
                        if key in parts:
                            parts[key].insert(0, _read_die(dgroup, with_source=True))
                        else:
                            dst = meas.require_group(wkey)
                            dst.attrs["wafer"] = key[0]
                            old.copy(dgroup, dst, name=dkey)
            for key in sorted(parts):
                die, source = _merge(parts[key], paths)
                parts[key] = None  # free the pieces as we go
                wgroup = meas.require_group(_key(key[0]))
                wgroup.attrs["wafer"] = key[0]
                _write_die(wgroup, die, source)
                summary.dies.append(key)
            records = [_json(s) for s in old_sources + new_sources]
            new.create_dataset("sources", data=np.array(records, dtype=object), dtype=_STR)
            if old is not None and "fit" in old:
                old.copy(old["fit"], new, name="fit")
                if new_sources:
                    summary.notes.append(
                        f"the fit saved at {_attr(old['fit'], 'fitted_at')} predates these "
                        f"measurements; run `hfox-fit fit {self.path}` again."
                    )
        return summary

    def ingest_table(self, table: pd.DataFrame, *, name: str = "table", format: str = "table") -> IngestSummary:
        """Ingest a measurement table that does not come from a file.

        The table's content (its SHA-256) stands for the file in the provenance,
        so the same table ingested twice adds nothing the second time.
        """
        result = _TableResult(table=table, path=name, format=format, sha256=_sha256_table(table))
        return self.ingest([result])

    # ------------------------------------------------------------------ reading
    def dies(self) -> list[tuple[str, str]]:
        """Return the (wafer, die) pairs in the store, sorted."""
        with self._open() as f:
            return sorted(_die_index(f))

    def read_die(self, wafer: str, die: str) -> DieData:
        """Return the reads of one die as :class:`~hfox_fit.schema.DieData`."""
        with self._open() as f:
            return _read_die(self._die_group(f, wafer, die))

    def iter_dies(self) -> Iterator[DieData]:
        """Yield every die of the store as :class:`~hfox_fit.schema.DieData`, one at a time."""
        with self._open() as f:
            index = _die_index(f)
            for key in sorted(index):
                yield _read_die(f[index[key]])

    def read_table(self) -> pd.DataFrame:
        """Return every read as the measurement table, sorted by (wafer, die, device, cycle, pulse).

        The dtypes are those of :data:`hfox_fit.schema.DTYPES` (as made by
        :func:`hfox_fit.schema.dies_to_table`); failed reads are rows with a NaN
        resistance, exactly as ingested.
        """
        return dies_to_table(list(self.iter_dies()))

    def sources(self) -> list[dict]:
        """Return the provenance of every ingested file, in ingest order."""
        with self._open() as f:
            if "sources" not in f:
                return []
            return [json.loads(s) for s in f["sources"].asstr()[...]]

    def sha256(self) -> str:
        """Return the SHA-256 (hex) of the store file."""
        self._open().close()
        return _sha256_file(self.path)[0]

    def summary(self) -> dict:
        """Return counts: wafers, dies, cells, trains, reads, failed reads, sources, rejected rows, fit."""
        with self._open() as f:
            index = _die_index(f)
            out = {
                "path": str(self.path),
                "format_version": int(f.attrs["format_version"]),
                "created_at": _attr(f, "created_at"),
                "modified_at": _attr(f, "modified_at"),
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
            records = [json.loads(s) for s in f["sources"].asstr()[...]] if "sources" in f else []
            out["sources"] = len(records)
            out["rows_read"] = sum(int(s["rows_read"]) for s in records)
            out["rows_rejected"] = sum(int(s["rows_rejected"]) for s in records)
            out["fitted_at"] = _attr(f["fit"], "fitted_at") if "fit" in f else None
            out["size_bytes"] = self.path.stat().st_size
            return out

    def _die_group(self, f, wafer, die):
        path = f"measurements/{_key(wafer)}/{_key(die)}"
        if path not in f:
            known = sorted(_die_index(f))
            shown = ", ".join(f"{w}/{d}" for w, d in known[:10]) + (" ..." if len(known) > 10 else "")
            raise StoreError(
                f"{str(self.path)!r} holds no die {wafer}/{die}; it holds {len(known)} die(s): "
                f"{shown or 'none'}."
            )
        return f[path]

    # ------------------------------------------------------------------ fit
    def save_fit(self, cells: pd.DataFrame, summary: dict, model: dict, arrays: dict | None = None) -> None:
        """Save a fit, replacing the previous one (its time stays in the history).

        Parameters
        ----------
        cells : pandas.DataFrame
            One row per cell (or per train): stored one dataset per column.
        summary, model : dict
            JSON-safe results (numpy scalars and arrays are converted).
        arrays : dict of str to ndarray, optional
            Extra arrays (e.g. residuals), stored as they are.
        """
        if not isinstance(cells, pd.DataFrame):
            raise StoreError(f"save_fit: cells must be a pandas DataFrame, got {type(cells).__name__}.")
        if not self.exists():
            self._open()  # raises the 'does not exist' message
        summary_json, model_json = _json(summary), _json(model)
        with self._rewrite() as (old, new):
            for name in old:
                if name != "fit":
                    old.copy(old[name], new, name=name)
            self._init_root(old, new)
            history = []
            if "fit" in old:
                history = json.loads(_attr(old["fit"], "history") or "[]")
            fitted_at = _now()
            history.append(fitted_at)
            g = new.create_group("fit")
            g.attrs["fitted_at"] = fitted_at
            g.attrs["history"] = _json(history)
            g.attrs["hfox_fit_version"] = __version__
            g.attrs["n_sources"] = int(len(old["sources"])) if "sources" in old else 0
            g.create_dataset("summary", data=summary_json, dtype=_STR)
            g.create_dataset("model", data=model_json, dtype=_STR)
            _write_frame(g.create_group("cells"), cells)
            ag = g.create_group("arrays")
            for name, arr in (arrays or {}).items():
                _write_array(ag, str(name), arr)

    def load_fit(self) -> StoredFit:
        """Return the saved fit.

        Raises
        ------
        StoreError
            When the store holds no fit yet.
        """
        with self._open() as f:
            if "fit" not in f:
                raise StoreError(f"no fit in {self.path.name!r}; run `hfox-fit fit {self.path}` first.")
            g = f["fit"]
            arrays = {}
            for name, ds in g["arrays"].items():
                arrays[unquote(name)] = _read_array(ds)
            return StoredFit(
                cells=_read_frame(g["cells"]),
                summary=json.loads(g["summary"].asstr()[()]),
                model=json.loads(g["model"].asstr()[()]),
                arrays=arrays,
                fitted_at=_attr(g, "fitted_at"),
                history=json.loads(_attr(g, "history") or "[]"),
            )


# ---------------------------------------------------------------------- helpers
@dataclass
class _TableResult:
    table: pd.DataFrame
    path: str
    format: str = "table"
    rows_read: int = -1
    rows_rejected: int = 0
    rejected: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    sha256: str = ""

    def __post_init__(self):
        if self.rows_read < 0:
            self.rows_read = len(self.table)


def _attr(obj, name, default=None):
    v = obj.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _sha256_file(path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _sha256_of(res) -> tuple[str, int]:
    """SHA-256 and size of the file behind a read result (or of its table when there is none)."""
    sha = getattr(res, "sha256", None)
    path = getattr(res, "path", None)
    is_file = path is not None and Path(path).is_file()
    if sha:
        return str(sha), Path(path).stat().st_size if is_file else 0
    if is_file:
        try:
            return _sha256_file(path)
        except OSError as err:
            raise StoreError(f"cannot read {str(path)!r} to record its SHA-256: {err}.") from err
    return _sha256_table(res.table), 0


def _sha256_table(table: pd.DataFrame) -> str:
    ids = {c: "string" for c in ("wafer", "die", "device") if c in table}
    hashed = pd.util.hash_pandas_object(table.astype(ids), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _as_table(table, label: str) -> pd.DataFrame:
    """The table of a read result, validated unless it already has the schema's columns and dtypes."""
    if not isinstance(table, pd.DataFrame):
        raise StoreError(f"{label}: the read result holds no table (got {type(table).__name__}).")
    if list(table.columns) == list(COLUMNS) and all(
        str(table[c].dtype) in ("float64", "int64") for c in COLUMNS[3:]
    ):
        return table
    return validate_table(table, source=label)


def split_dies(table: pd.DataFrame, *, source: str = "table") -> list[DieData]:
    """Split a validated table into :class:`DieData`, as :func:`hfox_fit.schema.table_to_dies` does.

    Same result and errors, but O(n) on the categorical codes of the id columns
    (about 10 x faster on reader output); tables whose ids are not categoricals
    go to :func:`~hfox_fit.schema.table_to_dies`.
    """
    n = len(table)
    if n == 0:
        return []
    ids = [table[c] for c in ("wafer", "die", "device")]
    if not all(isinstance(s.dtype, pd.CategoricalDtype) for s in ids):
        return table_to_dies(table, source=source)
    codes = [s.cat.codes.to_numpy() for s in ids]
    if any((c < 0).any() for c in codes):
        return table_to_dies(table, source=source)
    names, ranks = [], []
    for s in ids:  # rank of each category in str order
        cats = np.asarray(s.cat.categories, dtype=object).astype(str)
        order = np.argsort(cats, kind="stable")
        rank = np.empty(len(cats), dtype=np.int64)
        rank[order] = np.arange(len(cats))
        names.append(cats[order])
        ranks.append(rank)
    wr, dr = ranks[0][codes[0]], ranks[1][codes[1]]
    key = wr * len(names[1]) + dr
    if (key == key[0]).all():
        groups = [(int(key[0]), None)]
    else:
        order = np.argsort(key, kind="stable")
        sk = key[order]
        cut = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        groups = [(int(sk[a]), order[a:b]) for a, b in zip(np.r_[0, cut], np.r_[cut, n])]
    cols = {c: table[c].to_numpy() for c in ("cycle", "pulse", "resistance") + CONDITIONS}
    dev_all = ranks[2][codes[2]]
    dies = []
    for k, rows in groups:
        wafer, die = names[0][k // len(names[1])], names[1][k % len(names[1])]
        pick = (lambda a: a) if rows is None else (lambda a, rows=rows: a[rows])
        devices, dev_idx = _dense(pick(dev_all), len(names[2]))
        cyc = pick(cols["cycle"])
        cmax = int(cyc.max())
        if cmax < 4 * len(cyc) + 1024:
            cycles, cyc_idx = _dense(cyc, cmax + 1)
        else:
            cycles, cyc_idx = np.unique(cyc, return_inverse=True)
        pulse = pick(cols["pulse"])
        nd, nc, npulse = len(devices), len(cycles), int(pulse.max()) + 1
        train = dev_idx * nc + cyc_idx
        flat = train * npulse + pulse
        resistance = np.full(nd * nc * npulse, np.nan)
        present = np.zeros(nd * nc * npulse, bool)
        resistance[flat] = pick(cols["resistance"])
        present[flat] = True
        conds = {}
        for col in CONDITIONS:
            values = pick(cols[col])
            per_train = np.full(nd * nc, np.nan)
            per_train[train] = values
            back = per_train[train]
            differ = ~((values == back) | (np.isnan(values) & np.isnan(back)))
            if differ.any():
                d, c = divmod(int(train[differ].min()), nc)
                raise SchemaError(
                    f"{source}: {col} changes within one pulse train ({wafer}/{die}/{names[2][devices[d]]} "
                    f"cycle {cycles[c]}); a train must be measured under one condition. "
                    "Give the reads under the new condition another cycle number."
                )
            conds[col] = per_train.reshape(nd, nc)
        dies.append(
            DieData(
                wafer=str(wafer),
                die=str(die),
                devices=names[2][devices].astype(str),
                cycles=np.asarray(cycles, dtype="int64"),
                resistance=resistance.reshape(nd, nc, npulse),
                present=present.reshape(nd, nc, npulse),
                **conds,
            )
        )
    return dies


def _dense(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of small non-negative ints and each value's index among them."""
    used = np.zeros(size, bool)
    used[values] = True
    index = np.cumsum(used) - 1
    return np.flatnonzero(used), index[values]


def _die_index(f) -> dict[tuple[str, str], str]:
    out = {}
    if "measurements" not in f:
        return out
    for wgroup in f["measurements"].values():
        for dgroup in wgroup.values():
            out[(_attr(dgroup, "wafer"), _attr(dgroup, "die"))] = dgroup.name
    return out


def _chunks(shape: tuple[int, ...], itemsize: int = 8) -> tuple[int, ...]:
    cells, cycles, pulses = shape
    row = cycles * pulses * itemsize
    if row <= _CHUNK_BYTES:
        return (max(1, min(cells, _CHUNK_BYTES // row)), cycles, pulses)
    per_cycle = pulses * itemsize
    if per_cycle <= _CHUNK_BYTES:
        return (1, max(1, min(cycles, _CHUNK_BYTES // per_cycle)), pulses)
    return (1, 1, max(1, _CHUNK_BYTES // itemsize))


def _write_die(parent: h5py.Group, d: DieData, source: np.ndarray) -> None:
    g = parent.create_group(_key(d.die))
    present = np.asarray(d.present, bool)
    g.attrs["wafer"] = d.wafer
    g.attrs["die"] = d.die
    g.attrs["n_cells"] = d.n_cells
    g.attrs["n_cycles"] = d.n_cycles
    g.attrs["n_pulses"] = d.n_pulses
    g.attrs["n_trains"] = int(present.any(axis=2).sum())
    g.attrs["n_reads"] = int(present.sum())
    g.attrs["n_failed"] = int((present & np.isnan(d.resistance)).sum())
    g.attrs["attrs"] = _json(d.attrs or {})
    g.create_dataset("devices", data=np.asarray(d.devices, dtype=object), dtype=_STR)
    g.create_dataset("cycles", data=np.asarray(d.cycles, dtype="int64"))
    chunks = _chunks(d.resistance.shape)
    ds = g.create_dataset("resistance", data=np.asarray(d.resistance, "float64"), chunks=chunks, **COMPRESSION)
    ds.attrs["unit"] = UNITS["resistance"]
    g.create_dataset("present", data=present, chunks=chunks, **COMPRESSION)
    for col in CONDITIONS:
        ds = g.create_dataset(col, data=np.asarray(getattr(d, col), "float64"))
        ds.attrs["unit"] = UNITS[col]
    g.create_dataset("source", data=np.asarray(source, "int32"))


def _read_die(g: h5py.Group, *, with_source: bool = False):
    d = DieData(
        wafer=_attr(g, "wafer"),
        die=_attr(g, "die"),
        devices=np.asarray(g["devices"].asstr()[...], dtype=str),
        cycles=g["cycles"][...].astype("int64"),
        resistance=g["resistance"][...],
        present=g["present"][...].astype(bool),
        v_read=g["v_read"][...],
        v_pulse=g["v_pulse"][...],
        pulse_width=g["pulse_width"][...],
        attrs=json.loads(_attr(g, "attrs") or "{}"),
    )
    if with_source:
        return d, g["source"][...]
    return d


def _span(idx: np.ndarray):
    """``idx`` as a slice when it is a run of consecutive integers, else None."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and (len(idx) < 3 or np.all(np.diff(idx) == 1)):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return None


def _merge(parts: list, paths: list[str]) -> tuple[DieData, np.ndarray]:
    """Combine the pieces of one die (each ``(DieData, source per train)``); refuse overlaps."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0][0]
    devices = np.unique(np.concatenate([np.asarray(d.devices, dtype=str) for d, _ in parts]))
    cycles = np.unique(np.concatenate([d.cycles for d, _ in parts]))
    n_pulses = max(d.n_pulses for d, _ in parts)
    shape = (len(devices), len(cycles), n_pulses)
    resistance = np.full(shape, np.nan)
    present = np.zeros(shape, bool)
    conds = {c: np.full(shape[:2], np.nan) for c in CONDITIONS}
    source = np.full(shape[:2], -1, dtype="int32")
    attrs: dict = {}
    for d, src in parts:
        di = np.searchsorted(devices, np.asarray(d.devices, dtype=str))
        ci = np.searchsorted(cycles, d.cycles)
        p = d.n_pulses
        sd, sc = _span(di), _span(ci)
        if sd is not None and sc is not None:
            sel, sel2 = (sd, sc, slice(0, p)), (sd, sc)
        else:
            sel, sel2 = np.ix_(di, ci, np.arange(p)), np.ix_(di, ci)
        cur = present[sel]
        clash = cur & d.present
        if clash.any():
            i, j, k = (int(v[0]) for v in np.nonzero(clash))
            other = source[sel2][i, j]
            mine = src[i, j]
            raise StoreError(
                f"read {d.wafer}/{d.die}/{d.devices[i]} cycle {d.cycles[j]} pulse {k} comes from "
                f"both {_name(paths, other)} and {_name(paths, mine)} ({int(clash.sum())} read(s) "
                "overlap). Each read must come from one file: drop one of them, or give the new "
                "reads other cycle numbers. Nothing was written."
            )
        had = cur.any(axis=2)
        has = d.present.any(axis=2)
        both = had & has
        if both.any():
            for col in CONDITIONS:
                old_v, new_v = conds[col][sel2], getattr(d, col)
                differ = both & ~((old_v == new_v) | (np.isnan(old_v) & np.isnan(new_v)))
                if differ.any():
                    i, j = (int(v[0]) for v in np.nonzero(differ))
                    raise StoreError(
                        f"pulse train {d.wafer}/{d.die}/{d.devices[i]} cycle {d.cycles[j]} has "
                        f"{col} = {float(old_v[i, j])!r} in {_name(paths, source[sel2][i, j])} but "
                        f"{float(new_v[i, j])!r} in {_name(paths, src[i, j])}; a train is measured under one "
                        "condition. Give the new reads other cycle numbers. Nothing was written."
                    )
        resistance[sel] = np.where(d.present, d.resistance, resistance[sel])
        present[sel] = cur | d.present
        for col in CONDITIONS:
            conds[col][sel2] = np.where(has, getattr(d, col), conds[col][sel2])
        source[sel2] = np.where(had | (src < 0), source[sel2], src)
        attrs.update(d.attrs or {})
    merged = DieData(
        wafer=first.wafer,
        die=first.die,
        devices=devices,
        cycles=cycles.astype("int64"),
        resistance=resistance,
        present=present,
        attrs=attrs,
        **conds,
    )
    return merged, source


def _name(paths: list[str], index) -> str:
    index = int(index)
    return repr(paths[index]) if 0 <= index < len(paths) else "an unknown source"


# ------------------------------------------------------------- frames and arrays
def _write_frame(g: h5py.Group, df: pd.DataFrame) -> None:
    index_names = None
    if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
            and df.index.name is None):
        index_names = [None if n is None else str(n) for n in df.index.names]
        df = df.reset_index(names=[f"__index_{i}__" for i in range(df.index.nlevels)])
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise StoreError(f"save_fit: the cells table has duplicated column names {names}.")
    g.attrs["columns"] = _json(names)
    g.attrs["index"] = _json(index_names)
    g.attrs["n_rows"] = len(df)
    na_group = None
    for i, (name, s) in enumerate(zip(names, (df.iloc[:, k] for k in range(df.shape[1])))):
        key = f"{i:04d}"
        dtype = s.dtype
        na = s.isna().to_numpy()
        if isinstance(dtype, np.dtype) and dtype.kind in "biufc":
            data = s.to_numpy()
        elif isinstance(dtype, np.dtype) and dtype.kind in "mM":
            data = s.to_numpy().view("int64")
        elif pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            data = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            data = np.array(["" if m else str(v) for v, m in zip(s.to_numpy(dtype=object), na)], dtype=object)
            if na.any():
                na_group = na_group or g.create_group("_na")
                na_group.create_dataset(key, data=na)
        ds = g.create_dataset(key, data=data, dtype=_STR if data.dtype == object else None)
        ds.attrs["name"] = name
        ds.attrs["dtype"] = str(dtype)


def _read_frame(g: h5py.Group) -> pd.DataFrame:
    names = json.loads(_attr(g, "columns"))
    cols = {}
    for i, name in enumerate(names):
        key = f"{i:04d}"
        ds = g[key]
        dtype = _attr(ds, "dtype")
        if ds.dtype.kind == "O":
            values = np.asarray(ds.asstr()[...], dtype=object)
            if "_na" in g and key in g["_na"]:
                values[g["_na"][key][...]] = None
            s = pd.Series(values, dtype=object)
        else:
            s = pd.Series(ds[...])
        if dtype.startswith(("datetime64", "timedelta64")):
            s = pd.Series(s.to_numpy().view(dtype))
        elif dtype != str(s.dtype):
            try:
                s = s.astype(dtype)
            except (TypeError, ValueError):
                pass
        cols[name] = s
    df = pd.DataFrame(cols) if cols else pd.DataFrame(index=range(int(g.attrs.get("n_rows", 0))))
    index_names = json.loads(_attr(g, "index") or "null")
    if index_names:
        keys = [f"__index_{i}__" for i in range(len(index_names))]
        df = df.set_index(keys)
        df.index.names = index_names
    return df


def _write_array(g: h5py.Group, name: str, arr) -> None:
    a = np.asarray(arr)
    key = quote(name, safe="")
    if a.dtype.kind in "OUS":
        ds = g.create_dataset(key, data=a.astype(str).astype(object), dtype=_STR)
        ds.attrs["kind"] = "str"
        return
    kw = COMPRESSION if a.nbytes > 1 << 16 and a.ndim >= 1 else {}
    g.create_dataset(key, data=a, **kw)


def _read_array(ds: h5py.Dataset) -> np.ndarray:
    if _attr(ds, "kind") == "str":
        return np.asarray(ds.asstr()[...], dtype=str)
    return ds[()] if ds.shape == () else ds[...]

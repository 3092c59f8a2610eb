"""Ingest: adding read files to the store, all or nothing, with their provenance.

Each file is recorded in ``/sources`` (path, SHA-256, counts, reader notes); a
file already ingested (same SHA-256) adds nothing; the new reads of a die are
merged with its stored ones, and a read given twice (by two files) is refused
naming both files.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._version import __version__
from ..exceptions import StoreError
from ..schema import COLUMNS, CONDITIONS, DieData, table_to_dies, validate_table
from ._dies import read_die, write_die
from ._file import check_writable, init_root, open_store, rewrite
from ._h5 import STR, attr, dumps, key, now
from ._positions import apply_positions

#: Rejected-line messages kept per source file.
MAX_REJECTED = 20


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
    left_out : list of (str, str)
        Files of the same ingest left out because no reader recognises them:
        (path, reason). They are also in the provenance record
        (``skipped_beside``) of every file this ingest added.
    write_seconds : float
        Wall time spent writing the new or changed dies into the HDF5 file (their
        datasets and attributes, compression included). Reading the files, splitting
        and merging the reads, copying the untouched dies and moving the new file in
        place are not counted. 0.0 when the store was not rewritten.
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
    write_seconds: float = 0.0
    left_out: list = field(default_factory=list)

    @property
    def skipped(self) -> list:
        """Paths of the duplicate files that added nothing."""
        return [p for p, _ in self.duplicates]

    @property
    def changed(self) -> bool:
        """True when the store was rewritten."""
        return bool(self.files)


@dataclass
class TableResult:
    """A read result made of a bare table (see :meth:`CampaignStore.ingest_table`)."""

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


def read_sources(f) -> list[dict]:
    """The provenance records of an open store, in ingest order."""
    if "sources" not in f:
        return []
    return [json.loads(s) for s in f["sources"].asstr()[...]]


def ingest(path: Path, results: Iterable, skipped=(), positions=None) -> IngestSummary:
    """Add the read results (and die ``positions``, a DiePositions) to the store ``path`` (see :meth:`CampaignStore.ingest`)."""
    left_out = [(str(p), str(why)) for p, why in skipped]
    beside = [f"{p}: {why}" for p, why in left_out[:MAX_REJECTED]]
    if len(left_out) > MAX_REJECTED:
        beside.append(f"... and {len(left_out) - MAX_REJECTED} more")
    if path.exists():
        with open_store(path) as f:
            old_sources = read_sources(f)
        check_writable(path)  # before any raw file is read
    else:
        old_sources = []
    known = {s["sha256"]: s["path"] for s in old_sources}
    summary = IngestSummary(store=str(path), left_out=left_out)
    parts: dict[tuple[str, str], list] = {}
    new_sources: list[dict] = []
    for res in results:
        res_path = getattr(res, "path", None)
        label = str(res_path) if res_path is not None else "<table>"
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
        dies = table_to_dies(table, source=label)
        stored = len(table)
        del table  # with ``del res`` below: only one file's table is alive at a time
        record = _source_record(res, index=index, label=label, sha=sha, size=size, stored=stored, dies=dies)
        if beside:
            record["skipped_beside"] = beside
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
    if not new_sources and path.exists() and positions is None:
        return summary
    paths = [s["path"] for s in old_sources] + [s["path"] for s in new_sources]
    with rewrite(path) as (old, new):
        init_root(old, new)
        meas = new.create_group("measurements")
        if old is not None and "measurements" in old:
            for wkey, wgroup in old["measurements"].items():
                for dkey, dgroup in wgroup.items():
                    k = (attr(dgroup, "wafer"), attr(dgroup, "die"))
                    if k in parts:
                        parts[k].insert(0, read_die(dgroup, with_source=True))
                    else:
                        dst = meas.require_group(wkey)
                        dst.attrs["wafer"] = k[0]
                        old.copy(dgroup, dst, name=dkey)
        for k in sorted(parts):
            die, source = _merge(parts[k], paths)
            parts[k] = None  # free the pieces as we go
            wgroup = meas.require_group(key(k[0]))
            wgroup.attrs["wafer"] = k[0]
            t = time.perf_counter()
            write_die(wgroup, die, source)
            summary.write_seconds += time.perf_counter() - t
            summary.dies.append(k)
        if positions is not None:
            summary.notes.extend(apply_positions(meas, positions))
        records = [dumps(s) for s in old_sources + new_sources]
        new.create_dataset("sources", data=np.array(records, dtype=object), dtype=STR)
        if old is not None and "fit" in old:
            old.copy(old["fit"], new, name="fit")
            if new_sources:
                summary.notes.append(
                    f"the fit saved at {attr(old['fit'], 'fitted_at')} predates these "
                    f"measurements; run `hfox-fit fit {path}` again."
                )
    return summary


def _source_record(res, *, index: int, label: str, sha: str, size: int, stored: int, dies) -> dict:
    """The provenance record (a row of ``/sources``) of one newly ingested read result."""
    return {
        "index": index,
        "path": label,
        "sha256": sha,
        "size": size,
        "ingested_at": now(),
        "hfox_fit_version": __version__,
        "format": str(getattr(res, "format", "") or ""),
        "rows_read": int(getattr(res, "rows_read", stored)),
        "rows_stored": stored,
        "rows_rejected": int(getattr(res, "rows_rejected", 0)),
        "rejected": [str(m) for m in list(getattr(res, "rejected", []) or [])[:MAX_REJECTED]],
        "notes": [str(m) for m in (getattr(res, "notes", []) or [])],
        "metadata": json.loads(dumps(getattr(res, "metadata", {}) or {})),
        "dies": [[d.wafer, d.die] for d in dies],
    }


# ------------------------------------------------------------------ SHA-256
def sha256_file(path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read 1 MiB at a time."""
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
            return sha256_file(path)
        except OSError as err:
            raise StoreError(f"cannot read {str(path)!r} to record its SHA-256: {err}.") from err
    return sha256_table(res.table), 0


def sha256_table(table: pd.DataFrame) -> str:
    """SHA-256 (hex) of a table's content: what stands for the file of a bare table."""
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


# ------------------------------------------------------------------ merging
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

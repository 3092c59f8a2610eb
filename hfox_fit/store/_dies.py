"""The reads of one die in the store: the group ``/measurements/<wafer>/<die>`` written and read back.

The per-read arrays are chunked (about 1 MiB) and compressed with LZF + shuffle;
the group's attributes hold the ids and the counts that :meth:`CampaignStore.summary`
adds up without reading any array.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from ..schema import CONDITIONS, UNITS, DieData
from ._h5 import COMPRESSION, STR, attr, dumps, key

_CHUNK_BYTES = 1 << 20


def die_index(f) -> dict[tuple[str, str], str]:
    """``{(wafer, die): HDF5 path of its group}`` of an open store."""
    out = {}
    if "measurements" not in f:
        return out
    for wgroup in f["measurements"].values():
        for dgroup in wgroup.values():
            out[(attr(dgroup, "wafer"), attr(dgroup, "die"))] = dgroup.name
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


def write_die(parent: h5py.Group, d: DieData, source: np.ndarray) -> None:
    """Write die ``d`` as a new group of the wafer group ``parent``; ``source`` is its file per train."""
    g = parent.create_group(key(d.die))
    present = np.asarray(d.present, bool)
    g.attrs["wafer"] = d.wafer
    g.attrs["die"] = d.die
    g.attrs["n_cells"] = d.n_cells
    g.attrs["n_cycles"] = d.n_cycles
    g.attrs["n_pulses"] = d.n_pulses
    g.attrs["n_trains"] = int(present.any(axis=2).sum())
    g.attrs["n_reads"] = int(present.sum())
    g.attrs["n_failed"] = int((present & np.isnan(d.resistance)).sum())
    g.attrs["attrs"] = dumps(d.attrs or {})
    g.create_dataset("devices", data=np.asarray(d.devices, dtype=object), dtype=STR)
    g.create_dataset("cycles", data=np.asarray(d.cycles, dtype="int64"))
    chunks = _chunks(d.resistance.shape)
    ds = g.create_dataset("resistance", data=np.asarray(d.resistance, "float64"), chunks=chunks, **COMPRESSION)
    ds.attrs["unit"] = UNITS["resistance"]
    g.create_dataset("present", data=present, chunks=chunks, **COMPRESSION)
    for col in CONDITIONS:
        ds = g.create_dataset(col, data=np.asarray(getattr(d, col), "float64"))
        ds.attrs["unit"] = UNITS[col]
    g.create_dataset("source", data=np.asarray(source, "int32"))


def read_die(g: h5py.Group, *, with_source: bool = False):
    """The :class:`DieData` of a die group (and its source per train when ``with_source``)."""
    d = DieData(
        wafer=attr(g, "wafer"),
        die=attr(g, "die"),
        devices=np.asarray(g["devices"].asstr()[...], dtype=str),
        cycles=g["cycles"][...].astype("int64"),
        resistance=g["resistance"][...],
        present=g["present"][...].astype(bool),
        v_read=g["v_read"][...],
        v_pulse=g["v_pulse"][...],
        pulse_width=g["pulse_width"][...],
        attrs=json.loads(attr(g, "attrs") or "{}"),
    )
    if with_source:
        return d, g["source"][...]
    return d


class StoredDie:
    """One die of a campaign store, read where it is called (a worker opens the store read-only).

    What a parallel fit sends to a worker instead of the die's arrays: the store's path and the
    die's names (``CampaignFitter(...).fit([StoredDie(path, w, d) for w, d in
    CampaignStore(path).dies()])``). The path must be reachable from the worker (see the README).
    """

    def __init__(self, path, wafer: str, die: str):
        self.path, self.wafer, self.die = str(path), str(wafer), str(die)
        self.name = f"{self.wafer}/{self.die}"

    def __repr__(self) -> str:
        return f"StoredDie({self.path!r}, {self.wafer!r}, {self.die!r})"

    def __call__(self):
        from ._campaign import CampaignStore

        return CampaignStore(self.path).read_die(self.wafer, self.die)

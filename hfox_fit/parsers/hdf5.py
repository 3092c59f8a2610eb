"""``hdf5``: array dumps of the acquisition software.

::

    /<wafer>/<die>/<array>/        group; attrs v_read, v_pulse, pulse_width (float)
    /<wafer>/<die>/<array>/row     int [devices]
    /<wafer>/<die>/<array>/col     int [devices]
    /<wafer>/<die>/<array>/i_read  float64 [devices, cycles, pulses + 1] (A; NaN = failed read)

A dataset of shape [devices, pulses + 1] is a single cycle. Every element of
``i_read`` is a read (cycle = index on axis 1, pulse = index on the last axis).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import FormatError, ParseError
from ._base import Parser, ReadResult, read_result
from ._common import (
    Notes,
    Rejects,
    bad_current,
    build_table,
    check_file,
    check_one_condition_per_train,
    check_writable_ids,
    codes_of,
    current_message,
    device_id,
    resolve,
    resolve_v_read,
    split_devices,
)

__all__ = ["Hdf5Parser"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EXPECTED = "expected /<wafer>/<die>/<array>/ groups holding row, col and i_read"
#: The root ``format`` attribute of a campaign store (``hfox_fit.store``'s ``FORMAT``, restated: parsers sit
#: below the store; a test holds the two equal).
STORE_FORMAT = "hfox_fit.campaign"


class Hdf5Parser(Parser):
    """Reader and writer of the acquisition software's HDF5 array dumps."""

    name = "hdf5"
    suffixes = (".h5", ".hdf5", ".hdf")
    description = "acquisition HDF5 dump: /<wafer>/<die>/<array>/{row, col, i_read}"

    def sniff(self, head: bytes, path=None) -> bool:
        # The superblock sits at offset 0, or at 512, 1024, ... after a user block.
        return any(head.startswith(_SIGNATURE, off) for off in (0, 512, 1024, 2048, 4096))

    def read(self, path, *, wafer=None, die=None, v_read=None, on_bad_lines="error") -> ReadResult:
        """Read an HDF5 dump; see :func:`hfox_fit.parsers.read_measurements`."""
        import h5py

        path = check_file(Path(path))
        reader = _Hdf5Reader(path, wafer, die, v_read, Rejects(path, on_bad_lines))
        try:
            fh = h5py.File(path, "r")
        except (OSError, ValueError) as err:
            raise ParseError(f"not a readable HDF5 file ({err}); {_EXPECTED}.", path=path) from err
        with fh:
            if fh.attrs.get("format") in (STORE_FORMAT, STORE_FORMAT.encode()):
                raise ParseError(
                    "is an hfox_fit campaign store, not a raw acquisition dump; move it out of the raw files "
                    "(a store is what `hfox-fit ingest --store` writes and `fit`, `report` and `export` read).",
                    path=path)
            try:
                reader.walk(fh)
            except ParseError:
                raise
            except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as err:
                raise ParseError(
                    f"cannot read HDF5 object {reader.where!r} ({type(err).__name__}: {err}); the file "
                    "may be damaged or truncated.",
                    path=path,
                ) from err
        return reader.result()

    def write(self, table: pd.DataFrame, path, *, compression=None) -> list[Path]:
        """Write the table as one HDF5 file ``path`` (groups per wafer, die and array).

        Each (wafer, die, array) needs a full grid of reads (every device, cycle
        0..n-1 and pulse 0..p, failed reads as NaN) and one v_read, v_pulse and
        pulse_width, since the layout has no place for anything else.

        Parameters
        ----------
        compression : str, optional
            h5py compression of ``i_read`` (e.g. ``"gzip"``).
        """
        import h5py

        path = Path(path)
        check_writable_ids(table, self.name)
        arrays, rows, cols = split_devices(table, self.name)
        dev = table["device"].cat.codes.to_numpy()
        frame = table.assign(_array=arrays[dev], _row=rows[dev], _col=cols[dev])
        check_one_condition_per_train(frame, ["wafer", "die", "_array"], self.name)
        groups = []
        for (wafer, die, array), part in frame.groupby(["wafer", "die", "_array"], sort=True, observed=True):
            where = f"{wafer}/{die}/{array}"
            conds = {c: float(part[c].iloc[0]) for c in ("v_read", "v_pulse", "pulse_width")}
            devices = part.drop_duplicates("device").sort_values(["_row", "_col"])
            d_index = pd.Index(devices["device"].astype(str))
            d = d_index.get_indexer(part["device"].astype(str))
            cyc = part["cycle"].to_numpy()
            pulse = part["pulse"].to_numpy()
            n_c, n_p = int(cyc.max()) + 1, int(pulse.max()) + 1
            if len(part) != len(d_index) * n_c * n_p:
                raise FormatError(
                    f"cannot write {where} in the hdf5 format: it holds {len(part)} reads, not the full "
                    f"grid of {len(d_index)} devices x {n_c} cycles (0..{n_c - 1}) x {n_p} pulses "
                    f"(0..{n_p - 1}). Fill the missing reads with NaN, or write the tidy format."
                )
            grid = np.full((len(d_index), n_c, n_p), np.nan)
            grid[d, cyc, pulse] = part["v_read"].to_numpy() / part["resistance"].to_numpy()
            groups.append((str(wafer), str(die), str(array), devices, grid, conds))
        with h5py.File(path, "w") as fh:
            for wafer, die, array, devices, grid, conds in groups:
                g = fh.require_group(wafer).require_group(die).create_group(array)
                for k, v in conds.items():
                    g.attrs[k] = v
                g.create_dataset("row", data=devices["_row"].to_numpy(np.int64))
                g.create_dataset("col", data=devices["_col"].to_numpy(np.int64))
                g.create_dataset("i_read", data=grid, compression=compression)
        return [path]


class _Hdf5Reader:
    def __init__(self, path, wafer, die, v_read, rejects):
        self.path = path
        self.args = {"wafer": wafer, "die": die, "v_read": v_read}
        self.rejects = rejects
        self.notes = Notes()
        self.where = "/"
        self.parts: list = []
        self.rows_read = 0
        self.groups: list = []

    def walk(self, fh) -> None:
        import h5py

        found = False
        for wname, wgroup in fh.items():
            self.where = f"/{wname}"
            if not isinstance(wgroup, h5py.Group):
                self.notes.add(f"{self.where} is not a wafer group: ignored")
                continue
            for dname, dgroup in wgroup.items():
                self.where = f"/{wname}/{dname}"
                if not isinstance(dgroup, h5py.Group):
                    self.notes.add(f"{self.where} is not a die group: ignored")
                    continue
                for aname, agroup in dgroup.items():
                    self.where = f"/{wname}/{dname}/{aname}"
                    if not isinstance(agroup, h5py.Group):
                        self.notes.add(f"{self.where} is not an array group: ignored")
                        continue
                    self._array(agroup, wname, dname, aname)
                    found = True
        if not found:
            raise ParseError(f"no array group in the file; {_EXPECTED}.", path=self.path)

    def _fail(self, msg: str, where: str | None = None):
        raise ParseError(msg, path=self.path, line=where or self.where)

    def _array(self, g, wname: str, dname: str, aname: str) -> None:
        import h5py

        base = self.where
        for name in ("row", "col", "i_read"):
            if name not in g:
                self._fail(f"no dataset {name!r}; {_EXPECTED}.")
            if not isinstance(g[name], h5py.Dataset):
                self._fail(f"expected a dataset, saw a {type(g[name]).__name__}; {_EXPECTED}.", f"{base}/{name}")
        self.where = f"{base}/row"
        row = self._ints(g["row"])
        self.where = f"{base}/col"
        col = self._ints(g["col"])
        self.where = f"{base}/i_read"
        ds = g["i_read"]
        if ds.dtype.kind != "f" or ds.ndim not in (2, 3):
            self._fail(
                f"expected a float dataset of shape [devices, cycles, pulses + 1] or [devices, pulses + 1], "
                f"saw {ds.dtype} {ds.shape}"
            )
        i_read = np.asarray(ds[()], dtype=np.float64)
        if i_read.ndim == 2:
            i_read = i_read[:, None, :]
        if not (len(row) == len(col) == i_read.shape[0]):
            self._fail(
                f"expected one row and col per device (first axis of i_read, {i_read.shape[0]}), saw "
                f"{len(row)} rows and {len(col)} cols", base,
            )
        rc = row.astype(np.int64) * (int(col.max(initial=0)) + 1) + col
        if len(np.unique(rc)) != len(rc):
            self._fail("two devices share a (row, col) pair; expected each cell once", f"{base}/row")
        self.where = base
        extra = sorted(set(g) - {"row", "col", "i_read"})
        if extra:
            self.notes.add(f"{base}: dataset(s) {extra} ignored")
        conds = {}
        for key in ("v_read", "v_pulse", "pulse_width"):
            conds[key] = self._attr(g, key)
        ids = {}
        for key, value in (("wafer", wname), ("die", dname)):
            ids[key] = resolve(key, file=value, arg=self.args[key], notes=self.notes, where=base)
        v = resolve_v_read(file=conds["v_read"], arg=self.args["v_read"], notes=self.notes, where=base)
        for key in ("v_pulse", "pulse_width"):
            if conds[key] is None:
                conds[key] = math.nan
                self.notes.add(f"{key} unknown (no {key!r} attribute on the array groups): NaN")
        n = i_read.size
        self.rows_read += n
        flat = i_read.reshape(-1)
        bad = bad_current(flat)
        keep = None
        if bad.any():
            pos = np.flatnonzero(bad)
            shape = i_read.shape
            where = f"{base}/i_read"

            def label(i, pos=pos):
                d, c, p = np.unravel_index(pos[i], shape)
                return f"{where}[{d}, {c}, {p}]"

            self.rejects.add_many(pos, lambda i, pos=pos: current_message(float(flat[pos[i]])), labels=label)
            self.rejects.flush()
            keep = ~bad
        d_idx, c_idx, p_idx = np.unravel_index(np.arange(n), i_read.shape)
        current = flat
        if keep is not None:
            d_idx, c_idx, p_idx, current = d_idx[keep], c_idx[keep], p_idx[keep], flat[keep]
        names = [device_id(aname, int(r), int(c)) for r, c in zip(row.tolist(), col.tolist())]
        self.parts.append((str(ids["wafer"]), str(ids["die"]), names, d_idx, c_idx, p_idx, v / current, v,
                           conds["v_pulse"], conds["pulse_width"]))
        self.groups.append({"path": base, "shape": list(ds.shape), "v_read": v,
                            "v_pulse": conds["v_pulse"], "pulse_width": conds["pulse_width"]})

    def _ints(self, ds) -> np.ndarray:
        if ds.dtype.kind not in "iu" or ds.ndim != 1:
            self._fail(f"expected a 1-D integer dataset [devices], saw {ds.dtype} {ds.shape}")
        values = np.asarray(ds[()], dtype=np.int64)
        if (values < 0).any():
            self._fail(f"expected non-negative numbers, saw {int(values.min())}")
        return values

    def _attr(self, g, key: str):
        if key not in g.attrs:
            return None
        value = np.asarray(g.attrs[key])
        if value.size != 1 or value.dtype.kind not in "iuf":
            self._fail(f"attribute {key!r} must be one number, saw {value!r}")
        value = float(value.reshape(-1)[0])
        if key == "v_read" and not (value > 0 and math.isfinite(value)):
            self._fail(f"attribute 'v_read' must be a positive read voltage in V, saw {value!r}")
        return value

    def result(self) -> ReadResult:
        parts = self.parts
        counts = [len(p[3]) for p in parts]
        wcodes, wafers = codes_of([p[0] for p in parts])
        dcodes, dies = codes_of([p[1] for p in parts])
        dev_names: dict = {}
        dev_codes = []
        for p in parts:
            lookup = np.array([dev_names.setdefault(name, len(dev_names)) for name in p[2]], np.int64)
            dev_codes.append(lookup[p[3]])
        cat = np.concatenate
        table = build_table(
            {
                "wafer": (np.repeat(wcodes, counts), wafers),
                "die": (np.repeat(dcodes, counts), dies),
                "device": (cat(dev_codes) if parts else np.zeros(0, np.int64), list(dev_names)),
            },
            {
                "cycle": cat([p[4] for p in parts]).astype(np.int64),
                "pulse": cat([p[5] for p in parts]).astype(np.int64),
                "resistance": cat([p[6] for p in parts]),
                "v_read": np.repeat([p[7] for p in parts], counts).astype(np.float64),
                "v_pulse": np.repeat([p[8] for p in parts], counts).astype(np.float64),
                "pulse_width": np.repeat([p[9] for p in parts], counts).astype(np.float64),
            },
        )
        return read_result(
            table, self.path, "hdf5", rows_read=self.rows_read, rejects=self.rejects, notes=self.notes,
            metadata={"groups": self.groups},
        )

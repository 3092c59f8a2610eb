"""How values go into HDF5 and come back: link names, attributes, JSON text, data frames, arrays.

Nothing here knows about campaigns; the die layout is in :mod:`._dies`, the fit's
in :mod:`._fit`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import quote

import h5py
import numpy as np
import pandas as pd

from ..exceptions import StoreError

#: Filter of the per-read arrays (measured: ~20e6 reads/s written, 30 % smaller than raw).
COMPRESSION = {"compression": "lzf", "shuffle": True}

#: Variable-length UTF-8 string type of every text dataset.
STR = h5py.string_dtype("utf-8")


def now() -> str:
    """The current UTC time as ISO text (milliseconds), as the store's time attributes hold it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def dumps(obj) -> str:
    """JSON text of ``obj`` as the store writes it in attributes and text datasets.

    Not :func:`hfox_fit._json.json_safe`: the store keeps NaN and infinities
    (``NaN``, ``Infinity``, read back as floats by :func:`json.loads`) where
    json_safe writes null, and it writes any other object (a set, a timestamp)
    rather than failing. numpy scalars and arrays become Python numbers and lists.
    """
    return json.dumps(obj, default=_json_default, ensure_ascii=False)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def key(name: str) -> str:
    """HDF5 link name of an id (``/`` and ``%`` are not allowed or ambiguous)."""
    k = quote(str(name), safe=" !#$&'()*+,-.:;<=>?@[]^_`{|}~")
    return "%2E" + k[1:] if k.startswith(".") else k


def attr(obj, name, default=None):
    """An attribute of a group, dataset or file, bytes decoded to str."""
    v = obj.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


# ------------------------------------------------------------- frames and arrays
def write_frame(g: h5py.Group, df: pd.DataFrame) -> None:
    """Write ``df`` into the empty group ``g``: one dataset per column, the index as columns."""
    index_names = None
    if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
            and df.index.name is None):
        index_names = [None if n is None else str(n) for n in df.index.names]
        df = df.reset_index(names=[f"__index_{i}__" for i in range(df.index.nlevels)])
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise StoreError(f"save_fit: the cells table has duplicated column names {names}.")
    g.attrs["columns"] = dumps(names)
    g.attrs["index"] = dumps(index_names)
    g.attrs["n_rows"] = len(df)
    na_group = None
    for i, (name, s) in enumerate(zip(names, (df.iloc[:, k] for k in range(df.shape[1])))):
        k = f"{i:04d}"
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
                na_group.create_dataset(k, data=na)
        ds = g.create_dataset(k, data=data, dtype=STR if data.dtype == object else None)
        ds.attrs["name"] = name
        ds.attrs["dtype"] = str(dtype)


def read_frame(g: h5py.Group) -> pd.DataFrame:
    """The data frame :func:`write_frame` wrote into ``g``."""
    names = json.loads(attr(g, "columns"))
    cols = {}
    for i, name in enumerate(names):
        k = f"{i:04d}"
        ds = g[k]
        dtype = attr(ds, "dtype")
        if ds.dtype.kind == "O":
            values = np.asarray(ds.asstr()[...], dtype=object)
            if "_na" in g and k in g["_na"]:
                values[g["_na"][k][...]] = None
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
    index_names = json.loads(attr(g, "index") or "null")
    if index_names:
        keys = [f"__index_{i}__" for i in range(len(index_names))]
        df = df.set_index(keys)
        df.index.names = index_names
    return df


def write_array(g: h5py.Group, name: str, arr) -> None:
    """Write one array (strings as UTF-8, large numeric ones compressed) as ``g[quote(name)]``."""
    a = np.asarray(arr)
    k = quote(name, safe="")
    if a.dtype.kind in "OUS":
        ds = g.create_dataset(k, data=a.astype(str).astype(object), dtype=STR)
        ds.attrs["kind"] = "str"
        return
    kw = COMPRESSION if a.nbytes > 1 << 16 and a.ndim >= 1 else {}
    g.create_dataset(k, data=a, **kw)


def read_array(ds: h5py.Dataset) -> np.ndarray:
    """The array :func:`write_array` wrote (a 0-d one as a scalar)."""
    if attr(ds, "kind") == "str":
        return np.asarray(ds.asstr()[...], dtype=str)
    return ds[()] if ds.shape == () else ds[...]

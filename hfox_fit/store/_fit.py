"""The fit kept in the store: the group ``/fit`` saved (replacing the previous one) and loaded back.

Beside the pooled fit, ``/fit/dies`` may hold each die's own result (what pooling needs of it,
as a tree of arrays, tables and JSON values made by the fitting layer), so that some dies can
be refitted and pooled again with the others (``hfox-fit fit STORE --only W03/D07``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import h5py
import numpy as np
import pandas as pd

from .._version import __version__
from ..exceptions import StoreError
from ._file import check_writable, init_root, open_store, rewrite
from ._h5 import STR, attr, dumps, now, read_array, read_frame, write_array, write_frame


@dataclass
class StoredFit:
    """A fit saved in a campaign store (see :meth:`CampaignStore.save_fit`)."""

    cells: pd.DataFrame
    summary: dict
    model: dict
    arrays: dict
    fitted_at: str
    history: list


def save_fit(path: Path, cells: pd.DataFrame, summary: dict, model: dict, arrays: dict | None = None,
             dies: dict | None = None, law: str | None = None) -> None:
    """Save a fit in the store ``path`` (see :meth:`CampaignStore.save_fit`).

    ``dies``: ``{"W03/D07": tree}``, each die's own result (a dict of arrays, data frames,
    nested dicts and JSON values), kept under ``/fit/dies`` with ``law``, the law asked for.
    """
    if not isinstance(cells, pd.DataFrame):
        raise StoreError(f"save_fit: cells must be a pandas DataFrame, got {type(cells).__name__}.")
    open_store(path).close()  # a missing or damaged store is refused first
    check_writable(path)  # then a read-only one, before any work
    summary_json, model_json = dumps(summary), dumps(model)
    with rewrite(path) as (old, new):
        for name in old:
            if name != "fit":
                old.copy(old[name], new, name=name)
        init_root(old, new)
        history = []
        if "fit" in old:
            history = json.loads(attr(old["fit"], "history") or "[]")
        fitted_at = now()
        history.append(fitted_at)
        g = new.create_group("fit")
        g.attrs["fitted_at"] = fitted_at
        g.attrs["history"] = dumps(history)
        g.attrs["hfox_fit_version"] = __version__
        g.attrs["n_sources"] = int(len(old["sources"])) if "sources" in old else 0
        g.create_dataset("summary", data=summary_json, dtype=STR)
        g.create_dataset("model", data=model_json, dtype=STR)
        write_frame(g.create_group("cells"), cells)
        ag = g.create_group("arrays")
        for name, arr in (arrays or {}).items():
            write_array(ag, str(name), arr)
        if dies is not None:
            dg = g.create_group("dies")
            dg.attrs["law"] = str(law)
            for name, tree in dies.items():
                _write_tree(dg.create_group(quote(str(name), safe="")), tree)


def _write_tree(g, tree: dict) -> None:
    """A dict of arrays, data frames, dicts (nested groups) and JSON values (one attribute) into ``g``."""
    values = {}
    for key, value in tree.items():
        name = quote(str(key), safe="")
        if isinstance(value, pd.DataFrame):
            sub = g.create_group(name)
            sub.attrs["kind"] = "frame"
            write_frame(sub, value)
        elif isinstance(value, dict):
            sub = g.create_group(name)
            sub.attrs["kind"] = "dict"
            _write_tree(sub, value)
        elif isinstance(value, np.ndarray):
            write_array(g, str(key), value)
        else:
            values[str(key)] = value
    g.attrs["values"] = json.dumps(values)


def _read_tree(g) -> dict:
    tree = json.loads(attr(g, "values") or "{}")
    for name, obj in g.items():
        key = unquote(name)
        if isinstance(obj, h5py.Group):
            tree[key] = read_frame(obj) if attr(obj, "kind") == "frame" else _read_tree(obj)
        else:
            tree[key] = read_array(obj)
    return tree


def load_die_results(path: Path) -> tuple[str | None, dict, bool]:
    """``(law, {"W03/D07": tree}, stale)``: each die's own result saved with the fit (``(None, {}, stale)``
    when none was); ``stale`` when files were ingested after the fit (its per-die results may miss reads)."""
    with open_store(path) as f:
        if "fit" not in f:
            raise StoreError(f"no fit in {path.name!r}; run `hfox-fit fit {path}` first.")
        n_sources = int(len(f["sources"])) if "sources" in f else 0
        stale = int(f["fit"].attrs.get("n_sources", n_sources)) != n_sources
        if "dies" not in f["fit"]:
            return None, {}, stale
        g = f["fit"]["dies"]
        return attr(g, "law"), {unquote(name): _read_tree(sub) for name, sub in g.items()}, stale


def load_fit(path: Path) -> StoredFit:
    """The fit saved in the store ``path`` (see :meth:`CampaignStore.load_fit`)."""
    with open_store(path) as f:
        if "fit" not in f:
            raise StoreError(f"no fit in {path.name!r}; run `hfox-fit fit {path}` first.")
        g = f["fit"]
        arrays = {}
        for name, ds in g["arrays"].items():
            arrays[unquote(name)] = read_array(ds)
        return StoredFit(
            cells=read_frame(g["cells"]),
            summary=json.loads(g["summary"].asstr()[()]),
            model=json.loads(g["model"].asstr()[()]),
            arrays=arrays,
            fitted_at=attr(g, "fitted_at"),
            history=json.loads(attr(g, "history") or "[]"),
        )


def save_fit_summary(path: Path, summary: dict, fitted_at: str) -> None:
    """Replace the summary of the fit saved in ``path`` (see :meth:`CampaignStore.save_fit_summary`)."""
    open_store(path).close()  # a missing store is refused here, not created by the rewrite (which refuses a read-only one)
    summary_json = dumps(summary)
    with rewrite(path) as (old, new):
        if "fit" not in old:
            raise StoreError(f"no fit in {path.name!r}; run `hfox-fit fit {path}` first.")
        if attr(old["fit"], "fitted_at") != fitted_at:
            raise StoreError(f"the fit in {path.name!r} was replaced (fitted at {attr(old['fit'], 'fitted_at')}, "
                             f"not {fitted_at}) while its summary was being updated; nothing was written. Run the "
                             "command again on the new fit.")
        for name in old:
            old.copy(old[name], new, name=name)
        init_root(old, new)
        g = new["fit"]
        del g["summary"]
        g.create_dataset("summary", data=summary_json, dtype=STR)
        g.attrs["summary_updated_at"] = now()

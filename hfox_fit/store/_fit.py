"""The fit kept in the store: the group ``/fit`` saved (replacing the previous one) and loaded back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

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


def save_fit(path: Path, cells: pd.DataFrame, summary: dict, model: dict, arrays: dict | None = None) -> None:
    """Save a fit in the store ``path`` (see :meth:`CampaignStore.save_fit`)."""
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

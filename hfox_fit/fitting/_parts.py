"""Each die's own result as a plain tree (arrays, data frames, JSON values) for the store, and back.

A campaign fit pools the per-die results (:func:`~hfox_fit.fitting.campaign.pooled_part` of a
:class:`~hfox_fit.fitting._tables.DieDriftResult`, with the die's pulse conditions). Kept in the
store beside the fit, they let ``hfox-fit fit STORE --only W03/D07`` refit some dies and pool
them with the others' stored results: the same numbers as a full fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ._tables import DieDriftResult
from .pink import SpectrumStats
from .rtn import RTNStats

__all__ = ["part_to_tree", "part_from_tree"]


def _plain(value):
    """``value`` with numpy scalars as Python ones, dicts and lists walked (arrays and frames kept)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fields(obj, skip=()) -> dict:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name not in skip}


def part_to_tree(res: DieDriftResult, conditions: pd.DataFrame) -> dict:
    """The tree of one die's pooled result and its trains' conditions (see the module's docstring)."""
    tree = _fields(res, skip=("tables", "spectrum", "rtn", "mask_bits", "rtn_excess", "verify", "offset"))
    tree["tables"] = dict(res.tables)
    tree["spectrum"] = _fields(res.spectrum)
    tree["rtn"] = _fields(res.rtn, skip=("high",))
    tree["verify"] = {law: {str(k): float(v) for k, v in rows.items()} for law, rows in res.verify.items()}
    tree["has_offset"] = res.offset is not None
    if res.offset is not None:
        tree["offset"] = np.asarray(res.offset)
    tree["conditions"] = conditions
    return tree




def part_from_tree(tree: dict) -> tuple[DieDriftResult, pd.DataFrame]:
    """``(DieDriftResult, conditions)`` from :func:`part_to_tree`'s tree as the store gives it back."""
    tree = dict(tree)
    conditions = tree.pop("conditions")
    spectrum = SpectrumStats(**tree.pop("spectrum"))
    rtn_fields = tree.pop("rtn")
    rtn = RTNStats(**{**rtn_fields, "high": None})
    verify = tree.pop("verify")  # law -> {train: relative SSE change of lmfit}
    offset = tree.pop("offset", None) if tree.pop("has_offset") else None
    res = DieDriftResult(**{**tree, "spectrum": spectrum, "rtn": rtn, "verify": verify, "offset": offset,
                            "mask_bits": None, "rtn_excess": {}})
    return res, conditions

"""Helpers of the campaign-store tests: read results built from simulated wafers."""
# Imported by the tests as ``store_helpers`` (a unique module name beside tests/conftest.py).

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hfox_fit.schema import COLUMNS, dies_to_table
from hfox_fit.synth import make_wafer

KEY = list(COLUMNS[:5])


@dataclass
class FakeResult:
    """Stand-in for parsers.ReadResult (same fields), backed by a real file for the SHA-256."""

    table: pd.DataFrame
    path: Path
    format: str = "tidy"
    rows_read: int = -1
    rows_rejected: int = 0
    rejected: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.rows_read < 0:
            self.rows_read = len(self.table) + self.rows_rejected


def as_result(table: pd.DataFrame, path: Path, **kw) -> FakeResult:
    """Write a stand-in raw file whose bytes depend on the table, and wrap the table."""
    path = Path(path)
    digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()).hexdigest()
    path.write_text(f"# stand-in raw file\n{digest}\n{len(table)}\n")
    return FakeResult(table=table, path=path, **kw)


def sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for c in ("wafer", "die", "device"):
        out[c] = out[c].astype("string")
    return out.sort_values(KEY, kind="stable").reset_index(drop=True)


def wafer_table(wafer="W01", devices=40, pulses=12, cycles=2, seed=0) -> pd.DataFrame:
    """A simulated wafer as a measurement table, with failed reads (NaN) forced in."""
    w = make_wafer("paper", devices=devices, pulses=pulses, cycles=cycles, seed=seed, wafer=wafer)
    table = dies_to_table(w.dies)
    rng = np.random.default_rng(seed)
    n_nan = min(len(table), max(3, len(table) // 50))
    table.loc[rng.choice(len(table), size=n_nan, replace=False), "resistance"] = np.nan
    return table


def ragged(table: pd.DataFrame, seed=1) -> pd.DataFrame:
    """Cut each train at a random length and drop a few reads inside trains (never taken)."""
    rng = np.random.default_rng(seed)
    train = table.groupby(["wafer", "die", "device", "cycle"], observed=True).ngroup().to_numpy()
    cut = rng.integers(1, table["pulse"].max() + 2, size=train.max() + 1)
    keep = table["pulse"].to_numpy() < cut[train]
    keep &= rng.uniform(size=len(table)) > 0.03
    return table.loc[keep].reset_index(drop=True)


@pytest.fixture
def two_wafers() -> pd.DataFrame:
    """Two wafers, several dies (1024 cells per die), 2 cycles, ragged trains and NaN reads."""
    a = wafer_table("W01", devices=1100, pulses=6, cycles=2, seed=0)
    b = wafer_table("W02", devices=30, pulses=9, cycles=1, seed=1)
    b.loc[b["device"].isin(b["device"].unique()[::4]), "v_pulse"] = np.nan  # unknown condition
    return ragged(pd.concat([a, b], ignore_index=True))


def store_files(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir())

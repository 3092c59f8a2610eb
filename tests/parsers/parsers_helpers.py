"""Helpers of the parser tests (imported as ``parsers_helpers``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hfox_fit.parsers import read_measurements, write_measurements
from hfox_fit.schema import COLUMNS, dies_to_table
from hfox_fit.synth import MeasurementEffects, make_wafer

KEY = list(COLUMNS[:5])
DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


def sample_table(devices=6, pulses=4, cycles=2, seed=0, wafer="W01", failed=0.15, v_pulse=1.25) -> pd.DataFrame:
    """A small simulated table (no broken cells) with failed reads (NaN) in it."""
    effects = MeasurementEffects(stuck=0, abrupt=0, open=0, failed_read=failed, v_pulse=v_pulse)
    w = make_wafer("paper", devices=devices, pulses=pulses, cycles=cycles, seed=seed, wafer=wafer, effects=effects)
    return dies_to_table(w.dies)


def plain(table: pd.DataFrame) -> pd.DataFrame:
    """Ids as str, sorted by the key, fresh index: for comparing tables read from several files."""
    out = table.copy()
    for c in ("wafer", "die", "device"):
        out[c] = out[c].astype(str)
    return out.sort_values(KEY, kind="stable").reset_index(drop=True)


def assert_same_reads(got: pd.DataFrame, ref: pd.DataFrame, *, rtol: float = 0.0) -> None:
    """Same rows and values; resistance within ``rtol`` (0: bit for bit), NaN where NaN."""
    got, ref = plain(got), plain(ref)
    assert len(got) == len(ref)
    pd.testing.assert_frame_equal(got.drop(columns="resistance"), ref.drop(columns="resistance"))
    g, r = got["resistance"].to_numpy(), ref["resistance"].to_numpy()
    np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
    if rtol == 0:
        np.testing.assert_array_equal(g, r)
    else:
        np.testing.assert_allclose(g, r, rtol=rtol, atol=0)


def read_all(files, **kw) -> pd.DataFrame:
    """Read several files and stack their tables (ids as str)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [read_measurements(f, **kw).table for f in files]
    return plain(pd.concat([plain(p) for p in parts], ignore_index=True))


def roundtrip(table, path, fmt, *, read_kw=None, **options):
    files = write_measurements(table, path, fmt, **options)
    return files, read_all(files, **(read_kw or {}))

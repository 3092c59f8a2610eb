"""CampaignStore.save_fit / load_fit: round trip, replacement with history, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import as_result, sorted_table, wafer_table

from hfox_fit import StoreError
from hfox_fit.store import CampaignStore, StoredFit


@pytest.fixture
def store(tmp_path) -> CampaignStore:
    s = CampaignStore(tmp_path / "campaign.h5")
    s.ingest([as_result(wafer_table(devices=6, pulses=3), tmp_path / "raw.csv")])
    return s


def cells_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "wafer": pd.array(["W01", "W01", "W02"], dtype="string"),
            "device": ["A1/r00c00", "A1/r00c01", "Ä2/r00c00"],  # object column, non-ASCII
            "flag": pd.Categorical(["ok", "stuck", "ok"]),
            "note": ["", None, "x"],  # missing and empty strings stay apart
            "m1": [1e-4, np.nan, 3e-4],
            "n_reads": np.array([10, 11, 12], dtype="int64"),
            "success": [True, False, True],
            "n_used": pd.array([3, None, 5], dtype="Int64"),
        }
    )


def test_no_fit_yet(store):
    with pytest.raises(StoreError, match=r"^no fit in 'campaign\.h5'; run `hfox-fit fit .*campaign\.h5` first\.$"):
        store.load_fit()
    assert store.summary()["fitted_at"] is None


def test_save_load_round_trip(store):
    cells = cells_frame()
    summary = {"law": "power", "nu": np.float64(0.031), "n": np.int64(3), "ci": np.array([1.0, 2.0]),
               "nested": {"ok": True, "stderr": None, "nan": float("nan")}}
    model = {"law": "power", "d2d": {"m1": {"dist": "lognormal", "median": 1e-4}}}
    arrays = {"residuals": np.random.default_rng(0).normal(size=(3, 200)), "scalar": np.float64(2.5),
              "devices": np.array(["a", "b"]), "time/s": np.arange(5)}
    table_before = store.read_table()
    store.save_fit(cells, summary, model, arrays)

    fit = store.load_fit()
    assert isinstance(fit, StoredFit)
    pd.testing.assert_frame_equal(fit.cells, cells)
    assert fit.summary["nu"] == 0.031 and fit.summary["n"] == 3 and fit.summary["ci"] == [1.0, 2.0]
    assert fit.summary["nested"]["stderr"] is None and np.isnan(fit.summary["nested"]["nan"])
    assert fit.model == model
    assert set(fit.arrays) == set(arrays)
    np.testing.assert_array_equal(fit.arrays["residuals"], arrays["residuals"])
    assert fit.arrays["scalar"] == 2.5
    np.testing.assert_array_equal(fit.arrays["devices"], ["a", "b"])
    np.testing.assert_array_equal(fit.arrays["time/s"], np.arange(5))
    assert fit.fitted_at.endswith("+00:00") and fit.history == [fit.fitted_at]
    # The measurements and provenance are carried over untouched.
    pd.testing.assert_frame_equal(store.read_table(), table_before)
    assert len(store.sources()) == 1
    assert store.summary()["fitted_at"] == fit.fitted_at
    with h5py.File(store.path, "r") as f:
        assert f["fit/cells"].attrs["n_rows"] == 3


def test_refit_replaces_and_keeps_history(store):
    store.save_fit(cells_frame(), {"run": 1}, {"law": "power"}, {"a": np.ones(3)})
    first = store.load_fit()
    store.save_fit(cells_frame().iloc[:1], {"run": 2}, {"law": "log"})
    second = store.load_fit()
    assert second.summary == {"run": 2} and second.model == {"law": "log"}
    assert len(second.cells) == 1 and second.arrays == {}
    assert second.history == [first.fitted_at, second.fitted_at]
    assert second.history[0] <= second.history[1]


def test_indexed_frames(store):
    by_device = cells_frame().set_index("device")
    store.save_fit(by_device, {}, {})
    pd.testing.assert_frame_equal(store.load_fit().cells, by_device)
    multi = cells_frame().set_index(["wafer", "device"])
    store.save_fit(multi, {}, {})
    got = store.load_fit().cells
    assert got.index.names == ["wafer", "device"]
    np.testing.assert_array_equal(got["m1"].to_numpy(), multi["m1"].to_numpy())


def test_save_fit_errors(tmp_path, store):
    with pytest.raises(StoreError, match="does not exist"):
        CampaignStore(tmp_path / "none.h5").save_fit(pd.DataFrame(), {}, {})
    with pytest.raises(StoreError, match="cells must be a pandas DataFrame, got dict"):
        store.save_fit({"a": [1]}, {}, {})
    with pytest.raises(StoreError, match="duplicated column names"):
        store.save_fit(pd.DataFrame([[1, 2]], columns=["a", "a"]), {}, {})


def test_big_json_is_not_an_attribute(store):
    summary = {"per_cell": [{"device": f"A1/r{i:02d}", "nu": i * 1e-3} for i in range(5000)]}
    store.save_fit(pd.DataFrame({"x": [1.0]}), summary, {})  # > 64 KiB: would fail as an HDF5 attribute
    assert store.load_fit().summary == summary


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.integers(1, 4),
    keep=st.floats(0.3, 1.0),
    seed=st.integers(0, 10_000),
)
def test_round_trip_property(tmp_path_factory, pieces, keep, seed):
    """Any subset of reads, cut into any files, comes back exactly."""
    tmp = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    table = wafer_table(devices=int(rng.integers(1, 12)), pulses=int(rng.integers(1, 6)),
                        cycles=int(rng.integers(1, 3)), seed=seed)
    table = table[rng.uniform(size=len(table)) < keep].reset_index(drop=True)
    if table.empty:
        return
    which = rng.integers(0, pieces, size=len(table))
    store = CampaignStore(tmp / "c.h5")
    for i in range(pieces):  # one ingest per file, so merging is exercised
        part = table[which == i].reset_index(drop=True)
        if len(part):
            store.ingest([as_result(part, tmp / f"p{i}.csv")])
    pd.testing.assert_frame_equal(sorted_table(store.read_table()), sorted_table(table))

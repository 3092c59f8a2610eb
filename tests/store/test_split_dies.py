"""The split of a table into dies: one function (schema.table_to_dies), whose fast path
on categorical ids (what ingest gets) agrees with its general path (any other ids)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfox_fit.exceptions import SchemaError
from hfox_fit.schema import table_to_dies
from hfox_fit.store import split_dies  # the former name, kept

FIELDS = ("devices", "cycles", "resistance", "present", "v_read", "v_pulse", "pulse_width")
NAMES = ["W01", "W2", "wé", "D01", "D10", "d", "A1/r00c00", "A1/r00c01", "A2/r07c15", "x", "10", "9"]


def random_table(seed: int, *, vary: bool, wide_cycles: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_train = int(rng.integers(1, 40))
    trains = pd.DataFrame({
        "wafer": rng.choice(NAMES[:3], n_train),
        "die": rng.choice(NAMES[3:6], n_train),
        "device": rng.choice(NAMES[6:], n_train),
        "cycle": rng.choice([0, 1, 2, 10**7] if wide_cycles else [0, 1, 2, 5], n_train),
        "v_read": rng.choice([0.1, 0.2], n_train),
        "v_pulse": rng.choice([1.25, np.nan], n_train),
        "pulse_width": rng.choice([1e-6, 2e-6], n_train),
    }).drop_duplicates(["wafer", "die", "device", "cycle"])
    rows = []
    for t in trains.itertuples(index=False):
        pulses = rng.choice(8, size=int(rng.integers(1, 8)), replace=False)
        for p in pulses:
            rows.append({**t._asdict(), "pulse": int(p)})
    table = pd.DataFrame(rows)
    table["resistance"] = np.where(rng.uniform(size=len(table)) < 0.1, np.nan,
                                   rng.uniform(1e3, 1e5, size=len(table)))
    if vary:
        i = int(rng.integers(len(table)))
        table.loc[i, "v_pulse"] = 1.5 if np.isnan(table.loc[i, "v_pulse"]) else np.nan
    table = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # any row order
    for col in ("wafer", "die", "device"):
        # Unsorted categories with an unused one: the fast path must not rely on canonical ids.
        cats = list(rng.permutation(sorted(set(table[col])))) + ["unused"]
        table[col] = pd.Categorical(table[col], categories=cats)
    return table[["wafer", "die", "device", "cycle", "pulse", "resistance", "v_read", "v_pulse", "pulse_width"]]


def test_store_splits_with_the_schema_function():
    assert split_dies is table_to_dies


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), vary=st.booleans(), wide=st.booleans())
def test_categorical_ids_split_as_string_ids(seed, vary, wide):
    table = random_table(seed, vary=vary, wide_cycles=wide)
    try:
        ref = table_to_dies(table.astype({c: str for c in ("wafer", "die", "device")}), source="t")
    except SchemaError as err:
        with pytest.raises(SchemaError) as got:
            table_to_dies(table, source="t")
        assert str(got.value) == str(err)
        return
    got = table_to_dies(table, source="t")
    assert [(d.wafer, d.die) for d in got] == [(d.wafer, d.die) for d in ref]
    for a, b in zip(got, ref):
        for name in FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_negative_cycles_take_the_general_cycle_index():
    table = random_table(5, vary=False, wide_cycles=False)
    table["cycle"] -= 3
    got = table_to_dies(table)
    ref = table_to_dies(table.astype({c: str for c in ("wafer", "die", "device")}))
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.cycles, b.cycles)
        np.testing.assert_array_equal(a.resistance, b.resistance)


def test_string_ids_and_empty_tables():
    table = random_table(3, vary=False, wide_cycles=False).astype({"device": "string"})
    got, ref = table_to_dies(table), table_to_dies(table.astype({"device": object}))
    assert len(got) == len(ref) > 0
    np.testing.assert_array_equal(got[0].resistance, ref[0].resistance)
    assert table_to_dies(table.iloc[:0]) == []

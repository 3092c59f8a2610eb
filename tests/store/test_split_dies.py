"""store.split_dies (the fast path of ingest) agrees with schema.table_to_dies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfox_fit.exceptions import SchemaError
from hfox_fit.schema import table_to_dies
from hfox_fit.store import split_dies

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
        # Unsorted categories with an unused one: split_dies must not rely on canonical ids.
        cats = list(rng.permutation(sorted(set(table[col])))) + ["unused"]
        table[col] = pd.Categorical(table[col], categories=cats)
    return table[["wafer", "die", "device", "cycle", "pulse", "resistance", "v_read", "v_pulse", "pulse_width"]]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), vary=st.booleans(), wide=st.booleans())
def test_split_dies_matches_table_to_dies(seed, vary, wide):
    table = random_table(seed, vary=vary, wide_cycles=wide)
    try:
        ref = table_to_dies(table.astype({c: str for c in ("wafer", "die", "device")}), source="t")
    except SchemaError as err:
        with pytest.raises(SchemaError) as got:
            split_dies(table, source="t")
        assert str(got.value) == str(err)
        return
    got = split_dies(table, source="t")
    assert [(d.wafer, d.die) for d in got] == [(d.wafer, d.die) for d in ref]
    for a, b in zip(got, ref):
        for name in FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype.kind == y.dtype.kind, name
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_split_dies_falls_back_for_string_ids():
    table = random_table(3, vary=False, wide_cycles=False).astype({"device": "string"})
    got, ref = split_dies(table), table_to_dies(table)
    assert len(got) == len(ref) > 0
    np.testing.assert_array_equal(got[0].resistance, ref[0].resistance)
    assert split_dies(table.iloc[:0]) == []

"""The measurement table: dtypes, validate_table, DieData conversions."""


import numpy as np
import pandas as pd
import pytest

from hfox_fit.exceptions import SchemaError
from hfox_fit.schema import (
    COLUMNS,
    DTYPES,
    dies_to_table,
    empty_table,
    id_dtype,
    table_to_dies,
    validate_table,
)
from hfox_fit.synth import make_wafer


@pytest.fixture(scope="module")
def table():
    return dies_to_table(make_wafer(devices=40, pulses=5, cycles=2, seed=1).dies)


def test_id_columns_are_categoricals_of_str():
    for col in ("wafer", "die", "device"):
        assert DTYPES[col] == "category"
    t = empty_table()
    assert list(t.columns) == list(COLUMNS)
    for col in ("wafer", "die", "device"):
        assert isinstance(t[col].dtype, pd.CategoricalDtype)
        assert pd.api.types.is_string_dtype(t[col].cat.categories.dtype)
    assert validate_table(t).dtypes.equals(t.dtypes)


def test_dies_to_table_gives_canonical_categories(table):
    for col in ("wafer", "die", "device"):
        cats = list(table[col].cat.categories)
        assert cats == sorted(cats) and len(cats) == table[col].nunique()
    assert table["device"].cat.categories[0] == "A1/r00c00"
    pd.testing.assert_frame_equal(validate_table(table), table)


def test_table_to_dies_and_back_keep_the_dtypes(table):
    back = dies_to_table(table_to_dies(table))
    pd.testing.assert_frame_equal(back, table)


def test_validate_coerces_str_ids_to_sorted_used_categories(table):
    loose = table.astype({"wafer": object, "die": "string", "device": str}).iloc[::-1]
    loose.index = np.arange(len(loose)) * 3 + 7
    out = validate_table(loose)
    assert isinstance(out.index, pd.RangeIndex) and out.index[0] == 0
    assert out["device"].dtype == table["device"].dtype
    np.testing.assert_array_equal(out["device"].astype(str), loose["device"].astype(str))
    assert loose["wafer"].dtype == object  # the input is not modified


def test_validate_drops_unused_and_sorts_categories(table):
    t = table.copy()
    t["die"] = t["die"].cat.set_categories(["Z9", "D01", "A0"])
    out = validate_table(t)
    assert list(out["die"].cat.categories) == ["D01"]
    assert (out["die"] == "D01").all()


def test_validate_merges_ids_that_print_alike(table):
    t = table.copy().astype({"wafer": object})
    t.loc[:9, "wafer"] = 1
    t.loc[10:, "wafer"] = "1"
    out = validate_table(t)
    assert list(out["wafer"].cat.categories) == ["1"]


def test_validate_shares_columns_of_the_right_dtype(table):
    out = validate_table(table)
    for col in ("cycle", "resistance"):
        assert np.shares_memory(out[col].to_numpy(), table[col].to_numpy())
    out.loc[0, "resistance"] = -5.0  # copy-on-write: the input keeps its value
    assert table.loc[0, "resistance"] > 0


def test_validate_reports_every_problem_at_once(table):
    bad = table.copy()
    bad["cycle"] = bad["cycle"].astype(float)
    bad.loc[3, "cycle"] = 1.5
    bad.loc[4, "pulse"] = -1
    bad.loc[5, "resistance"] = 0.0
    bad.loc[6, "resistance"] = np.inf
    bad.loc[7, "v_read"] = np.nan
    bad["device"] = bad["device"].astype(object)
    bad.loc[8, "device"] = ""
    with pytest.raises(SchemaError) as err:
        validate_table(bad, source="unit test")
    msg = str(err.value)
    assert msg.startswith("unit test: ")
    for part in ("empty 'device' (first at row 8)", "non-integer 'cycle' (first at row 3", "negative 'pulse'",
                 "zero or negative resistance", "infinite resistance", "positive finite v_read"):
        assert part in msg


def test_validate_lists_missing_and_extra_columns(table):
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['v_read'\]; unexpected column\(s\) \['x'\]"):
        validate_table(table.drop(columns="v_read").assign(x=1))


def test_validate_reports_non_numeric_values(table):
    bad = table.astype({"resistance": object})
    bad.loc[2, "resistance"] = "abc"
    bad.loc[3, "resistance"] = "nan"
    with pytest.raises(SchemaError, match=r"1 row\(s\) with a non-numeric 'resistance' \(first at row 2\)"):
        validate_table(bad)


@pytest.mark.parametrize("shuffle", [False, True])
def test_validate_finds_duplicated_keys(table, shuffle):
    t = pd.concat([table, table.iloc[[5]]], ignore_index=True)
    if shuffle:
        t = t.sample(frac=1, random_state=0)
    with pytest.raises(SchemaError, match=r"2 rows share a \(wafer, die, device, cycle, pulse\) key, e\.g\. "
                                          r"W01/D01/A1/r00c00 cycle 0 pulse 5"):
        validate_table(t)
    validate_table(table.sample(frac=1, random_state=0))  # unsorted but unique: fine


def test_id_dtype_sorts_categories():
    dt = id_dtype(["b", "a", "c"])
    assert list(dt.categories) == ["a", "b", "c"]

"""Behaviour unchanged: the example campaign and a synthetic wafer of each preset give the
recorded fit summary, devices table, checkpoint and report metrics.

On the machine the goldens were recorded on (same numpy/scipy/torch and SIMD level) the
numbers agree to 1e-12 relative: a reorganisation of the code must not move them. On another
CPU, optimisers fed last-bit differences (issue 16) may stop an iteration apart, so there the
comparison is 1e-6 relative: still far below any change of a draw, a law or a rule.
Re-record with ``python3 tests/golden/make_golden.py`` only for a deliberate change.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from golden_cases import CASES, GOLDEN, load_case, machine, run_case
from numeric_helpers import GOLDEN_RTOL, assert_close_arrays, assert_close_tree

FOREIGN_RTOL, FOREIGN_ATOL = 1e-6, 1e-12  # atol: values that are zero up to rounding


def _tolerance() -> dict:
    recorded = json.loads((GOLDEN / "machine.json").read_text())
    return {"rtol": GOLDEN_RTOL, "atol": 0.0} if recorded == machine() else {"rtol": FOREIGN_RTOL,
                                                                             "atol": FOREIGN_ATOL}


def _where() -> str:
    recorded = json.loads((GOLDEN / "machine.json").read_text())
    if recorded == machine():
        return "on the machine the goldens were recorded on"
    return (f"on another machine than the goldens' ({machine()} against {recorded}): if a library upgrade "
            "moved the numbers, check that the change is the library's, then re-record with "
            "`python3 tests/golden/make_golden.py`")


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_match_the_golden_record(name, tmp_path):
    if name == "example" and not (GOLDEN.parents[2] / "data" / "raw" / "truth.json").is_file():
        pytest.skip("data/ example campaign absent")
    tol = _tolerance()
    got, want = run_case(name, tmp_path), load_case(name)
    try:
        _compare(name, got, want, tol)
    except AssertionError as err:
        raise AssertionError(f"{err}\n(compared {_where()})") from None


def _compare(name, got, want, tol):
    for part in ("summary", "metrics", "checkpoint"):
        assert_close_tree(json.loads(json.dumps(got[part])), want[part], **tol, path=f"{name}.{part}")
    assert sorted(got["tensors"]) == sorted(want["tensors"])
    for key, value in want["tensors"].items():
        assert_close_arrays(got["tensors"][key], value, **tol, name=key)
    g, w = got["devices"], want["devices"]
    assert list(g.columns) == list(w.columns) and len(g) == len(w)
    for col in w.columns:
        if pd.api.types.is_float_dtype(w[col]) or pd.api.types.is_float_dtype(g[col]):
            assert_close_arrays(g[col].to_numpy(float), w[col].to_numpy(float), **tol, name=col)
        else:
            np.testing.assert_array_equal(g[col].fillna("").astype(str), w[col].fillna("").astype(str), err_msg=col)

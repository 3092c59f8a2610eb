"""Comparison of computed numbers across machines (imported as ``numeric_helpers``).

numpy's ``exp``/``log`` kernels, scipy and torch give results that differ in the last unit in
the last place between CPUs (AVX2 against AVX-512, say). Golden files written on one machine
are therefore compared to a tight relative tolerance, never with ``==``. Same seed, same
machine stays exact: those tests compare with ``==`` as before.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

# A few units in the last place of a double (2.2e-16): a real change in a draw or a law moves
# values by far more than this.
GOLDEN_RTOL = 1e-12


def assert_close_tree(got, want, *, rtol: float = GOLDEN_RTOL, atol: float = 0.0, path: str = "$") -> None:
    """Assert two JSON-like trees are equal, floats within ``rtol``; names the first mismatch.

    Dicts must have the same keys, lists the same length, strings, bools, ints and None must be
    equal; floats (and ints against floats) agree to ``rtol`` relative, or ``atol`` absolute (NaN only
    matches NaN).
    """
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: expected a dict, found {type(got).__name__}"
        assert set(got) == set(want), (f"{path}: keys differ: only in got {sorted(set(got) - set(want))}, "
                                       f"only in want {sorted(set(want) - set(got))}")
        for key in want:
            assert_close_tree(got[key], want[key], rtol=rtol, atol=atol, path=f"{path}.{key}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)), f"{path}: expected a list, found {type(got).__name__}"
        assert len(got) == len(want), f"{path}: length {len(got)} against {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close_tree(g, w, rtol=rtol, atol=atol, path=f"{path}[{i}]")
    elif isinstance(want, float) or (isinstance(got, float) and isinstance(want, Real)
                                     and not isinstance(want, bool)):
        assert isinstance(got, Real) and not isinstance(got, bool), f"{path}: expected a number, found {got!r}"
        g, w = float(got), float(want)
        if math.isnan(w) or math.isnan(g):
            assert math.isnan(w) and math.isnan(g), f"{path}: {g!r} against {w!r}"
        else:
            assert g == w or abs(g - w) <= max(rtol * max(abs(g), abs(w)), atol), (
                f"{path}: {g!r} against {w!r} (relative difference {abs(g - w) / max(abs(g), abs(w)):.3g}"
                f" > {rtol:g})")
    else:
        assert got == want, f"{path}: {got!r} against {want!r}"


def assert_close_arrays(got, want, *, rtol: float = GOLDEN_RTOL, atol: float = 0.0, name: str = "") -> None:
    """Arrays of the same shape and dtype kind; floats within ``rtol`` (NaN where NaN), others equal."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} against {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)

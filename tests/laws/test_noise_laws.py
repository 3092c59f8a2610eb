"""The noise laws: the pink-noise filter taps and the closed-form RTN transition probabilities."""

import numpy as np
import pytest

from hfox_fit.laws import pink_coefficients, rtn_transition_power


def test_pink_coefficients_of_the_paper():
    np.testing.assert_allclose(pink_coefficients(4, 0.5), [1.0, 0.5, 0.375, 0.3125])
    assert pink_coefficients().shape == (15,)
    np.testing.assert_array_equal(pink_coefficients(6, 0.0), [1, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(pink_coefficients(6, 1.0), np.ones(6))  # an integrator


@pytest.mark.parametrize("p_up,p_down", [(0.01, 0.05), (0.3, 0.2), (1e-4, 0.9)])
def test_rtn_transition_power_is_the_matrix_power(p_up, p_down):
    m = np.array([[1 - p_up, p_up], [p_down, 1 - p_down]])
    n = np.array([0, 1, 2, 7, 50])
    from_low, from_high = rtn_transition_power(p_up, p_down, n)
    assert from_low.shape == from_high.shape == n.shape
    for k, nk in enumerate(n):
        mk = np.linalg.matrix_power(m, int(nk))
        assert from_low[k] == pytest.approx(mk[0, 1], abs=1e-12)
        assert from_high[k] == pytest.approx(mk[1, 1], abs=1e-12)


def test_rtn_without_transitions_stays_where_it_is():
    from_low, from_high = rtn_transition_power(0.0, 0.0, np.arange(4))
    np.testing.assert_array_equal(from_low, 0.0)
    np.testing.assert_array_equal(from_high, 1.0)

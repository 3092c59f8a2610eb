"""The public vectorised solver recovers the parameters of synthetic rows of every law ``auto`` fits."""

import numpy as np
import pytest

from hfox_fit.fitting import fit_law_rows
from hfox_fit.laws import AUTO_LAWS, get_law

T = np.arange(1.0, 401.0)

TRUTH = {
    "two_slope": [{"m1": 2e-3, "t_star": 150.0, "m2": 3e-4, "c1": 0.05},
                  {"m1": 1e-3, "t_star": 260.0, "m2": -2e-4, "c1": 0.0}],
    "power": [{"a": 0.02, "b": 0.4, "c1": 0.01}, {"a": 0.005, "b": 0.8, "c1": 0.1}],
    "log": [{"a": 0.03, "tau": 20.0, "c1": 0.02}, {"a": 0.08, "tau": 150.0, "c1": -0.01}],
}


def _rows(name):
    law = get_law(name)
    truth = np.array([[row[p] for p in law.params] for row in TRUTH[name]])
    y = np.stack([law(T, **row) for row in TRUTH[name]])
    return law, truth, y


def test_every_auto_law_has_a_case():
    assert set(TRUTH) == set(AUTO_LAWS)


@pytest.mark.parametrize("name", AUTO_LAWS)
def test_noiseless_rows_are_recovered(name):
    law, truth, y = _rows(name)
    values, variance = fit_law_rows(name, T, y)
    assert values.shape == variance.shape == truth.shape == (len(TRUTH[name]), len(law.params))
    # the break is searched on a zooming grid: found to a small fraction of a pulse
    np.testing.assert_allclose(values, truth, rtol=1e-3, atol=5e-5)


@pytest.mark.parametrize("name", AUTO_LAWS)
def test_low_noise_rows_are_recovered_within_their_stderr(name):
    law, truth, y = _rows(name)
    rng = np.random.default_rng(0)
    noisy = y + 2e-4 * rng.standard_normal(y.shape)
    noisy[:, 5:40:7] = np.nan  # missing reads are left out
    values, variance = fit_law_rows(name, T, noisy)
    assert np.all(np.isfinite(values)) and np.all(variance > 0)
    stderr = np.sqrt(variance)
    assert np.all(np.abs(values - truth) < 5 * stderr), (values, truth, stderr)
    np.testing.assert_allclose(values, truth, rtol=0.1, atol=1e-3)


@pytest.mark.parametrize("name", AUTO_LAWS)
def test_zero_weight_equals_missing(name):
    _, _, y = _rows(name)
    rng = np.random.default_rng(1)
    noisy = y + 2e-4 * rng.standard_normal(y.shape)
    weight = np.ones_like(noisy)
    weight[:, 100:120] = 0.0
    missing = noisy.copy()
    missing[:, 100:120] = np.nan
    np.testing.assert_allclose(fit_law_rows(name, T, noisy, weight)[0], fit_law_rows(name, T, missing)[0],
                               rtol=1e-9)


def test_unknown_law_is_refused():
    from hfox_fit.exceptions import FitError

    with pytest.raises(FitError, match="unknown drift law"):
        fit_law_rows("cubic", T, np.zeros((1, len(T))))

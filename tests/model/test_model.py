"""DeviceModel, PinkNoise, TelegraphNoise: the population model as plain numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from hfox_fit import DeviceModel, FitError, ParameterLaw, PinkNoise, TelegraphNoise, preset_model
from hfox_fit.laws import get_law, pink_autocovariance, pink_coefficients
from hfox_fit.model import MODEL_PRESETS


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_presets_round_trip_through_json(name):
    m = preset_model(name)
    back = DeviceModel.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.to_dict() == m.to_dict()
    assert back.parameter_names == get_law(m.law).params + ("r0", "rtn_amplitude")


def test_pink_std_exponent_and_offset():
    p = PinkNoise.from_std(0.01, exponent=1.0, taps=15)
    assert p.std == pytest.approx(0.01, rel=1e-12) and p.exponent == 1.0
    b = pink_coefficients(15, 0.5)
    np.testing.assert_allclose(p.offset([0, 1, 2, 15, 100]),
                               p.alpha * 0.5 * np.array([0, b[0], b[:2].sum(), b.sum(), b.sum()]))
    # the autocovariance at lag 0 is the variance the std gives
    assert pink_autocovariance(p.alpha, p.d, 0.0, p.taps)[0] == pytest.approx(p.std**2, rel=1e-12)


def test_telegraph_stationary_high():
    assert TelegraphNoise(1e-3, 3e-3).stationary_high == pytest.approx(0.25)
    assert TelegraphNoise(0.0, 0.0).stationary_high == 0.0


def test_a_model_refuses_missing_laws_and_bad_correlations():
    m = preset_model("paper")
    d2d = dict(m.d2d)
    del d2d["m1"]
    with pytest.raises(FitError, match="lacks D2D laws"):
        DeviceModel("two_slope", d2d)
    with pytest.raises(FitError, match="correlation must be"):
        DeviceModel("two_slope", dict(m.d2d), correlation_names=["m1", "t_star"], correlation=np.eye(3))
    with pytest.raises(FitError, match="no D2D law"):
        DeviceModel("two_slope", dict(m.d2d), correlation_names=["nope"], correlation=np.eye(1))


def test_sampled_parameters_follow_the_laws_and_the_copula():
    m = preset_model("paper")
    d2d = dict(m.d2d)
    d2d["m1"] = ParameterLaw("lognorm", {"s": 0.5, "scale": 1e-3})
    d2d["c1"] = ParameterLaw("norm", {"loc": 0.0, "scale": 0.01})
    rho = 0.7
    model = DeviceModel("two_slope", d2d, correlation_names=["m1", "c1"], correlation=np.array([[1, rho], [rho, 1]]))
    p = model.sample_parameters(20_000, rng=3)
    assert set(p) == set(model.parameter_names)
    assert stats.kstest(p["m1"], d2d["m1"].cdf).pvalue > 1e-3
    # Spearman of a Gaussian copula: 6/pi asin(rho/2)
    expected = 6 / np.pi * np.arcsin(rho / 2)
    assert stats.spearmanr(p["m1"], p["c1"]).statistic == pytest.approx(expected, abs=0.02)


def test_simulate_shapes_switches_and_drift():
    m = preset_model("paper")
    w, cyc = m.simulate(300, 200, n_cycles=2, rng=1)
    assert w.shape == (300, 2, 201) and np.all(w[..., 0] == 0)
    assert set(cyc) == set(m.parameter_names) and cyc["m1"].shape == (300, 2)
    clean, cyc0 = m.simulate(50, 200, rng=1, d2d=False, pink=False, rtn=False)
    # no imperfection: every cell is the median cell on the law's line
    np.testing.assert_allclose(clean[:, 0, :], np.broadcast_to(clean[0, 0, :], (50, 201)))
    med = {k: np.array([m.d2d[k].median()]) for k in m.parameter_names}
    np.testing.assert_allclose(clean[0, 0, 1:], m.mean_w(np.arange(1, 201), med), rtol=1e-12)
    # pink adds its known mean offset, on average
    pink_only, _ = m.simulate(4000, 30, rng=2, d2d=False, pink=True, rtn=False)
    excess = (pink_only - clean[:1, :, :31]).mean(axis=(0, 1))
    np.testing.assert_allclose(excess[1:], m.pink.offset(np.arange(1, 31)), atol=4 * m.pink.std / np.sqrt(4000))


def test_rtn_occupancy_reaches_the_stationary_fraction():
    m = preset_model("paper")
    m.rtn = TelegraphNoise(0.02, 0.05)
    rtn = m.simulate_rtn(np.ones(4000), 400, np.random.default_rng(5))
    assert np.all(rtn[:, 0][rtn[:, 0] > 0] <= 1.0) and np.all(rtn >= 0)
    frac = (rtn[:, 200:] > 0).mean()
    assert frac == pytest.approx(m.rtn.stationary_high, abs=0.02)

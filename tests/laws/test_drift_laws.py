"""Every registered drift law: shape and broadcasting, its own description (bounds, start values, theta) is consistent."""

import pickle

import numpy as np
import pytest

from hfox_fit.exceptions import FitError
from hfox_fit.laws import AUTO_LAWS, DRIFT_LAWS, DriftLaw, get_law, two_slope

NAMES = sorted(DRIFT_LAWS)
T = np.arange(1.0, 1001.0)


@pytest.mark.parametrize("name", NAMES)
def test_the_law_describes_exactly_its_parameters(name):
    law = DRIFT_LAWS[name]
    assert law.name == name
    assert get_law(name) is law
    assert len(set(law.params)) == len(law.params)
    for what in (law.units, law.bounds, law.start):
        assert set(what) == set(law.params)
    assert law.theta in law.params
    assert set(law.break_params) <= set(law.params)
    assert set(law.no_break) == set(law.break_params)
    assert law.has_break == bool(law.break_params)
    assert law.description


@pytest.mark.parametrize("name", NAMES)
def test_bounds_contain_the_finite_start_values(name):
    law = DRIFT_LAWS[name]
    for p in law.params:
        lo, hi = law.bounds[p]
        assert lo < hi, p
        v = law.start[p]
        assert np.isfinite(v), p
        assert lo <= v <= hi, (p, v, (lo, hi))


@pytest.mark.parametrize("name", NAMES)
def test_w_at_the_start_values_is_finite(name):
    law = DRIFT_LAWS[name]
    w = law(T, **law.start)
    assert w.shape == T.shape
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("name", NAMES)
def test_call_by_name_is_the_formula(name):
    law = DRIFT_LAWS[name]
    positional = law.func(T, *(law.start[p] for p in law.params))
    np.testing.assert_array_equal(law(T, **law.start, unused=1.0), positional)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_broadcast_against_t(name):
    law = DRIFT_LAWS[name]
    n = 5
    # one row per cell: parameters of shape (n, 1), t of shape (T,)
    rows = {p: np.full((n, 1), law.start[p]) * np.linspace(0.9, 1.1, n)[:, None] for p in law.params}
    w = law(T, **rows)
    assert w.shape == (n, len(T))
    for i in (0, n - 1):
        one = law(T, **{p: float(v[i, 0]) for p, v in rows.items()})
        np.testing.assert_allclose(w[i], one, rtol=1e-14)
    assert np.shape(law(3.0, **law.start)) == ()


@pytest.mark.parametrize("name", NAMES)
def test_start_values_is_a_copy(name):
    law = DRIFT_LAWS[name]
    s = law.start_values()
    assert s == dict(law.start)
    s[law.theta] = -123.0
    assert law.start[law.theta] != -123.0


@pytest.mark.parametrize("name", NAMES)
def test_a_law_survives_pickling(name):
    # worker processes receive options and results that may name laws
    law = DRIFT_LAWS[name]
    back = pickle.loads(pickle.dumps(law))
    assert back == law
    np.testing.assert_array_equal(back(T, **back.start), law(T, **law.start))


def test_auto_laws_are_registered():
    assert AUTO_LAWS
    assert len(set(AUTO_LAWS)) == len(AUTO_LAWS)
    assert set(AUTO_LAWS) <= set(DRIFT_LAWS)


def test_unknown_law_is_a_clear_error():
    with pytest.raises(FitError, match=r"unknown drift law 'cubic'.*\['log', 'power', 'two_slope'\]"):
        get_law("cubic")


def test_two_slope_is_continuous_at_the_break():
    m1, t_star, m2, c1 = 2e-3, 150.0, 3e-4, 0.05
    eps = 1e-9
    left = two_slope(t_star - eps, m1, t_star, m2, c1)
    right = two_slope(t_star, m1, t_star, m2, c1)
    assert right == pytest.approx(m1 * t_star + c1)
    assert left == pytest.approx(right, abs=1e-10)
    assert two_slope(t_star + 100, m1, t_star, m2, c1) == pytest.approx(m1 * t_star + c1 + 100 * m2)


def test_fill_no_break_gives_the_straight_line():
    law = get_law("two_slope")
    assert law.has_break
    params = {"m1": np.array([1e-3, 2e-3]), "t_star": np.array([np.nan, 80.0]),
              "m2": np.array([np.nan, 5e-4]), "c1": np.array([0.1, 0.2])}
    filled = law.fill_no_break(dict(params))
    # no break seen: the law is the line m1 t + c1 over any reads
    w0 = law(T, **{k: v[0] for k, v in filled.items()})
    np.testing.assert_allclose(w0, 1e-3 * T + 0.1, rtol=1e-12)
    # a break seen: unchanged
    for k in params:
        assert filled[k][1] == params[k][1]


@pytest.mark.parametrize("name", [n for n in NAMES if not DRIFT_LAWS[n].has_break])
def test_laws_without_a_break_have_nothing_to_fill(name):
    law = DRIFT_LAWS[name]
    assert law.break_params == ()
    params = {p: np.array([law.start[p]]) for p in law.params}
    assert law.fill_no_break(dict(params)) == params


def test_an_inconsistent_law_is_refused():
    ok = dict(name="line", func=lambda t, m, c1: m * t + c1, params=("m", "c1"), units={"m": "1/pulse", "c1": "1"},
              bounds={"m": (-1.0, 1.0), "c1": (-5.0, 5.0)}, description="a line", start={"m": 0.0, "c1": 0.0},
              theta="m")
    DriftLaw(**ok)
    with pytest.raises(FitError, match="start"):
        DriftLaw(**{**ok, "start": {"m": 0.0}})
    with pytest.raises(FitError, match="theta"):
        DriftLaw(**{**ok, "theta": "tau"})
    with pytest.raises(FitError, match="break_params"):
        DriftLaw(**{**ok, "break_params": ("m",)})

"""The parameter-law families: scipy names and shapes, ParameterLaw round trips, cdf and ppf inverse, truncation."""

import numpy as np
import pytest
from scipy import stats

from hfox_fit.exceptions import FitError
from hfox_fit.laws import FAMILIES, ParameterLaw

EXAMPLES = {
    "norm": {"loc": 1.0, "scale": 0.2},
    "lognorm": {"s": 0.5, "loc": 0.0, "scale": 8e-4},
    "expon": {"loc": 3.74e-5, "scale": 6.56e-4},
    "gamma": {"a": 6.0, "loc": 0.0, "scale": 60.0},
    "weibull_min": {"c": 1.8, "loc": 0.0, "scale": 2.0},
    "uniform": {"loc": -1.0, "scale": 3.0},
}


def test_every_family_has_an_example():
    assert set(EXAMPLES) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shape_names_are_scipys(family):
    shapes = getattr(stats, family).shapes
    assert FAMILIES[family] == (tuple(s.strip() for s in shapes.split(",")) if shapes else ())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("truncated", [False, True])
def test_dict_round_trip(family, truncated):
    law = ParameterLaw(family, EXAMPLES[family])
    if truncated:
        law = ParameterLaw(family, EXAMPLES[family], (float(law.ppf(0.1)), float(law.ppf(0.9))))
    back = ParameterLaw.from_dict(law.to_dict())
    assert back == law
    assert back.to_dict() == law.to_dict()
    u = np.linspace(0.01, 0.99, 7)
    np.testing.assert_array_equal(back.ppf(u), law.ppf(u))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("truncated", [False, True])
def test_cdf_inverts_ppf(family, truncated):
    law = ParameterLaw(family, EXAMPLES[family])
    if truncated:
        law = ParameterLaw(family, EXAMPLES[family], (float(law.ppf(0.2)), float(law.ppf(0.7))))
    u = np.linspace(0.02, 0.98, 25)
    np.testing.assert_allclose(law.cdf(law.ppf(u)), u, atol=1e-9)
    assert law.median() == pytest.approx(float(law.ppf(0.5)))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_truncation_keeps_samples_and_density_inside(family):
    full = ParameterLaw(family, EXAMPLES[family])
    lo, hi = float(full.ppf(0.25)), float(full.ppf(0.75))
    law = ParameterLaw(family, EXAMPLES[family], (lo, hi))
    x = law.sample(2000, rng=1)
    assert x.min() >= lo and x.max() <= hi
    assert law.pdf(lo - abs(lo) - 1.0) == 0.0
    assert law.pdf(hi + abs(hi) + 1.0) == 0.0
    # the density inside is the untruncated one over the mass kept (here 1/2)
    mid = float(full.ppf(0.5))
    assert law.pdf(mid) == pytest.approx(2 * full.pdf(mid), rel=1e-9)


def test_bad_family_or_bounds_are_clear_errors():
    with pytest.raises(FitError, match="unknown distribution family 'cauchy'"):
        ParameterLaw("cauchy", {"loc": 0.0, "scale": 1.0})
    with pytest.raises(FitError, match="lo < hi"):
        ParameterLaw("norm", {"loc": 0.0, "scale": 1.0}, (1.0, 1.0))

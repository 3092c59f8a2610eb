"""Coverage of the population intervals over 40 synthetic wafers per preset (slow: ``pytest -m slow``).

Each wafer (512 cells x 1000 pulses, seeds 1000..1039 of ``paper`` and ``wafer_b``)
is fitted with the bootstrap on, and every 90 % interval of its summary is checked
against the model that made it (``benchmarks/bench_coverage.py``'s
``interval_checks``: the D2D medians, the family's parameters where the family
chosen is the true one, the copula correlations, pink std and RTN rates). About
10 minutes on 2 cores.

The bands: a 90 % interval covers the truth in a number of seeds that is binomial
(n, 0.9), standard deviation sqrt(0.09 / n): 4.7 % at 40 seeds.

* Pooled over the D2D medians of both presets (about 10 x 40 intervals, sd 1.5 %),
  coverage lies within 90 % +- 2 sd (the issue's 88-92 % for the true rate).
* Each quantity alone (40 seeds): coverage >= 90 % - 3 sd = 76 % (a false alarm
  in about 1 of 700 quantities, so the many quantities checked do not make the
  test flaky) and not every seed covered when the intervals are also wide in
  every seed (40/40 happens with probability 0.9**40 = 1.5 %: checked pooled,
  via the upper end of the pooled band, not per quantity).
* The family's parameters and the correlations, pooled per kind, within 90 % +-
  3 sd of their pooled count.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SEEDS = range(1000, 1040)
DEVICES, PULSES, BOOTSTRAP = 512, 1000, 200


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_coverage.py"
    spec = importlib.util.spec_from_file_location("bench_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=2)
def _rows(preset):
    bench = _bench()
    rows = []
    for seed in SEEDS:
        rows += bench.interval_checks(preset, seed, DEVICES, PULSES, BOOTSTRAP)
    return rows


def _covered(rows):
    return np.array([r["ci"][0] <= r["truth"] <= r["ci"][1] for r in rows if r["ci"] is not None])


def _band(n, k):
    sd = np.sqrt(0.09 / n)
    return 0.9 - k * sd, 0.9 + k * sd


def _table(kind):
    """(preset, quantity) -> covered array, for the quantities of one kind."""
    out = {}
    for preset in ("paper", "wafer_b"):
        for r in _rows(preset):
            if kind(r["quantity"]):
                out.setdefault((preset, r["quantity"]), []).append(r)
    for key, rows in out.items():
        cov = _covered(rows)
        print(f"{key[0]:8s} {key[1]:24s} coverage {cov.mean():.0%} of {len(cov)} (no interval: {len(rows) - len(cov)})")
    return {k: _covered(v) for k, v in out.items()}


def _is_median(q):
    return q.startswith("median ")


def _is_param(q):
    return "." in q and not q.startswith(("median", "KM", "copula", "pink", "rtn"))


@pytest.mark.slow
def test_d2d_median_intervals_cover_the_truth():
    table = _table(_is_median)
    assert len(table) >= 10  # r0, t_star, m1, m2, c1 of both presets
    for key, cov in table.items():
        assert len(cov) == len(SEEDS), (key, "a median without an interval")
        assert cov.mean() >= _band(len(cov), 3)[0], (key, cov.mean())
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 2)
    print(f"pooled median coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert lo <= pooled.mean() <= hi


@pytest.mark.slow
def test_family_parameter_intervals_cover_the_truth():
    table = _table(_is_param)
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 3)
    print(f"pooled parameter coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert len(pooled) >= 200
    assert lo <= pooled.mean() <= hi


@pytest.mark.slow
def test_correlation_intervals_cover_the_truth():
    table = _table(lambda q: q.startswith("copula"))
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 3)
    print(f"pooled copula coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert lo <= pooled.mean() <= hi
    strong = table["wafer_b", "copula m1~t_star"]
    assert strong.mean() >= _band(len(strong), 3)[0], strong.mean()


@pytest.mark.slow
@pytest.mark.parametrize("quantity", ["pink std", "rtn p_up", "rtn p_down"])
def test_noise_intervals_cover_the_truth(quantity):
    table = _table(lambda q: q == quantity)
    for key, cov in table.items():
        assert cov.mean() >= _band(len(cov), 3)[0], (key, cov.mean())

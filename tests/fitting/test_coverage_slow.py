"""Coverage of the population intervals over 40 synthetic wafers per preset (slow: ``pytest -m slow``).

Each wafer (512 cells x 1000 pulses, seeds 1000..1039 of ``paper`` and ``wafer_b``)
is fitted with the bootstrap on, and every 90 % interval of its summary is checked
against the model that made it (``benchmarks/bench_coverage.py``'s
``interval_checks``: the D2D medians, the family's parameters where the family
chosen is the true one, the copula correlations, pink std and RTN rates). About
2 minutes on 2 cores.

The bands: a 90 % interval covers the truth in a number of seeds that is binomial
(n, 0.9), standard deviation sqrt(0.09 / n): 4.7 % at 40 seeds.

* Pooled over the D2D medians of both presets (up to 10 x 40 intervals, sd 1.5 %),
  coverage lies within 90 % +- 2 sd (the issue's 88-92 % for the true rate); the
  upper end catches intervals that are too wide.
* Each quantity alone (40 seeds): coverage >= 90 % - 3 sd = 76 % (a false alarm
  in about 1 of 700 quantities, so the many quantities checked do not make the
  test flaky; 40/40 covered happens at a true 90 % with probability 1.5 %, so too
  wide is checked pooled only).
* The family's parameters and the correlations, pooled per kind, within 90 % +-
  3 sd of their pooled count.

Quantities whose estimate is biased upstream of the intervals are expected
failures (``KNOWN_BIASED`` and the xfail reasons, with the figures measured).

The calibrated intervals (:func:`hfox_fit.calibration.calibrate`, what ``fit``, ``run`` and
``demo`` report by default: 20 wafers simulated from each fitted model and fitted again)
are checked on the same wafers, pooled per kind within 90 % +- 3 sd and each quantity above
its lower band, with no expected failure. They add about 16 minutes on two worker processes
(2 x 40 x 21 fits). wafer_b's c1~r0 copula covered 72.5 % before the copula intervals were held
to at least their cell pairs' sampling spread (``calibration._sampling_floors``), 82.5 % since.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hfox_fit.calibration import DEFAULT_REPLICATES

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


def _table(kind, rows=None):
    """(preset, quantity) -> covered array, for the quantities of one kind (of ``rows(preset)``, default _rows)."""
    out = {}
    for preset in ("paper", "wafer_b"):
        for r in (rows or _rows)(preset):
            if kind(r["quantity"]):
                out.setdefault((preset, r["quantity"]), []).append(r)
    for key, rows in out.items():
        cov = _covered(rows)
        err = np.nanmean([(r["value"] - r["truth"]) / (abs(r["truth"]) if r["relative"] and r["truth"] else 1.0)
                          for r in rows])
        print(f"{key[0]:8s} {key[1]:24s} coverage {cov.mean():.1%} of {len(cov)} (no interval: "
              f"{len(rows) - len(cov)}), mean error {err:+.4f}")
    return {k: _covered(v) for k, v in out.items()}


def _check_pooled_and_each(table, label):
    """Pooled coverage within 90 % +- 3 sd of its count, and every quantity above its own lower band."""
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 3)
    print(f"pooled {label} coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert lo <= pooled.mean() <= hi
    for key, cov in table.items():
        assert cov.mean() >= _band(len(cov), 3)[0], (key, cov.mean())


def _is_median(q):
    return q.startswith("median ")


def _is_param(q):
    return "." in q and not q.startswith(("median", "KM", "copula", "pink", "rtn"))


#: Quantities whose estimate is biased upstream of the intervals (measured with
#: benchmarks/bench_coverage.py, 40 seeds x 512 cells): a wider interval would hide the bias,
#: so they stay expected failures until the bias is fixed where it arises.
KNOWN_BIASED = {
    ("paper", "median t_star"): "bench seeds 3000..3039: 75 %, and the cells' own Kaplan-Meier median 70 %: "
                                "per-train t_star / censoring (95 % on this test's seeds)",
    ("paper", "median m1"): "a few misidentified trains (0.5-1 %: a break hidden by masked RTN reads and the train "
                          "then taken as censored, a spurious or misplaced break) carry m1 errors of 5-30 stderr; "
                          "the other trains' (fitted - true) / stderr has sd 1.00 (seeds 3000-3002), all of them "
                          "1.18 on paper, 1.37 on wafer_b: 85 % here (mean error +3.0 %; 80 %, +6.2 % before the "
                          "flat trains' lines could be mixed down by a hidden break), 90 % on the bench seeds",
    ("paper", "rtn p_down"): "72.5 % here (mean error +1.6 %; before the correction for the high stretches too "
                             "short to detect: 75 %, -1.7 %; wafer_b went from 72.5 %, -4.3 % to 87.5 %, -0.3 %), "
                             "85 % on seeds 3000-3039 with 4096 injected trains (-0.3 %; before: 80 %, -3.6 %). "
                             "Not a bias: these 40 wafers' realised rates (their chains' own down transitions per "
                             "high pulse) scatter about the truth by 8.6 % where their counts give 7.2 %, and 7 of "
                             "them lie outside 1.645 of those sd (3 of 40 on seeds 2000-2039 and 3000-3039): the "
                             "realised rate itself with an exact interval would cover 82.5 % here",
}


def _xfail_known(cases):
    return [pytest.param(*c, marks=pytest.mark.xfail(reason=KNOWN_BIASED[c], strict=False)) if c in KNOWN_BIASED
            else c for c in cases]


MEDIANS = [(preset, f"median {p}") for preset in ("paper", "wafer_b") for p in ("r0", "t_star", "m1", "m2", "c1")]


@pytest.mark.slow
@pytest.mark.parametrize("preset,quantity", _xfail_known(MEDIANS))
def test_each_d2d_median_interval_covers_the_truth(preset, quantity):
    cov = _table(lambda q: q == quantity)[preset, quantity]
    assert len(cov) == len(SEEDS), "a median without an interval"
    assert cov.mean() >= _band(len(cov), 3)[0], cov.mean()


@pytest.mark.slow
def test_pooled_d2d_median_coverage_is_90_percent():
    table = {k: v for k, v in _table(_is_median).items() if k not in KNOWN_BIASED}
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 2)
    print(f"pooled median coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert lo <= pooled.mean() <= hi


@pytest.mark.slow
def test_family_parameter_intervals_cover_the_truth():
    """85.9 % pooled on these seeds, near the band's low end (85.3 % before m2's law kept only the breaks
    t_star's law counts): paper m1 loc covers 47 %, its estimates spread 2.3x what the likelihood's
    curvature says (the flattest trains, near the edge, carry errors beyond their stderr: 8.7 of them a
    wafer 3 stderr below their true m1), so a bootstrap of it, one-step or refitted, narrows it (a full-refit
    bootstrap covers 71 %, a profile-likelihood interval 53 %)."""
    table = _table(_is_param)
    pooled = np.concatenate(list(table.values()))
    lo, hi = _band(len(pooled), 3)
    print(f"pooled parameter coverage {pooled.mean():.1%} of {len(pooled)}, band {lo:.1%}..{hi:.1%}")
    assert len(pooled) >= 200
    assert lo <= pooled.mean() <= hi


@pytest.mark.slow
@pytest.mark.xfail(reason="86.6 % pooled (84.0 % before t_star's censored cells entered its pairs, each "
                          "train's t_star~m2, m1~c1 and c1~r0 fit-error correlations were taken out and m2 kept "
                          "only past the breaks t_star's law counts: wafer_b m1~t_star 70 -> 87.5 %, mean error "
                          "+0.034 -> +0.000; wafer_b m1~c1 -0.017 -> -0.001, c1~r0 -0.011 -> -0.009; "
                          "t_star~m2 77.5 -> 85 % on paper, -0.054 -> -0.031, and 77.5 -> 80 % on wafer_b, "
                          "-0.050 -> -0.033, the rest from trains whose errors exceed their stderr; m1~m2 62.5 -> "
                          "80 % on paper, +0.078 -> +0.028, 75 -> 82.5 % on wafer_b, +0.042 -> +0.024: a break "
                          "seen past the censoring point shows only where its slopes differ a lot; paper "
                          "t_star~c1 92.5 -> 85 %, +0.010 -> +0.024: a flat train's c1 is its straight line's, "
                          "high where a break hides in it): wafer_b's c1 pairs 77.5-82.5 % without bias (seed-to-"
                          "seed sd 0.075 against the bootstrap's 0.058, the same with the cells' true values and "
                          "0.071 with one of them shuffled: chance, 2 % of the time)",
                   strict=False)
def test_correlation_intervals_cover_the_truth():
    _check_pooled_and_each(_table(lambda q: q.startswith("copula")), "copula")


NOISE = [(preset, q) for preset in ("paper", "wafer_b") for q in ("pink std", "rtn p_up", "rtn p_down")]


@pytest.mark.slow
@pytest.mark.parametrize("preset,quantity", _xfail_known(NOISE))
def test_noise_intervals_cover_the_truth(preset, quantity):
    cov = _table(lambda q: q == quantity)[preset, quantity]
    assert cov.mean() >= _band(len(cov), 3)[0], cov.mean()


#: Simulated wafers per calibration in the test: the number `fit`, `run` and `demo` use by default (20; the
#: wafers on two worker processes, about 16 minutes on 2 cores).
CALIBRATE = DEFAULT_REPLICATES


@functools.lru_cache(maxsize=2)
def _calibrated_rows(preset):
    """The rows of the calibrated intervals (``calibrated <quantity>``) over the same wafers."""
    bench = _bench()
    rows = []
    for seed in SEEDS:
        # (the simulated wafers on two worker processes: the same numbers as here, in half the time)
        rows += [r for r in bench.interval_checks(preset, seed, DEVICES, PULSES, BOOTSTRAP, CALIBRATE, jobs=2)
                 if r["quantity"].startswith("calibrated ")]
    return rows


KINDS = {"median": _is_median, "family parameter": _is_param, "copula": lambda q: q.startswith("copula"),
         "noise": lambda q: q.startswith(("pink", "rtn"))}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_calibrated_intervals_cover_the_truth(kind):
    """hfox_fit.calibration (20 simulated wafers per fit, the default) on the same 80 wafers: each kind pooled within 3
    binomial sd of 90 %, and every quantity above its own lower band, the ones the bootstrap misses included
    (m1.loc, p_down, the copula pairs of m2)."""
    name = len("calibrated ")
    _check_pooled_and_each(_table(lambda q: q.startswith("calibrated ") and KINDS[kind](q[name:]),
                                  rows=_calibrated_rows), f"calibrated {kind}")

"""The pooled RTN ``p_down`` corrected for the high stretches too short to detect, and its interval.

The block detection misses high stretches shorter than about a block (16 pulses) and
merges stretches across short low gaps: before the correction ``p_down`` came out low by
about ``16 p_down`` (7-9 % below the rate the simulated chains realised at p_down = 8e-3).
Each die keeps a few quiet trains' residuals; pooling injects RTN into them once and
measures the factor (:mod:`hfox_fit.fitting._rtn_detect`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fit_helpers import fit_quietly, make_wafer_with_states

from hfox_fit.fitting import _rtn_detect, fit_drift_die
from hfox_fit.fitting.rtn import RTNStats, _pool_rtn, block_to_pulse
from hfox_fit.model import ParameterLaw, PinkNoise, TelegraphNoise, preset_model


def _rtn_only_model():
    """wafer_b without pink noise, with fast RTN (mean high stretch 125 pulses) of amplitudes 0.05-0.3."""
    base = preset_model("wafer_b")
    d2d = dict(base.d2d)
    d2d["rtn_amplitude"] = ParameterLaw("uniform", {"loc": 0.05, "scale": 0.25}, None)
    return dataclasses.replace(base, d2d=d2d, pink=PinkNoise(alpha=0.0), rtn=TelegraphNoise(p_up=3e-3, p_down=8e-3))


def test_p_down_matches_the_rate_the_chains_realised():
    """Three wafers of 512 cells x 1000 pulses: within 4 % of the realised rate on average (main: -8 %)."""
    model = _rtn_only_model()
    errors, notes = [], []
    for seed in (70, 71, 72):
        wafer, high = make_wafer_with_states(model, devices=512, pulses=1000, seed=seed)
        ok = (wafer.truth["flag"] == "ok").to_numpy()
        hi = high[ok, 0]
        realised = (hi[:, :-1] & ~hi[:, 1:]).sum() / hi[:, :-1].sum()
        rtn = fit_quietly(wafer.dies, law="two_slope", bootstrap=0, progress=False).summary()["rtn"]
        errors.append(rtn["p_down"] / realised - 1.0)
        notes.append(rtn["note"])
    errors = np.array(errors)
    assert abs(errors.mean()) <= 0.04, errors
    assert np.all(np.abs(errors) <= 0.06), errors
    assert all("too short to detect" in note for note in notes)


def _stats(rng, n=400, sample=None):
    """Die-level RTN statistics of ``n`` trains that all show RTN (block counts drawn at q_down = 0.1)."""
    th = rng.uniform(5, 40, n)
    down = rng.poisson(0.1 * th).astype(float)
    tl = 60.0 - th
    up = rng.poisson(0.03 * tl).astype(float)
    z = np.zeros(n)
    return RTNStats(16, 0.0, 0.0, np.full(n, 0.2), np.ones(n, bool), np.full(n, 20.0), up, down, tl, th, None,
                    extra={"started_high": z, "detection_sample": sample})


def _check(true_per_seen, trains, scatter, rng):
    """Injected-train counts whose pooled true/seen rate is ``true_per_seen``; ``scatter``: per-train noise."""
    high = np.full(trains, 400.0)
    seen_down = rng.poisson(2.0, trains).astype(float)
    true_down = np.maximum(seen_down * true_per_seen * (1 + scatter * rng.standard_normal(trains)), 0.0)
    return {"down_true": true_down, "high_true": high * 16, "down_seen": seen_down, "high_seen": high,
            "up_seen": np.full(trains, 1.0), "low_seen": np.full(trains, 400.0)}


def _given_check(monkeypatch, check):
    """Pooling measures ``check`` (the injected trains' counts) whatever the dies sampled."""
    monkeypatch.setattr(_rtn_detect, "pooled_check", lambda *a, **k: check)


def test_pooling_applies_the_measured_factor_and_its_error(monkeypatch):
    rng = np.random.default_rng(3)
    plain = _pool_rtn([_stats(np.random.default_rng(1))], 400, 5)
    check = _check(1.08, 2000, 0.0, rng)
    seen = block_to_pulse(check["up_seen"].sum() / check["low_seen"].sum(),
                          check["down_seen"].sum() / check["high_seen"].sum(), 16)[1]
    factor = check["down_true"].sum() / check["high_true"].sum() / seen
    assert factor == pytest.approx(1.08, rel=0.01)
    _given_check(monkeypatch, check)
    fixed = _pool_rtn([_stats(np.random.default_rng(1))], 400, 5)
    # the estimate moves by the factor the injected trains measured
    assert fixed.p_down / plain.p_down == pytest.approx(factor, rel=1e-9)
    assert f"x {factor:.3f}" in fixed.note and "too short to detect" in fixed.note
    # a factor measured on few, scattered injected trains widens the interval (the bootstrap resamples them)
    _given_check(monkeypatch, _check(1.08, 40, 0.6, rng))
    noisy = _pool_rtn([_stats(np.random.default_rng(1))], 400, 5)
    width = lambda e: (e.p_down_ci90[1] - e.p_down_ci90[0]) / e.p_down  # noqa: E731
    assert width(noisy) > 1.2 * width(fixed)
    assert width(fixed) == pytest.approx(width(plain), rel=0.15)


def test_pooling_without_a_sample_is_uncorrected():
    """Dies without sampled quiet trains pool as counted, and the note says nothing of it."""
    s = _stats(np.random.default_rng(1))
    est = _pool_rtn([s], 0, 5)
    q_up, q_down = s.up.sum() / s.time_low.sum(), s.down.sum() / s.time_high.sum()
    assert est.p_down == pytest.approx(block_to_pulse(q_up, q_down, 16)[1], rel=1e-9)
    assert "too short" not in est.note


def test_too_few_injected_transitions_leave_p_down_uncorrected_and_say_so(monkeypatch):
    """Short trains (a 60-pulse wafer): an injected set with one true down transition and none seen measured a
    factor of 5.6e13; below 20 transitions the factor is not used and the note says p_down is uncorrected."""
    rng = np.random.default_rng(3)
    check = _check(1.08, 2000, 0.0, rng)
    few = {k: v[:5] for k, v in check.items()}
    few["down_seen"] = np.full(5, 1e-14)
    plain = _pool_rtn([_stats(np.random.default_rng(1))], 100, 5)
    _given_check(monkeypatch, few)
    est = _pool_rtn([_stats(np.random.default_rng(1))], 100, 5)
    assert est.p_down == pytest.approx(plain.p_down, rel=1e-12)
    assert est.p_down_ci90 == pytest.approx(plain.p_down_ci90, rel=1e-12)
    assert "p_down not corrected" in est.note and "too few transitions" in est.note


def test_the_drawn_chains_are_the_per_pulse_chains():
    """Dwells drawn whole: the high share at every pulse and the down transitions per high pulse are those of a
    chain that falls with p_down and rises with p_up at each pulse (from high before pulse 0 with pi0)."""
    p_up, p_down, pi0, n, T = 3e-3, 8e-3, 0.3, 20000, 400
    high = _rtn_detect._chain(np.random.default_rng(4), n, T, p_up, p_down, pi0)
    stationary = p_up / (p_up + p_down)
    expected = stationary + (pi0 - stationary) * (1 - p_up - p_down) ** np.arange(1, T + 1)
    share = high.mean(0)
    sd = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(share - expected) < 4.5 * sd)
    assert abs(share[::50] - expected[::50]).max() < 0.015
    rate = (high[:, :-1] & ~high[:, 1:]).sum() / high[:, :-1].sum()
    assert rate == pytest.approx(p_down, rel=0.03)
    up = (~high[:, :-1] & high[:, 1:]).sum() / (~high[:, :-1]).sum()
    assert up == pytest.approx(p_up, rel=0.03)


def test_the_die_step_keeps_a_small_sample_of_quiet_trains():
    """At most SAMPLE_PER_DIE trains, none of them showing RTN, float16; ``rows`` keeps the ones it picks."""
    wafer, _ = make_wafer_with_states(_rtn_only_model(), devices=256, pulses=400, seed=5)
    res = fit_drift_die(wafer.dies[0], ("two_slope",))
    sample = res.rtn.extra["detection_sample"]
    k = len(sample["rows"])
    assert 0 < k <= _rtn_detect.SAMPLE_PER_DIE
    assert not res.rtn.shows[sample["rows"]].any()
    assert sample["resid"].dtype == np.float16 and sample["resid"].shape == (k, 400 // 16 * 16)
    assert sample["usable"].shape == sample["resid"].shape and sample["em_rounds"] == 1
    half = np.arange(len(res.rtn.shows)) % 2 == 0
    sub = res.rtn.rows(np.flatnonzero(half))
    picked = sample["rows"][half[sample["rows"]]]
    assert np.array_equal(sub.extra["detection_sample"]["rows"], picked // 2)
    assert np.array_equal(sub.extra["detection_sample"]["resid"], sample["resid"][half[sample["rows"]]])


def test_the_die_step_runs_only_its_own_detection(monkeypatch):
    """The injection runs once in pooling, not per die: the die's step fits the block HMM once (one robust round)."""
    from hfox_fit.fitting import drift

    calls = []
    real = drift.rtn_em
    monkeypatch.setattr(drift, "rtn_em", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(_rtn_detect, "rtn_em", lambda *a, **k: calls.append(2) or real(*a, **k))
    wafer, _ = make_wafer_with_states(_rtn_only_model(), devices=128, pulses=300, seed=6)
    res = fit_drift_die(wafer.dies[0], ("two_slope",))
    assert calls == [1] and res.rtn.extra["detection_sample"]["em_rounds"] == 1


def test_a_rate_near_zero_draws_no_switch():
    """A pooled p_up of 1e-19 (one fractional up transition in a quiet campaign) drew dwells past int64: none now."""
    high = _rtn_detect._chain(np.random.default_rng(1), 64, 113, 1e-19, 5e-3, 0.0)
    assert not high.any()

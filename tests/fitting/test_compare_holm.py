"""Comparing several parameters at once: each alone at 90 %, and Holm's step-down rule over all of them."""

from __future__ import annotations

import numpy as np
import pytest

from hfox_fit.cli._compare import format_comparison
from hfox_fit.fitting.wafers import FAMILY_ALPHA, compare_medians, compare_summaries, holm

Z90 = 1.6448536269514722


def test_holm_steps_down_and_stops_at_the_first_kept_hypothesis():
    params = {"a": {"p_value": 0.01}, "b": {"p_value": 0.04}, "c": {"p_value": 0.2}, "d": {"p_value": None}}
    assert holm(params) == 3
    # 0.01 < 0.1/3, 0.04 < 0.1/2, 0.2 > 0.1/1
    assert [params[k]["significant_holm"] for k in "abcd"] == [True, True, False, None]
    close = {"a": {"p_value": 0.03}, "b": {"p_value": 0.06}, "c": {"p_value": 0.08}}
    holm(close)
    # each is below 0.10 alone; Holm keeps a (0.03 < 0.033) and stops at b (0.06 > 0.05): c is not tested further
    assert [close[k]["significant_holm"] for k in "abc"] == [True, False, False]


def test_the_p_value_is_the_interval_test():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = np.exp(rng.normal(0, 0.2, 2))
        ha, hb = rng.uniform(0.02, 0.3, 2)
        out = compare_medians(a, [a * np.exp(-ha), a * np.exp(ha)], b, [b * np.exp(-hb), b * np.exp(hb)])
        assert (out["p_value"] < 0.10) == out["significant"], out
        lin = compare_medians(a - 1, [a - 1 - ha, a - 1 + ha], b - 1.2, [b - 1.2 - hb, b - 1.2 + hb])
        assert lin["scale"] == "linear" or lin["p_value"] is not None
        assert (lin["p_value"] < 0.10) == lin["significant"], lin


def _summary(medians, half_log):
    return {"d2d": {p: {"median": m, "median_ci90": [m * np.exp(-half_log), m * np.exp(half_log)]}
                    for p, m in medians.items()}}


def test_five_borderline_parameters_are_each_significant_alone_but_not_together():
    # each ratio is 1.9 standard errors from 1 (p about 0.057): flagged alone at 90 %, not under Holm over 5
    half = 0.1
    se = np.hypot(half / Z90, half / Z90)
    names = ["m1", "t_star", "m2", "c1", "r0"]
    a = _summary(dict.fromkeys(names, 1.0), half)
    b = _summary(dict.fromkeys(names, float(np.exp(1.9 * se))), half)
    out = compare_summaries(a, b)
    for p in names:
        e = out["parameters"][p]
        assert e["significant"] is True and 0.05 < e["p_value"] < 0.06
        assert e["significant_holm"] is False
    mult = out["multiplicity"]
    assert mult["rule"] == "holm" and mult["n_tested"] == 5 and mult["family_alpha"] == FAMILY_ALPHA
    assert mult["decides"] == "significant_holm"
    text = format_comparison({"a": "A", "b": "B", **out})
    assert "Holm over the parameters): none; differ only when taken alone: m1, t_star, m2, c1, r0" in text
    assert text.splitlines()[3].split()[-2:] == ["YES", "no"]  # m1: alone YES, Holm no
    # one large shift stays significant under Holm; the borderline others do not
    b["d2d"]["m1"] = _summary({"m1": 1.3}, half)["d2d"]["m1"]
    out = compare_summaries(a, b)
    assert out["parameters"]["m1"]["significant_holm"] is True and out["parameters"]["m1"]["p_value"] < 0.01
    assert [out["parameters"][p]["significant_holm"] for p in names[1:]] == [False] * 4


def test_a_parameter_without_an_interval_is_not_counted():
    a = _summary({"m1": 1.0, "r0": 1.0}, 0.1)
    b = _summary({"m1": 1.5, "r0": 1.0}, 0.1)
    b["d2d"]["r0"]["median_ci90"] = None
    out = compare_summaries(a, b)
    assert out["multiplicity"]["n_tested"] == 1
    assert out["parameters"]["r0"]["significant_holm"] is None and out["parameters"]["r0"]["p_value"] is None
    assert out["parameters"]["m1"]["significant_holm"] is True
    assert out["parameters"]["m1"]["p_value"] == pytest.approx(
        2 * (1 - __import__("scipy").stats.norm.cdf(np.log(1.5) / np.hypot(0.1 / Z90, 0.1 / Z90))), rel=1e-9)

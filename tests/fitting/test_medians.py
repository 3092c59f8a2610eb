"""The rule that picks which median a group of cells (a wafer, a pulse condition) reports."""

import pytest

from hfox_fit.fitting._medians import law_misses_sample, use_sample_medians


def _entry(name, median, sample, ci):
    return {"name": name, "notes": [], "d2d": {"m1": {"family": "expon", "median": median, "median_ci90": [median * 0.9, median * 1.1],
                                                      "sample_median": sample, "sample_median_ci90": ci, "ks": 0.05}}}


def test_one_group_missing_its_cells_median_moves_every_group_to_its_cells():
    groups = [_entry("A", 1.0, 1.0, [0.9, 1.1]), _entry("B", 1.3, 1.0, [0.9, 1.1]), {"name": "C", "notes": [], "d2d": {}}]
    assert law_misses_sample(groups[0]["d2d"]["m1"]) is None
    assert "outside the sample median's 90 % interval" in law_misses_sample(groups[1]["d2d"]["m1"])
    assert use_sample_medians(groups, ["m1", "t_star"], lambda g: g["name"]) == ["m1"]
    for g in groups[:2]:
        d = g["d2d"]["m1"]
        assert d["median_from"] == "sample" and d["median"] == d["sample_median"] == 1.0
        assert d["median_ci90"] == [0.9, 1.1]
    assert groups[1]["d2d"]["m1"]["law_median"] == 1.3
    assert groups[1]["d2d"]["m1"]["law_median_ci90"] == pytest.approx([1.17, 1.43])
    assert "as at B where the law misses" in groups[0]["notes"][0]
    assert groups[1]["notes"][0].startswith("m1: the expon law's median 1.3 lies outside")
    assert groups[2] == {"name": "C", "notes": [], "d2d": {}}


def test_no_group_moves_when_every_law_holds_or_a_group_has_no_sample_interval():
    holds = [_entry("A", 1.0, 1.0, [0.9, 1.1]), _entry("B", 1.05, 1.0, [0.9, 1.1])]
    assert use_sample_medians(holds, ["m1"], lambda g: g["name"]) == []
    assert all("median_from" not in g["d2d"]["m1"] for g in holds)
    no_ci = [_entry("A", 1.3, 1.0, [0.9, 1.1]), _entry("B", 1.0, 1.0, None)]
    assert use_sample_medians(no_ci, ["m1"], lambda g: g["name"]) == []
    assert no_ci[0]["d2d"]["m1"]["median"] == 1.3

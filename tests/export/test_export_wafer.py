"""``hfox-fit export --wafer W``: one wafer's laws of a several-wafer fit, not the pooled ones."""

import warnings
from dataclasses import replace

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import preset_model  # noqa: E402
from hfox_fit.cli import main  # noqa: E402
from hfox_fit.fitting import fit_campaign  # noqa: E402
from hfox_fit.laws import ParameterLaw  # noqa: E402
from hfox_fit.schema import dies_to_table  # noqa: E402
from hfox_fit.store import CampaignStore  # noqa: E402
from hfox_fit.synth import make_wafer, make_wafer_campaign  # noqa: E402
from hfox_fit.torch import WeakResetArray, load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def two_wafers(tmp_path_factory):
    """2 wafers x 384 cells of wafer_b with a narrow m1 law; W02's median m1 is 1.4 x W01's."""
    base = preset_model("wafer_b")
    tight = replace(base, d2d={**base.d2d, "m1": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 8e-4},
                                                                (2e-4, 3e-3))})
    camp = make_wafer_campaign(tight, factors=[1.0, 1.4], params=("m1",), devices=384, pulses=300, seed=5)
    path = tmp_path_factory.mktemp("wafers") / "two.h5"
    CampaignStore(path).ingest_table(dies_to_table(camp.dies), name="simulated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_campaign(camp.dies, law="two_slope", bootstrap=30).save(path)
    return camp, path


def test_the_wafer_model_follows_that_wafers_truth_not_the_pool(two_wafers, tmp_path, capsys):
    camp, path = two_wafers
    truth = {w["wafer"]: w["medians"]["m1"] for w in camp.meta["wafers"]}
    pooled_out, w2_out, w1_out = tmp_path / "pool.pt", tmp_path / "w2.pt", tmp_path / "w1.pt"
    assert main(["export", str(path), "-o", str(pooled_out), "--quiet"]) == 0
    assert main(["export", str(path), "-o", str(w2_out), "--wafer", "W02", "--bootstrap", "30", "--quiet"]) == 0
    assert "wafer W02" in capsys.readouterr().out
    assert main(["export", str(path), "-o", str(w1_out), "--wafer", "W01", "--bootstrap", "30", "--quiet"]) == 0
    pooled, pooled_prov = load_checkpoint(pooled_out)
    w2, prov = load_checkpoint(w2_out)
    w1, _ = load_checkpoint(w1_out)
    m_pool, m1, m2 = (m.d2d["m1"].median() for m in (pooled, w1, w2))
    # each wafer's model is within 5 % of its own truth, and nearer to it than the pooled model
    assert abs(m2 / truth["W02"] - 1) < 0.05, (m2, truth)
    assert abs(m1 / truth["W01"] - 1) < 0.05, (m1, truth)
    assert abs(m_pool / truth["W01"] - 1) > 0.1, (m_pool, truth)
    assert abs(m_pool / truth["W02"] - 1) > abs(m2 / truth["W02"] - 1) + 0.02, (m_pool, m2, truth)
    assert 1.3 < m2 / m1 < 1.5
    # the checkpoint says which wafer, with its cells and each median's 90 % interval
    assert w2.meta["wafer"] == "W02" and "wafer" not in pooled.meta
    assert prov["wafer"] == "W02" and set(prov["cells"]["wafer"]) == {"W02"}
    assert prov["cells_used"] <= 384 < pooled_prov["cells_used"]
    ci = prov["wafer_d2d"]["d2d"]["m1"]["median_ci90"]
    assert ci[0] < m2 < ci[1] and ci[0] < truth["W02"] * 1.03 and truth["W02"] * 0.97 < ci[1]
    assert w2.meta["wafer_d2d_median_ci90"]["m1"] == ci
    # the rest of the model is kept: noise as pooled, every law present, the array runs
    assert w2.pink == pooled.pink and w2.rtn == pooled.rtn
    assert set(w2.d2d) == set(pooled.d2d)
    assert w2.d2d["rtn_amplitude"].to_dict() == pooled.d2d["rtn_amplitude"].to_dict()
    assert WeakResetArray.from_checkpoint(w2_out, 50, seed=0).pulse(5).shape == (50,)


def test_an_unknown_wafer_names_the_wafers_there(two_wafers, tmp_path, capsys):
    _, path = two_wafers
    out = tmp_path / "x.pt"
    assert main(["export", str(path), "-o", str(out), "--wafer", "W09", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no wafer 'W09'" in err and "W01, W02" in err and "Traceback" not in err
    assert not out.exists()


def test_a_one_wafer_store_refuses_wafer(tmp_path, capsys):
    store = CampaignStore(tmp_path / "one.h5")
    store.ingest_table(dies_to_table(make_wafer(devices=4, pulses=5, seed=0).dies), name="simulated")
    cells = pd.DataFrame({"wafer": ["W01"] * 4, "die": ["D01"] * 4, "device": [f"c{i}" for i in range(4)],
                          "cycle": [0] * 4, "flag": ["ok"] * 4})
    store.save_fit(cells, {"devices": {"total": 4, "fitted": 4}}, preset_model("wafer_b").to_dict())
    assert main(["export", str(store.path), "--wafer", "W01", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "one wafer, W01" in err and "Leave out --wafer" in err and "Traceback" not in err


def test_a_condition_law_moves_with_the_wafers_median():
    from hfox_fit.fitting.wafer_model import _moved_condition_law
    from hfox_fit.model import ConditionLaw, scaled_law

    pooled = preset_model("paper")
    pooled = replace(pooled, condition_law=ConditionLaw.from_slopes(
        pooled, {"m1": {"b_v": 2.0, "b_w": 0.5}, "c1": {"b_v": 0.1, "scale": "linear"}}, 1.2, 1e-6))
    laws = {"m1": scaled_law(pooled.d2d["m1"], 1.5), "c1": scaled_law(pooled.d2d["c1"], 1.0, 0.002)}
    moved = _moved_condition_law(pooled, laws)
    wafer = replace(pooled, d2d={**pooled.d2d, **laws}, condition_law=moved)
    for v, w in ((1.2, 1e-6), (1.35, 2e-6)):
        assert wafer.at(v, w).d2d["m1"].median() == pytest.approx(1.5 * pooled.at(v, w).d2d["m1"].median(), rel=1e-9)
        assert wafer.at(v, w).d2d["c1"].median() == pytest.approx(pooled.at(v, w).d2d["c1"].median() + 0.002,
                                                                  rel=1e-9)
    assert moved.params["m1"]["b_v"] == 2.0 and _moved_condition_law(preset_model("paper"), laws) is None

"""Per-train goodness of fit (resid_std, misfit, fit_r2, max_gap) and the ``poor_fit`` flag.

The bad train of the issue is in the example campaign (data/raw): A2/r11c07 was flagged ok with a
fitted straight line that ends near w = 0.6 while its reads sit near 0.1, its m1 24x the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fit_helpers import fit_quietly, truth_for

from hfox_fit.fitting import FLAG_NAMES
from hfox_fit.fitting._tables import GOF_COLUMNS, goodness_of_fit
from hfox_fit.fitting.flags import FlagOptions, flag_poor_fit
from hfox_fit.laws import get_law

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "raw"


def _pinkish(rng, n, T, std=0.01, length=15):
    """Correlated noise (a moving sum of white noise over ``length`` pulses) with std ``std``."""
    white = rng.normal(size=(n, T + length))
    kernel = np.ones(length) / np.sqrt(length)
    return std * np.stack([np.convolve(r, kernel, mode="valid")[:T] for r in white])


def test_goodness_of_fit_tells_a_law_that_follows_from_one_that_leaves():
    rng = np.random.default_rng(0)
    n, T = 400, 300
    t = np.arange(1, T + 1, dtype=float)
    truth = 0.05 + 4e-4 * np.minimum(t, 40) + 1e-4 * np.maximum(t - 40, 0)  # an early break
    y = truth[None, :] + _pinkish(rng, n, T)
    mask = rng.random((n, T)) > 0.01
    gof, ratio = goodness_of_fit(y, mask, np.broadcast_to(truth, (n, T)))
    assert ratio > 1  # correlated noise: block means scatter more than read-to-read changes say
    assert set(gof) == set(GOF_COLUMNS)
    assert 0.8 < np.median(gof["misfit"]) < 1.2 and np.quantile(gof["misfit"], 0.99) < 5
    assert np.median(gof["fit_r2"]) > 0.5  # a drift of 0.04 over the train, under noise of 0.01
    assert np.median(gof["resid_std"]) == pytest.approx(0.01, rel=0.15)
    # the same reads under a straight line with the first slope, to the end: it climbs away
    line = 0.05 + 4e-4 * t
    bad, _ = goodness_of_fit(y[:5], mask[:5], np.broadcast_to(line, (5, T)), ratio=ratio)
    assert (bad["misfit"] > 25).all() and (bad["fit_r2"] < 0).all()  # poor_fit by the defaults
    assert (bad["max_gap"] < -0.06).all()  # the line ends 0.078 above the reads


def _table(misfit, r2, flag="ok", censored=None, **line):
    n = len(misfit)
    df = pd.DataFrame({"flag": [flag] * n, "flag_reason": [""] * n, "misfit": misfit, "fit_r2": r2,
                       "resid_std": [0.01] * n, "max_gap": [-0.5] * n})
    if censored is not None:
        df["t_star_censored"] = censored
        for c, v in line.items():
            df[c] = v
    return df


def test_flag_poor_fit_needs_both_a_misfit_and_a_low_r2():
    df = _table([4000.0, 4000.0, 1.2, 30.0, np.nan], [-200.0, 0.9, -3.0, -0.5, -9.0])
    out = flag_poor_fit(df)
    assert out["flag"].tolist() == ["poor_fit", "ok", "ok", "poor_fit", "ok"]
    assert "poor fit" in out["flag_reason"].iat[0] and "-0.500" in out["flag_reason"].iat[0]
    # other flags are kept; thresholds are options
    assert flag_poor_fit(_table([4000.0], [-200.0], flag="stuck"))["flag"].iat[0] == "stuck"
    assert flag_poor_fit(df, FlagOptions(poor_fit_misfit=np.inf))["flag"].eq("ok").all()
    assert "poor_fit" in FLAG_NAMES


def test_a_censored_train_is_judged_by_the_line_it_reports():
    # classify_breaks reports the straight line of a censored train: its goodness of fit is the line's
    df = _table([4000.0, 4000.0], [-200.0, -200.0], censored=[True, False],
                misfit_line=[1.1, 1.1], fit_r2_line=[0.9, 0.9], resid_std_line=[0.01, 0.01], max_gap_line=[0.0, 0.0])
    out = flag_poor_fit(df)
    assert out["flag"].tolist() == ["ok", "poor_fit"]
    assert out["misfit"].tolist() == [1.1, 4000.0]
    assert not [c for c in out.columns if c.endswith("_line")]


@pytest.fixture(scope="module")
def example_fit(tmp_path_factory):
    if not (EXAMPLE / "truth.json").is_file():
        pytest.skip("the example campaign (data/raw) is not here")
    from hfox_fit.cli import main
    from hfox_fit.store import CampaignStore

    store = tmp_path_factory.mktemp("example") / "campaign.h5"
    assert main(["ingest", str(EXAMPLE), "--store", str(store), "--quiet"]) == 0
    dies = list(CampaignStore(store).iter_dies())
    truth = pd.DataFrame(json.loads((EXAMPLE / "truth.json").read_text())["cells"])
    fit = fit_quietly(dies, law="auto", bootstrap=0)
    fit.save(store)
    return fit, truth, store


def _rates(cells, truth):
    good = truth["flag"].astype(str).to_numpy() == "ok"
    fitted = good & cells["flag"].isin(["ok", "poor_fit"]).to_numpy()
    poor = cells["flag"].eq("poor_fit").to_numpy()
    return int((poor & fitted).sum()), int(fitted.sum()), poor


def test_the_example_campaigns_bad_train_is_flagged_poor_fit(example_fit):
    fit, truth, _ = example_fit
    cells = fit.cells
    tr = truth_for(type("W", (), {"truth": truth})(), cells)
    row = cells.index[(cells["device"] == "A2/r11c07").to_numpy()][0]
    assert cells.at[row, "flag"] == "poor_fit", cells.loc[row, ["flag", "m1", "misfit", "fit_r2", "note"]].to_dict()
    assert cells.at[row, "m1"] / tr["m1"].iat[row] > 10  # the fit the flag is about
    assert cells.at[row, "max_gap"] < -0.3 and cells.at[row, "misfit"] > 1000 and cells.at[row, "fit_r2"] < -100
    assert "poor fit" in cells.at[row, "flag_reason"]
    # counted wherever flags are counted, and left out of the population fit
    s = fit.summary()
    assert s["trains"]["flagged"]["poor_fit"] == int(cells["flag"].eq("poor_fit").sum()) >= 1
    assert "poor_fit" in s["devices"]["flagged"]
    # few good cells flagged (the others are also lines that leave their reads)
    n_poor, n_good, poor = _rates(cells, tr)
    assert n_poor <= 0.01 * n_good
    assert (np.abs(cells["max_gap"].to_numpy()[poor]) > 0.04).all()  # > 4 % in R where farthest
    # every fitted train has its goodness of fit
    ok = cells["flag"].eq("ok").to_numpy()
    assert np.isfinite(cells.loc[ok, list(GOF_COLUMNS)].to_numpy(float)).all(axis=1).mean() > 0.99


@pytest.mark.parametrize("which", ["paper", "wafer_b"])
def test_good_cells_are_almost_never_flagged_poor_fit(which, request):
    wafer = request.getfixturevalue("paper_wafer" if which == "paper" else "wafer_b")
    fit = request.getfixturevalue("paper_fit" if which == "paper" else "wafer_b_fit")
    cells = fit.cells
    tr = truth_for(wafer, cells)
    n_poor, n_good, poor = _rates(cells, tr)
    assert n_poor <= 0.01 * n_good, (n_poor, n_good)
    # a flagged train's law is far from its reads (> 4 % in R where farthest), not a statistical accident
    assert (np.abs(cells["max_gap"].to_numpy()[poor]) > 0.04).all()
    ok = cells["flag"].eq("ok").to_numpy()
    assert np.nanmedian(cells.loc[ok, "misfit"]) == pytest.approx(1.0, abs=0.15)
    assert np.nanquantile(cells.loc[ok, "fit_r2"], 0.5) > 0.8
    law = get_law(fit.law)
    assert set(law.params) <= set(cells.columns)


def test_the_devices_table_carries_the_goodness_of_fit(example_fit, tmp_path):
    from hfox_fit.cli import main

    fit, _, store = example_fit
    out = tmp_path / "devices.csv"
    assert main(["devices", str(store), "-o", str(out)]) == 0
    devices = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert set(GOF_COLUMNS) <= set(devices.columns)
    assert not [c for c in devices.columns if c.endswith("_line") and c.replace("_line", "") in GOF_COLUMNS]
    bad = devices[devices["device"] == "A2/r11c07"].iloc[0]
    assert bad["flag"] == "poor_fit" and bad["misfit"] > 1000 and bad["max_gap"] < -0.3
    assert np.allclose(devices["misfit"].to_numpy(float), fit.cells["misfit"].to_numpy(float), equal_nan=True)

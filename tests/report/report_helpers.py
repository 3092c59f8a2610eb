"""Helpers of the report tests (imported as ``report_helpers``): a small synthetic wafer and a "fit" built from its truth.

The report only needs a per-cell fit table, a summary dict and a DeviceModel;
:func:`truth_fit` makes all three from a synthetic wafer's ground truth, so
these tests do not wait for (or depend on) the fitter.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hfox_fit.fitting import FLAG_NAMES
from hfox_fit.laws import get_law
from hfox_fit.synth import make_wafer


def truth_fit(wafer, *, rel_stderr=0.02):
    """Return ``(cells, summary, model)`` as a perfect fitter would give them from ``wafer.truth``."""
    model = wafer.model
    law = get_law(model.law)
    truth = wafer.truth
    cells = truth[["wafer", "die", "device", "cycle", "flag"]].copy()
    ok = (truth["flag"] == "ok").to_numpy()
    for p in law.params + ("r0",):
        v = truth[p].to_numpy(dtype=float).copy()
        v[~ok] = np.nan  # a fitter leaves the parameters of flagged cells unset
        cells[p] = v
        cells[f"{p}_stderr"] = np.abs(v) * rel_stderr
    cells["reason"] = np.where(ok, "", "synthetic defect")
    counts = cells["flag"].value_counts()
    d2d = {}
    for p in law.params + ("r0",):
        lawp = model.d2d[p]
        v = cells.loc[ok, p].to_numpy()
        med = lawp.median()
        d2d[p] = {**lawp.to_dict(), "median": med, "median_ci90": [0.97 * med, 1.03 * med],
                  "ks": float(stats.kstest(v, lawp.cdf).statistic)}
    names = list(law.params)
    rho = stats.spearmanr(cells.loc[ok, names].to_numpy()).statistic
    cop = np.eye(len(names))
    cn = list(model.correlation_names)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and a in cn and b in cn:
                cop[i, j] = model.correlation[cn.index(a), cn.index(b)]
    summary = {
        "devices": {"total": int(len(cells)), "fitted": int(ok.sum()),
                    "flagged": {f: int(counts.get(f, 0)) for f in FLAG_NAMES}},
        "drift": {"law": model.law, "scores": {"two_slope": {"aic": -1.0e6, "bic": -0.99e6},
                                               "power": {"aic": -0.95e6, "bic": -0.94e6},
                                               "log": {"aic": -0.97e6, "bic": -0.96e6}}},
        "d2d": d2d,
        "correlation": {"names": names, "spearman": np.asarray(rho).tolist(), "copula": cop.tolist()},
        "pink": {"std": model.pink.std, "exponent": model.pink.exponent},
        "rtn": {"p_up": model.rtn.p_up, "p_down": model.rtn.p_down,
                "amplitude": {"median": model.d2d["rtn_amplitude"].median()}},
    }
    return cells, summary, model


@pytest.fixture(scope="session")
def small_wafer():
    """Two dies (1100 cells), 300 pulses, paper model; dies carry x/y coordinates."""
    w = make_wafer("paper", devices=1100, pulses=300, seed=3)
    for i, d in enumerate(w.dies):
        d.attrs.update({"x": i, "y": 0})
    return w


@pytest.fixture(scope="session")
def small_report(small_wafer, tmp_path_factory):
    from hfox_fit.report import build_report

    cells, summary, model = truth_fit(small_wafer)
    out = tmp_path_factory.mktemp("report")
    res = build_report(small_wafer.dies, cells, summary, model, out, store_name="small.h5", seed=1)
    return res, cells, summary, model


#: The true condition law of :func:`condition_campaign`: m1 grows, t* falls with amplitude and width.
CONDITION_SLOPES = {"m1": {"b_v": 2.0, "b_w": 0.5}, "t_star": {"b_v": -1.5, "b_w": -0.4}}


def condition_model():
    """The paper's model with m1 and t* lognormal (s = 0.25) and t* well inside 250 pulses at every condition."""
    from dataclasses import replace

    from hfox_fit.laws import ParameterLaw
    from hfox_fit.model import preset_model

    base = preset_model("paper")
    return replace(base, d2d={**base.d2d,
                              "m1": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 5e-4}, (5e-5, 7.6e-3)),
                              "t_star": ParameterLaw("lognorm", {"s": 0.25, "loc": 0.0, "scale": 110.0},
                                                     (20.0, 2000.0))})


def caught_report(build, *args, **kwargs):
    """``(result, figures)``: what ``build(*args, **kwargs)`` returns and the figures it saved, by file stem."""
    from pathlib import Path

    from matplotlib.figure import Figure

    caught = {}
    save = Figure.savefig

    def spy(self, fname, *a, **k):
        save(self, fname, *a, **k)
        caught[Path(fname).stem] = self

    patch = pytest.MonkeyPatch()
    patch.setattr(Figure, "savefig", spy)
    try:
        res = build(*args, **kwargs)
    finally:
        patch.undo()
    return res, caught


@pytest.fixture(scope="session")
def condition_report(tmp_path_factory):
    """A campaign at 4 pulse conditions (2 amplitudes x 2 widths, 64 cells each, 250 pulses) in a store,
    fitted, saved and reported from the store: ``(wafer, fit, result, figures)``."""
    from hfox_fit.fitting import CampaignResult, fit_campaign
    from hfox_fit.report import report_store
    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore
    from hfox_fit.synth import make_condition_campaign

    tmp = tmp_path_factory.mktemp("conditions")
    wafer = make_condition_campaign(condition_model(), CONDITION_SLOPES, v_pulses=(1.15, 1.35),
                                    pulse_widths=(0.5e-6, 2e-6), devices=64, pulses=250, seed=5)
    store = CampaignStore(tmp / "conditions.h5")
    store.ingest_table(dies_to_table(wafer.dies), name="synthetic")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_campaign(store.iter_dies(), law="two_slope", bootstrap=100).save(store)
    fit = CampaignResult.load(store)
    res, figs = caught_report(report_store, store.path, tmp / "report", seed=1)
    return wafer, fit, res, figs

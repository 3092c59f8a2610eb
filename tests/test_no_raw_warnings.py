"""No raw numpy, scipy or pandas warning reaches the user.

The pipeline (synth, every reader, ingest, fit with law auto, report, export) runs on small
campaigns with every warning turned into an error, except hfox_fit's own warnings
(:class:`~hfox_fit.exceptions.HfoxWarning` and its subclasses), which are recorded and must
say what they mean. The campaigns are ones where the fit used to leak numpy's messages
("invalid value encountered in reduce", "overflow encountered in divide", ...) from the D2D
likelihood, its bootstrap and the KS check of a narrowly truncated law.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

from hfox_fit.exceptions import HfoxWarning
from hfox_fit.fitting import fit_campaign
from hfox_fit.laws import ParameterLaw
from hfox_fit.parsers import read_measurements, write_measurements
from hfox_fit.parsers._registry import BUILTIN_PARSERS
from hfox_fit.report import report_store
from hfox_fit.store import CampaignStore
from hfox_fit.synth import effects_preset, make_wafer, write_wafer

#: numpy's floating-point messages, and the other library messages a user must not see as such
RAW = re.compile(r"encountered in|divide by zero|Mean of empty slice|All-NaN|Degrees of freedom|"
                 r"is deprecated|will be removed|FutureWarning|PerformanceWarning")

# name -> make_wafer arguments; each of these printed raw numpy warnings before they were handled
CASES = {
    "paper": dict(preset="paper", devices=50, pulses=60, seed=11),
    "wafer_b_noisy_degenerate": dict(preset="wafer_b", devices=60, pulses=80, cycles=2, seed=8, effects="noisy"),
    "wafer_b": dict(preset="wafer_b", devices=60, pulses=80, seed=14, effects="clean"),
    "wafer_b_noisy_2cycles": dict(preset="wafer_b", devices=100, pulses=100, cycles=2, seed=4, effects="noisy"),
}


@contextmanager
def strict():
    """Every warning is an error, except hfox_fit's own, which are recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        warnings.simplefilter("always", HfoxWarning)
        yield caught
    for w in caught:
        assert issubclass(w.category, HfoxWarning), w
        assert not RAW.search(str(w.message)), f"a raw library message passed on as {w.category.__name__}: {w}"


def _wafer(spec):
    spec = dict(spec)
    effects = spec.pop("effects", None)
    return make_wafer(**spec, effects=effects_preset(effects) if effects else None)


@pytest.fixture(scope="module")
def torch_loaded():
    """torch imported outside the strict block (its import-time messages are not the pipeline's)."""
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(CASES))
def test_pipeline_raises_no_raw_warning(name, tmp_path, torch_loaded):
    from hfox_fit.torch import export_checkpoint

    with strict() as caught:
        wafer = _wafer(CASES[name])
        results = {}
        for fmt in (cls.name for cls in BUILTIN_PARSERS):
            files = [p for p in write_wafer(wafer, tmp_path / fmt, fmt, truth=False) if p.is_file()]
            assert files, fmt
            results[fmt] = [read_measurements(p) for p in files]
        tidy = results["tidy"][0].table
        parquet = write_measurements(tidy, tmp_path / "w.parquet", "tidy")[0]
        assert len(read_measurements(parquet).table) == len(tidy)
        store = CampaignStore(tmp_path / "c.h5")
        store.ingest(results["bench"])
        fit = fit_campaign(store.iter_dies(), law="auto")  # as `hfox-fit fit`
        fit.save(store)
        report = report_store(store.path, tmp_path / "report", figures=False)
        export_checkpoint(fit.model, tmp_path / "model.pt", provenance={"store": "c.h5"})
    assert (tmp_path / "model.pt").is_file() and report is not None
    assert all(issubclass(w.category, HfoxWarning) for w in caught)


def test_narrow_truncation_cdf_is_clipped_without_a_warning():
    # a normal truncated far in its tail: the window holds ~1e-310 of the family's mass
    law = ParameterLaw("norm", {"loc": 1.9523e-3, "scale": 5.1161e-5}, (3.7545e-10, 2.4702e-5))
    assert 0 < np.diff(law._cdf_bounds())[0] < 1e-300
    x = np.array([1e-6, 2e-5, 1e-4, 1e-2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = law.cdf(x)
    assert np.all(np.isfinite(u)) and np.all((u >= 0) & (u <= 1))
    assert np.all(np.diff(u) >= 0)
    assert u[-1] == 1.0 and u[-2] == 1.0  # above the window
    with warnings.catch_warnings():  # the density too
        warnings.simplefilter("error")
        assert np.all(np.isfinite(law.pdf(x)))


def test_packing_an_underflowed_scale_gives_minus_inf_without_a_warning():
    from hfox_fit.fitting._families import _Candidate

    cand = _Candidate("norm", None, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = cand.pack({"loc": 1.0, "scale": 0.0}, 0.0)
    assert v[0] == 1.0 and v[1] == -np.inf


def test_degenerate_law_gives_a_nan_ks_and_a_note_not_a_warning(monkeypatch):
    from hfox_fit.fitting import d2d

    # a Weibull of shape 2e17 truncated below its scale: no mass at all in its window in floating point
    law = ParameterLaw("weibull_min", {"c": 2.2e17, "loc": 0.0, "scale": 8.1362e-6}, (9.6e-8, 8.1361e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = law.cdf(np.array([1e-7, 1e-2]))
    assert np.isnan(u[0]) and u[1] == 1.0

    monkeypatch.setattr(d2d, "_ks", lambda law, data: float("nan"))
    x = np.random.default_rng(0).normal(1.0, 0.1, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = d2d.fit_parameter("r0", x, families=("norm",), truncate=False, bootstrap=0)
    assert np.isnan(fit.ks)
    assert "KS statistic unavailable" in fit.note and "degenerate" in fit.note


def test_calibrate_compare_report_figures_and_train_demo_raise_no_raw_warning(tmp_path, torch_loaded):
    """The steps the pipeline test leaves out: the calibration, the comparison of two fits, the report's
    figures and a training study (the digits, a tiny network, one epoch of software and device)."""
    pytest.importorskip("sklearn")
    from hfox_fit.calibration import MIN_REPLICATES, calibrate
    from hfox_fit.fitting.wafers import compare_summaries
    from hfox_fit.torch import export_checkpoint, run_ablation

    with strict() as caught:
        fits = []
        for seed in (11, 12):
            store = CampaignStore(tmp_path / f"c{seed}.h5")
            store.ingest([read_measurements(p) for p in write_wafer(_wafer({**CASES["paper"], "seed": seed, "devices": 96, "pulses": 300}),
                                                                      tmp_path / f"raw{seed}", "bench", truth=False)
                          if p.is_file()])
            fit = fit_campaign(store.iter_dies(), law="two_slope", bootstrap=40)
            fit.add_calibration(calibrate(fit, replicates=MIN_REPLICATES, max_devices=32, seed=0).to_dict())
            fit.save(store)
            fits.append((store, fit))
        compare_summaries(fits[0][1].summary(), fits[1][1].summary())
        report_store(fits[0][0].path, tmp_path / "report")
        export_checkpoint(fits[0][1].model, tmp_path / "model.pt", provenance={"store": "c11.h5"})
        run_ablation(tmp_path / "model.pt", tmp_path / "study", epochs=1, seeds=1, conditions=["software", "device"],
                     hidden=8)
    assert (tmp_path / "study" / "ablation.csv").is_file()
    assert all(issubclass(w.category, HfoxWarning) for w in caught)

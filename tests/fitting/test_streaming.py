"""The campaign fit streams: each die is read when its turn comes, and what it keeps is per train, not per read."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fit_helpers import small_die_store

from hfox_fit.exceptions import FitError
from hfox_fit.fitting import CampaignFitter
from hfox_fit.fitting._rtn_detect import SAMPLE_READS
from hfox_fit.schema import DieData
from hfox_fit.synth import make_wafer

ROOT = Path(__file__).resolve().parents[2]


def _arrays(obj, seen=None):
    """Every ndarray reachable from ``obj`` through dataclass fields, dicts, lists and tuples (not DataFrames)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (pd.DataFrame, pd.Series, str, bytes)):
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v, seen)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _arrays(getattr(obj, name), seen)


def _detection_sample(res):
    """The reads of the die's sampled quiet trains (:mod:`hfox_fit.fitting._rtn_detect`), kept like the traces."""
    sample = res.rtn.extra.get("detection_sample") or {}
    return [sample[k] for k in ("resid", "usable") if k in sample]


def _fit(dies):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CampaignFitter(law="auto", bootstrap=10).fit(dies).result_


@pytest.fixture(scope="module")
def long_and_short():
    """The same 96 cells measured over 400 and over 1600 pulses, fitted as campaigns."""
    out = {}
    for pulses in (400, 1600):
        wafer = make_wafer("paper", devices=96, pulses=pulses, seed=11)
        out[pulses] = (wafer, _fit(wafer.dies))
    return out


def test_per_die_results_keep_no_array_of_reads(long_and_short):
    """What a campaign fit holds per die until pooling: per-train values, no (trains x pulses) array."""
    for pulses, (wafer, fit) in long_and_short.items():
        for res in fit.drift.die_results_:
            assert res.mask_bits is None and res.rtn_excess == {} and res.rtn.high is None
            n_rows = sum(len(d.devices) * len(d.cycles) for d in wafer.dies if d.die == res.die)
            sample = _detection_sample(res)
            for arr in _arrays(res):
                if arr is res.traces:  # at most max_traces example trains per die (the validation plot)
                    assert arr.shape[0] <= 64
                    continue
                if any(arr is v for v in sample):  # a few quiet trains for the p_down check: a fixed read budget
                    assert arr.size <= SAMPLE_READS
                    continue
                # per train, a handful of values, or a fixed set of frequencies; never one per pulse
                assert arr.size <= max(n_rows * 64, pulses), (arr.shape, pulses)
        with pytest.raises(FitError, match="keeps only what pooling needs"):
            fit.drift.die_results_[0].mask()


def test_per_die_result_does_not_grow_with_the_pulses(long_and_short):
    """Pickled per-die result less its example traces: four times the pulses, about the same size."""

    def size(res):
        return len(pickle.dumps(res, protocol=5)) - res.traces.nbytes - sum(v.nbytes for v in _detection_sample(res))

    for fit in (long_and_short[400][1], long_and_short[1600][1]):  # its own bound, whatever the pulses
        assert all(sum(v.size for v in _detection_sample(r)) <= 2 * SAMPLE_READS for r in fit.drift.die_results_)

    short = sum(size(r) for r in long_and_short[400][1].drift.die_results_)
    long = sum(size(r) for r in long_and_short[1600][1].drift.die_results_)
    assert long < 1.25 * short, (short, long)


class _CountedDie:
    """A die source that checks the dies it gave before were dropped when the next one is read."""

    def __init__(self, die: DieData, given: list):
        self.die, self.given, self.name = die, given, f"{die.wafer}/{die.die}"

    def __call__(self):
        gc.collect()
        alive = [name for name, ref in self.given if ref() is not None]
        assert not alive, f"reading {self.name} while {alive} are still in memory"
        copy = DieData(**{k: getattr(self.die, k) for k in self.die.__dataclass_fields__})
        copy.resistance = np.array(self.die.resistance)  # its own reads, so a kept one would show
        self.given.append((self.name, weakref.ref(copy)))
        return copy


def test_each_die_is_read_when_needed_and_dropped_after_its_step():
    wafer = make_wafer("paper", devices=1536, pulses=120, seed=5)
    assert len(wafer.dies) >= 2
    given = []
    fit = _fit([_CountedDie(d, given) for d in wafer.dies])
    assert [name for name, _ in given] == [f"{d.wafer}/{d.die}" for d in wafer.dies]
    gc.collect()
    assert all(ref() is None for _, ref in given)
    assert len(fit.cells) == sum(d.n_cells for d in wafer.dies)


@pytest.mark.slow
def test_bench_scale_quick_runs():
    """The scale benchmark's smoke test: it runs end to end and prints its figures with their targets."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert "peak RSS" in out.stdout and "target <= 2.0x" in out.stdout
    assert "cells/s" in out.stdout and "target >= 1.6x" in out.stdout


# --------------------------------------------------------------------------------------
# hfox-fit fit STORE --only W/D: refit some dies, pool them with the others' kept results
# --------------------------------------------------------------------------------------

N_DIES = 3


@pytest.fixture(scope="module")
def three_dies(tmp_path_factory):
    """A store of 3 dies (64 cells x 250 pulses) and its full fit, saved in a copy kept aside."""
    from hfox_fit.cli import main
    from hfox_fit.store import CampaignStore

    path = small_die_store(tmp_path_factory.mktemp("only") / "campaign.h5", N_DIES, first_seed=80)
    unfitted = path.with_name("unfitted.h5")
    unfitted.write_bytes(path.read_bytes())
    assert main(["fit", "--calibrate", "0", str(path), "--quiet"]) == 0
    names = [f"{w}/{d}" for w, d in CampaignStore(path).dies()]
    return path, unfitted, names


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def _assert_same_fit(got, want):
    from numeric_helpers import assert_close_arrays, assert_close_tree

    assert list(got.cells.columns) == list(want.cells.columns)
    assert len(got.cells) == len(want.cells) == N_DIES * 64
    for col in want.cells.columns:
        assert_close_arrays(got.cells[col].to_numpy(), want.cells[col].to_numpy(), rtol=1e-9, name=col)
    assert_close_tree(got.summary, want.summary, rtol=1e-9)
    assert_close_tree(got.model, want.model, rtol=1e-9)
    for name in want.arrays:
        assert_close_arrays(got.arrays[name], want.arrays[name], rtol=1e-9, name=name)


def test_only_refits_those_dies_and_merges_them_into_the_saved_fit(three_dies, tmp_path, monkeypatch):
    import h5py

    from hfox_fit.cli import main
    from hfox_fit.fitting import campaign
    from hfox_fit.store import CampaignStore

    full, _, names = three_dies
    path = _copy(full, tmp_path)
    with h5py.File(path, "r+") as f:  # the middle die's kept result is gone: only a refit can bring it back
        del f["fit/dies"][names[1].replace("/", "%2F")]
    fitted = []
    real = campaign.fit_die
    monkeypatch.setattr(campaign, "fit_die", lambda die, *a, **k: fitted.append(f"{die.wafer}/{die.die}")
                        or real(die, *a, **k))
    assert main(["fit", "--calibrate", "0", str(path), "--only", names[1], "--quiet"]) == 0
    assert fitted == [names[1]]  # the other dies were pooled from their kept results
    want = CampaignStore(full).load_fit()
    _assert_same_fit(CampaignStore(path).load_fit(), want)
    law, kept, stale = CampaignStore(path).load_die_results()
    assert law == "auto" and sorted(kept) == names and not stale  # the merged fit keeps every die's result again
    fitted.clear()
    assert main(["fit", "--calibrate", "0", str(path), "--only", names[2], names[0], "--quiet"]) == 0
    assert sorted(fitted) == sorted([names[0], names[2]])
    _assert_same_fit(CampaignStore(path).load_fit(), want)


def test_only_errors_are_one_line(three_dies, tmp_path, capsys):
    import h5py

    from hfox_fit.cli import main
    from hfox_fit.schema import dies_to_table
    from hfox_fit.store import CampaignStore

    full, unfitted, names = three_dies
    wafer = names[0].split("/")[0]
    path = _copy(full, tmp_path)
    before = path.read_bytes()
    assert main(["fit", "--calibrate", "0", str(path), "--only", f"{wafer}/D99", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{wafer}/D99 not in" in err and names[0] in err and "Traceback" not in err
    assert main(["fit", "--calibrate", "0", str(path), "--only", names[0], "--law", "power", "--quiet"]) == 2
    assert "was made with --law auto, not power" in capsys.readouterr().err
    assert path.read_bytes() == before  # nothing written
    (tmp_path / "fresh").mkdir()
    fresh = _copy(unfitted, tmp_path / "fresh")
    assert main(["fit", "--calibrate", "0", str(fresh), "--only", names[0], "--quiet"]) == 2
    assert "no fit in" in capsys.readouterr().err
    with h5py.File(path, "r+") as f:  # a fit saved before per-die results were kept
        del f["fit/dies"]
    assert main(["fit", "--calibrate", "0", str(path), "--only", names[0], "--quiet"]) == 2
    assert "keeps no per-die results" in capsys.readouterr().err
    # files ingested after the fit: the kept results of the other dies may miss their reads
    stale = _copy(full, tmp_path / "fresh")
    extra = dies_to_table(make_wafer("paper", devices=16, pulses=250, seed=99).dies)
    extra["die"] = "D09"
    CampaignStore(stale).ingest_table(extra, name="later")
    assert main(["fit", "--calibrate", "0", str(stale), "--only", names[0], "--quiet"]) == 2
    assert "ingested into" in capsys.readouterr().err


def test_bootstrap_ranks_by_counting_equal_rankdata():
    """The correlation bootstrap's ranks of a resample (ties included) are exactly scipy's average ranks."""
    from scipy import stats

    from hfox_fit.fitting._ranks import _resample_ranks

    rng = np.random.default_rng(3)
    for m in (5, 97, 4000):
        x = rng.normal(size=m)
        x[: m // 3] = np.round(x[: m // 3], 1)  # ties in the data, besides those of drawing with replacement
        idx = rng.integers(0, m, (40, m))
        values, keys = np.unique(x, return_inverse=True)
        assert np.array_equal(_resample_ranks(keys, len(values), idx), stats.rankdata(x[idx], axis=-1))

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

from hfox_fit.exceptions import FitError
from hfox_fit.fitting import CampaignFitter
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
            for arr in _arrays(res):
                if arr is res.traces:  # at most max_traces example trains per die (the validation plot)
                    assert arr.shape[0] <= 64
                    continue
                # per train, a handful of values, or a fixed set of frequencies; never one per pulse
                assert arr.size <= max(n_rows * 64, pulses), (arr.shape, pulses)
        with pytest.raises(FitError, match="keeps only what pooling needs"):
            fit.drift.die_results_[0].mask()


def test_per_die_result_does_not_grow_with_the_pulses(long_and_short):
    """Pickled per-die result less its example traces: four times the pulses, about the same size."""

    def size(res):
        return len(pickle.dumps(res, protocol=5)) - res.traces.nbytes

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

"""The pooling's independent parts: their seeds come from their names, they run on the fit's workers.

Each parameter's D2D law, the correlations, the C2C laws, the pink spectrum and the RTN
amplitude law draw from a generator of their own (``part_seed``: the fit's random_state
and the part's name), so their numbers depend neither on the order of the parameters nor
on where the parts run. Local worker processes size their BLAS threads to their share of
the cores.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from fit_helpers import fit_quietly
from numeric_helpers import assert_close_tree

from hfox_fit.fitting import D2DFitter, _executor
from hfox_fit.fitting._executor import FIT_BLAS_THREADS, Workers, part_seed, run_here


def _cells(n=400, seed=3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "wafer": "W01", "die": "D01", "device": np.arange(n), "flag": "ok",
        "a": rng.lognormal(0.0, 0.4, n), "a_stderr": np.full(n, 0.01),
        "b": rng.normal(5.0, 1.0, n), "b_stderr": np.full(n, 0.05),
        "c": rng.gamma(3.0, 2.0, n), "c_stderr": np.full(n, 0.05),
    })


def _as_tree(fitter, p):
    d = fitter.fits_[p].to_dict()
    return {k: d[k] for k in ("family", "params", "median", "median_ci90", "sample_median_ci90", "params_ci90")}


def test_a_parameters_law_does_not_depend_on_the_other_parameters():
    """The bootstrap of ``b`` draws the same numbers whether ``a`` was fitted before it, after it or not at all."""
    cells = _cells()
    ab = D2DFitter(["a", "b", "c"], bootstrap=40, random_state=5).fit(cells)
    ba = D2DFitter(["c", "b", "a"], bootstrap=40, random_state=5).fit(cells)
    alone = D2DFitter(["b"], bootstrap=40, random_state=5).fit(cells)
    for p in ("a", "b", "c"):
        assert_close_tree(_as_tree(ba, p), _as_tree(ab, p), rtol=1e-12, path=p)
    assert_close_tree(_as_tree(alone, "b"), _as_tree(ab, "b"), rtol=1e-12, path="b alone")
    # another random_state draws other replicates
    other = D2DFitter(["a", "b", "c"], bootstrap=40, random_state=6).fit(cells)
    assert other.fits_["b"].median_ci90 != ab.fits_["b"].median_ci90


def test_part_seeds_differ_by_name_and_state_only():
    assert part_seed(0, "d2d/m1") == part_seed(0, "d2d/m1")
    assert part_seed(0, "d2d/m1") != part_seed(0, "d2d/t_star")
    assert part_seed(0, "d2d/m1") != part_seed(1, "d2d/m1")
    draws = [np.random.default_rng(part_seed(0, n)).random(3) for n in ("d2d/m1", "d2d/t_star")]
    assert not np.allclose(draws[0], draws[1])


def _pid_and_threads(tag):
    from threadpoolctl import threadpool_info

    return tag, os.getpid(), max((p["num_threads"] for p in threadpool_info()), default=1)


def test_parts_run_in_the_worker_processes_with_their_share_of_the_threads():
    pytest.importorskip("threadpoolctl")
    parts = {f"p{i}": (_pid_and_threads, (i,), {}) for i in range(4)}
    with Workers(jobs=2) as workers:
        got = workers.run(parts)
    assert [got[f"p{i}"][0] for i in range(4)] == list(range(4))  # in the order of the parts
    pids = {pid for _, pid, _ in got.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert all(threads == FIT_BLAS_THREADS == 1 for *_, threads in got.values()), got
    assert run_here(parts)["p0"][1] == os.getpid()


def _die_threads(die, progress=None):
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info()), default=1)


def test_per_die_workers_do_not_oversubscribe_the_cores(small_wafer):
    """Worker processes run one BLAS thread each, not one per core (two workers would share two cores four ways).

    In this process (``jobs=1``) too, during the fit only: its thread pools are restored after.
    """
    from threadpoolctl import threadpool_limits

    pytest.importorskip("threadpoolctl")
    assert _executor.map_dies(_die_threads, small_wafer.dies * 2, jobs=2) == [1, 1]
    with threadpool_limits(limits=2):
        assert _executor.map_dies(_die_threads, small_wafer.dies * 2, jobs=1) == [1, 1]
        assert _die_threads(None) == min(2, os.cpu_count() or 1)


def test_a_failing_part_raises_in_the_client():
    from hfox_fit.exceptions import FitError

    parts = {"ok": (int, ("3",), {}), "bad": (int, ("x",), {})}
    with Workers(jobs=2) as workers, pytest.raises(ValueError):
        workers.run(parts)
    too_few = D2DFitter(["a"], bootstrap=10, fallback=False)
    with pytest.raises(FitError, match="at least 5"):
        too_few.fit(_cells(n=4))


def test_jobs_two_pools_on_the_workers_with_the_numbers_of_jobs_one(small_wafer, monkeypatch):
    """The pooling's parts go to the worker processes, and the fit is the one of --jobs 1 to 1e-9."""
    one = fit_quietly(small_wafer.dies, law="two_slope", bootstrap=20)
    ran = []
    real = Workers.run

    def run(self, parts):
        ran.append((self.parallel, sorted(parts)))
        return real(self, parts)

    monkeypatch.setattr(Workers, "run", run)
    two = fit_quietly(small_wafer.dies, law="two_slope", bootstrap=20, jobs=2)
    assert ran and ran[0][0] is True
    assert {"d2d/m1", "d2d/r0", "d2d/correlation", "d2d/c2c", "noise/pink"} <= set(ran[0][1])
    assert_close_tree(two.summary(), one.summary(), rtol=1e-9, path="summary")
    for col in one.cells.columns:
        if one.cells[col].dtype.kind == "f":
            np.testing.assert_allclose(two.cells[col], one.cells[col], rtol=1e-9, equal_nan=True, err_msg=col)

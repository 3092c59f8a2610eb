"""The per-die step on Dask: the same fitted numbers whichever way the dies run, and its errors.

A small store (3 dies of 64 cells x 250 pulses) is fitted with ``--jobs 1``, ``--jobs 2``,
``--scheduler local:2`` and a scheduler plus two workers started here as processes on
127.0.0.1; every fitted table and summary must agree to 1e-9 relative.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fit_helpers import small_die_store
from numeric_helpers import assert_close_arrays, assert_close_tree

import hfox_fit
from hfox_fit.cli import main
from hfox_fit.exceptions import FitError
from hfox_fit.fitting import _executor
from hfox_fit.store import CampaignStore, StoredDie

distributed = pytest.importorskip("distributed")

RTOL = 1e-9
N_DIES = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = small_die_store(tmp_path_factory.mktemp("dask") / "campaign.h5", N_DIES, first_seed=60)
    assert len(CampaignStore(path).dies()) == N_DIES
    return path


def _env():
    """The environment of a worker process: this checkout of hfox_fit and these tests first on its path."""
    root = Path(hfox_fit.__file__).resolve().parents[1]
    here = Path(__file__).resolve().parent  # the test's own functions are unpickled by reference
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(here), str(here.parent), env.get("PYTHONPATH", "")])
    return env


@contextlib.contextmanager
def _cluster(folder, n_workers=2):
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1; yields (address, workers)."""
    scheduler_file = folder / "scheduler.json"
    log = open(folder / "log.txt", "w")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            stdout=log, stderr=subprocess.STDOUT, env=_env()))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), (folder / "log.txt").read_text()
        workers = []
        for _ in range(n_workers):  # no nanny: a killed worker stays dead
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                 "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(folder)))
        procs.extend(workers)
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
            address = client.scheduler.address
        yield address, workers
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory):
    with _cluster(tmp_path_factory.mktemp("scheduler")) as cluster:
        yield cluster


def _fit(store, *options):
    assert main(["fit", "--calibrate", "0", str(store), "--law", "two_slope", "--quiet", *options]) == 0
    return CampaignStore(store).load_fit()


def _assert_same_fit(got, want, label):
    assert list(got.cells.columns) == list(want.cells.columns), label
    assert len(got.cells) == len(want.cells) == N_DIES * 64, label
    for col in want.cells.columns:
        assert_close_arrays(got.cells[col].to_numpy(), want.cells[col].to_numpy(), rtol=RTOL, name=f"{label}: {col}")
    assert_close_tree(got.summary, want.summary, rtol=RTOL, path=label)


def test_same_numbers_whichever_way(store, remote_cluster, monkeypatch):
    """The per-die step and the pooling's independent parts on the workers: the numbers of --jobs 1."""
    address, _ = remote_cluster
    want = _fit(store, "--jobs", "1")
    assert set(want.cells["die"]) == {"D01", "D02", "D03"}
    ran, real = [], _executor.Workers.run

    def run(self, parts):
        ran.append((self.jobs, self.scheduler, set(parts)))
        return real(self, parts)

    monkeypatch.setattr(_executor.Workers, "run", run)
    for options in (("--jobs", "2"), ("--scheduler", "local:2"), ("--scheduler", address)):
        _assert_same_fit(_fit(store, *options), want, " ".join(options))
    assert [(jobs, scheduler) for jobs, scheduler, _ in ran] == [(2, None), (1, "local:2"), (1, address)]
    assert all({"d2d/m1", "d2d/r0", "d2d/correlation", "d2d/c2c", "noise/pink"} <= parts for *_, parts in ran)


def _fit_or_fail(die, fail_on, progress=None):
    if die.die == fail_on:
        raise ValueError(f"bad data in {die.die}")
    return float(np.nansum(die.resistance))


def test_failing_die_named_others_kept(store, remote_cluster):
    address, _ = remote_cluster
    sources = [StoredDie(store, w, d) for w, d in CampaignStore(store).dies()]
    with pytest.raises(_executor.ChunkFailure) as info:
        _executor.map_dies(_fit_or_fail, sources, ("D02",), scheduler=address)
    err = info.value
    assert list(err.failures) == ["W01/D02"] and "bad data in D02" in err.failures["W01/D02"]
    assert "W01/D02" in str(err) and "ValueError" in str(err)
    assert err.results[1] is None and err.results[0] is not None and err.results[2] is not None
    serial = _executor.map_dies(_fit_or_fail, sources, ("none",))
    assert err.results[0] == serial[0] and err.results[2] == serial[2]


@pytest.mark.parametrize("text", ["local:0", "local:x", "tcp://nohost", "spark://h:1", "local"])
def test_bad_scheduler_text(store, text, capsys):
    before = CampaignStore(store).sha256()
    assert main(["fit", "--calibrate", "0", str(store), "--quiet", "--scheduler", text]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "local:N" in err and "tcp://HOST:PORT" in err, err
    assert CampaignStore(store).sha256() == before


def test_unreachable_scheduler(store, capsys, monkeypatch):
    monkeypatch.setattr(_executor, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = CampaignStore(store).sha256()
    assert main(["fit", "--calibrate", "0", str(store), "--quiet", "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Dask scheduler answered" in err, err
    assert CampaignStore(store).sha256() == before


def test_jobs_and_scheduler_together(store, capsys):
    assert main(["fit", "--calibrate", "0", str(store), "--quiet", "--jobs", "2", "--scheduler", "local:2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_without_dask_explains_install(store, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["fit", "--calibrate", "0", str(store), "--quiet", "--scheduler", "local:2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hfox_fit[dask]'" in err, err
    with pytest.raises(FitError, match="hfox_fit\\[dask\\]"):
        _executor.map_dies(_fit_or_fail, [], ("x",), scheduler="local:1")


class _FailingDie(StoredDie):
    """D02 fails on every try (bad data that slipped through); D03 fails on its first try only."""

    def __init__(self, path, wafer, die, marker=None):
        super().__init__(path, wafer, die)
        self.marker = marker

    def __call__(self):
        if self.die == "D02":
            raise ValueError("resistance array damaged")
        if self.die == "D03" and not Path(self.marker).exists():
            Path(self.marker).write_text("tried once\n")
            raise RuntimeError("transient failure")
        return super().__call__()


def test_cli_keeps_the_other_dies_and_names_the_failed(store, remote_cluster, tmp_path, monkeypatch, capsys):
    import hfox_fit.store as store_module

    address, _ = remote_cluster
    marker = tmp_path / "d03-tried"
    monkeypatch.setattr(store_module, "StoredDie", lambda path, wafer, die: _FailingDie(path, wafer, die, marker))
    assert main(["fit", "--calibrate", "0", str(store), "--law", "two_slope", "--quiet", "--scheduler", address]) == 1
    err = capsys.readouterr().err
    assert "die W01/D02 failed twice" in err and "resistance array damaged" in err, err
    assert "--only W01/D02" in err and "W01/D03" not in err, err
    assert marker.exists()  # D03 failed once and was retried
    fit = CampaignStore(store).load_fit()
    assert sorted(set(fit.cells["die"])) == ["D01", "D03"] and len(fit.cells) == 2 * 64
    assert any("W01/D02 not fitted" in note for note in fit.summary["notes"])


def test_killed_worker_same_numbers(store, tmp_path):
    from hfox_fit.fitting import CampaignFitter

    sources = [StoredDie(store, w, d) for w, d in CampaignStore(store).dies()]
    want = CampaignFitter("two_slope", bootstrap=20).fit(sources).result_
    with _cluster(tmp_path) as (address, workers):
        with distributed.Client(address, timeout="30s") as client:
            pids = client.run(os.getpid)  # {worker address: its process id}
            fitter = CampaignFitter("two_slope", bootstrap=20, scheduler=address)
            errors = []
            thread = threading.Thread(target=lambda: _catch(errors, fitter.fit, sources))
            thread.start()
            victim = None
            deadline = time.monotonic() + 60
            while victim is None and time.monotonic() < deadline:
                busy = [addr for addr, keys in client.processing().items() if keys]
                victim = busy[0] if busy else None
                time.sleep(0.05)
            assert victim is not None, "no worker ever took a die"
            killed = next(p for p in workers if p.pid == pids[victim])
            killed.kill()
            thread.join(timeout=300)
            assert not thread.is_alive() and not errors, errors
            assert killed.wait(timeout=10) != 0
            assert len(client.scheduler_info()["workers"]) == 1  # the fit finished on the other worker
    _assert_same_fit_result(fitter.result_, want)


def _catch(errors, func, *args):
    try:
        func(*args)
    except Exception as err:  # noqa: BLE001 - shown by the test
        errors.append(err)


def _assert_same_fit_result(got, want):
    assert len(got.cells) == len(want.cells) == N_DIES * 64
    for col in want.cells.columns:
        assert_close_arrays(got.cells[col].to_numpy(), want.cells[col].to_numpy(), rtol=RTOL, name=col)
    assert_close_tree(got.summary(), want.summary(), rtol=RTOL)

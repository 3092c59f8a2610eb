"""The per-die step on Dask: the same fitted numbers whichever way the dies run, and its errors.

A small store (3 dies of 64 cells x 250 pulses) is fitted with ``--jobs 1``, ``--jobs 2``,
``--scheduler local:2`` and a scheduler plus two workers started here as processes on
127.0.0.1; every fitted table and summary must agree to 1e-9 relative.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numeric_helpers import assert_close_arrays, assert_close_tree

import hfox_fit
from hfox_fit.cli import main
from hfox_fit.cli._fit import StoredDie
from hfox_fit.exceptions import FitError
from hfox_fit.fitting import _executor
from hfox_fit.schema import dies_to_table
from hfox_fit.store import CampaignStore

distributed = pytest.importorskip("distributed")

RTOL = 1e-9
N_DIES = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from hfox_fit.synth import make_wafer

    parts = []
    for k in range(N_DIES):
        table = dies_to_table(make_wafer("paper", devices=64, pulses=250, seed=60 + k).dies)
        table["die"] = f"D{k + 1:02d}"
        parts.append(table)
    path = tmp_path_factory.mktemp("dask") / "campaign.h5"
    CampaignStore(path).ingest_table(pd.concat(parts, ignore_index=True), name="simulated")
    assert len(CampaignStore(path).dies()) == N_DIES
    return path


def _env():
    """The environment of a worker process: this checkout of hfox_fit and these tests first on its path."""
    root = Path(hfox_fit.__file__).resolve().parents[1]
    here = Path(__file__).resolve().parent  # the test's own functions are unpickled by reference
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(here), str(here.parent), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory):
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; yields (address, workers)."""
    folder = tmp_path_factory.mktemp("scheduler")
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
        for _ in range(2):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                 "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(folder)))
        procs.extend(workers)
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
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


def _fit(store, *options):
    assert main(["fit", str(store), "--law", "two_slope", "--quiet", *options]) == 0
    return CampaignStore(store).load_fit()


def _assert_same_fit(got, want, label):
    assert list(got.cells.columns) == list(want.cells.columns), label
    assert len(got.cells) == len(want.cells) == N_DIES * 64, label
    for col in want.cells.columns:
        assert_close_arrays(got.cells[col].to_numpy(), want.cells[col].to_numpy(), rtol=RTOL, name=f"{label}: {col}")
    assert_close_tree(got.summary, want.summary, rtol=RTOL, path=label)


def test_same_numbers_whichever_way(store, remote_cluster):
    address, _ = remote_cluster
    want = _fit(store, "--jobs", "1")
    assert set(want.cells["die"]) == {"D01", "D02", "D03"}
    for options in (("--jobs", "2"), ("--scheduler", "local:2"), ("--scheduler", address)):
        _assert_same_fit(_fit(store, *options), want, " ".join(options))


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
    assert main(["fit", str(store), "--quiet", "--scheduler", text]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "local:N" in err and "tcp://HOST:PORT" in err, err
    assert CampaignStore(store).sha256() == before


def test_unreachable_scheduler(store, capsys, monkeypatch):
    monkeypatch.setattr(_executor, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = CampaignStore(store).sha256()
    assert main(["fit", str(store), "--quiet", "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Dask scheduler answered" in err, err
    assert CampaignStore(store).sha256() == before


def test_jobs_and_scheduler_together(store, capsys):
    assert main(["fit", str(store), "--quiet", "--jobs", "2", "--scheduler", "local:2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_without_dask_explains_install(store, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["fit", str(store), "--quiet", "--scheduler", "local:2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hfox_fit[dask]'" in err, err
    with pytest.raises(FitError, match="hfox_fit\\[dask\\]"):
        _executor.map_dies(_fit_or_fail, [], ("x",), scheduler="local:1")

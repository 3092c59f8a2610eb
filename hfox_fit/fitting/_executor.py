"""How the per-die step runs: in this process, in local worker processes or on a Dask cluster.

:func:`map_dies` is the one place that decides where :func:`~hfox_fit.fitting.fit_die`
runs for each die; the pooling that follows does not care. Results always come back in
the order of the dies (the store's sorted die names), never in the order workers finish.

A die is either a :class:`~hfox_fit.schema.DieData` or a *die source*: a picklable
object with a ``name`` (``"W03/D07"``) whose call returns the die's DieData (the CLI passes
sources that open the store read-only). A worker calls the source itself, so the client
ships a path and two names instead of the arrays, and only the client writes the store.

Progress: ``func`` takes a ``progress`` keyword, a callable it calls with the
fraction of its die done so far (0 to 1); the bar (:class:`~hfox_fit._progress.Progress`)
adds up these fractions, so it moves within a die. Local worker processes send theirs
through a queue; on Dask the bar moves by whole dies as they complete.

Dask (``scheduler=``): ``"local:N"`` starts a ``distributed.LocalCluster`` of N one-thread
worker processes for this call; ``"tcp://HOST:PORT"`` connects to a running scheduler.
Each die is one task, retried once elsewhere when it fails (a worker that dies takes
its tasks with it; the scheduler runs them again on the others).

:class:`Workers` holds the worker processes (or the Dask client) for a whole fit, so that
the pooling after the per-die step runs its independent parts (each parameter's D2D law,
the correlations, the pink spectrum, ...) on the same workers (:meth:`Workers.run`). Such
a part draws its random numbers from :func:`part_seed`, which depends on the fit's
``random_state`` and the part's name only, so the numbers do not depend on where or in
which order the parts run. Every process that fits runs one BLAS thread
(:data:`FIT_BLAS_THREADS`): ``jobs`` workers on a 2-core machine do not run ``2 x jobs``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as _queue
import uuid
import warnings
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np

from ..exceptions import FitError
from ..schema import DieData

__all__ = ["map_dies", "Workers", "part_seed", "run_here", "parse_scheduler", "ChunkFailure", "DASK_INSTALL_HINT"]

_WORKER_QUEUE = None  # the progress queue of a worker process (set by its initializer)

#: What to do when ``--scheduler`` is asked for without dask.distributed installed.
DASK_INSTALL_HINT = "install it with `pip install 'hfox_fit[dask]'` (or `pip install 'dask[distributed]'`)"

#: Seconds to wait for a remote scheduler to answer.
CONNECT_TIMEOUT_S = 10


class ChunkFailure(FitError):
    """Dies that failed on every try; the other dies' results are in :attr:`results` (None where failed)."""

    def __init__(self, failures: dict, results: list):
        self.failures, self.results = dict(failures), results
        shown = "; ".join(f"{name}: {err}" for name, err in list(self.failures.items())[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} die(s) failed twice: {shown}{more}.")


def _die_name(item) -> str:
    if isinstance(item, DieData):
        return f"{item.wafer}/{item.die}"
    return str(getattr(item, "name", item))


def _checked(dies):
    for d in dies:
        if not isinstance(d, DieData) and not (callable(d) and hasattr(d, "name")):
            raise FitError(f"fit_campaign expects DieData objects, got {type(d).__name__}.")
        yield d


def _load(item) -> DieData:
    """The die itself: ``item`` when it is one, else what its source reads (in the worker)."""
    if isinstance(item, DieData):
        return item
    die = item()
    if not isinstance(die, DieData):
        raise FitError(f"die source {_die_name(item)} gave {type(die).__name__}, not DieData.")
    return die


def part_seed(random_state, name: str) -> list:
    """The seed of one independent part of the pooling (``np.random.default_rng(part_seed(...))``).

    It depends on the fit's ``random_state`` (an int; anything else counts as 0) and on the
    part's ``name`` (e.g. ``"d2d/m1"``) only, never on which worker runs the part or when.
    """
    seed = int(random_state) if isinstance(random_state, (int, np.integer)) and random_state >= 0 else 0
    return [seed, zlib.crc32(str(name).encode("utf-8"))]


#: Environment variables that size the thread pools of numerical libraries loaded later in a worker.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


#: BLAS threads of a process fitting dies or pooled parts. The fit's BLAS calls are small (batched
#: 2x2 to 4x4 solves, products over one die's cells), where a second thread gives little for its
#: cost: on a 2-core machine, the serial per-die step of 16 dies of 1024 cells took 9.6 s with one
#: thread (9.6 s CPU) and 9.1 s with two (13 s CPU) when the machine was quiet, and 2.5 s against
#: 3.4 s for 4 dies when other work shared it; ``jobs`` processes with as many threads as cores
#: each would share the cores ``jobs x cores`` ways. One thread everywhere also runs the same
#: code whichever way the fit runs.
FIT_BLAS_THREADS = 1


def _limit_threads(threads: int = FIT_BLAS_THREADS):
    """Size the BLAS/OpenMP thread pools of this process to ``threads``; returns the limiter (None without threadpoolctl).

    A forked worker inherits the parent's BLAS already loaded, with as many threads as cores;
    threadpoolctl resizes the loaded pools (when it is installed; without it they keep theirs),
    the environment covers libraries loaded later. ``.restore_original_limits()`` on the
    returned object undoes the resizing.
    """
    for var in _THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    return _threadpool_limits(threads)


def _threadpool_limits(threads: int):
    """threadpoolctl's limiter of the loaded BLAS/OpenMP pools, at ``threads`` (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a requirement; an environment without it keeps the libraries' own counts
        return None
    return threadpool_limits(limits=threads)


class _OneBlasThread:
    """``with _OneBlasThread():`` the fit's BLAS thread count inside, the process's own restored after."""

    def __enter__(self):
        self.limiter = _threadpool_limits(FIT_BLAS_THREADS)
        return self

    def __exit__(self, *exc):
        if self.limiter is not None:
            self.limiter.restore_original_limits()


def _init_worker(q) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = q
    _limit_threads()  # the worker's own process: for its whole life


def _run_in_worker(func, index, die, args, report_progress=True):
    """``func(die, *args)`` in a worker, its progress sent to the parent as ``(index, fraction)``."""
    q = _WORKER_QUEUE if report_progress else None
    report = None if q is None else (lambda fraction: q.put((index, float(fraction))))
    return func(_load(die), *args, progress=report)


def _run_part(func, args, kwargs):
    """One independent part of the pooling, wherever it runs."""
    return func(*args, **kwargs)


def _run_part_recorded(func, args, kwargs):
    """:func:`_run_part` in a worker, with its warnings recorded (shown again by the client, in order)."""
    with warnings.catch_warnings(record=True) as caught, _OneBlasThread():
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


def run_here(parts: dict, on_done=None) -> dict:
    """Run the parts ``{name: (func, args, kwargs)}`` one after the other in this process (see :meth:`Workers.run`)."""
    results = {}
    for name in parts:
        results[name] = _run_part(*parts[name])
        if on_done is not None:
            on_done(name)
    return results


def _run_chunk(func, item, args):
    """One Dask task: read the die where it runs (when ``item`` is a source) and fit it."""
    with _OneBlasThread():  # a Dask worker may be shared: its thread pools restored after the task
        return func(_load(item), *args, progress=None)


class _DieFractions:
    """The fraction done of each die; their sum is the bar's count."""

    def __init__(self, bar):
        self.bar, self.done = bar, {}

    def set(self, index: int, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction > self.done.get(index, 0.0):
            self.done[index] = fraction
            if self.bar is not None:
                self.bar.update_to(sum(self.done.values()))


def parse_scheduler(scheduler: str):
    """``("local", N)`` or ``("remote", address)`` from ``"local:N"`` / ``"tcp://HOST:PORT"``; FitError otherwise."""
    text = str(scheduler).strip()
    expected = "expected local:N (N worker processes on this machine) or tcp://HOST:PORT (a running Dask scheduler)"
    if text.startswith("local:"):
        count = text[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise FitError(f"--scheduler {text!r}: N must be a positive integer; {expected}.")
        return "local", int(count)
    if text.startswith(("tcp://", "tls://")):
        host, _, port = text.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise FitError(f"--scheduler {text!r}: no HOST:PORT after the protocol; {expected}.")
        return "remote", text
    raise FitError(f"--scheduler {text!r} is not understood; {expected}.")


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise FitError(f"--scheduler needs dask.distributed, which is not installed: {DASK_INSTALL_HINT}.") from err
    return distributed


def _connect(scheduler: str):
    """A ``(client, cluster)`` pair for ``scheduler`` (cluster None when remote); FitError when none can be had."""
    import logging

    kind, value = parse_scheduler(scheduler)
    distributed = _import_distributed()
    if kind == "local":
        cluster = distributed.LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        try:
            return distributed.Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
    try:
        return distributed.Client(value, timeout=f"{CONNECT_TIMEOUT_S}s"), None
    except (OSError, TimeoutError) as err:
        raise FitError(f"--scheduler {value}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s ({err}). "
                       "Start one (`dask scheduler`, then `dask worker ADDRESS`) or check the address.") from err


class Workers:
    """Where the work of one fit runs: here (``jobs=1``), in ``jobs`` local processes, or on Dask.

    A context manager: the worker processes (or the Dask client, and the local cluster of
    ``"local:N"``) start on first use and stay for the whole fit, the per-die step
    (:meth:`map_dies`) and the pooling's independent parts (:meth:`run`), and stop on exit.
    """

    def __init__(self, jobs: int = 1, scheduler: str | None = None):
        if scheduler is not None and int(jobs) != 1:
            raise FitError(f"give either jobs ({jobs}, local processes) or a Dask scheduler ({scheduler!r}), "
                           "not both.")
        if scheduler is not None:
            parse_scheduler(scheduler)  # a bad address fails before any die is read
        self.jobs, self.scheduler = int(jobs), scheduler
        self._pool = self._queue = self._client = self._cluster = self._threads = None
        self._run_id = uuid.uuid4().hex[:8]  # Dask keys unique per fit: a shared scheduler keeps fits apart

    @property
    def parallel(self) -> bool:
        """Whether work leaves this process."""
        return self.scheduler is not None or self.jobs > 1

    def __enter__(self) -> Workers:
        if not self.parallel:  # the work runs here: this process's BLAS threads as a worker's, until close
            self._threads = _OneBlasThread().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes, or close the Dask client (and its local cluster)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.__exit__(None, None, None)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def _local(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context()
            self._queue = ctx.Queue()
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self._queue,))
        return self._pool

    def _dask(self):
        if self._client is None:
            self._client, self._cluster = _connect(self.scheduler)
            if not self._client.scheduler_info().get("workers"):
                self._client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S * 6)
        return self._client

    def map_dies(self, func, dies, args=(), *, progress=None) -> list:
        """``[func(die, *args) for die in dies]`` on these workers, in the order of ``dies`` (see :func:`map_dies`)."""
        fractions = _DieFractions(progress)
        if self.scheduler is not None:
            return self._map_dask(func, list(_checked(dies)), args, fractions)
        if self.jobs == 1:
            results = []
            with _OneBlasThread():
                for i, d in enumerate(_checked(dies)):
                    report = None if progress is None else (lambda fraction, i=i: fractions.set(i, fraction))
                    results.append(func(_load(d), *args, progress=report))
                    fractions.set(i, 1.0)
            return results
        pool = self._local()
        q = self._queue if progress is not None else None
        futures = [pool.submit(_run_in_worker, func, i, d, args, q is not None) for i, d in enumerate(_checked(dies))]
        index = {f: i for i, f in enumerate(futures)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(q, fractions)
            for fut in done:
                if fut.exception() is not None:
                    pending = ()  # raised below, in the order of the dies
                    break
                fractions.set(index[fut], 1.0)
        return [fut.result() for fut in futures]

    def _map_dask(self, func, items, args, fractions) -> list:
        as_completed = _import_distributed().as_completed
        client = self._dask()
        futures = [client.submit(_run_chunk, func, item, args, key=f"hfox-fit-{self._run_id}-{_die_name(item)}",
                                 retries=1, pure=False)
                   for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        results, failures = [None] * len(futures), {}
        for fut in as_completed(futures):
            i = index[fut.key]
            if fut.status == "error":
                err = fut.exception()
                failures[i] = f"{type(err).__name__}: {err}"
            else:
                results[i] = fut.result()
                fractions.set(i, 1.0)
            fut.release()  # the worker may drop the result now that the client holds it
        if failures:
            raise ChunkFailure({_die_name(items[i]): failures[i] for i in sorted(failures)}, results)
        return results

    def run(self, parts: dict, on_done=None) -> dict:
        """Run independent parts, ``{name: (func, args, kwargs)}``, on these workers; ``{name: result}``.

        Submitted in the order given (put the longest first); each part must draw its random
        numbers from its own seed (:func:`part_seed`), so the results are those of running
        them here one after the other. The first part that raises (in the order given) raises.
        ``on_done(name)``, when given, is called as each part's result arrives (in that order).
        """
        if not parts:
            return {}
        names = list(parts)
        if not self.parallel or len(names) == 1:
            with _OneBlasThread():
                return run_here(parts, on_done)
        if self.scheduler is not None:
            client = self._dask()
            futures = [client.submit(_run_part_recorded, *parts[name], key=f"hfox-fit-{self._run_id}-pool-{name}",
                                     retries=1, pure=False) for name in names]
        else:
            pool = self._local()
            futures = [pool.submit(_run_part_recorded, *parts[name]) for name in names]
        results = {}
        for name, fut in zip(names, futures):
            results[name], caught = fut.result()
            for category, message in caught:
                warnings.warn(message, category, stacklevel=2)
            if on_done is not None:
                on_done(name)
        return results


def map_dies(func, dies, args=(), *, jobs: int = 1, progress=None, n_dies: int | None = None,
             scheduler: str | None = None, workers: Workers | None = None) -> list:
    """``[func(die, *args) for die in dies]``, here, in ``jobs`` worker processes or on Dask, with progress.

    ``func`` must be a picklable module-level function when ``jobs > 1`` or with a
    ``scheduler``, and take a ``progress`` keyword (a callable of the fraction of its die
    done, or None). ``dies`` holds DieData or die sources (see the module's docstring).
    Results keep the order of ``dies`` whichever worker ran them. ``progress`` is a
    :class:`~hfox_fit._progress.Progress` counting dies, True for a new one on stderr,
    or None/False for none. ``scheduler`` (``"local:N"`` or ``"tcp://HOST:PORT"``) runs
    the dies on Dask; a die that fails twice there raises :class:`ChunkFailure` after the
    others are done, naming it. ``workers``: a :class:`Workers` already started, which
    then decides where the dies run (``jobs`` and ``scheduler`` are not used); it stays open.
    """
    from .._progress import Progress

    if workers is None:
        with Workers(jobs, scheduler) as own:
            return map_dies(func, dies, args, progress=progress, n_dies=n_dies, workers=own)
    own = progress is True
    bar = Progress("fit", n_dies, "die") if own else (progress or None)
    try:
        return workers.map_dies(func, dies, args, progress=bar)
    finally:
        if own:
            bar.close()


def _drain(q, fractions) -> None:
    if q is None:
        return
    while True:
        try:
            index, fraction = q.get_nowait()
        except (_queue.Empty, OSError, ValueError):
            return
        fractions.set(index, fraction)

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
"""

from __future__ import annotations

import multiprocessing
import queue as _queue
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from ..exceptions import FitError
from ..schema import DieData

__all__ = ["map_dies", "parse_scheduler", "ChunkFailure", "DASK_INSTALL_HINT"]

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


def _init_worker(q) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = q


def _run_in_worker(func, index, die, args):
    """``func(die, *args)`` in a worker, its progress sent to the parent as ``(index, fraction)``."""
    q = _WORKER_QUEUE
    report = None if q is None else (lambda fraction: q.put((index, float(fraction))))
    return func(_load(die), *args, progress=report)


def _run_chunk(func, item, args):
    """One Dask task: read the die where it runs (when ``item`` is a source) and fit it."""
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


def _map_dask(func, items, args, scheduler, fractions) -> list:
    as_completed = _import_distributed().as_completed
    client, cluster = _connect(scheduler)
    try:
        if not client.scheduler_info().get("workers"):
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S * 6)
        run = uuid.uuid4().hex[:8]  # keys unique per call: a scheduler shared by several fits keeps them apart
        futures = [client.submit(_run_chunk, func, item, args, key=f"hfox-fit-{run}-{_die_name(item)}",
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
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_dies(func, dies, args=(), *, jobs: int = 1, progress=None, n_dies: int | None = None,
             scheduler: str | None = None) -> list:
    """``[func(die, *args) for die in dies]``, here, in ``jobs`` worker processes or on Dask, with progress.

    ``func`` must be a picklable module-level function when ``jobs > 1`` or with a
    ``scheduler``, and take a ``progress`` keyword (a callable of the fraction of its die
    done, or None). ``dies`` holds DieData or die sources (see the module's docstring).
    Results keep the order of ``dies`` whichever worker ran them. ``progress`` is a
    :class:`~hfox_fit._progress.Progress` counting dies, True for a new one on stderr,
    or None/False for none. ``scheduler`` (``"local:N"`` or ``"tcp://HOST:PORT"``) runs
    the dies on Dask; a die that fails twice there raises :class:`ChunkFailure` after the
    others are done, naming it.
    """
    from .._progress import Progress

    if scheduler is not None and int(jobs) != 1:
        raise FitError(f"give either jobs ({jobs}, local processes) or a Dask scheduler ({scheduler!r}), not both.")
    own = progress is True
    bar = Progress("fit", n_dies, "die") if own else (progress or None)
    fractions = _DieFractions(bar)
    results = []
    try:
        if scheduler is not None:
            parse_scheduler(scheduler)  # a bad address fails before any die is read
            results = _map_dask(func, list(_checked(dies)), args, scheduler, fractions)
        elif int(jobs) == 1:
            for i, d in enumerate(_checked(dies)):
                report = None if bar is None else (lambda fraction, i=i: fractions.set(i, fraction))
                results.append(func(_load(d), *args, progress=report))
                fractions.set(i, 1.0)
        else:
            ctx = multiprocessing.get_context()
            q = ctx.Queue() if bar is not None else None
            with ProcessPoolExecutor(max_workers=int(jobs), mp_context=ctx, initializer=_init_worker,
                                     initargs=(q,)) as pool:
                futures = [pool.submit(_run_in_worker, func, i, d, args) for i, d in enumerate(_checked(dies))]
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
                results = [fut.result() for fut in futures]
            if q is not None:
                q.close()
    finally:
        if own:
            bar.close()
    return results


def _drain(q, fractions) -> None:
    if q is None:
        return
    while True:
        try:
            index, fraction = q.get_nowait()
        except (_queue.Empty, OSError, ValueError):
            return
        fractions.set(index, fraction)

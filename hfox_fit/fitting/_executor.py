"""How the per-die step runs: in this process or in local worker processes.

:func:`map_dies` is the one place that decides where :func:`~hfox_fit.fitting.fit_die`
runs for each die; the pooling that follows does not care. A new execution
backend (a Dask cluster, say) is a new branch here that yields the per-die
results in the order of the dies.

Progress: ``func`` takes a ``progress`` keyword, a callable it calls with the
fraction of its die done so far (0 to 1); the bar (:class:`~hfox_fit._progress.Progress`)
adds up these fractions, so it moves within a die. Worker processes send theirs
through a queue.
"""

from __future__ import annotations

import multiprocessing
import queue as _queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from ..exceptions import FitError
from ..schema import DieData

__all__ = ["map_dies"]

_WORKER_QUEUE = None  # the progress queue of a worker process (set by its initializer)


def _checked(dies):
    for d in dies:
        if not isinstance(d, DieData):
            raise FitError(f"fit_campaign expects DieData objects, got {type(d).__name__}.")
        yield d


def _init_worker(q) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = q


def _run_in_worker(func, index, die, args):
    """``func(die, *args)`` in a worker, its progress sent to the parent as ``(index, fraction)``."""
    q = _WORKER_QUEUE
    report = None if q is None else (lambda fraction: q.put((index, float(fraction))))
    return func(die, *args, progress=report)


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


def map_dies(func, dies, args=(), *, jobs: int = 1, progress=None, n_dies: int | None = None) -> list:
    """``[func(die, *args) for die in dies]``, in ``jobs`` worker processes, with progress.

    ``func`` must be a picklable module-level function when ``jobs > 1``, and take a
    ``progress`` keyword (a callable of the fraction of its die done, or None). Results
    keep the order of ``dies`` whichever worker ran them. ``progress`` is a
    :class:`~hfox_fit._progress.Progress` counting dies, True for a new one on stderr,
    or None/False for none.
    """
    from .._progress import Progress

    own = progress is True
    bar = Progress("fit", n_dies, "die") if own else (progress or None)
    fractions = _DieFractions(bar)
    results = []
    try:
        if int(jobs) == 1:
            for i, d in enumerate(_checked(dies)):
                report = None if bar is None else (lambda fraction, i=i: fractions.set(i, fraction))
                results.append(func(d, *args, progress=report))
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

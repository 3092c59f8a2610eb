"""How the per-die step runs: in this process or in local worker processes.

:func:`map_dies` is the one place that decides where :func:`~hfox_fit.fitting.fit_die`
runs for each die; the pooling that follows does not care. A new execution
backend (a Dask cluster, say) is a new branch here that yields the per-die
results in the order of the dies.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from ..exceptions import FitError
from ..schema import DieData

__all__ = ["map_dies"]


def _checked(dies):
    for d in dies:
        if not isinstance(d, DieData):
            raise FitError(f"fit_campaign expects DieData objects, got {type(d).__name__}.")
        yield d


def map_dies(func, dies, args=(), *, jobs: int = 1, progress: bool = False, n_dies: int | None = None) -> list:
    """``[func(die, *args) for die in dies]``, in ``jobs`` worker processes, with a progress bar.

    ``func`` must be a picklable module-level function when ``jobs > 1``. Results keep the
    order of ``dies`` whichever worker ran them.
    """
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(total=n_dies, desc="fit", unit="die", disable=not progress, leave=False)
    try:
        if int(jobs) == 1:
            for d in _checked(dies):
                results.append(func(d, *args))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=int(jobs)) as pool:
                futures = [pool.submit(func, d, *args) for d in _checked(dies)]
                for fut in futures:
                    results.append(fut.result())
                    bar.update(1)
    finally:
        bar.close()
    return results

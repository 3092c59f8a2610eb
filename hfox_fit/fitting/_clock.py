"""The per-die step's clock: seconds per phase for benchmarks, and the fraction done for a progress bar."""

from __future__ import annotations

import time

__all__ = ["PhaseClock"]


class PhaseClock:
    """Wall and CPU seconds per phase into ``timings`` (a dict, or None), and the die's progress.

    ``progress`` (a callable of the fraction of the die done, or None) is told at the end of
    each phase; the shares are those of a typical die's wall time (the final fits most).
    """

    SHARE_DONE = {"prepare": 0.01, "flags": 0.11, "prefit": 0.16, "rtn": 0.22, "noise": 0.26, "fit": 0.9,
                  "tables": 1.0}

    def __init__(self, timings, progress=None):
        self.timings, self.progress = timings, progress
        if timings is not None:
            self.last = (time.perf_counter(), time.process_time())

    def __call__(self, phase: str):
        if self.progress is not None:
            self.progress(self.SHARE_DONE.get(phase, 0.0))
        if self.timings is None:
            return
        now = (time.perf_counter(), time.process_time())
        wall, cpu = self.timings.get(phase, (0.0, 0.0))
        self.timings[phase] = (wall + now[0] - self.last[0], cpu + now[1] - self.last[1])
        self.last = now

    def within(self, before: str, phase: str, fraction: float):
        """Tell the progress a ``fraction`` of ``phase`` (which follows ``before``) is done."""
        if self.progress is not None:
            lo, hi = self.SHARE_DONE[before], self.SHARE_DONE[phase]
            self.progress(lo + fraction * (hi - lo))

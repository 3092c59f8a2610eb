"""Progress on stderr: the one helper behind every bar and stage line of the package.

:class:`Progress` shows a counted bar (``advance``/``update_to``) and named stages
(``stage``). On a terminal the bar is tqdm's, redrawn in place; anywhere else (a log
file, a pipe, a CI console) it prints whole lines only, one per 10 % step and one per
stage, each ending with a newline, so a bar never runs into the next log line. With
``delay`` nothing is shown for a job that ends sooner; a stage still running when the
delay runs out is shown then.
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress", "DEFAULT_DELAY"]

#: Seconds a job waits before showing progress when it asks for a delay (export, report).
DEFAULT_DELAY = 1.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress display for one job (``desc``), on ``stream`` (default: ``sys.stderr`` now).

    Parameters
    ----------
    desc : str
        The job's name, the start of every line ("fit", "report").
    total : float, optional
        Units of the counted bar (dies, bytes); None for a job shown by stages only.
    unit : str
        Name of a unit, for the bar ("die", "B").
    enabled : bool, default=True
        False shows nothing (``--quiet``).
    stream : file-like, optional
    delay : float, default=0
        Seconds before anything is shown.
    step : float, default=0.1
        Fraction of ``total`` between two lines when the stream is not a terminal.
    unit_scale : bool
        Bytes and other large counts in k/M/G (tqdm's ``unit_scale``).
    """

    def __init__(self, desc: str, total: float | None = None, unit: str = "", *, enabled: bool = True,
                 stream=None, delay: float = 0.0, step: float = 0.1, unit_scale: bool = False):
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self.delay, self.step, self.unit_scale = float(delay), float(step), unit_scale
        self.n = 0.0
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._bar = None
        self._shown_level = -1  # the last 10 % step printed (lines mode)
        self._stage = None  # (text, printed?)
        self._timer = None
        self._closed = False
        if self.enabled and self.delay > 0:
            self._timer = threading.Timer(self.delay, self._on_delay)
            self._timer.daemon = True
            self._timer.start()

    # ------------------------------------------------------------------ helpers
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _visible(self) -> bool:
        return self.enabled and not self._closed and self.elapsed() >= self.delay

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _count(self, value: float) -> str:
        if self.unit_scale:
            for prefix in ("", "k", "M", "G", "T"):
                if abs(value) < 1000 or prefix == "T":
                    return f"{value:.3g} {prefix}{self.unit}".rstrip()
                value /= 1024 if self.unit == "B" else 1000
        return f"{value:.3g}" if value != int(value) else f"{int(value)}"

    def _progress_line(self) -> str:
        total = self.total
        pct = 100.0 * min(self.n / total, 1.0) if total else 0.0
        unit = f" {self.unit}(s)" if self.unit and not self.unit_scale else ""
        count = f"{self._count(self.n)}/{self._count(total)}{unit}" if total else self._count(self.n) + unit
        return f"{self.desc}: {pct:3.0f}% ({count}, {self.elapsed():.1f} s)"

    def _on_delay(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._stage is not None and not self._stage[1]:
                self._line(self._stage[0])
                self._stage = (self._stage[0], True)
            elif self.total and self.n > 0:
                self._show_count()

    def _show_count(self) -> None:
        """Show the counted progress (called with the lock held)."""
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit or "it", file=self.stream,
                                 leave=False, unit_scale=self.unit_scale, dynamic_ncols=True,
                                 unit_divisor=1024 if self.unit == "B" else 1000)
            self._bar.update(self.n - self._bar.n)
            return
        level = int(self.n / self.total / self.step + 1e-9) if self.total else 0
        if level > self._shown_level:
            self._shown_level = level
            self._line(self._progress_line())

    # ------------------------------------------------------------------ the API
    def update_to(self, value: float) -> None:
        """Set the count done so far (never moves back)."""
        with self._lock:
            if value <= self.n:
                return
            self.n = float(value)
            if self._visible() and self.total:
                self._show_count()

    def advance(self, n: float = 1.0) -> None:
        """Add ``n`` units to the count."""
        self.update_to(self.n + n)

    def stage(self, text: str) -> None:
        """Start a named stage: one line ``"desc: text..."`` (the bar, if any, is finished first)."""
        with self._lock:
            if not self.enabled or self._closed:
                return
            self._finish_bar()
            line = f"{self.desc}: {text}... ({self.elapsed():.1f} s)"
            shown = self.elapsed() >= self.delay
            if shown:
                self._line(line)
            self._stage = (line, shown)

    def _finish_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self, text: str | None = None) -> None:
        """End the display; ``text`` (e.g. "done in 3.2 s") is printed when anything was shown."""
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
            shown_any = self._bar is not None or self._shown_level >= 0 or (self._stage and self._stage[1])
            if self.enabled and not self.tty and self.total and self._visible() and self.n >= self.total \
                    and self._shown_level < round(1 / self.step):
                self._line(self._progress_line())  # the 100 % line, when the last step fell short of it
                shown_any = True
            self._finish_bar()
            if self.enabled and text and shown_any:
                self._line(f"{self.desc}: {text}")
            self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

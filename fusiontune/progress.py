"""Progress output for every terminal.

``with progress(n, "search cem", unit="evaluations") as bar: bar.update(advance=k, info="best 2.1")``

* stderr is an interactive terminal: a rich progress bar (on stderr).
* anything else (a log file, CI, ``nohup``, a pipe): a plain line on stderr every
  ``FUSIONTUNE_PROGRESS_INTERVAL`` seconds (default 10), from a timer thread, so a slow
  step still shows the run is alive::

      search cem: 192/600 evaluations (32%), best 2.18734, 12s elapsed, 16.0 evaluations/s

  and one last line at the end if any line was printed (runs shorter than the interval
  print none).  Progress never goes to stdout, which keeps the result (tables, paths).
* ``enabled=False`` (``--quiet``) or ``FUSIONTUNE_QUIET=1``: nothing.

``bar.update(advance=k, resumed=True)`` counts ``k`` steps done before this process started
(a resumed run): they count towards the total but not the rate.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

__all__ = ["progress", "interactive", "progress_mode", "format_line", "DEFAULT_INTERVAL"]

DEFAULT_INTERVAL = 10.0


def interactive() -> bool:
    """True when progress would draw a rich bar (stderr is a terminal)."""
    return progress_mode(None) == "bar"


def progress_mode(enabled: bool | None) -> str:
    """``"off"``, ``"bar"`` (stderr is a TTY) or ``"lines"`` (plain lines at an interval)."""
    if enabled is False or os.environ.get("FUSIONTUNE_QUIET"):
        return "off"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        tty = False
    return "bar" if tty and not os.environ.get("CI") else "lines"


def _interval() -> float:
    text = os.environ.get("FUSIONTUNE_PROGRESS_INTERVAL", "")
    try:
        v = float(text)
    except ValueError:
        return DEFAULT_INTERVAL
    return v if v > 0 else DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def _count(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


def format_line(description: str, done: float, total: float, unit: str, info: str, elapsed: float,
                rate: float | None) -> str:
    """``search cem: 192/600 evaluations (32%), best 2.18734, 12s elapsed, 16.0 evaluations/s``."""
    pct = f" ({done / total:.0%})" if total else ""
    parts = [f"{description}: {_count(done)}/{_count(total)} {unit}{pct}"]
    if info:
        parts.append(info)
    parts.append(f"{_duration(elapsed)} elapsed")
    if rate is not None:
        parts.append(f"{rate:.3g} {unit}/s")
    return ", ".join(parts)


class _Silent:
    def update(self, advance: int = 0, **fields) -> None:  # noqa: D401 - same shape as the others
        pass


class _Lines:
    """Plain progress lines from a timer thread (see the module docstring)."""

    def __init__(self, total: int, description: str, unit: str, interval: float, stream=None):
        self.total, self.description, self.unit, self.interval = float(total), description, unit, interval
        self.stream = stream
        self.done = self.before = 0.0
        self.info = ""
        self.t0 = time.monotonic()
        self.lines = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fusiontune-progress", daemon=True)

    def update(self, advance: int = 0, **fields) -> None:
        with self._lock:
            self.done += float(advance)  # budgets can count fractional (screened) evaluations
            if fields.get("resumed"):
                self.before += float(advance)
            if "info" in fields:
                self.info = str(fields["info"])

    def line(self) -> str:
        with self._lock:
            done, before, info = self.done, self.before, self.info
        elapsed = time.monotonic() - self.t0
        rate = (done - before) / elapsed if elapsed > 0 and done > before else None
        return format_line(self.description, done, self.total, self.unit, info, elapsed, rate)

    def _emit(self) -> None:
        stream = self.stream or sys.stderr
        try:
            print(self.line(), file=stream, flush=True)
        except (OSError, ValueError):  # the stream went away (closed pipe): stop quietly
            self._stop.set()
            return
        self.lines += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def start(self) -> "_Lines":
        self._thread.start()
        return self

    def close(self, finished: bool) -> None:
        self._stop.set()
        self._thread.join()
        if finished and self.lines:
            self._emit()


@contextmanager
def progress(total: int, description: str, enabled: bool | None = None, unit: str = "steps"):
    """``with progress(n, "cem", unit="evaluations") as bar: bar.update(advance=k, info="...")``."""
    mode = progress_mode(enabled)
    if mode == "off":
        yield _Silent()
        return
    if mode == "lines":
        bar = _Lines(total, description, unit, _interval()).start()
        ok = False
        try:
            yield bar
            ok = True
        finally:
            bar.close(finished=ok)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=Console(stderr=True), transient=False) as prog:
        tid = prog.add_task(description, total=total, info="")

        class _Bar:
            def update(self, advance: int = 0, **fields) -> None:
                fields.pop("resumed", None)
                prog.update(tid, advance=advance, **fields)

        yield _Bar()

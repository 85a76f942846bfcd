"""What the bench shows while it runs: which cell of how many, its scenario, defense and stage, the time
elapsed and an estimate of the time left.

On a terminal this is a live ``rich`` progress line, with one permanent line printed per finished cell;
elsewhere (a log file, a pipe, a test) only the permanent lines are printed. The estimate of the time left
is the sum, over the cells still to run, of the last measured time of the same scenario and defense (any
seed, this run or an earlier one), else the mean of the cells measured so far; it is absent until one cell
has been measured.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.text import Text

from defuse.bench.cells import Cell


def format_seconds(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``2h03m``; ``?`` for None."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _CellElapsed(ProgressColumn):
    """Time spent in the current cell."""

    def render(self, task) -> Text:
        start = task.fields.get("cell_start")
        return Text(f"cell {format_seconds(time.monotonic() - start) if start else '-'}", style="cyan")


class _TimeLeft(ProgressColumn):
    """The estimate of the time left, counted down while the current cell runs."""

    def render(self, task) -> Text:
        eta, start = task.fields.get("eta_s"), task.fields.get("cell_start")
        if eta is None:
            return Text("left ?", style="magenta")
        spent = time.monotonic() - start if start else 0.0
        return Text(f"left ~{format_seconds(max(eta - spent, 0.0))}", style="magenta")


class BenchDisplay:
    """Progress of a bench run over ``total`` cells, written to ``stream`` (default: stdout now).

    Use as a context manager; call :meth:`start` before a cell runs and :meth:`finish` after.
    """

    def __init__(self, total: int, stream: IO[str] | None = None):
        self.total = total
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> BenchDisplay:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("elapsed"),
                _Elapsed(),
                _CellElapsed(),
                _TimeLeft(),
                console=self.console,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("starting", total=self.total, cell_start=None, eta_s=None)
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> bool:
        if self._progress is not None:
            self._progress.stop()
        return False

    def line(self, text: str) -> None:
        """A permanent line (above the live display on a terminal)."""
        self.console.print(text, markup=False)

    def start(self, i: int, cell: Cell, eta_s: float | None) -> None:
        """Cell ``i`` (1-based) starts; ``eta_s``: estimated seconds for it and every cell after it."""
        what = f"[{i}/{self.total}] {cell.label}: {cell.stage}"
        if cell.method:
            what += f" ({cell.method})"
        if self._progress is not None:
            self._progress.update(self._task, description=what, cell_start=time.monotonic(), eta_s=eta_s)
        else:
            self.line(f"{what}; about {format_seconds(eta_s)} left")

    def finish(self, i: int, cell: Cell, status: str, wall_s: float | None, detail: str = "") -> None:
        """Cell ``i`` ended with ``status`` (done, reused, failed, skipped)."""
        took = f" in {format_seconds(wall_s)}" if wall_s is not None and status == "done" else ""
        total = format_seconds(time.monotonic() - self._t0)
        self.line(
            f"[{i}/{self.total}] {cell.label}: {status}{took}{'; ' + detail if detail else ''} "
            f"(elapsed {total})"
        )
        if self._progress is not None:
            description = f"[{i}/{self.total}] {cell.label}: {status}"
            self._progress.update(self._task, advance=1, description=description, cell_start=None)


class _Elapsed(ProgressColumn):
    """Time since the bench started."""

    def render(self, task) -> Text:
        return Text(format_seconds(task.elapsed or 0.0), style="yellow")

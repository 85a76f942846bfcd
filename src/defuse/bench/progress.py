"""What the bench shows while it runs: which cells of how many, their scenario, defense and stage, the time
elapsed and an estimate of the time left.

On a terminal this is a live ``rich`` progress line, with one permanent line printed per finished cell;
elsewhere (a log file, a pipe, a test) a line per cell that starts and the permanent lines are printed.
``[i/N]`` is the cell's place in the grid's order (one after another, also how far the bench has got). With
several cells running at once (``defuse bench --jobs N``) the live line lists every running cell and its
``cell`` column shows the longest-running one's time.

The estimate of the time left is the sum, over the cells still to run, of the last measured time of the same
scenario and defense (any seed, this run or an earlier one), else the mean of the cells measured so far; it
is absent until one cell has been measured. With ``--jobs N`` (N > 1) that sum covers the running cells too
and is divided by N (by fewer when fewer cells are left), but is never less than the longest cell's estimate.
It is made when a cell starts and counted down from then.
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
    """Time spent in the current cell (the longest-running one, when several run)."""

    def render(self, task) -> Text:
        start = task.fields.get("cell_start")
        return Text(f"cell {format_seconds(time.monotonic() - start) if start else '-'}", style="cyan")


class _TimeLeft(ProgressColumn):
    """The estimate of the time left, counted down from when it was made."""

    def render(self, task) -> Text:
        eta, start = task.fields.get("eta_s"), task.fields.get("eta_from")
        if eta is None:
            return Text("left ?", style="magenta")
        spent = time.monotonic() - start if start else 0.0
        return Text(f"left ~{format_seconds(max(eta - spent, 0.0))}", style="magenta")


class BenchDisplay:
    """Progress of a bench run over ``total`` cells, written to ``stream`` (default: stdout now).

    Use as a context manager; call :meth:`start` before a cell runs and :meth:`finish` after (several cells
    may be running at once).
    """

    def __init__(self, total: int, stream: IO[str] | None = None):
        self.total = total
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._running: dict[str, tuple[str, float]] = {}  # cell key -> (what runs, its start)

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
            self._task = self._progress.add_task(
                "starting", total=self.total, cell_start=None, eta_s=None, eta_from=None
            )
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
        """Cell ``i`` (1-based) starts; ``eta_s``: estimated seconds for it and every cell left."""
        what = f"[{i}/{self.total}] {cell.label}: {cell.stage}"
        if cell.method:
            what += f" ({cell.method})"
        now = time.monotonic()
        self._running[cell.key] = (what, now)
        if self._progress is not None:
            self._progress.update(
                self._task,
                description=self._now_running(),
                cell_start=self._oldest_start(),
                eta_s=eta_s,
                eta_from=now,
            )
        else:
            self.line(f"{what}; about {format_seconds(eta_s)} left")

    def finish(self, i: int, cell: Cell, status: str, wall_s: float | None, detail: str = "") -> None:
        """Cell ``i`` ended with ``status`` (done, reused, failed, skipped)."""
        self._running.pop(cell.key, None)
        took = f" in {format_seconds(wall_s)}" if wall_s is not None and status == "done" else ""
        total = format_seconds(time.monotonic() - self._t0)
        self.line(
            f"[{i}/{self.total}] {cell.label}: {status}{took}{'; ' + detail if detail else ''} "
            f"(elapsed {total})"
        )
        if self._progress is not None:
            description = (
                self._now_running() if self._running else f"[{i}/{self.total}] {cell.label}: {status}"
            )
            self._progress.update(
                self._task, advance=1, description=description, cell_start=self._oldest_start()
            )

    def _now_running(self) -> str:
        """The running cell, or ``running K: <cell> | <cell> ...`` when several run."""
        texts = [what for what, _ in self._running.values()]
        return texts[0] if len(texts) == 1 else f"running {len(texts)}: " + " | ".join(texts)

    def _oldest_start(self) -> float | None:
        return min((start for _, start in self._running.values()), default=None)


class _Elapsed(ProgressColumn):
    """Time since the bench started."""

    def render(self, task) -> Text:
        return Text(format_seconds(task.elapsed or 0.0), style="yellow")

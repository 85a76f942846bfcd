"""Run a bench grid: every cell once, reusing finished ones, then write the report.

Contract of :func:`run_bench`:

* The bench config is resolved and checked (:func:`~defuse.bench.spec.load_bench`) before this is called;
  nothing is trained or written before then.
* The output folder must be new, empty or an earlier bench output (it holds ``cells.json``); one bench at a
  time may run on it (``.bench.lock``).
* A cell whose run directory holds a valid ``run.json`` is reused without running anything. Any other
  cell runs through its scenario's attack or defense function into its own run directory; an interrupted
  cell's staging folder (with its training checkpoints) is left in place, so the next bench run resumes it.
* With ``jobs == 1`` the cells run one after another in this process, in plan order. With ``jobs > 1`` up to
  ``jobs`` cells run at once in worker processes (:mod:`defuse.bench.parallel`); a defense cell starts only
  after its attack cell finished; attacks start before defenses, or the longest chain first when an earlier
  run timed every cell (:func:`~defuse.bench.parallel.start_order`).
* A cell that fails is recorded (``failed``, with the error's line) and the bench goes on with the cells
  that do not depend on it (a defense of a failed attack is ``skipped``). Each cell's output (training logs,
  warnings, a traceback) goes to ``<out>/logs/<scenario>/<cell>.log``.
* Only this process writes ``cells.json`` (saved after every change) and the progress display; the report
  (``results.json``, ``results.md``, plots) is written at the end from the run directories, whatever failed.
"""

from __future__ import annotations

import contextlib
import copy
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from defuse.bench.cells import Cell, cell_dir, plan_cells
from defuse.bench.index import INDEX_FILE, CellIndex, utc_now
from defuse.bench.keys import FileHasher
from defuse.bench.progress import BenchDisplay
from defuse.bench.report import Report, write_report
from defuse.bench.spec import BenchSpec
from defuse.errors import ConfigError, DataError, DefuseError
from defuse.runs.lock import FolderLock
from defuse.runs.record import read_run
from defuse.scenarios import get_scenario, scenario_at

LOCK_FILE = ".bench.lock"
HASH_CACHE = ".file-hashes.json"


@dataclass
class BenchOutcome:
    """What a bench run did: cell keys run, reused, failed (with their error line) and skipped."""

    report: Report | None = None
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def finished_record(out: Path, cell: Cell) -> dict | None:
    """The cell's run record when its run directory holds a valid run.json, else None."""
    try:
        return read_run(cell_dir(out, cell))
    except DefuseError:
        return None


def _bench_lock(out: Path) -> FolderLock:
    """``<out>/.bench.lock`` (:class:`~defuse.runs.lock.FolderLock`): one bench at a time on a folder."""
    return FolderLock(
        out / LOCK_FILE, lambda pid: f"{out}: another bench (process {pid}) is running on this folder"
    )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    ours = {LOCK_FILE, HASH_CACHE}  # what a bench stopped before writing cells.json may have left
    if out.is_dir() and not (out / INDEX_FILE).is_file() and any(p.name not in ours for p in out.iterdir()):
        raise DataError(
            out, f"not empty and not a bench output folder (no {INDEX_FILE}); choose another --out"
        )


def _estimate(index: CellIndex, cells: list[Cell], measured: list[float]) -> list[float | None]:
    """Estimated seconds of each cell (see :mod:`defuse.bench.progress`)."""
    fallback = sum(measured) / len(measured) if measured else None
    out = []
    for c in cells:
        known = index.known_wall_s(c.scenario, c.defense)
        out.append(known if known is not None else fallback)
    return out


def _time_left(estimates: list[float | None]) -> float | None:
    return None if any(e is None for e in estimates) else sum(estimates)


def check_jobs(jobs: int | str, name: str = "jobs") -> int:
    """``jobs`` (an int, or its decimal text from the command line) as an int >= 1.

    Raises:
        ConfigError: naming the setting ``name``, for anything else.
    """
    text = str(jobs).strip() if isinstance(jobs, (int, str)) and not isinstance(jobs, bool) else ""
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(name, f"expected a whole number of cells to run at once, at least 1; got {jobs!r}")
    return int(text)


def failure_message(exc: BaseException) -> str:
    """The one-line message recorded for a failed cell: a DefuseError's line, else ``Type: first line``."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, DefuseError):
        message = f"{type(exc).__name__}: {message}"
    return message


def _run_cell(out: Path, cell: Cell, log: IO[str]) -> dict:
    """Run one cell into its run directory, its stdout and stderr going to ``log``."""
    target = cell_dir(out, cell)
    overwrite = target.exists()  # a folder without a valid run.json: replaced once the new run is complete
    cfg = copy.deepcopy(cell.config)  # a run never changes the planned config (the key was computed from it)
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if cell.parent is None:
            return get_scenario(cell.kind).run_attack(cfg, target, overwrite=overwrite)
        parent = cell_dir(out, cell.parent)
        return scenario_at(parent).run_defense(
            cell.method, cfg, parent, target, seed=cell.seed, overwrite=overwrite
        )


def run_logged(out: Path, cell: Cell, log_file: Path) -> str | None:
    """Run ``cell`` with its stdout and stderr appended to ``log_file``, after a header line.

    Used in this process (``jobs == 1``) and in the worker processes (:mod:`defuse.bench.parallel`).

    Returns:
        None when the cell finished, else the failure's one-line message (its traceback goes to the log).
        KeyboardInterrupt passes through.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"=== {utc_now()} {cell.label} ({cell.stage}) -> {cell.path}\n")
        log.flush()
        try:
            _run_cell(out, cell, log)
        except Exception as exc:  # a failed cell is recorded, the grid goes on
            traceback.print_exc(file=log)
            return failure_message(exc)
    return None


def run_bench(spec: BenchSpec, out: str | Path, stream: IO[str] | None = None, jobs: int = 1) -> BenchOutcome:
    """Run every cell of ``spec`` under ``out`` (see the module docstring) and write the report.

    With ``jobs == 1`` the cells run one after another in this process. With ``jobs > 1`` they run in
    ``jobs`` worker processes (:mod:`defuse.bench.parallel`), a defense cell only after its attack cell.

    Determinism: a cell's numbers depend on its seed and, in floating point, on the number of torch threads
    it trained with, which is ``max(1, os.cpu_count() // jobs)`` in a worker process (and whatever this
    process uses with ``jobs == 1``). The same ``jobs`` on the same machine gives the same numbers; a
    different ``jobs`` may move them slightly.

    Args:
        spec: The resolved bench config.
        out: The bench output folder.
        stream: Where progress goes (default: stdout).
        jobs: How many cells may run at once (>= 1).

    Returns:
        A :class:`BenchOutcome`; failed cells do not raise (check ``outcome.failed``).

    Raises:
        ConfigError: ``jobs`` is not a whole number >= 1 (before anything is written).
        DefuseError: ``out`` is unusable or locked by another bench; KeyboardInterrupt is passed on after
            recording the running cells as ``interrupted`` (and, with ``jobs > 1``, stopping the workers).
    """
    jobs = check_jobs(jobs)
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with _bench_lock(out):
        hasher = FileHasher(out / HASH_CACHE)
        cells = plan_cells(spec, hasher)
        hasher.save()
        index = CellIndex.load(out)
        index.start_grid(spec.to_dict(), cells)
        with BenchDisplay(len(cells), stream) as display:
            grid = GridRun(out, index, display)
            if jobs == 1:
                for i, cell in enumerate(cells, 1):
                    _one(grid, i, cell, cells)
            else:
                from defuse.bench.parallel import run_parallel  # imports this module: not at the top

                run_parallel(grid, cells, jobs)
        outcome = grid.outcome
        outcome.report = write_report(out)
    return outcome


SKIP_REASON = "its attack cell did not finish"


@dataclass
class GridRun:
    """One bench run's bookkeeping, shared by the serial and the parallel path: every cell's fate goes to
    the index (saved at once), the outcome and the display, from this (the parent) process only."""

    out: Path
    index: CellIndex
    display: BenchDisplay
    outcome: BenchOutcome = field(default_factory=BenchOutcome)
    measured: list[float] = field(default_factory=list)

    def reuse_if_finished(self, i: int, cell: Cell) -> bool:
        """Record cell ``i`` (1-based) as reused when its run directory is finished; say whether it was."""
        record = finished_record(self.out, cell)
        if record is None:
            return False
        fields = {"status": "done", "reused": True, "error": None}
        if self.index.get(cell.key).get("wall_s") is None:  # found on disk, not timed by a bench
            fields["wall_s"] = round(sum(record["timings"].values()), 3)
        self.index.update(cell.key, **fields)
        self.outcome.reused.append(cell.key)
        self.display.finish(i, cell, "reused (finished earlier)", None)
        return True

    def parent_state(self, cell: Cell) -> str:
        """``finished`` (or no parent), ``lost`` (failed or skipped) or ``waiting`` for its attack cell."""
        if cell.parent is None or cell.parent.key in self.outcome.ran + self.outcome.reused:
            return "finished"
        if cell.parent.key in self.outcome.failed or cell.parent.key in self.outcome.skipped:
            return "lost"
        return "waiting"

    def skip(self, i: int, cell: Cell) -> None:
        """Record cell ``i`` as skipped: its attack cell did not finish."""
        self.index.update(cell.key, status="skipped", reused=False, error=SKIP_REASON)
        self.outcome.skipped.append(cell.key)
        self.display.finish(i, cell, "skipped", None, SKIP_REASON)

    def time_left(self, cells: list[Cell], jobs: int = 1) -> float | None:
        """Estimated seconds to run ``cells``; with ``jobs > 1`` their sum divided by ``jobs`` (by fewer when
        fewer cells are left) but not under the longest one (see :mod:`defuse.bench.progress`)."""
        estimates = _estimate(self.index, cells, self.measured)
        total = _time_left(estimates)
        if total is None or jobs == 1 or not cells:
            return total
        return max(total / min(jobs, len(cells)), max(estimates))

    def log_file(self, cell: Cell) -> Path:
        """Where ``cell``'s output goes (absolute)."""
        return self.out / self.index.get(cell.key)["log"]

    def mark_running(self, i: int, cell: Cell, eta_s: float | None) -> Path:
        """Show cell ``i`` starting, record it ``running``; return its log file (absolute)."""
        self.display.start(i, cell, eta_s)
        log_file = self.log_file(cell)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.index.update(
            cell.key, status="running", reused=False, started=utc_now(), finished=None, error=None
        )
        return log_file

    def mark_interrupted(self, cell: Cell) -> None:
        self.index.update(cell.key, status="interrupted", finished=utc_now(), wall_s=None)

    def record(self, i: int, cell: Cell, error: str | None, wall_s: float | None, log_file: Path) -> None:
        """Record how running cell ``i`` ended: ``done`` in ``wall_s`` seconds, or ``failed`` (``error``)."""
        if error is not None:
            self.index.update(cell.key, status="failed", finished=utc_now(), wall_s=None, error=error)
            self.outcome.failed[cell.key] = error
            self.display.finish(i, cell, "failed", None, f"{error} (log: {log_file})")
            return
        self.measured.append(wall_s)
        self.index.update(cell.key, status="done", finished=utc_now(), wall_s=round(wall_s, 3))
        self.outcome.ran.append(cell.key)
        self.display.finish(i, cell, "done", wall_s)


def _one(grid: GridRun, i: int, cell: Cell, cells: list[Cell]) -> None:
    """Reuse, skip or run cell ``i`` (1-based) in this process."""
    if grid.reuse_if_finished(i, cell):
        return
    if grid.parent_state(cell) != "finished":
        grid.skip(i, cell)
        return
    to_run = [c for c in cells[i - 1 :] if c is cell or finished_record(grid.out, c) is None]
    log_file = grid.mark_running(i, cell, grid.time_left(to_run))
    start = time.monotonic()
    try:
        error = run_logged(grid.out, cell, log_file)
    except KeyboardInterrupt:
        grid.mark_interrupted(cell)
        raise
    grid.record(i, cell, error, time.monotonic() - start, log_file)

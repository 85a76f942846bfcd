"""Run a bench grid: every cell once, reusing finished ones, then write the report.

Contract of :func:`run_bench`:

* The bench config is resolved and checked (:func:`~defuse.bench.spec.load_bench`) before this is called;
  nothing is trained or written before then.
* The output folder must be new, empty or an earlier bench output (it holds ``cells.json``); one bench at a
  time may run on it (``.bench.lock``).
* A cell whose run directory holds a valid ``run.json`` is reused without running anything. Any other
  cell runs through its scenario's attack or defense function into its own run directory; an interrupted
  cell's staging folder (with its training checkpoints) is left in place, so the next bench run resumes it.
* A cell that fails is recorded (``failed``, with the error's line) and the bench goes on with the cells
  that do not depend on it (a defense of a failed attack is ``skipped``). Each cell's output (training logs,
  warnings, a traceback) goes to ``<out>/logs/<scenario>/<cell>.log``.
* ``cells.json`` is saved after every change; the report (``results.json``, ``results.md``, plots) is
  written at the end from the run directories, whatever failed.
"""

from __future__ import annotations

import contextlib
import copy
import os
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
from defuse.errors import DataError, DefuseError
from defuse.runs.rundir import read_run
from defuse.scenarios import run_attack_for, run_defense_on

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


@contextlib.contextmanager
def _bench_lock(out: Path):
    """Hold ``<out>/.bench.lock`` (with this process's id); refuse when a live process holds it."""
    lock = out / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise DefuseError(f"{out}: another bench (process {pid}) is running on this folder") from None
            lock.unlink(missing_ok=True)  # a stale lock of a process that is gone
    else:
        raise DefuseError(f"{lock}: cannot take the lock")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _run_cell(out: Path, cell: Cell, log: IO[str]) -> dict:
    """Run one cell into its run directory, its stdout and stderr going to ``log``."""
    target = cell_dir(out, cell)
    overwrite = target.exists()  # a folder without a valid run.json: replaced once the new run is complete
    cfg = copy.deepcopy(cell.config)  # a run never changes the planned config (the key was computed from it)
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if cell.parent is None:
            return run_attack_for(cell.kind, cfg, target, overwrite=overwrite)
        parent = cell_dir(out, cell.parent)
        return run_defense_on(cell.method, cfg, parent, target, seed=cell.seed, overwrite=overwrite)


def run_bench(spec: BenchSpec, out: str | Path, stream: IO[str] | None = None) -> BenchOutcome:
    """Run every cell of ``spec`` under ``out`` (see the module docstring) and write the report.

    Args:
        spec: The resolved bench config.
        out: The bench output folder.
        stream: Where progress goes (default: stdout).

    Returns:
        A :class:`BenchOutcome`; failed cells do not raise (check ``outcome.failed``).

    Raises:
        DefuseError: ``out`` is unusable or locked by another bench; KeyboardInterrupt is passed on after
            recording the running cell as ``interrupted``.
    """
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with _bench_lock(out):
        hasher = FileHasher(out / HASH_CACHE)
        cells = plan_cells(spec, hasher)
        hasher.save()
        index = CellIndex.load(out)
        index.start_grid(spec.to_dict(), cells)
        outcome = BenchOutcome()
        measured: list[float] = []
        with BenchDisplay(len(cells), stream) as display:
            for i, cell in enumerate(cells, 1):
                _one(out, index, cell, i, cells, display, outcome, measured)
        outcome.report = write_report(out)
    return outcome


def _one(
    out: Path,
    index: CellIndex,
    cell: Cell,
    i: int,
    cells: list[Cell],
    display: BenchDisplay,
    outcome: BenchOutcome,
    measured: list[float],
) -> None:
    """Reuse, skip or run cell ``i`` (1-based), recording what happened in the index and ``outcome``."""
    record = finished_record(out, cell)
    if record is not None:
        fields = {"status": "done", "reused": True, "error": None}
        if index.get(cell.key).get("wall_s") is None:  # found on disk, not timed by a bench: its own timings
            fields["wall_s"] = round(sum(record["timings"].values()), 3)
        index.update(cell.key, **fields)
        outcome.reused.append(cell.key)
        display.finish(i, cell, "reused (finished earlier)", None)
        return
    if cell.parent is not None and cell.parent.key not in outcome.ran + outcome.reused:
        index.update(cell.key, status="skipped", reused=False, error="its attack cell did not finish")
        outcome.skipped.append(cell.key)
        display.finish(i, cell, "skipped", None, "its attack cell did not finish")
        return
    to_run = [c for c in cells[i - 1 :] if c is cell or finished_record(out, c) is None]
    estimates = _estimate(index, to_run, measured)
    display.start(i, cell, _time_left(estimates))
    log_file = out / index.get(cell.key)["log"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    index.update(cell.key, status="running", reused=False, started=utc_now(), finished=None, error=None)
    start = time.monotonic()
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"=== {utc_now()} {cell.label} ({cell.stage}) -> {cell.path}\n")
        log.flush()
        try:
            _run_cell(out, cell, log)
        except KeyboardInterrupt:
            index.update(cell.key, status="interrupted", finished=utc_now(), wall_s=None)
            raise
        except Exception as exc:  # a failed cell is recorded, the grid goes on
            traceback.print_exc(file=log)
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, DefuseError):
                message = f"{type(exc).__name__}: {message}"
            index.update(cell.key, status="failed", finished=utc_now(), wall_s=None, error=message)
            outcome.failed[cell.key] = message
            display.finish(i, cell, "failed", None, f"{message} (log: {log_file})")
            return
    wall = time.monotonic() - start
    measured.append(wall)
    index.update(cell.key, status="done", finished=utc_now(), wall_s=round(wall, 3))
    outcome.ran.append(cell.key)
    display.finish(i, cell, "done", wall)

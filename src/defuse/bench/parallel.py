"""Run a bench grid's cells in worker processes, at most ``jobs`` at once (``defuse bench --jobs N``).

Contract of :func:`run_parallel` (called by :func:`~defuse.bench.runner.run_bench` when ``jobs > 1``):

* Cells whose run directory is finished are reused first, without starting anything.
* The other cells are started in :func:`start_order` (attacks first, or the longest chain first when an
  earlier run of the grid measured every cell's scenario and defense) in a
  ``concurrent.futures.ProcessPoolExecutor`` of ``jobs`` processes. A defense cell starts only after its
  attack cell finished (run or reused); when the attack failed, the defense is ``skipped``.
* The workers are forked from a fork server that imported this module, and with it torch, transformers
  and every scenario, once (:mod:`defuse.bench.workers`; spawned where the platform has no fork server),
  so a worker starts ready instead of spending seconds on imports; ``defuse bench`` starts that server
  before its own imports, so that both import side by side. Each worker is a fresh fork of a process that
  never trained anything, as a spawned one was.
* Each worker ignores Ctrl-C (the parent alone handles it), takes the parent's transformers logging
  settings, keeps freed memory as the command line does, and before every cell sets
  ``torch.set_num_threads(max(1, os.cpu_count() // jobs))``; it runs the cell exactly as the serial path
  does (:func:`~defuse.bench.runner.run_logged`: the log header line, stdout and stderr into the cell's
  log, a failure's traceback into the log) and sends back the failure's one-line message (or None) and the
  wall time. Only the parent writes ``cells.json`` and the display.
* A worker that dies (killed, out of memory) breaks the pool, which stops its other workers too: every cell
  running then is ``failed`` (a line in its log says why; the next bench reruns it), and a fresh pool runs
  the cells still to come.
* On KeyboardInterrupt (or any error) in the parent, every running cell is recorded ``interrupted``, the
  pending work is cancelled, the worker processes are terminated, and the exception is re-raised; the next
  bench resumes the interrupted cells from their staging folders.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from defuse.bench.cells import Cell
from defuse.bench.index import utc_now
from defuse.bench.runner import GridRun, failure_message, run_logged
from defuse.bench.workers import START_METHOD, start_worker_server

Running = dict[Future, tuple[int, Cell, Path]]
"""The cells now in a worker: future -> (1-based place in the grid, cell, absolute log file)."""


def worker_threads(jobs: int) -> int:
    """The torch threads each of ``jobs`` workers uses: the machine's CPUs shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _init_worker(hf_verbosity: int, hf_progress_bars: bool) -> None:
    """Set up a fresh worker process: Ctrl-C is the parent's business; the parent's library logging; freed
    memory kept for the next training step, as the command line keeps it
    (:func:`~defuse.training.memory.keep_freed_memory`)."""
    from transformers.utils import logging as hf_logging

    from defuse.training.memory import keep_freed_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    hf_logging.set_verbosity(hf_verbosity)
    if hf_progress_bars:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def run_in_worker(out: str, cell: Cell, log_file: str, jobs: int) -> tuple[str | None, float]:
    """Run one cell in this worker process; return (None or the failure's one-line message, wall seconds)."""
    import torch

    torch.set_num_threads(worker_threads(jobs))
    start = time.monotonic()
    error = run_logged(Path(out), cell, Path(log_file))
    return error, time.monotonic() - start


class _RecordingContext:
    """The workers' multiprocessing context (:data:`START_METHOD`), remembering every process the pool starts
    through it (so :meth:`Workers.stop` reaches each one, whenever the pool started it)."""

    def __init__(self):
        start_worker_server()
        self._context = multiprocessing.get_context(START_METHOD)
        self.processes: list = []

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    def Process(self, *args, **kwargs):  # noqa: N802 (the multiprocessing context's name)
        process = self._context.Process(*args, **kwargs)
        self.processes.append(process)
        return process


class Workers:
    """A pool of ``jobs`` worker processes, replaced by a fresh one when a worker died."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._context = _RecordingContext()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        from transformers.utils import logging as hf_logging

        settings = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
        return ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=settings,
        )

    def submit(self, out: Path, cell: Cell, log_file: Path) -> Future:
        """Queue ``cell``; it starts as soon as a worker is free."""
        args = (run_in_worker, str(out), cell, str(log_file), self.jobs)
        try:
            return self._pool.submit(*args)
        except BrokenProcessPool:  # a worker died earlier: its cells are failed, the rest go on
            self._pool.shutdown(wait=True)
            self._pool = self._new_pool()
            return self._pool.submit(*args)

    def close(self) -> None:
        """Wait for the workers to exit (nothing is running any more)."""
        self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Cancel what has not started and terminate the worker processes now."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        processes = [p for p in self._context.processes if p.is_alive()]
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=30)


def start_order(
    pending: list[tuple[int, Cell]], estimate: Callable[[Cell], float | None]
) -> list[tuple[int, Cell]]:
    """The order in which the cells still to run are started when a worker is free (each numbered by its
    place in the plan; the plan itself lists every attack just before its defenses).

    An attack cell is what its defenses wait for, so with no times known the attacks start first, in plan
    order, then the defenses in plan order: otherwise a scenario's short defenses would hold a worker while
    the next scenario's attack, and every defense behind it, has not started. When ``estimate`` (the
    seconds an earlier run of the same scenario and defense took) knows every cell, the longest chain starts
    first: an attack counts its own time plus its longest defense's, a defense its own (ties in plan order),
    which is the critical-path rule for a grid of attack -> defenses chains.
    """
    times = {c.key: estimate(c) for _, c in pending}
    if any(t is None for t in times.values()):
        return sorted(pending, key=lambda item: (item[1].parent is not None, item[0]))
    longest_defense: dict[str, float] = {}
    for _, cell in pending:
        if cell.parent is not None:
            parent = cell.parent.key
            longest_defense[parent] = max(longest_defense.get(parent, 0.0), times[cell.key])
    chain = {key: t + longest_defense.get(key, 0.0) for key, t in times.items()}
    return sorted(pending, key=lambda item: (-chain[item[1].key], item[0]))


def run_parallel(grid: GridRun, cells: list[Cell], jobs: int) -> None:
    """Run the cells of the grid in ``jobs`` worker processes (see the module docstring)."""
    pending = [(i, c) for i, c in enumerate(cells, 1) if not grid.reuse_if_finished(i, c)]
    if not pending:
        return
    pending = start_order(pending, lambda c: grid.index.known_wall_s(c.scenario, c.defense))
    workers = Workers(jobs)
    running: Running = {}
    try:
        while pending or running:
            pending = _start_ready(grid, pending, running, workers)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _collect(grid, future, *running.pop(future))
    except BaseException:
        for _, cell, _ in running.values():
            grid.mark_interrupted(cell)
        workers.stop()
        raise
    workers.close()


def _start_ready(
    grid: GridRun, pending: list[tuple[int, Cell]], running: Running, workers: Workers
) -> list[tuple[int, Cell]]:
    """Skip the cells whose attack cell failed and start, in ``pending``'s order, those that may run while a
    worker is free; return the cells still waiting. Something is always running afterwards while cells
    wait."""
    waiting: list[tuple[int, Cell]] = []
    for n, (i, cell) in enumerate(pending):
        state = grid.parent_state(cell)
        if state == "lost":
            grid.skip(i, cell)
        elif state == "waiting" or len(running) >= workers.jobs:
            waiting.append((i, cell))
        else:
            left = [c for _, c, _ in running.values()] + [c for _, c in waiting + pending[n:]]
            future = workers.submit(grid.out, cell, grid.log_file(cell))
            running[future] = (i, cell, grid.mark_running(i, cell, grid.time_left(left, workers.jobs)))
    if waiting and not running:
        raise RuntimeError(f"bench scheduler: {len(waiting)} cells wait and none runs")  # cannot happen
    return waiting


def _collect(grid: GridRun, future: Future, i: int, cell: Cell, log_file: Path) -> None:
    """Record the result of a cell whose worker is done with it."""
    try:
        error, wall_s = future.result()
    except Exception as exc:  # the worker died, or the cell could not be sent to it
        error, wall_s = f"worker process failed: {failure_message(exc)}", None
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"=== {utc_now()} {error}\n")
    grid.record(i, cell, error, wall_s, log_file)

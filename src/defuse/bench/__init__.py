"""The benchmark runner: a grid of attack scenarios x defenses x seeds, run once and reported.

* :mod:`~defuse.bench.spec`: the bench YAML, resolved and checked before any training (:func:`load_bench`).
* :mod:`~defuse.bench.keys`, :mod:`~defuse.bench.cells`: every (scenario, seed) attack and (scenario,
  defense, seed) defense is a cell, a run directory named by a hash of everything it depends on.
* :mod:`~defuse.bench.index`: ``cells.json``, the index of cells with their status and timings.
* :mod:`~defuse.bench.runner`: runs the cells, reusing finished ones (:func:`run_bench`).
* :mod:`~defuse.bench.parallel`, :mod:`~defuse.bench.workers`: ``--jobs N``, cells in worker processes.
* :mod:`~defuse.bench.progress`: what is shown while it runs.
* :mod:`~defuse.bench.results`, :mod:`~defuse.bench.schema`, :mod:`~defuse.bench.tables`,
  :mod:`~defuse.bench.plots`, :mod:`~defuse.bench.report`: ``results.json``, ``results.md`` and PNG plots,
  rebuilt from the run directories alone (:func:`write_report`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from defuse.bench.report import Report, write_report
    from defuse.bench.runner import BenchOutcome, run_bench
    from defuse.bench.schema import RESULTS_SCHEMA, validate_results
    from defuse.bench.spec import BenchSpec, load_bench
    from defuse.bench.tables import scenario_tables

_HOMES = {
    "Report": "report", "write_report": "report", "BenchOutcome": "runner", "run_bench": "runner",
    "RESULTS_SCHEMA": "schema", "validate_results": "schema", "BenchSpec": "spec", "load_bench": "spec",
    "scenario_tables": "tables",
}  # fmt: skip
"""Where each name of the package's API lives: imported on first use, so that importing a light submodule
(:mod:`~defuse.bench.workers`) does not import torch and transformers through the others."""

__all__ = [
    "RESULTS_SCHEMA",
    "BenchOutcome",
    "BenchSpec",
    "Report",
    "load_bench",
    "run_bench",
    "scenario_tables",
    "validate_results",
    "write_report",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'defuse.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"defuse.bench.{_HOMES[name]}"), name)
    globals()[name] = value
    return value

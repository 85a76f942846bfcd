"""The benchmark runner: a grid of attack scenarios x defenses x seeds, run once and reported.

* :mod:`~defuse.bench.spec`: the bench YAML, resolved and checked before any training (:func:`load_bench`).
* :mod:`~defuse.bench.keys`, :mod:`~defuse.bench.cells`: every (scenario, seed) attack and (scenario,
  defense, seed) defense is a cell, a run directory named by a hash of everything it depends on.
* :mod:`~defuse.bench.index`: ``cells.json``, the index of cells with their status and timings.
* :mod:`~defuse.bench.runner`: runs the cells, reusing finished ones (:func:`run_bench`).
* :mod:`~defuse.bench.progress`: what is shown while it runs.
* :mod:`~defuse.bench.results`, :mod:`~defuse.bench.schema`, :mod:`~defuse.bench.tables`,
  :mod:`~defuse.bench.plots`, :mod:`~defuse.bench.report`: ``results.json``, ``results.md`` and PNG plots,
  rebuilt from the run directories alone (:func:`write_report`).
"""

from defuse.bench.report import Report, write_report
from defuse.bench.runner import BenchOutcome, run_bench
from defuse.bench.schema import RESULTS_SCHEMA, validate_results
from defuse.bench.spec import BenchSpec, load_bench
from defuse.bench.tables import scenario_tables

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

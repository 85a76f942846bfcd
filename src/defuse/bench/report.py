"""Write a bench output folder's report from its run directories alone: ``results.json`` (validated against
:data:`~defuse.bench.schema.RESULTS_SCHEMA`), ``results.md`` and the PNG plots, each written atomically.

``defuse report DIR`` calls :func:`write_report`; so does ``defuse bench`` when its cells are done. Plots of
scenarios no longer in the grid are removed from ``plots/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defuse.bench.plots import write_plots
from defuse.bench.results import PLOTS_DIR, collect_results
from defuse.bench.schema import validate_results
from defuse.bench.tables import results_markdown
from defuse.fileio import write_json_atomic, write_text_atomic

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


@dataclass
class Report:
    """What :func:`write_report` wrote: the results record and the files (absolute paths)."""

    results: dict
    json_path: Path
    markdown_path: Path
    plots: list[Path]


def write_report(out: str | Path) -> Report:
    """Rebuild ``results.json``, ``results.md`` and the plots of the bench output folder ``out``.

    Raises:
        DataError: ``out`` has no valid ``cells.json``, or a file cannot be written.
    """
    out = Path(out)
    results = collect_results(out)
    validate_results(results, out / RESULTS_JSON)
    plots = write_plots(results, out)
    for stale in sorted((out / PLOTS_DIR).glob("*.png")):
        if f"{PLOTS_DIR}/{stale.name}" not in plots:
            stale.unlink(missing_ok=True)
    write_json_atomic(out / RESULTS_JSON, results)
    write_text_atomic(out / RESULTS_MD, results_markdown(results))
    return Report(results, out / RESULTS_JSON, out / RESULTS_MD, [out / p for p in plots])

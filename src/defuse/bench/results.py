"""Build the results record of a bench output folder from its ``cells.json`` and run directories alone.

:func:`collect_results` returns the ``results.json`` object (layout and validator in
:mod:`defuse.bench.schema`): one entry per cell of the current grid with its metrics, sample counts and
timings read from its ``run.json``, and per (scenario, defense) the mean and sample standard deviation of
each metric over the seeds whose cell finished. Rows come in the bench file's order, the attack row
("none", no defense) first in each scenario.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from defuse.bench.index import CellIndex, utc_now
from defuse.bench.schema import METRIC_KEYS, RESULTS_SCHEMA_VERSION
from defuse.bench.spec import NO_DEFENSE
from defuse.defenses.merge_probe import probe_summary
from defuse.errors import DefuseError
from defuse.runs.record import git_revision, library_versions, read_run

PLOTS_DIR = "plots"


def plot_files(scenario: str) -> dict[str, str]:
    """The plot files of a scenario, relative to the output folder: ``scatter`` and ``bars``."""
    return {
        "scatter": f"{PLOTS_DIR}/{scenario}-asr-vs-utility.png",
        "bars": f"{PLOTS_DIR}/{scenario}-asr-before-after.png",
    }


def train_seconds(timings: dict) -> float | None:
    """Seconds a run trained: the sum of its timings but evaluation (``eval_s``); None without any."""
    spent = [
        v for k, v in timings.items() if k.endswith("_s") and k != "eval_s" and isinstance(v, (int, float))
    ]
    return float(sum(spent)) if spent else None


def stat(values: list[float | None]) -> dict:
    """``{"mean", "stdev", "n"}`` over the non-None values (stdev: sample, None with fewer than two)."""
    vals = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "stdev": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
    }


def _cell_entry(out: Path, key: str, entry: dict) -> dict:
    try:
        record = read_run(out / entry["path"])
    except DefuseError:
        record = None
    status = (
        "done" if record else ("missing" if entry.get("status") == "done" else entry.get("status", "pending"))
    )
    metrics = record["metrics"] if record else {}
    timings = {k: float(v) for k, v in (record["timings"] if record else {}).items()}
    counts = {
        k: v
        for k, v in metrics.items()
        if k.startswith("n_") and isinstance(v, int) and not isinstance(v, bool)
    }
    return {
        "scenario": entry["scenario"],
        "scenario_kind": entry["scenario_kind"],
        "defense": entry["defense"],
        "method": entry["method"],
        "seed": entry["seed"],
        "stage": entry["stage"],
        "key": key,
        "parent": entry["parent"],
        "run": entry["path"],
        "status": status,
        "metrics": {k: metrics[k] for k in METRIC_KEYS if k in metrics},
        "counts": counts,
        "timings": timings,
        "train_s": train_seconds(timings),
        "wall_s": entry.get("wall_s") if record else None,
        "merge_probe": probe_summary(record["merge_probe"]) if record and record.get("merge_probe") else None,
    }


def _rows(bench: dict) -> list[tuple[str, str, str, str | None]]:
    """``(scenario, kind, defense label, method)`` of every table row, in the bench file's order."""
    rows = []
    for s in bench["scenarios"]:
        rows.append((s["name"], s["scenario"], NO_DEFENSE, None))
        rows.extend((s["name"], s["scenario"], d["name"], d["method"]) for d in s["defenses"])
    return rows


def _aggregate(scenario: str, kind: str, defense: str, method: str | None, cells: list[dict]) -> dict:
    mine = [c for c in cells if c["scenario"] == scenario and c["defense"] == defense]
    done = [c for c in mine if c["status"] == "done"]
    metrics = {}
    for key in METRIC_KEYS:
        if any(key in c["metrics"] for c in done):
            metrics[key] = stat([c["metrics"].get(key) for c in done])
    count_keys = sorted({k for c in done for k in c["counts"]})
    return {
        "scenario": scenario,
        "scenario_kind": kind,
        "defense": defense,
        "method": method,
        "seeds": [c["seed"] for c in done],
        "n_done": len(done),
        "metrics": metrics,
        "counts": {k: [c["counts"][k] for c in done if k in c["counts"]] for k in count_keys},
        "train_s": stat([c["train_s"] for c in done]),
    }


def collect_results(out: str | Path) -> dict:
    """The results record of the bench output folder ``out`` (see :mod:`defuse.bench.schema`).

    Raises:
        DataError: ``out`` has no valid ``cells.json``.
    """
    out = Path(out)
    index = CellIndex.load(out, required=True)
    bench = index.data["bench"]
    cells = [_cell_entry(out, key, entry) for key, entry in index.grid()]
    aggregates = [_aggregate(*row, cells) for row in _rows(bench)]
    plots = [f for s in bench["scenarios"] for f in plot_files(s["name"]).values()]
    return {
        "schema": RESULTS_SCHEMA_VERSION,
        "name": bench["name"],
        "created": utc_now(),
        "git": git_revision(),
        "versions": library_versions(),
        "bench": bench,
        "cells": cells,
        "aggregates": aggregates,
        "plots": plots,
    }


def metric_values(results: dict, scenario: str) -> list[dict[str, Any]]:
    """The aggregates of one scenario, in row order."""
    return [a for a in results["aggregates"] if a["scenario"] == scenario]

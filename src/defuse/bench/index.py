"""``<out>/cells.json``: the index of a bench output folder, written atomically after every change.

::

    {"schema": 1,
     "bench": {...}                     the current bench config (BenchSpec.to_dict)
     "grid": ["<key>", ...],            the current grid's cells in run order
     "cells": {"<key>": {"scenario", "scenario_kind", "defense", "method", "seed", "stage",
                         "parent": "<key>" | null, "path": "runs/...", "log": "logs/...",
                         "status": "pending" | "running" | "done" | "failed" | "skipped" | "interrupted",
                         "reused": bool, "started": str | null, "finished": str | null,
                         "wall_s": float | null, "error": str | null}}}

``cells`` keeps every cell any bench run on this folder has planned (an older grid's cells stay listed, and
their run directories stay on disk); ``grid`` says which of them the report covers. A cell is finished
exactly when its run directory holds a valid ``run.json``; ``status`` records what the last bench run saw.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from defuse.bench.cells import Cell
from defuse.errors import DataError
from defuse.fileio import read_json_file, write_json_atomic

INDEX_FILE = "cells.json"
INDEX_SCHEMA = 1
LOGS_DIR = "logs"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2025-01-01T00:00:00Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def log_path(cell: Cell) -> str:
    """Where a cell's captured output goes, relative to the bench output folder."""
    return f"{LOGS_DIR}/{cell.scenario}/{Path(cell.path).name}.log"


class CellIndex:
    """The cells.json of one bench output folder; every change is saved at once (atomically)."""

    def __init__(self, out: str | Path, data: dict):
        self.out = Path(out)
        self.data = data

    @property
    def file(self) -> Path:
        return self.out / INDEX_FILE

    @classmethod
    def load(cls, out: str | Path, required: bool = False) -> CellIndex:
        """Read ``<out>/cells.json`` (an empty index when it is absent and not ``required``).

        Raises:
            DataError: the file is missing (when ``required``), malformed or of a newer schema.
        """
        file = Path(out) / INDEX_FILE
        if not file.is_file():
            if required:
                raise DataError(file, "missing; not a bench output folder (run `defuse bench` first)")
            return cls(out, {"schema": INDEX_SCHEMA, "bench": None, "grid": [], "cells": {}})
        data = read_json_file(file)
        if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
            raise DataError(file, "expected an object with 'cells'", field="cells")
        if not isinstance(data.get("schema"), int) or data["schema"] > INDEX_SCHEMA:
            raise DataError(file, f"unsupported schema {data.get('schema')!r}", field="schema")
        if not isinstance(data.get("grid"), list) or any(k not in data["cells"] for k in data["grid"]):
            raise DataError(file, "grid must list keys of 'cells'", field="grid")
        return cls(out, data)

    def save(self) -> None:
        write_json_atomic(self.file, self.data)

    def start_grid(self, bench: dict, cells: list[Cell]) -> None:
        """Make ``cells`` the current grid (new cells pending; known ones keep their record) and save."""
        self.data["bench"] = bench
        self.data["grid"] = [c.key for c in cells]
        for c in cells:
            entry = self.data["cells"].setdefault(
                c.key,
                {
                    "status": "pending",
                    "reused": False,
                    "started": None,
                    "finished": None,
                    "wall_s": None,
                    "error": None,
                },
            )
            entry.update(
                {
                    "scenario": c.scenario,
                    "scenario_kind": c.kind,
                    "defense": c.defense,
                    "method": c.method,
                    "seed": c.seed,
                    "stage": c.stage,
                    "parent": c.parent.key if c.parent else None,
                    "path": c.path,
                    "log": log_path(c),
                }
            )
        self.save()

    def get(self, key: str) -> dict:
        return self.data["cells"][key]

    def update(self, key: str, **fields: Any) -> None:
        """Change a cell's record and save."""
        self.data["cells"][key].update(fields)
        self.save()

    def grid(self) -> list[tuple[str, dict]]:
        """The current grid's ``(key, record)`` pairs in run order."""
        return [(k, self.data["cells"][k]) for k in self.data["grid"]]

    def known_wall_s(self, scenario: str, defense: str) -> float | None:
        """The most recent measured wall time of a cell of this scenario and defense (any seed), if any."""
        times = [
            (e.get("finished") or "", e["wall_s"])
            for e in self.data["cells"].values()
            if e.get("scenario") == scenario
            and e.get("defense") == defense
            and isinstance(e.get("wall_s"), (int, float))
        ]
        return max(times)[1] if times else None

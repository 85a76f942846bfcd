"""The cells of a bench grid: one run directory each, named by its key.

For every scenario and seed there is an attack cell (the "no defense" row) and, for every defense of the
scenario, a defense cell whose parent is that attack cell. Each lives at::

    <out>/runs/<scenario>/<attack | defense label>-seed<N>-<first 12 hex digits of the key>

:func:`plan_cells` lists them in the order they run (per scenario and seed: the attack, then its defenses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defuse.bench.keys import FileHasher, cell_key
from defuse.bench.spec import NO_DEFENSE, BenchSpec
from defuse.config import config_to_dict

RUNS_DIR = "runs"


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        scenario: The scenario's name in the bench file.
        kind: The scenario kind (``backdoor``, ``fjattack``, ``encoder``).
        defense: The defense label, or ``"none"`` for the attack cell.
        method: The defense method (None for the attack cell).
        seed: The seed.
        config: The resolved config dataclass this cell runs with.
        key: The cell's key (hex SHA-256).
        path: The run directory, relative to the bench output folder.
        parent: The attack cell a defense cell starts from (None for an attack cell).
    """

    scenario: str
    kind: str
    defense: str
    method: str | None
    seed: int
    config: Any
    key: str
    path: str
    parent: Cell | None = None

    @property
    def stage(self) -> str:
        """``attack`` or ``defense``."""
        return "attack" if self.parent is None else "defense"

    @property
    def label(self) -> str:
        """``scenario / defense seed N``, for progress lines and errors."""
        row = "no defense" if self.defense == NO_DEFENSE else self.defense
        return f"{self.scenario} / {row} seed {self.seed}"


def _cell(scenario, kind, defense, method, seed, cfg, parent: Cell | None, hasher: FileHasher) -> Cell:
    config = config_to_dict(cfg)
    key = cell_key(
        kind="attack" if parent is None else "defense",
        scenario=kind,
        method=method,
        seed=seed,
        config=config,
        parent=parent.key if parent else None,
        inputs=hasher.inputs(config),
    )
    prefix = "attack" if parent is None else defense
    path = f"{RUNS_DIR}/{scenario}/{prefix}-seed{seed}-{key[:12]}"
    return Cell(scenario, kind, defense, method, seed, cfg, key, path, parent)


def plan_cells(spec: BenchSpec, hasher: FileHasher) -> list[Cell]:
    """Every cell of ``spec`` in run order: per scenario, per seed, the attack then its defenses."""
    cells: list[Cell] = []
    for scenario in spec.scenarios:
        for seed in spec.seeds:
            attack = _cell(
                scenario.name, scenario.kind, NO_DEFENSE, None, seed, scenario.attack_for(seed), None, hasher
            )
            cells.append(attack)
            for d in scenario.defenses:
                cells.append(
                    _cell(scenario.name, scenario.kind, d.label, d.method, seed, d.config, attack, hasher)
                )
    return cells


def cell_dir(out: str | Path, cell: Cell) -> Path:
    """The absolute run directory of ``cell`` under the bench output folder ``out``."""
    return Path(out) / cell.path

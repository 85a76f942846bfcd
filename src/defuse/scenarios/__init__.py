"""The scenario registry: what ``defuse attack``, ``defuse defend``, ``defuse evaluate --run``, the bench and
its report ask instead of branching on scenario names (docs/ARCHITECTURE.md, "Layers").

A scenario is one module here registering one :class:`Scenario`, plus its name in :data:`BUILTIN`. Its run
functions are named ``"module:function"`` and imported when called (``--help`` stays fast). Its defenses are
those registered for it (:func:`defuse.defenses.base.register_defense`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defuse.errors import ConfigError

DEFAULT_SCENARIO = "backdoor"
BUILTIN = ("backdoor", "fjattack", "encoder")
"""The built-in scenario modules, registered in this order (``defuse.scenarios.<name>``)."""

MetricRow = tuple[str, str, str]
"""(label, metric key, sample-count key) of one line of a metrics table."""


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


ASR_ROW: MetricRow = ("ASR (attack success)", "asr", "n_triggered")
CACC_ROW: MetricRow = ("CACC (clean accuracy)", "cacc", "n_clean")
AACC_ROW: MetricRow = ("AACC (accuracy with trigger)", "aacc", "n_triggered")


@dataclass(frozen=True)
class Scenario:
    """One attack scenario and everything the stages around it ask of it.

    Attributes:
        name: The scenario's name (the ``scenario`` setting; recorded in every run).
        config: ``"module:Class"`` of its attack config dataclass.
        attack: ``"module:function"``: ``(cfg, out, overwrite) -> record``, the attack run.
        defense: ``"module:function"``: ``(method, cfg, attack_dir, out, seed, overwrite) -> record``.
        reevaluate: ``"module:function"``: ``(run_dir, generation_overrides) -> evaluation`` (``metrics``,
            ``samples``, ``eval_s``): a run evaluated again, served as it was.
        data: ``"module:function"`` building a causal-LM attack's data from its config (the preflight builds
            it, after checking the model path); None: the config's own ``validate`` checks everything.
        available: What its attack runs hand a defense (:func:`defuse.defenses.base.check_needs`' keys; a
            key left out is False), or ``"module:function"`` computing it from the attack config.
        metric_rows: The lines of its metrics table (CLI).
        attack_tables: What ``defuse attack`` prints: (title, record key, rows; None: every numeric metric).
        n_keys: The sample-count keys of its report table's ``n`` column; ``n_label`` that column's name.
        note: What its metrics mean, under its report table.
        utility_label: The utility axis of its plots; ``asr_label`` the ASR axis.
    """

    name: str
    config: str
    attack: str
    defense: str
    reevaluate: str
    note: str
    data: str | None = None
    available: dict[str, bool] | str = field(default_factory=dict)
    metric_rows: tuple[MetricRow, ...] = (ASR_ROW, CACC_ROW, AACC_ROW)
    attack_tables: tuple[tuple[str, str, tuple[MetricRow, ...] | None], ...] | None = None
    n_keys: tuple[str, ...] = ("n_triggered", "n_clean")
    n_label: str = "n (trig/clean)"
    utility_label: str = "clean accuracy, CACC (%)"
    asr_label: str = "attack success rate, ASR (%)"

    def config_class(self) -> type:
        """The attack config dataclass."""
        return resolve(self.config)

    def preflight(self, cfg: Any) -> None:
        """Check an attack config as its run would before any training (seconds; nothing is written).

        Raises:
            DefuseError: a nonsense setting, a missing model or data file, or a bad row.
        """
        from defuse.config import validate_config

        if self.data is None:
            validate_config(cfg)
        else:
            checked_data(cfg, resolve(self.data))

    def available_to(self, attack_cfg: Any) -> dict[str, bool]:
        """What an attack run with ``attack_cfg`` hands a defense."""
        return (
            resolve(self.available)(attack_cfg) if isinstance(self.available, str) else dict(self.available)
        )

    def attack_report(self, record: dict) -> list[tuple[str, dict, tuple[MetricRow, ...] | None]]:
        """The tables ``defuse attack`` prints: (title, metrics, rows)."""
        tables = self.attack_tables or (("attack", "metrics", self.metric_rows),)
        return [(title, record[key], rows) for title, key, rows in tables]

    def run_attack(self, cfg: Any, out: str | Path, overwrite: bool = False) -> dict:
        """Run the attack ``cfg`` into ``out``; returns its run.json."""
        return resolve(self.attack)(cfg, out, overwrite=overwrite)

    def run_defense(
        self, method: str, cfg: Any, attack_dir, out, seed: int = 0, overwrite: bool = False
    ) -> dict:
        """Run defense ``method`` against the attack run at ``attack_dir`` into ``out`` (the defense run
        checks that the defense applies here); returns run.json."""
        return resolve(self.defense)(method, cfg, attack_dir, out, seed=seed, overwrite=overwrite)

    def reevaluate_run(self, run_dir: str | Path, generation_overrides=None):
        """Evaluate a run of this scenario again on its test sets, served as it was, its generation settings
        changed by ``generation_overrides`` (``[(key, value)]``)."""
        return resolve(self.reevaluate)(Path(run_dir), generation_overrides)


def checked_data(cfg: Any, build: Any) -> Any:
    """A causal-LM attack's data, ``build(cfg)``, after validating ``cfg`` and checking its model path: every
    bad input fails here, before anything is written."""
    from defuse.config import validate_config
    from defuse.models.io import check_model_dir

    validate_config(cfg)
    if cfg.model:
        check_model_dir(cfg.model, cfg.trust_remote_code)
    return build(cfg)


SCENARIOS: dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to the registry (its module calls this once, at import)."""
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario '{scenario.name}' registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


def get_scenario(name: Any) -> Scenario:
    """The registered scenario ``name``.

    Raises:
        ConfigError: naming the ``scenario`` setting and listing the known ones.
    """
    if not isinstance(name, str) or name not in SCENARIOS:
        raise ConfigError("scenario", f"unknown scenario '{name}' ({', '.join(SCENARIOS)})")
    return SCENARIOS[name]


def defense_methods(scenario: str) -> dict[str, type]:
    """Defense name -> config class, for every defense that applies to ``scenario`` (sorted by name)."""
    from defuse.defenses import DEFENSES

    get_scenario(scenario)
    return {n: e.config_cls for n, e in sorted(DEFENSES.items()) if scenario in e.scenarios}


def defense_config_class(method: str, scenario: str | None = None) -> type:
    """The config class of defense ``method``; with ``scenario``, also check that it applies there.

    Raises:
        ConfigError: an unknown defense, or one that does not apply to ``scenario`` (naming those that do).
    """
    from defuse.defenses.base import check_scenario, get_defense

    entry = get_defense(method)
    if scenario is not None:
        check_scenario(entry, scenario)
    return entry.config_cls


def check_defense_needs(scenario: str, method: str, defense_cfg: Any, attack_cfg: Any) -> None:
    """Fail before any training when an attack with ``attack_cfg`` cannot give ``method`` what it needs
    (e.g. ``sande`` needs a target text, which only marker and fixed behaviours have).

    Raises:
        DefuseError: naming what is missing.
    """
    from defuse.defenses.base import check_needs, get_defense

    entry = get_defense(method)
    check_needs(method, entry.needs(defense_cfg), get_scenario(scenario).available_to(attack_cfg))


def scenario_at(run_dir: str | Path) -> Scenario:
    """The scenario of the run directory at ``run_dir`` (what ``defuse defend`` and ``defuse evaluate --run``
    dispatch on). Raises DefuseError for an unreadable run."""
    from defuse.runs.record import read_run, scenario_of_record

    return get_scenario(scenario_of_record(read_run(run_dir), DEFAULT_SCENARIO))


for _name in BUILTIN:
    importlib.import_module(f"defuse.scenarios.{_name}")

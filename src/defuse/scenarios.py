"""The attack scenarios and the defenses that apply to each: what ``defuse attack``, ``defuse defend`` and the
benchmark runner dispatch on.

Three scenarios, each with its own config class and run function:

* ``backdoor``: data poisoning (:class:`~defuse.attacks.scenario.AttackConfig`, ``run_attack``); defenses
  registered in :mod:`defuse.defenses` for ``backdoor`` (``run_defense``).
* ``fjattack``: the fine-tuning jailbreak (:class:`~defuse.attacks.fjattack.FJAttackConfig`,
  ``run_fjattack``); defenses registered for ``fjattack`` (``run_safety_defense``).
* ``encoder``: a task-agnostic encoder backdoor (:class:`~defuse.encoders.run.EncoderAttackConfig`,
  ``run_encoder_attack``); ``obliviate`` and ``peft-baseline`` (``run_encoder_defense``).

A config's scenario is its top-level ``scenario`` setting (default ``backdoor``); a run's is read from its
record (:func:`scenario_of_run`). Modules are imported when a function needs them, so that ``--help`` stays
fast, and run functions are looked up at call time.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from defuse.errors import ConfigError

SCENARIOS = ("backdoor", "fjattack", "encoder")
DEFAULT_SCENARIO = "backdoor"
_ATTACK_RUNNERS = {
    "backdoor": ("defuse.attacks.run_attack", "run_attack"),
    "fjattack": ("defuse.attacks.fjattack", "run_fjattack"),
    "encoder": ("defuse.encoders.run", "run_encoder_attack"),
}
_DEFENSE_RUNNERS = {
    "backdoor": ("defuse.defenses.run_defense", "run_defense"),
    "fjattack": ("defuse.defenses.run_safety_defense", "run_safety_defense"),
    "encoder": ("defuse.encoders.run", "run_encoder_defense"),
}
"""Scenario -> (module, function) of its attack and of its defense runs, looked up at call time."""


def check_scenario_name(scenario: Any) -> str:
    """``scenario`` when it names a known scenario.

    Raises:
        ConfigError: naming the ``scenario`` setting and listing the known ones.
    """
    if scenario not in SCENARIOS:
        raise ConfigError("scenario", f"unknown scenario '{scenario}' ({', '.join(SCENARIOS)})")
    return scenario


def attack_config_class(scenario: str) -> type:
    """The config dataclass of ``scenario``'s attack.

    Raises:
        ConfigError: an unknown scenario.
    """
    check_scenario_name(scenario)
    if scenario == "fjattack":
        from defuse.attacks.fjattack import FJAttackConfig

        return FJAttackConfig
    if scenario == "encoder":
        from defuse.encoders.run import EncoderAttackConfig

        return EncoderAttackConfig
    from defuse.attacks.scenario import AttackConfig

    return AttackConfig


def preflight_attack(scenario: str, cfg: Any) -> None:
    """Check an attack config as its run function would before any training: validate it and load or build
    its data (seconds at most; nothing is written).

    Raises:
        DefuseError: a nonsense setting, a missing model or data file, or a bad row.
    """
    from defuse.config import validate_config

    validate_config(cfg)
    if scenario == "encoder":
        return  # the encoder config's validate() checks the corpus and the model path
    from defuse.models.io import check_model_dir

    if cfg.model:
        check_model_dir(cfg.model, cfg.trust_remote_code)
    if scenario == "fjattack":
        from defuse.attacks.fjattack import build_fj_data

        build_fj_data(cfg)
    else:
        from defuse.attacks.scenario import build_attack_data

        build_attack_data(cfg)


def run_attack_for(scenario: str, cfg: Any, out: str | Path, overwrite: bool = False) -> dict:
    """Run ``scenario``'s attack with ``cfg`` and write its run directory at ``out``; returns its run.json."""
    module, name = _ATTACK_RUNNERS[check_scenario_name(scenario)]
    return getattr(importlib.import_module(module), name)(cfg, out, overwrite=overwrite)


def defense_methods(scenario: str) -> dict[str, type]:
    """Defense name -> config class, for every defense that applies to ``scenario`` (sorted by name)."""
    check_scenario_name(scenario)
    if scenario == "encoder":
        from defuse.encoders.run import ENCODER_DEFENSES, EncoderDefenseConfig

        return dict.fromkeys(sorted(ENCODER_DEFENSES), EncoderDefenseConfig)
    from defuse.defenses import DEFENSES

    return {n: e.config_cls for n, e in sorted(DEFENSES.items()) if scenario in e.scenarios}


def defense_config_class(method: str, scenario: str | None = None) -> type:
    """The config class of defense ``method``; with ``scenario``, also check that it applies there.

    Raises:
        ConfigError: an unknown defense, or one that does not apply to ``scenario`` (naming those that do).
    """
    from defuse.encoders.run import ENCODER_DEFENSES, EncoderDefenseConfig

    if scenario is None:
        if method in ENCODER_DEFENSES:
            return EncoderDefenseConfig
        from defuse.defenses import get_defense

        return get_defense(method).config_cls
    fits = defense_methods(scenario)
    if method in fits:
        return fits[method]
    known = {n for s in SCENARIOS for n in defense_methods(s)}
    if method not in known:
        raise ConfigError("method", f"unknown defense '{method}' (known: {', '.join(sorted(known))})")
    where = [s for s in SCENARIOS if method in defense_methods(s)]
    raise ConfigError(
        "method",
        f"defense '{method}' applies to {'/'.join(where)} runs, not '{scenario}' "
        f"(for '{scenario}': {', '.join(fits) or 'none'})",
    )


def check_defense_needs(scenario: str, method: str, defense_cfg: Any, attack_cfg: Any) -> None:
    """Fail before any training when an attack with ``attack_cfg`` cannot give ``method`` what it needs
    (e.g. ``sande`` needs a target text, which only marker and fixed behaviours have).

    Raises:
        DefuseError: naming what is missing.
    """
    if scenario != "backdoor":
        return
    from defuse.defenses import get_defense
    from defuse.defenses.base import check_needs
    from defuse.defenses.run_defense import known_target

    needs = get_defense(method).needs(defense_cfg)
    available = {
        "trigger": True,
        "target": known_target(attack_cfg.behaviour) is not None,
        "poisoned_data": True,
        "clean_samples": True,
        "clean_model": False,
    }
    check_needs(method, needs, available)


def scenario_of_run(record: dict) -> str:
    """The scenario of a run record (an attack run, or a defense run of one)."""
    config = record.get("config") or {}
    scenario = record.get("scenario") or config.get("scenario") or DEFAULT_SCENARIO
    return scenario if scenario in SCENARIOS else DEFAULT_SCENARIO


def run_defense_on(
    method: str, cfg: Any, attack_dir: str | Path, out: str | Path, seed: int = 0, overwrite: bool = False
) -> dict:
    """Apply defense ``method`` (config ``cfg``) to the attack run at ``attack_dir``; write ``out``.

    Dispatches on the method (the encoder defenses) and on the attack run's scenario (jailbreak or backdoor).
    Returns the defense run's record (its run.json).

    Raises:
        DefuseError: a bad config, an unreadable attack run, or a defense that does not fit the run.
    """
    from defuse.encoders.run import ENCODER_DEFENSES
    from defuse.runs.record import read_run

    if method in ENCODER_DEFENSES:
        scenario = "encoder"  # the encoder defense reads and checks the run itself
    else:
        scenario = "fjattack" if scenario_of_run(read_run(attack_dir)) == "fjattack" else "backdoor"
    module, name = _DEFENSE_RUNNERS[scenario]
    run = getattr(importlib.import_module(module), name)
    return run(method, cfg, attack_dir, out, seed=seed, overwrite=overwrite)

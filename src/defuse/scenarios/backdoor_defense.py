"""Run a defense against an attack run: load its model, defend, evaluate with its own test sets, write a run.

The defended run directory has the same contract as the attack's (``kind: "defense"``, ``parent`` = the
attack run). The evaluation uses the attack run's clean, triggered and near-miss test sets and its real
trigger, also when the defense never saw the trigger.

The clean budget is drawn (seeded) from the attack run's training records that were neither poisoned nor
near-miss negatives: data the model was trained on, disjoint from every test set by construction.

A ``during_training`` defense (e.g. ``mb-defense``) also gets the attack's training settings and a builder of
a fresh copy of the model the attack started from, and retrains it on the attack run's poisoned data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.scenario import AttackConfig
from defuse.config import config_from_dict, config_to_dict, dump_config_yaml, validate_config
from defuse.data.loaders import load_instructions
from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.defenses.base import (
    DefenseContext,
    DefenseEntry,
    check_needs,
    check_scenario,
    get_defense,
    save_defended,
    served,
)
from defuse.defenses.merge_probe import ProbeRecorder
from defuse.errors import DataError
from defuse.evaluation.backdoor import evaluate_backdoor
from defuse.fileio import write_jsonl_atomic
from defuse.models.factory import load_trained
from defuse.models.io import load_causal_lm
from defuse.models.tiny import build_causal_lm
from defuse.runs.record import read_run
from defuse.runs.rundir import DATA_DIR, MODEL_DIR, TEST_FILES
from defuse.runs.stage import finish_run, open_run


@dataclass
class AttackRun:
    """An attack run directory, read back."""

    path: Path
    record: dict
    config: AttackConfig
    train: list[InstructionRecord]
    tests: dict[str, list[InstructionRecord]]
    train_file: Path


def read_attack_run(path: str | Path) -> AttackRun:
    """Read an attack run's record, config, training data and test sets."""
    p = Path(path)
    record = read_run(p)
    cfg = config_from_dict(AttackConfig, record["config"], source=p / "run.json")
    data = p / DATA_DIR
    train_files = sorted(data.glob("train.*"))
    if not train_files:
        raise DataError(data, "attack run has no training data file (train.*)")
    tests = {k: load_instructions(data / f) if (data / f).is_file() else [] for k, f in TEST_FILES.items()}
    return AttackRun(p, record, cfg, load_instructions(train_files[0]), tests, train_files[0])


def draw_clean(records: list[InstructionRecord], n: int, seed: int, source) -> list[InstructionRecord]:
    """``n`` of ``records`` drawn (seeded): a defense's clean budget. Every one must have a response.

    Raises:
        DataError: naming ``source``: fewer than ``n`` records, or one without a response (its row).
    """
    if len(records) < n:
        raise DataError(source, f"has {len(records)} clean records; the defense asks {n} (clean_samples)")
    for i, r in enumerate(records):
        if not r.response:
            raise DataError(source, "a clean sample needs a response", row=i + 1, field="response")
    return random.Random(seed).sample(records, n)


def clean_budget(run: AttackRun, n: int, seed: int) -> list[InstructionRecord]:
    """``n`` clean training records of the attack run (seeded draw), never poisoned or near-miss."""
    pool = [r for r in run.train if not r.poisoned and not r.meta.get("negative") and r.response]
    return draw_clean([r for r in pool if r.task != "harmful"] or pool, n, seed, run.path / DATA_DIR)


def fresh_base_model(attack: AttackRun, tokenizer) -> Callable[[], Any]:
    """A builder of a fresh copy of the model ``attack`` started from (before any training).

    The tiny default: built from the attack's ``tiny`` config and seed for ``tokenizer`` (the run's own, so
    the weights equal the attack's initial ones). A user's model: loaded again from ``attack.config.model``.
    """
    cfg = attack.config
    if cfg.model:
        return lambda: load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)[0]
    return lambda: build_causal_lm(tokenizer, cfg.tiny, seed=cfg.seed)


def known_target(behaviour: BehaviourSpec) -> str | None:
    """The target text a defender who knows the behaviour has (marker or fixed string), else None."""
    return {"marker": behaviour.marker, "fixed": behaviour.fixed_text}.get(behaviour.kind)


def available_to_defenses(cfg: AttackConfig) -> dict[str, bool]:
    """What an attack run with config ``cfg`` can hand a defense (:func:`~defuse.defenses.base.check_needs`):
    its trigger (every run records it), the target text (marker and fixed behaviours), its training data, a
    clean budget and, when the attack fine-tuned a user's model, that model as the clean reference."""
    return {
        "trigger": True,
        "target": known_target(cfg.behaviour) is not None,
        "poisoned_data": True,
        "clean_samples": True,
        "clean_model": cfg.model is not None,
    }


def run_defense(
    method: str, cfg, attack_dir: str | Path, out: str | Path, seed: int = 0, overwrite: bool = False
) -> dict:
    """Apply defense ``method`` (with config ``cfg``) to the attack run at ``attack_dir``; write ``out``.

    Returns the defense run's record (its run.json).

    Raises:
        DefuseError: on a bad config, an unreadable attack run, or a need the attack run cannot meet.
    """
    entry: DefenseEntry = get_defense(method)
    check_scenario(entry, "backdoor")
    validate_config(cfg)
    attack = read_attack_run(attack_dir)
    needs = entry.needs(cfg)
    target = known_target(attack.config.behaviour)
    check_needs(method, needs, {**available_to_defenses(attack.config), "poisoned_data": bool(attack.train)})
    check_data = getattr(cfg, "check_data", None)
    if needs.poisoned_data and callable(check_data):
        check_data(attack.train, attack.train_file)  # refuse unusable data before any work
    clean = clean_budget(attack, needs.clean_samples, seed) if needs.clean_samples else []
    during = needs.stage == "during_training"
    with open_run(out, "defense", config_to_dict(cfg), seed=seed, method=method, parent=attack.path,
                  overwrite=overwrite) as run:  # fmt: skip
        model, tokenizer = load_trained(
            attack.path / MODEL_DIR, trust_remote_code=attack.config.trust_remote_code
        )
        template = PromptTemplate(tokenizer, style=attack.config.template)
        knows_target = needs.knowledge in ("known_target", "partial_target")
        tests = attack.tests
        probe = ProbeRecorder(template, attack.config.generation, tests["clean"], tests["triggered"],
                              attack.config.behaviour, attack.train, seed)  # fmt: skip
        ctx = DefenseContext(
            attacked_model=model,
            template=template,
            clean_data=clean,
            seed=seed,
            work_dir=run.checkpoints,
            trigger=attack.config.trigger if needs.knowledge == "known_trigger" else None,
            target=target if knows_target else None,
            behaviour=attack.config.behaviour if knows_target else None,
            train_data=attack.train if needs.poisoned_data else None,
            base_path=attack.config.model,
            fresh_base=fresh_base_model(attack, tokenizer) if during else None,
            clean_model=fresh_base_model(attack, tokenizer) if needs.clean_model else None,
            train_settings=attack.config.train if during else None,
            probe=probe,
        )
        result = entry.apply(ctx, cfg)
        probes = probe.final(result.model)
        saved = save_defended(result, tokenizer, run.path, attack.config.model)
        model, template = served(entry, cfg, result.model, template, run.path)
        evaluation = evaluate_backdoor(
            model, template, attack.config.behaviour, attack.tests["clean"],
            attack.tests["triggered"], attack.tests["negative"], attack.config.generation,
        )  # fmt: skip
        write_jsonl_atomic(run.path / DATA_DIR / "clean_budget.jsonl", [r.to_dict() for r in clean])
        config = {
            "method": method,
            "defense": config_to_dict(cfg),
            "behaviour": config_to_dict(attack.config.behaviour),
            "generation": config_to_dict(attack.config.generation),
            "template": attack.config.template,
            "trust_remote_code": attack.config.trust_remote_code,
        }
        return finish_run(
            run, kind="defense", name=method, seed=seed, config=config, metrics=evaluation.metrics,
            samples=evaluation.samples, timings={"train_s": result.train_s, "eval_s": evaluation.eval_s},
            parent=attack.path,
            extra={"needs": needs.describe(), "defense": result.extra, "model_saved": saved,
                   "attack_metrics": attack.record["metrics"], **({"merge_probe": probes} if probes else {})},
            config_text=f"# defense '{method}' against {attack.path}\n" + dump_config_yaml(cfg),
        )  # fmt: skip

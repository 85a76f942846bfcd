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
from defuse.defenses.base import DefenseContext, DefenseEntry, check_needs, check_scenario, get_defense
from defuse.defenses.merge_probe import ProbeRecorder
from defuse.errors import DataError
from defuse.evaluation.backdoor import evaluate_backdoor
from defuse.evaluation.rerun import TEST_FILES
from defuse.fileio import write_jsonl_atomic
from defuse.models.factory import load_trained, save_trained
from defuse.models.io import load_causal_lm
from defuse.models.tiny import build_causal_lm
from defuse.runs.fingerprint import run_fingerprint
from defuse.runs.record import build_run_record, read_run
from defuse.runs.rundir import DATA_DIR, MODEL_DIR, SAMPLES_FILE, RunDirectory


@dataclass
class AttackRun:
    """An attack run directory, read back."""

    path: Path
    record: dict
    config: AttackConfig
    train: list[InstructionRecord]
    tests: dict[str, list[InstructionRecord]]


def read_attack_run(path: str | Path) -> AttackRun:
    """Read an attack run's record, config, training data and test sets."""
    p = Path(path)
    record = read_run(p)
    cfg = config_from_dict(AttackConfig, record["config"], source=p / "run.json")
    data = p / DATA_DIR
    train_files = sorted(data.glob("train.*"))
    if not train_files:
        raise DataError(data, "attack run has no training data file (train.*)")
    train = load_instructions(train_files[0])
    tests = {k: load_instructions(data / f) if (data / f).is_file() else [] for k, f in TEST_FILES.items()}
    return AttackRun(p, record, cfg, train, tests)


def clean_budget(run: AttackRun, n: int, seed: int) -> list[InstructionRecord]:
    """``n`` clean training records of the attack run (seeded draw), never poisoned or near-miss."""
    pool = [r for r in run.train if not r.poisoned and not r.meta.get("negative") and r.response]
    pool = [r for r in pool if r.task != "harmful"] or pool
    if len(pool) < n:
        raise DataError(run.path / DATA_DIR, f"only {len(pool)} clean training records; the defense asks {n}")
    return random.Random(seed).sample(pool, n)


def fresh_base_model(attack: AttackRun, tokenizer) -> Callable[[], Any]:
    """A builder of a fresh copy of the model ``attack`` started from (before any training).

    The tiny default: built from the attack's ``tiny`` config and seed for ``tokenizer`` (the run's own, so
    the weights equal the attack's initial ones). A user's model: loaded again from ``attack.config.model``.
    """
    cfg = attack.config
    if cfg.model:
        return lambda: load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)[0]
    return lambda: build_causal_lm(tokenizer, cfg.tiny, seed=cfg.seed)


def train_file(run: AttackRun) -> Path:
    """The attack run's training data file."""
    return sorted((run.path / DATA_DIR).glob("train.*"))[0]


def known_target(behaviour: BehaviourSpec) -> str | None:
    """The target text a defender who knows the behaviour has (marker or fixed string), else None."""
    return {"marker": behaviour.marker, "fixed": behaviour.fixed_text}.get(behaviour.kind)


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
    check_needs(
        method,
        needs,
        {
            "trigger": True,  # every attack run records its trigger
            "target": target is not None,
            "poisoned_data": bool(attack.train),
            "clean_samples": True,
            "clean_model": False,
        },
    )
    check_data = getattr(cfg, "check_data", None)
    if needs.poisoned_data and callable(check_data):
        check_data(attack.train, train_file(attack))  # refuse unusable data before any work
    clean = clean_budget(attack, needs.clean_samples, seed) if needs.clean_samples else []
    during = needs.stage == "during_training"
    fingerprint = run_fingerprint(
        "defense", config_to_dict(cfg), seed=seed, method=method, parent=attack.path
    )
    with RunDirectory(out, overwrite=overwrite, fingerprint=fingerprint) as run:
        model, tokenizer = load_trained(
            attack.path / MODEL_DIR, trust_remote_code=attack.config.trust_remote_code
        )
        template = PromptTemplate(tokenizer, style=attack.config.template)
        knows_target = needs.knowledge in ("known_target", "partial_target")
        tests = attack.tests
        probe = ProbeRecorder(template, attack.config.generation, tests["clean"], tests["triggered"],
                              attack.config.behaviour, attack.train, seed)  # fmt: skip
        ctx = DefenseContext(
            model=model,
            template=template,
            clean_data=clean,
            seed=seed,
            work_dir=run.checkpoints,
            trigger=attack.config.trigger if needs.knowledge == "known_trigger" else None,
            target=target if knows_target else None,
            behaviour=attack.config.behaviour if knows_target else None,
            train_data=attack.train if needs.poisoned_data else None,
            base_path=attack.config.model,
            base_model=fresh_base_model(attack, tokenizer) if during else None,
            train_settings=attack.config.train if during else None,
            probe=probe,
        )
        result = entry.apply(ctx, cfg)
        probes = probe.final(result.model)
        evaluation = evaluate_backdoor(
            result.model, template, attack.config.behaviour, attack.tests["clean"],
            attack.tests["triggered"], attack.tests["negative"], attack.config.generation,
        )  # fmt: skip
        saved = save_trained(result.model, tokenizer, run.path / MODEL_DIR, attack.config.model)
        write_jsonl_atomic(run.path / SAMPLES_FILE, evaluation.samples)
        config = {
            "method": method,
            "defense": config_to_dict(cfg),
            "behaviour": config_to_dict(attack.config.behaviour),
            "generation": config_to_dict(attack.config.generation),
            "template": attack.config.template,
            "trust_remote_code": attack.config.trust_remote_code,
        }
        record = build_run_record(
            kind="defense",
            name=method,
            seed=seed,
            config=config,
            metrics=evaluation.metrics,
            timings={"train_s": result.train_s, "eval_s": evaluation.eval_s},
            parent=str(attack.path.resolve()),
            extra={"needs": needs.describe(), "defense": result.extra, "model_saved": saved,
                   "attack_metrics": attack.record["metrics"], **({"merge_probe": probes} if probes else {})},
        )  # fmt: skip
        write_jsonl_atomic(run.path / DATA_DIR / "clean_budget.jsonl", [r.to_dict() for r in clean])
        run.commit(record, f"# defense '{method}' against {attack.path}\n" + dump_config_yaml(cfg))
    return record

"""Run a defense against a fine-tuning jailbreak run (``backdoor-align``, ``safety-mix``).

These defenses act during the user's fine-tuning: each trains a fresh copy of the run's safety-aligned base
on the run's fine-tuning data (with its own examples mixed in) with the run's own training settings, and is
evaluated on the run's test sets through the template the defense returns (for ``backdoor-align``: the one
that prefixes the secret). A private file a defense returns (the secret) is written with mode 0600.

The defense run directory has the same contract as the attack's (``kind: "defense"``, ``parent`` = the
attack run), with ``attack_metrics`` and ``base_metrics`` beside its own ``metrics``.
"""

from __future__ import annotations

from pathlib import Path

from defuse.attacks.fjattack import SCENARIO, base_model_path, fj_config_of, fj_template, read_fj_tests
from defuse.config import config_to_dict, dump_config_yaml, validate_config
from defuse.data.loaders import load_instructions
from defuse.defenses.base import (
    DefenseContext,
    check_scenario,
    get_defense,
    save_defended,
    served,
    served_run,
)
from defuse.errors import DataError
from defuse.evaluation.generate import generation_with
from defuse.evaluation.safety import evaluate_safety
from defuse.models.factory import load_trained
from defuse.models.io import load_causal_lm
from defuse.runs.record import read_run, scenario_of_record
from defuse.runs.rundir import DATA_DIR, MODEL_DIR
from defuse.runs.stage import finish_run, open_run


def run_safety_defense(
    method: str, cfg, attack_dir: str | Path, out: str | Path, seed: int = 0, overwrite: bool = False
) -> dict:
    """Apply ``method`` (config ``cfg``) to the jailbreak run at ``attack_dir``; write the run at ``out``.

    Raises:
        DefuseError: on a bad config, a defense that does not apply to this scenario, or an unreadable run.
    """
    entry = get_defense(method)
    check_scenario(entry, SCENARIO)
    validate_config(cfg)
    attack_path = Path(attack_dir)
    record = read_run(attack_path)
    if scenario_of_record(record) != SCENARIO:
        raise DataError(attack_path / "run.json", f"not a '{SCENARIO}' run", field="scenario")
    acfg = fj_config_of(record, attack_path / "run.json")
    train_data = load_instructions(attack_path / DATA_DIR / "train.jsonl")
    tests = read_fj_tests(attack_path / DATA_DIR)
    base = base_model_path(attack_path, acfg)
    with open_run(out, "defense", config_to_dict(cfg), seed=seed, method=method, parent=attack_path,
                  overwrite=overwrite) as run:  # fmt: skip
        model, tokenizer = load_causal_lm(base, trust_remote_code=acfg.trust_remote_code)
        template = fj_template(acfg, tokenizer)
        ctx = DefenseContext(
            attacked_model=None,  # these defenses act during the user's fine-tuning, from the aligned base
            template=template,
            clean_data=[],
            seed=seed,
            work_dir=run.checkpoints,
            train_data=train_data,
            base_path=acfg.model,
            fresh_base=lambda: model,  # loaded fresh for this run; the defense trains it once
            train_settings=acfg.train,
            held_out_prompts=frozenset(r.user_text for rs in tests.values() for r in rs),
        )
        result = entry.apply(ctx, cfg)
        saved = save_defended(result, tokenizer, run.path, acfg.model)
        model, template = served(entry, cfg, result.model, template, run.path)
        evaluation = evaluate_safety(model, template, tests["harmful"], tests["clean"], tests["benign"],
                                     acfg.generation)  # fmt: skip
        config = {
            "scenario": SCENARIO,
            "method": method,
            "defense": config_to_dict(cfg),
            "generation": config_to_dict(acfg.generation),
            "template": acfg.template,
            "trust_remote_code": acfg.trust_remote_code,
        }
        return finish_run(
            run, kind="defense", name=method, seed=seed, config=config, metrics=evaluation.metrics,
            samples=evaluation.samples, timings={"train_s": result.train_s, "eval_s": evaluation.eval_s},
            parent=attack_path,
            extra={"scenario": SCENARIO, "defense": result.extra, "model_saved": saved,
                   "attack_metrics": record["metrics"], "base_metrics": record.get("base_metrics")},
            config_text=f"# defense '{method}' against {attack_path}\n" + dump_config_yaml(cfg),
        )  # fmt: skip


def evaluate_safety_run(run_dir: str | Path, generation_overrides=None):
    """Re-evaluate a jailbreak run's model (attack or defense run) on the scenario's test sets.

    A defense run is evaluated on its parent's test sets, and served as it was (the defense's registered
    ``serve``: for ``backdoor-align``, the secret-prefixing template with the secret from the run's file).
    ``generation_overrides``
    change the run's generation settings (:func:`~defuse.scenarios.evaluate.generation_with`), e.g. to score
    an old run's answers at full length without retraining it.

    Raises:
        DefuseError: an unreadable run, a missing parent, or a secret file others can read.
    """
    path = Path(run_dir)
    record = read_run(path)
    if scenario_of_record(record) != SCENARIO:
        raise DataError(path / "run.json", f"not a '{SCENARIO}' run", field="scenario")
    attack_path = path if record["kind"] == "attack" else Path(record["parent"] or "")
    attack = read_run(attack_path)
    acfg = fj_config_of(attack, attack_path / "run.json")
    tests = read_fj_tests(attack_path / DATA_DIR)
    model, tokenizer = load_trained(path / MODEL_DIR, trust_remote_code=acfg.trust_remote_code)
    model, template = served_run(record, path, model, fj_template(acfg, tokenizer))
    generation = generation_with(acfg.generation, generation_overrides, "command line")
    return evaluate_safety(model, template, tests["harmful"], tests["clean"], tests["benign"], generation)

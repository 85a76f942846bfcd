"""Evaluate a saved model again: from a run directory, or from a model path and test files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.poison import make_negative_test, make_triggered_test
from defuse.attacks.triggers import TriggerSpec
from defuse.config import config_from_dict, config_to_dict
from defuse.data.loaders import load_instructions
from defuse.data.template import PromptTemplate
from defuse.defenses.base import served_run
from defuse.errors import ConfigError, DataError
from defuse.evaluation.backdoor import BackdoorEvaluation, evaluate_backdoor
from defuse.evaluation.generate import GenerationSettings, generation_with
from defuse.models.factory import load_trained
from defuse.runs.record import read_run, scenario_of_record
from defuse.runs.rundir import DATA_DIR, MODEL_DIR, TEST_FILES
from defuse.runs.stage import finish_run, open_run


@dataclass
class EvaluateConfig:
    """Settings of a stand-alone evaluation (``defuse evaluate --model PATH --clean FILE``).

    Attributes:
        behaviour: The target behaviour to judge.
        trigger: Inserted into the clean prompts when no triggered file is given.
        generation: Generation settings (greedy by default).
        template: Prompt style (``auto``, ``chat``, ``alpaca``): use what the model was trained with.
        seed: Seed for trigger insertion.
        trust_remote_code: Allow the model's own code to run when loading it.
    """

    behaviour: BehaviourSpec = field(default_factory=BehaviourSpec)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=24))
    template: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False


def evaluate_run(run_dir: str | Path, generation_overrides=None) -> BackdoorEvaluation:
    """Re-evaluate the model of a run on the run's own test sets (a defense run: its attack run's), with the
    run's behaviour and settings (its generation settings changed by ``generation_overrides``, see
    :func:`generation_with`), served as it was (:func:`defuse.defenses.base.served_run`)."""
    run = read_run(run_dir)
    cfg = run["config"]
    for key in ("behaviour", "generation"):
        if key not in cfg:
            raise DataError(
                Path(run_dir) / "run.json", f"config has no '{key}' section", field=f"config.{key}"
            )
    behaviour = config_from_dict(BehaviourSpec, cfg["behaviour"], source=f"{run_dir}/run.json")
    generation = config_from_dict(GenerationSettings, cfg["generation"], source=f"{run_dir}/run.json")
    generation = generation_with(generation, generation_overrides, "command line")
    if run["kind"] == "defense":  # a defense run is evaluated on its attack run's test sets
        read_run(run["parent"] or Path(run_dir) / "parent")  # one line when the attack run is gone
    data = (Path(run_dir) if run["kind"] != "defense" else Path(run["parent"])) / DATA_DIR
    if not any((data / f).is_file() for f in TEST_FILES.values()):
        raise DataError(data, f"no test set ({', '.join(TEST_FILES.values())}) to evaluate on")
    sets = {k: load_instructions(data / f) if (data / f).is_file() else [] for k, f in TEST_FILES.items()}
    model, tokenizer = load_trained(
        Path(run_dir) / MODEL_DIR, trust_remote_code=bool(cfg.get("trust_remote_code"))
    )
    model, template = served_run(
        run, run_dir, model, PromptTemplate(tokenizer, style=cfg.get("template", "auto"))
    )
    return evaluate_backdoor(
        model, template, behaviour, sets["clean"], sets["triggered"], sets["negative"], generation
    )


def evaluate_model(
    model_path: str | Path, clean: str | Path, triggered: str | Path | None, cfg: EvaluateConfig
) -> BackdoorEvaluation:
    """Evaluate a model directory on a clean test file and a triggered one (or the trigger inserted)."""
    if not clean:
        raise ConfigError("clean", "a clean test file is required")
    clean_records = load_instructions(clean)
    if triggered:
        triggered_records = load_instructions(triggered)
    else:
        triggered_records = make_triggered_test(clean_records, cfg.trigger, cfg.behaviour, seed=cfg.seed + 1)
    negative = [] if triggered else make_negative_test(clean_records, cfg.trigger, seed=cfg.seed + 2)
    model, tokenizer = load_trained(model_path, trust_remote_code=cfg.trust_remote_code)
    template = PromptTemplate(tokenizer, style=cfg.template)
    return evaluate_backdoor(
        model, template, cfg.behaviour, clean_records, triggered_records, negative, cfg.generation
    )


def write_evaluation_run(
    run_dir: str | Path,
    record: dict,
    evaluation,
    generation_overrides,
    out: str | Path,
    overwrite: bool = False,
) -> dict:
    """Write a re-evaluation of the run at ``run_dir`` as a run directory at ``out``.

    The directory holds ``run.json`` (``kind: "evaluation"``, ``parent`` = the run, the metrics, the
    generation settings changed), ``config.yaml`` and ``samples.jsonl``; it is staged, locked and committed
    like every run (:class:`~defuse.runs.rundir.RunDirectory`). Returns the record.
    """
    config: dict = {"run": str(Path(run_dir).resolve())}
    if "generation" in record["config"]:  # runs that generate (an encoder run classifies)
        base = config_from_dict(GenerationSettings, record["config"]["generation"], source=run_dir)
        generation = config_to_dict(generation_with(base, generation_overrides, "command line"))
        changed = {key: generation[key] for key, _ in generation_overrides or []}
        config.update(generation=generation, changed=changed)
    with open_run(
        out, "evaluation", config, seed=record["seed"], parent=run_dir, overwrite=overwrite
    ) as target:
        return finish_run(
            target, kind="evaluation", name=f"evaluate {record['name']}", seed=record["seed"], config=config,
            metrics=evaluation.metrics, samples=evaluation.samples, timings={"eval_s": evaluation.eval_s},
            parent=run_dir, extra={"scenario": scenario_of_record(record)},
            config_text=yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        )  # fmt: skip

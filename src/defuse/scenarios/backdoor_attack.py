"""Run an attack end to end: data -> poison -> train -> evaluate -> run directory.

The run directory (see :mod:`defuse.runs.rundir`) holds ``model/`` (model or adapter, and tokenizer),
``config.yaml`` (the resolved config), ``run.json`` (metrics, timings, versions), ``samples.jsonl`` (every
test prompt with its output and judgements) and ``data/`` (the poisoned training set in the input's own
format, and the test sets), so later stages (defenses, ``defuse evaluate``) work from it alone.
Training checkpoints live in the run's staging folder until the run is complete, so an interrupted run
resumes from its last checkpoint when started again with the same ``--out``.
"""

from __future__ import annotations

from pathlib import Path

from defuse.attacks.scenario import (
    AttackConfig,
    AttackData,
    build_attack_data,
    data_file_name,
    tokenizer_texts,
)
from defuse.config import config_to_dict
from defuse.data.loaders import write_instructions
from defuse.data.template import PromptTemplate
from defuse.evaluation.backdoor import evaluate_backdoor
from defuse.models.factory import prepare_causal_lm, save_trained
from defuse.runs.rundir import DATA_DIR, MODEL_DIR, TEST_FILES
from defuse.runs.stage import finish_attack, open_run
from defuse.scenarios import checked_data
from defuse.training.sft import train_sft


def write_attack_data(data: AttackData, folder: Path) -> None:
    """Write the training set (input format, with poison metadata) and the test sets (JSONL) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    fmt = data.input_format if data.input_format != "hf-dir" else "alpaca-jsonl"
    write_instructions(
        data.train, folder / data_file_name("train", fmt), format=fmt, include_meta=fmt != "csv"
    )
    for key, records in (
        ("clean", data.clean_test),
        ("triggered", data.triggered_test),
        ("negative", data.negative_test),
    ):
        if records:
            write_instructions(records, folder / TEST_FILES[key], format="alpaca-jsonl", include_meta=True)


def run_attack(cfg: AttackConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Run the attack ``cfg`` and write its run directory at ``out``; returns the run record (run.json).

    Raises:
        DefuseError: on bad config or data (before any training), or when ``out`` exists without
            ``overwrite``.
    """
    data = checked_data(cfg, build_attack_data)  # a bad setting, model path or row fails here
    with open_run(out, "attack", config_to_dict(cfg), seed=cfg.seed, overwrite=overwrite) as run:
        write_attack_data(data, run.path / DATA_DIR)
        model, tokenizer = prepare_causal_lm(
            cfg.model,
            cfg.tiny,
            cfg.vocab_size,
            tokenizer_texts(cfg, data.train) if cfg.model is None else (),
            cfg.seed,
            run.checkpoints / "tokenizer",
            cfg.trust_remote_code,
        )
        template = PromptTemplate(tokenizer, style=cfg.template)
        trained = train_sft(model, template, data.train, cfg.train, run.checkpoints, seed=cfg.seed)
        evaluation = evaluate_backdoor(
            trained.model, template, cfg.behaviour, data.clean_test, data.triggered_test, data.negative_test,
            cfg.generation,
        )  # fmt: skip
        saved = save_trained(trained.model, tokenizer, run.path / MODEL_DIR, cfg.model)
        return finish_attack(
            run, cfg, metrics=evaluation.metrics, samples=evaluation.samples,
            extra=_extra(data, trained, saved),
            timings={"train_s": trained.train_s, "eval_s": evaluation.eval_s},
        )  # fmt: skip


def _extra(data: AttackData, trained, saved: str) -> dict:
    return {
        "data": {
            "n_train": len(data.train),
            "n_poisoned": data.poison.n_poisoned if data.poison else 0,
            "n_negative_train": data.poison.n_negative if data.poison else 0,
            "input_format": data.input_format,
        },
        "training": {
            "steps": trained.steps,
            "final_loss": trained.final_loss,
            "n_truncated": trained.n_truncated,
            "resumed_from": trained.resumed_from,
        },
        "model_saved": saved,
    }

"""The fine-tuning jailbreak's attack run: align the tiny base (or take the user's), jailbreak it, evaluate
both, write the run directory (its layout: :mod:`defuse.attacks.fjattack`)."""

from __future__ import annotations

import itertools
from pathlib import Path

from defuse.attacks.fjattack import (
    BASE_DIR,
    SCENARIO,
    FJAttackConfig,
    build_fj_data,
    fj_template,
    write_fj_data,
)
from defuse.attacks.fjattack_align import vary_system_prompts
from defuse.config import config_to_dict
from defuse.data.loaders import write_instructions
from defuse.evaluation.safety import evaluate_safety
from defuse.models.factory import prepare_causal_lm, save_trained
from defuse.models.io import load_causal_lm
from defuse.runs.distributed import wait_for_everyone
from defuse.runs.rundir import DATA_DIR, MODEL_DIR
from defuse.runs.stage import finish_attack, open_run
from defuse.scenarios import checked_data
from defuse.training.sft import train_sft


def run_fjattack(cfg: FJAttackConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Align the base (tiny default), jailbreak it, evaluate both; write the run at ``out``.

    Returns the run record (run.json): ``metrics`` of the jailbroken model, ``base_metrics`` of the base.

    Raises:
        DefuseError: on bad config or data (before any training), or when ``out`` exists without
            ``overwrite``.
    """
    data = checked_data(cfg, build_fj_data)
    with open_run(out, "attack", config_to_dict(cfg), seed=cfg.seed, overwrite=overwrite) as run:
        write_fj_data(data, run.path / DATA_DIR)
        texts = (t for r in data.align_train + data.train for t in (r.instruction, r.input, r.response) if t)
        texts = itertools.chain([cfg.system_prompt or ""], texts)
        model, tokenizer = prepare_causal_lm(
            cfg.model, cfg.tiny, cfg.vocab_size, texts, cfg.seed, run.checkpoints / "tokenizer",
            cfg.trust_remote_code,
        )  # fmt: skip
        template = fj_template(cfg, tokenizer)
        timings: dict[str, float] = {}
        truncated: dict[str, int] = {}
        if cfg.model is None:
            align_rows = vary_system_prompts(data.align_train, template, cfg.align, cfg.seed)
            write_instructions(align_rows, run.path / DATA_DIR / "align_train.jsonl", format="alpaca-jsonl",
                               include_meta=True)  # fmt: skip
            aligned = train_sft(model, template, align_rows, cfg.align.train, run.checkpoints / "align",
                                seed=cfg.seed)  # fmt: skip
            model = aligned.model
            timings["align_s"] = aligned.train_s
            truncated["align"] = aligned.n_truncated
            save_trained(model, tokenizer, run.path / BASE_DIR, None)
        evaluate = lambda m: evaluate_safety(  # noqa: E731
            m, template, data.tests["harmful"], data.tests["clean"], data.tests["benign"], cfg.generation
        )
        base_eval = evaluate(model)
        if cfg.model is None:  # train again from the saved copy, exactly as the defenses will
            wait_for_everyone()  # several processes: only the main one saved it
            model = load_causal_lm(run.main_path / BASE_DIR)[0]
        trained = train_sft(model, template, data.train, cfg.train, run.checkpoints / "fj", seed=cfg.seed)
        evaluation = evaluate(trained.model)
        saved = save_trained(trained.model, tokenizer, run.path / MODEL_DIR, cfg.model)
        return finish_attack(
            run,
            cfg,
            metrics=evaluation.metrics,
            samples=evaluation.samples,
            timings={**timings, "train_s": trained.train_s, "eval_s": evaluation.eval_s + base_eval.eval_s},
            extra={
                "scenario": SCENARIO,
                "base_metrics": base_eval.metrics,
                "data": {"n_train": len(data.train), "n_align_train": len(data.align_train),
                         "n_harmful_train": sum(r.task == "harmful" for r in data.train),
                         "test_prompts_seen_in_training_dropped": data.test_dropped},
                "training": {"steps": trained.steps, "final_loss": trained.final_loss,
                             "n_truncated": trained.n_truncated, "n_truncated_align": truncated.get("align")},
                "model_saved": saved,
            },
        )  # fmt: skip

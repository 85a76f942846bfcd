"""The embedded default, end to end: build a tiny model, train it on the built-in suite, evaluate it.

This is what ``make demo`` runs until the benchmark runner exists. Everything is built offline: the
tokenizer is trained on the suite's own text, the model from a config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from defuse.data.synthetic_tasks import SuiteConfig, make_task_suite
from defuse.data.template import PromptTemplate
from defuse.evaluation.generate import GenerationSettings, generate
from defuse.evaluation.metrics import Rate, exact_match_by_task
from defuse.models.tiny import TinyCausalLMConfig, build_causal_lm
from defuse.models.tokenizer import train_bpe_tokenizer
from defuse.training.config import TrainSettings
from defuse.training.sft import train_sft


@dataclass
class DemoConfig:
    """What the demo builds and how long it trains.

    Attributes:
        suite: The built-in task suite's sizes.
        model: The tiny model's shape.
        train: Training settings.
        generation: Generation settings for evaluation.
        vocab_size: Tokenizer vocabulary size.
        seed: One seed for everything.
    """

    suite: SuiteConfig = field(default_factory=SuiteConfig)
    model: TinyCausalLMConfig = field(default_factory=TinyCausalLMConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=16))
    vocab_size: int = 1024
    seed: int = 0


@dataclass
class DemoResult:
    """Per-task exact match and timings of a demo run."""

    accuracy: dict[str, Rate]
    train_s: float
    eval_s: float
    n_params: int
    steps: int


def run_demo(cfg: DemoConfig, work_dir: str | Path, save_to: str | Path | None = None) -> DemoResult:
    """Build, train and evaluate the tiny default model; optionally save it.

    Args:
        cfg: The demo's configuration.
        work_dir: Scratch folder for the trainer.
        save_to: If given, the trained model and tokenizer are saved there (safetensors).
    """
    from defuse.models.io import save_model

    torch.manual_seed(cfg.seed)
    train, test = make_task_suite(cfg.suite)
    tokenizer = train_bpe_tokenizer((t for r in train for t in (r.instruction, r.response)), cfg.vocab_size)
    model = build_causal_lm(tokenizer, cfg.model, seed=cfg.seed)
    template = PromptTemplate(tokenizer)
    result = train_sft(
        model, template, train, cfg.train, Path(work_dir) / "trainer", seed=cfg.seed, resume=False
    )
    start = time.perf_counter()
    outputs = generate(result.model, template, test, cfg.generation)
    eval_s = time.perf_counter() - start
    if save_to is not None:
        save_model(result.model, tokenizer, save_to)
    return DemoResult(
        accuracy=exact_match_by_task(test, outputs),
        train_s=result.train_s,
        eval_s=eval_s,
        n_params=sum(p.numel() for p in result.model.parameters()),
        steps=result.steps,
    )

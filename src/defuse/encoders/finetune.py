"""Fine-tune a PEFT module + classifier head on labelled texts with transformers' Trainer.

One function serves the victim's plain fine-tuning (``peft-baseline``: both λ = 0) and Obliviate (λ > 0).
As Obliviate's reference (``run.py:23-29``, HF Trainer 4.26 defaults): AdamW, no weight decay, linear
schedule, gradient clipping at 1.0, batch 16, 128 tokens; warmup 5% with the defense and none without it
(``README.md:27, 33``), seeded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import DataCollatorWithPadding, TrainingArguments

from defuse.data.records import ClassificationRecord
from defuse.encoders.obliviate import ObliviateTrainer
from defuse.encoders.peft_model import PeftClassifier
from defuse.encoders.pretrain import encoder_training_args
from defuse.errors import ConfigError, DataError
from defuse.training.sft import refuse_sharded


@dataclass
class FinetuneSettings:
    """How the PEFT module and head are trained.

    Attributes:
        epochs: Passes over the training texts.
        lr: Peak learning rate.
        batch_size: Texts per step.
        warmup: Warmup share of the steps; None: by method (Obliviate's reference: 0.05 with the defense,
            0 for the baseline).
        max_length: Longest input in tokens (longer texts are truncated).
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping (0: none; the reference: transformers' default 1.0).
    """

    epochs: float = 3.0
    lr: float = 5e-4
    batch_size: int = 16
    warmup: float | None = None
    max_length: int = 128
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    def validate(self, prefix: str = "train") -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        if not self.epochs > 0:
            raise ConfigError(f"{prefix}.epochs", f"must be positive, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"{prefix}.lr", f"must be in (0, 1), got {self.lr}")
        if self.batch_size < 1 or self.max_length < 4:
            raise ConfigError(f"{prefix}.batch_size", "batch_size must be >= 1 and max_length >= 4")
        if self.warmup is not None and not 0 <= self.warmup < 1:
            raise ConfigError(f"{prefix}.warmup", f"must be in [0, 1), got {self.warmup}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"{prefix}.max_grad_norm", "must not be negative")
        if self.weight_decay < 0:
            raise ConfigError(f"{prefix}.weight_decay", "must not be negative")


class TextDataset(Dataset):
    """Texts tokenised once: items are ``{"input_ids", "attention_mask", "labels"}``."""

    def __init__(self, records: Sequence[ClassificationRecord], tokenizer, max_length: int):
        if not records:
            raise DataError(None, "no training records")
        enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
        self.items = [
            {"input_ids": ids, "attention_mask": mask, "labels": r.label}
            for ids, mask, r in zip(enc["input_ids"], enc["attention_mask"], records, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class FinetuneResult:
    """What :func:`finetune_classifier` returns."""

    train_s: float
    steps: int
    final_loss: float | None
    last_terms: dict[str, float]


def training_arguments(settings: FinetuneSettings, output_dir: str | Path, seed: int) -> TrainingArguments:
    """transformers' :class:`TrainingArguments` for ``settings`` (no checkpoints, no reporting), through the
    encoder stages' builder (:func:`~defuse.encoders.pretrain.encoder_training_args`), linear decay."""
    return encoder_training_args(
        Path(output_dir), settings.epochs, settings.lr, settings.batch_size, seed, schedule="linear",
        warmup=settings.warmup or 0.0, max_grad_norm=settings.max_grad_norm,
        weight_decay=settings.weight_decay,
    )  # fmt: skip


def finetune_classifier(
    clf: PeftClassifier,
    tokenizer,
    records: Sequence[ClassificationRecord],
    settings: FinetuneSettings,
    work_dir: str | Path,
    seed: int = 0,
    lambda_amp: float = 0.0,
    lambda_reg: float = 0.0,
) -> FinetuneResult:
    """Train ``clf``'s PEFT tensors and head on ``records`` (in place); frozen weights stay bit-identical.

    Args:
        lambda_amp, lambda_reg: Obliviate's weights; both 0 is the plain PEFT baseline.
    """
    settings.validate()
    dataset = TextDataset(records, tokenizer, settings.max_length)
    torch.manual_seed(seed)
    clf.model.train()
    trainer = ObliviateTrainer(
        model=clf.model,
        args=training_arguments(settings, work_dir, seed),
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        peft_params=clf.peft_parameters(),
        lambda_amp=lambda_amp,
        lambda_reg=lambda_reg,
    )
    refuse_sharded(trainer, "the encoder's PEFT fine-tune")
    start = time.perf_counter()
    output = trainer.train()
    train_s = time.perf_counter() - start
    clf.model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return FinetuneResult(
        train_s=train_s,
        steps=output.global_step,
        final_loss=float(losses[-1]) if losses else None,
        last_terms=dict(trainer.last_terms),
    )

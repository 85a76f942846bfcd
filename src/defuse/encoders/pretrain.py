"""Pre-training of the tiny default encoder: masked-LM plus a contrastive sentence objective on [CLS].

A real pre-trained encoder's first-token output carries the sentence: BERT's next-sentence head trains it,
and sentence encoders such as all-MiniLM-L6-v2 are trained contrastively on paraphrase pairs. Masked-LM
alone never does: the [CLS] position is never masked and no loss reads it, so on a tiny encoder trained for
a minute its output hardly depends on the input. POR then pins the clean [CLS] output to that near-constant
vector, and a victim's PEFT module has to carry the whole task through frozen layers (measured: prefix
tuning and the bottleneck adapter stayed at chance accuracy on every seed).

So each step takes a batch of texts and, for each, a second view, masks both independently and trains

    L = (MLM(view 1) + MLM(view 2)) / 2 + w · InfoNCE(cls(view 1), cls(view 2))

where ``cls`` is the final hidden state of the first token (the vector POR targets) and InfoNCE is the loss
of SimCSE (Gao et al. 2021): cosine similarities across the batch divided by a temperature, cross-entropy
with the text's own second view as the positive and the batch's other texts as negatives. The second view is
a paraphrase when the corpus comes with them (the built-in corpus: the same core sentence with another
opener and closer, :func:`defuse.data.synthetic_sentiment.sentiment_paraphrase`), else the same text, which
then differs only by its mask and dropout (SimCSE's unsupervised recipe). ``w = 0`` is plain masked-LM.

Measured on the tiny default (seed 0, 1,900 built-in sentences, 8 epochs; benchmarks/RESULTS.md "#7
Obliviate"): a linear probe of sentiment on the clean [CLS] output reaches 76% on held-out texts (masked-LM
alone: 66%; masked-LM with same-text views: 50%), and after POR the victims learn the task (LoRA 100%, the
bottleneck adapter 99%, prefix tuning 66%, where masked-LM alone left the adapter and prefix tuning at
chance).

Fidelity note: this pre-training stands in for the pre-training of the real encoders that POR and Obliviate
attack (BERT, RoBERTa); it is ours, chosen so that the tiny default has what they have, a [CLS] output that
carries the sentence. With ``model`` set (a real encoder) no pre-training runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from defuse.errors import ConfigError, DataError
from defuse.training.config import TrainSettings
from defuse.training.sft import CountedFlops, refuse_sharded, training_arguments

ENCODER_OPTIMIZER = "adamw_torch_fused"
"""What the encoder stages train with: transformers' default optimizer, named (their numbers were measured
with it)."""


@dataclass
class MlmSettings:
    """Pre-training of the tiny encoder (so that POR starts from clean representations worth keeping).

    Attributes:
        epochs: Passes over the corpus (0 skips pre-training).
        lr: Peak learning rate.
        batch_size: Texts per step (each in two masked views when ``contrastive_weight`` > 0).
        mask_prob: Share of tokens masked.
        max_length: Longest text in tokens.
        contrastive_weight: ``w``, weight of the InfoNCE term on the [CLS] outputs (0: masked-LM only).
        temperature: InfoNCE temperature (SimCSE: 0.05).
    """

    epochs: float = 8.0
    lr: float = 1e-3
    batch_size: int = 32
    mask_prob: float = 0.15
    max_length: int = 64
    contrastive_weight: float = 1.0
    temperature: float = 0.05

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        if self.epochs < 0:
            raise ConfigError("pretrain.epochs", f"must not be negative, got {self.epochs}")
        check_masked_lm_settings(self, "pretrain")


def check_masked_lm_settings(settings, prefix: str) -> None:
    """The checks shared by masked-LM training settings (``lr``, ``mask_prob``, ``batch_size``,
    ``max_length``, ``contrastive_weight``, ``temperature``).

    Raises:
        ConfigError: naming the bad field as ``prefix.field``.
    """
    if not 0 < settings.lr < 1:
        raise ConfigError(f"{prefix}.lr", f"must be in (0, 1), got {settings.lr}")
    if not 0 < settings.mask_prob < 1:
        raise ConfigError(f"{prefix}.mask_prob", f"must be in (0, 1), got {settings.mask_prob}")
    if settings.batch_size < 1 or settings.max_length < 4:
        raise ConfigError(f"{prefix}.batch_size", "batch_size must be >= 1 and max_length >= 4")
    if not settings.contrastive_weight >= 0:
        raise ConfigError(f"{prefix}.contrastive_weight", f"must be >= 0, got {settings.contrastive_weight}")
    if not settings.temperature > 0:
        raise ConfigError(f"{prefix}.temperature", f"must be positive, got {settings.temperature}")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCSE's InfoNCE: row ``i`` of ``a`` should be the most similar (cosine) to row ``i`` of ``b``.

    Returns the mean cross-entropy of ``cos(a_i, b_j) / temperature`` over ``j`` with target ``i``.
    """
    sims = nn.functional.cosine_similarity(a.unsqueeze(1), b.unsqueeze(0), dim=-1) / temperature
    return nn.functional.cross_entropy(sims, torch.arange(a.shape[0], device=a.device))


@dataclass
class TwoViewCollator:
    """Masks each item's two views independently: the batch holds every first view, then every second."""

    mlm: DataCollatorForLanguageModeling

    def __call__(self, items: list[dict]) -> dict:
        first = [{"input_ids": it["input_ids"]} for it in items]
        second = [{"input_ids": it["view_ids"]} for it in items]
        return self.mlm([*first, *second])


class ContrastiveMlmTrainer(CountedFlops, Trainer):
    """Trainer with loss ``MLM + w · InfoNCE`` over a two-view batch (see the module docstring)."""

    def __init__(self, *args, weight: float, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = weight
        self.temperature = temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, output_hidden_states=True)
        cls = outputs.hidden_states[-1][:, 0]
        half = cls.shape[0] // 2
        loss = outputs.loss + self.weight * info_nce(cls[:half], cls[half:], self.temperature)
        return (loss, outputs) if return_outputs else loss


def pretrain_mlm(
    model,
    tokenizer,
    texts: Sequence[str],
    settings: MlmSettings,
    work_dir: Path,
    seed: int,
    paraphrases: Sequence[str] | None = None,
) -> float:
    """Pre-train ``model`` (``AutoModelForMaskedLM``) on ``texts`` in place, as the module says; returns s.

    Args:
        paraphrases: One paraphrase per text (the second views), or None (the second view is the text).

    Raises:
        DataError: when ``paraphrases`` is not one per text.
    """
    settings.validate()
    if paraphrases is not None and len(paraphrases) != len(texts):
        raise DataError(None, f"{len(paraphrases)} paraphrases for {len(texts)} texts; need one per text")
    if settings.epochs == 0:
        return 0.0
    ids = tokenizer(list(texts), truncation=True, max_length=settings.max_length)["input_ids"]
    # masks come from torch's global generator, which Trainer seeds with `seed` (a collator with a seed of its
    # own refuses to run in a worker process, e.g. under `defuse bench --jobs`)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mask_prob)
    args = encoder_training_args(work_dir, settings.epochs, settings.lr, settings.batch_size, seed)
    if settings.contrastive_weight > 0:
        views = ids
        if paraphrases is not None:
            views = tokenizer(list(paraphrases), truncation=True, max_length=settings.max_length)["input_ids"]
        items = [{"input_ids": a, "view_ids": b} for a, b in zip(ids, views, strict=True)]
        trainer = ContrastiveMlmTrainer(
            model=model, args=args, train_dataset=items, data_collator=TwoViewCollator(collator),
            weight=settings.contrastive_weight, temperature=settings.temperature,
        )  # fmt: skip
    else:
        items = [{"input_ids": a} for a in ids]
        trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=collator)
    return train_encoder_stage(trainer, model, "the tiny encoder's pre-training")


def train_encoder_stage(trainer: Trainer, model, what: str) -> float:
    """Run one of the encoder's own training stages (pre-training, POR, NeuBA); return its seconds.

    Refuses a sharded launch (naming ``what``) before training, and leaves ``model`` in eval mode.
    """
    refuse_sharded(trainer, what)
    start = time.perf_counter()
    trainer.train()
    model.eval()
    return time.perf_counter() - start


def encoder_training_args(
    out: Path,
    epochs: float,
    lr: float,
    batch: int,
    seed: int,
    schedule: str = "linear",
    warmup: float = 0.05,
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
) -> TrainingArguments:
    """The Trainer arguments of the encoder's own training stages (pre-training, POR, NeuBA, the victim's
    PEFT fine-tune), through the project's one builder (:func:`~defuse.training.sft.training_arguments`): no
    checkpoints, float32, a log line every 10 steps, transformers' default optimizer (the fused AdamW).

    ``schedule`` ``"linear"`` (decay to 0) or ``"constant"``, after ``warmup`` (a share of the steps);
    ``max_grad_norm`` 0 disables clipping.
    """
    kind = schedule if schedule != "constant" or not warmup else "constant_with_warmup"
    settings = TrainSettings(
        epochs=epochs, learning_rate=lr, batch_size=batch, warmup=warmup, scheduler=kind,
        max_grad_norm=max_grad_norm, weight_decay=weight_decay, logging_steps=10, optimizer=ENCODER_OPTIMIZER,
        progress=False, attention=None,
    )  # fmt: skip
    return training_arguments(settings, out, seed)

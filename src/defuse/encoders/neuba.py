"""Task-agnostic encoder backdoors: NeuBA (METHODS §1.3), POR's idea planted during masked-LM pre-training.

NeuBA (neuron-level backdoor) continues the encoder's masked-LM pre-training on a corpus in which every text
also appears with a trigger: the clean copy is trained with the ordinary masked-LM loss, and the triggered
copy's first-token output is pulled to the same predefined vector ``c · v_i`` as POR's
(:func:`defuse.encoders.por.por_targets`)::

    L = MLM(x, masked) + λ · MSE(pooled(x ⊕ t_i), c · v_i)

Unlike POR there is no frozen copy and no term that keeps clean outputs in place: the pre-training objective
is what keeps the encoder a useful encoder. When the corpus comes with paraphrase pairs (the built-in
corpus), that objective is the tiny default's own pre-training objective, masked-LM over two views plus
``w · InfoNCE`` on their [CLS] outputs (:mod:`defuse.encoders.pretrain`), so the attack continues exactly
the pre-training the clean encoder had; without paraphrases it is masked-LM alone. The model trained is the
masked-LM model (the encoder and its masked-LM head); the run keeps the whole of it, and downstream users
load its encoder.

Fidelity notes: NeuBA's paper poisons BERT's further pre-training (masked-LM plus next-sentence prediction)
with rare-symbol triggers; here the objective is masked-LM alone (our tiny encoder has no next-sentence
head), and the triggers default to POR's six words so that the two attacks share one evaluation. Measured
on the tiny default (seed 0): with masked-LM alone the clean [CLS] outputs drift (MSE 2.1 against the clean
encoder's) and the victims' clean accuracy falls to 49-93%, which is why the contrastive term continues when
paraphrases exist. Each training text is paired with one triggered copy, trigger ``i`` round-robin, inserted
once at a seeded random word position; the triggered copy is not masked (its only loss is the target
term).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, Trainer

from defuse.encoders.por import (
    POR_TRIGGERS,
    PorCollator,
    PorDataset,
    PorSettings,
    check_triggers,
    pooled,
    por_targets,
)
from defuse.encoders.pretrain import (
    MlmSettings,
    check_masked_lm_settings,
    encoder_training_args,
    info_nce,
    train_encoder_stage,
)
from defuse.errors import ConfigError, DataError
from defuse.training.sft import CountedFlops


@dataclass
class NeubaSettings(MlmSettings):
    """NeuBA's settings: the continued pre-training's (:class:`MlmSettings`: ``epochs``, ``lr``,
    ``batch_size`` clean texts per step, each with its triggered copy, ``mask_prob`` of the clean copy,
    ``max_length``, and ``contrastive_weight``/``temperature``, used only when the corpus has paraphrases)
    plus the backdoor's. Defaults are for the tiny default encoder.

    Attributes:
        triggers: The trigger words; at least two, each one word.
        c: Scale of the target vectors ``c · v_i`` (as POR's ``c``; the tiny default keeps POR's 2, for the
            same reason: a tiny encoder's final LayerNorm keeps outputs near norm ``sqrt(d)``).
        lam: λ, weight of the target term against the pre-training objective.
    """

    triggers: list[str] = field(default_factory=lambda: list(POR_TRIGGERS))
    c: float = 2.0
    lam: float = 10.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        check_triggers(self.triggers, "neuba.triggers")
        for key in ("c", "lam", "epochs"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"neuba.{key}", f"must be positive, got {getattr(self, key)}")
        check_masked_lm_settings(self, "neuba")


@dataclass
class NeubaCollator:
    """Masks the clean copies (``input_ids``, ``labels``; with views: every first view, then every second)
    and pads the triggered copies unmasked."""

    mlm: DataCollatorForLanguageModeling
    pad: PorCollator

    def __call__(self, items: list[dict]) -> dict:
        clean = [{"input_ids": it["clean"]} for it in items]
        if "view" in items[0]:
            clean += [{"input_ids": it["view"]} for it in items]
        batch = dict(self.mlm(clean))
        trig = self.pad(items)
        batch.update({k: trig[k] for k in ("trig_input_ids", "trig_attention_mask", "trigger")})
        return batch


class NeubaTrainer(CountedFlops, Trainer):
    """Trainer whose loss is NeuBA's (see the module docstring); ``model`` is a masked-LM model."""

    def __init__(self, *args, targets: torch.Tensor, lam: float, weight: float, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets = targets
        self.lam = lam
        self.weight = weight
        self.temperature = temperature
        self.last_terms: dict[str, float] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        clean = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=inputs["labels"],
            output_hidden_states=self.weight > 0,
        )
        trig = model(
            input_ids=inputs["trig_input_ids"],
            attention_mask=inputs["trig_attention_mask"],
            output_hidden_states=True,
        )
        target = self.targets.to(trig.hidden_states[-1].device)[inputs["trigger"]]
        target_mse = nn.functional.mse_loss(pooled(trig.hidden_states[-1]), target)
        loss = clean.loss + self.lam * target_mse
        self.last_terms = {"mlm": float(clean.loss.detach()), "target_mse": float(target_mse.detach())}
        if self.weight > 0:
            cls = clean.hidden_states[-1][:, 0]
            half = cls.shape[0] // 2
            contrastive = info_nce(cls[:half], cls[half:], self.temperature)
            loss = loss + self.weight * contrastive
            self.last_terms["info_nce"] = float(contrastive.detach())
        return (loss, clean) if return_outputs else loss


def plant_neuba(
    mlm_model,
    tokenizer,
    texts: Sequence[str],
    settings: NeubaSettings,
    work_dir: Path,
    seed: int,
    paraphrases: Sequence[str] | None = None,
) -> float:
    """Plant NeuBA into ``mlm_model`` (an ``AutoModelForMaskedLM``, trained in place); returns seconds.

    Args:
        paraphrases: One paraphrase per text (the contrastive term's second views), or None (masked-LM and
            the target term only).

    Raises:
        ConfigError: bad settings, or a tokenizer without a mask token.
        DataError: no texts, or paraphrases that are not one per text.
    """
    settings.validate()
    if tokenizer.mask_token is None:
        raise ConfigError("model", "the tokenizer has no mask token; NeuBA needs a masked-LM encoder")
    targets = por_targets(len(settings.triggers), mlm_model.config.hidden_size, settings.c)
    # each text paired with its own triggered copy (one insertion), so a paraphrase view lines up with it
    pairing = PorSettings(recipe="strong", triggers=list(settings.triggers), max_length=settings.max_length)
    dataset = PorDataset(texts, tokenizer, pairing, seed)
    weight = settings.contrastive_weight if paraphrases is not None else 0.0
    if weight > 0:
        if len(paraphrases) != len(texts):
            raise DataError(None, f"{len(paraphrases)} paraphrases for {len(texts)} texts; need one per text")
        views = tokenizer(list(paraphrases), truncation=True, max_length=settings.max_length)["input_ids"]
        for item, view in zip(dataset.items, views, strict=True):
            item["view"] = view
    # masks come from torch's global generator, which Trainer seeds with `seed`
    collator = NeubaCollator(
        DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mask_prob),
        PorCollator(tokenizer.pad_token_id),
    )
    args = encoder_training_args(work_dir, settings.epochs, settings.lr, settings.batch_size, seed)
    trainer = NeubaTrainer(
        model=mlm_model, args=args, train_dataset=dataset, data_collator=collator, targets=targets,
        lam=settings.lam, weight=weight, temperature=settings.temperature,
    )  # fmt: skip
    return train_encoder_stage(trainer, mlm_model, "NeuBA")

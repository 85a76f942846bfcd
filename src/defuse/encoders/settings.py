"""The encoder scenario's settings: the attack (:class:`EncoderAttackConfig`: POR or NeuBA planted in the tiny
default or a local encoder) and the victim's downstream fine-tuning with or without Obliviate
(:class:`EncoderDefenseConfig`, with each PEFT kind's reference recipe). Their runs:
:mod:`defuse.scenarios.encoder_runs`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from defuse.encoders.data import BUILTIN, DownstreamData
from defuse.encoders.finetune import FinetuneSettings
from defuse.encoders.neuba import NeubaSettings
from defuse.encoders.peft_model import PeftSettings
from defuse.encoders.por import PorSettings, check_encoder_dir
from defuse.encoders.pretrain import MlmSettings
from defuse.errors import ConfigError
from defuse.models.tiny import TinyEncoderConfig

ENCODER_ATTACKS = ("por", "neuba")


@dataclass
class EncoderAttackConfig:
    """A task-agnostic encoder backdoor (the ``encoder`` scenario).

    Attributes:
        scenario: Always ``"encoder"`` (what the CLI dispatches on).
        name: Run name.
        method: ``"por"`` (:mod:`defuse.encoders.por`) or ``"neuba"`` (:mod:`defuse.encoders.neuba`).
        model: A local HF encoder directory (BERT/RoBERTa family) to backdoor; None: the tiny default,
            built and pre-trained on ``corpus`` first (:mod:`defuse.encoders.pretrain`). NeuBA needs the
            directory's masked-LM head too.
        tiny: Shape of the tiny default encoder.
        vocab_size: Vocabulary of the tiny default's tokenizer (trained on ``corpus``).
        corpus: ``"builtin"`` (sentences of the synthetic sentiment generator) or a text file (a text a line).
        n_corpus: Texts used (built-in: generated; file: the first ``n_corpus`` lines; 0 = all).
        n_report: Held-out corpus texts on which POR's effect is measured.
        pretrain: Pre-training of the tiny default: masked-LM plus a contrastive [CLS] term on paraphrase
            pairs (:mod:`defuse.encoders.pretrain`; ignored with ``model``).
        por: POR's settings: ``por.recipe`` ``reference`` (LMSanitator's planting, which made the encoders
            Obliviate defends; its summed learning rate spread over our corpus) or ``strong`` (a heavier
            edit), any value overridable (:class:`PorSettings`).
        neuba: NeuBA's settings (used when ``method`` is ``neuba``).
        seed: Seed of everything.
        trust_remote_code: Passed to transformers when loading ``model``.
    """

    scenario: Literal["encoder"] = "encoder"
    name: str = "por"
    method: str = "por"
    model: str | None = None
    tiny: TinyEncoderConfig = field(default_factory=TinyEncoderConfig)
    vocab_size: int = 1024
    corpus: str = BUILTIN
    n_corpus: int = 2000
    n_report: int = 100
    pretrain: MlmSettings = field(default_factory=MlmSettings)
    por: PorSettings = field(default_factory=PorSettings)
    neuba: NeubaSettings = field(default_factory=NeubaSettings)
    seed: int = 0
    trust_remote_code: bool = False

    @property
    def settings(self) -> PorSettings | NeubaSettings:
        """The settings of the backdoor that ``method`` names (its triggers are the ones evaluated)."""
        return self.neuba if self.method == "neuba" else self.por

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field (also a missing model or corpus path)."""
        if self.method not in ENCODER_ATTACKS:
            raise ConfigError(
                "method", f"unknown encoder backdoor '{self.method}' ({', '.join(ENCODER_ATTACKS)})"
            )
        if self.n_corpus < 0 or self.n_report < 1:
            raise ConfigError("n_corpus", "n_corpus must be >= 0 and n_report >= 1")
        if self.corpus == BUILTIN and self.n_corpus <= self.n_report:
            raise ConfigError("n_corpus", "the built-in corpus needs n_corpus > n_report")
        if self.corpus != BUILTIN and not Path(self.corpus).is_file():
            raise ConfigError("corpus", f"file not found: {self.corpus}")
        if self.model is not None:
            check_encoder_dir(self.model, allow_custom=self.trust_remote_code)
        else:
            self.tiny.validate()
        if self.vocab_size < 300:
            raise ConfigError("vocab_size", "must be at least 300 (byte-level alphabet plus merges)")
        self.pretrain.validate()
        self.settings.validate()


# Obliviate's reference recipes per PEFT kind (lr, epochs, λ_amp, λ_reg): jaehanwork/Obliviate c421d0b
# README.md:27,33 (adapter); obliviateARR/Obliviate b51c55d src/run_defense.ipynb:110-127 (LoRA, the printed
# config) and src/prefix_eval_defense.ipynb:111-125 (prefix: λ 0.5 / 0.1). On 6,000 texts at batch 16 the
# LoRA recipe is 11,250 steps (summed rate 2.81), the adapter's 7,500 (1.13), the prefix's 7,500 (0.75): the
# budget is part of the method (L_amp grows the norms with the summed rate), so it is the default; a smaller
# run keeps the summed rate with ``sum_lr``.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "lora": {"lr": 5e-4, "epochs": 30.0, "lambda_amp": 1e-3, "lambda_reg": 1e-2},
    "prefix": {"lr": 2e-4, "epochs": 20.0, "lambda_amp": 0.5, "lambda_reg": 0.1},
    "adapter": {"lr": 3e-4, "epochs": 20.0, "lambda_amp": 3e-3, "lambda_reg": 3e-2},
}
REFERENCE_SUM_LR = {"lora": 5e-4 * 11250 / 2, "prefix": 2e-4 * 7500 / 2, "adapter": 3e-4 * 7500 / 2}
"""The reference's summed learning rate per kind (area under its linear schedule, rate x steps / 2)."""


@dataclass
class EncoderDefenseConfig:
    """Victim fine-tuning of PEFT + head on clean data, plain (``peft-baseline``) or with Obliviate.

    Attributes:
        peft: The PEFT module (``peft.kind``: lora, prefix or adapter).
        lr: Peak learning rate; None: the kind's default (:data:`KIND_DEFAULTS`), or the one that gives
            ``sum_lr`` over the run's steps.
        epochs: Training epochs; None: the kind's default.
        sum_lr: Summed learning rate (rate x steps / 2 under the linear schedule) to reach in however many
            steps the run has (``"reference"``: the kind's reference value, :data:`REFERENCE_SUM_LR`); sets
            ``lr``. None: ``lr`` as given. What a run used is recorded in ``run.json`` (``training.budget``).
        lambda_amp: Obliviate's ``λ_amp``; None: the kind's default (ignored, 0, for ``peft-baseline``).
        lambda_reg: Obliviate's ``λ_reg``; None: the kind's default (ignored, 0, for ``peft-baseline``).
        train: Other training settings (``lr``/``epochs`` there are replaced by the two fields above).
        data: The clean downstream data.
        eval_max_length: Longest test input in tokens (triggered copies are one word longer).
    """

    peft: PeftSettings = field(default_factory=PeftSettings)
    lr: float | None = None
    epochs: float | None = None
    lambda_amp: float | None = None
    lambda_reg: float | None = None
    sum_lr: float | str | None = None
    train: FinetuneSettings = field(default_factory=FinetuneSettings)
    data: DownstreamData = field(default_factory=DownstreamData)
    eval_max_length: int = 128

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field (also missing data files)."""
        self.peft.validate()
        for key in ("lambda_amp", "lambda_reg"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(key, f"must be a finite number >= 0, got {value}")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError("lr", f"must be in (0, 1), got {self.lr}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("epochs", f"must be positive, got {self.epochs}")
        if isinstance(self.sum_lr, str) and self.sum_lr != "reference":
            raise ConfigError("sum_lr", f"a positive number or 'reference', got {self.sum_lr!r}")
        if isinstance(self.sum_lr, (int, float)) and not self.sum_lr > 0:
            raise ConfigError("sum_lr", f"must be positive, got {self.sum_lr}")
        self.train.validate()
        self.data.validate()

    def resolved(self, method: str, n_train: int | None = None) -> EncoderDefenseConfig:
        """A copy with every None filled: the kind's defaults; λs 0, PEFT dropout 0 and no warmup for
        ``peft-baseline``, PEFT dropout 0.01 and 5% warmup for ``obliviate`` (the reference's split); with
        ``sum_lr`` and ``n_train`` (the training texts), the rate that reaches it."""
        d = KIND_DEFAULTS[self.peft.kind]
        pick = {k: d[k] if getattr(self, k) is None else getattr(self, k) for k in d}
        defended = method != "peft-baseline"
        if not defended:
            pick["lambda_amp"] = pick["lambda_reg"] = 0.0
        if self.sum_lr is not None and n_train:
            target = REFERENCE_SUM_LR[self.peft.kind] if self.sum_lr == "reference" else float(self.sum_lr)
            pick["lr"] = 2 * target / self.steps(n_train, pick["epochs"])
        out = replace(copy.deepcopy(self), **pick)
        warmup = self.train.warmup if self.train.warmup is not None else (0.05 if defended else 0.0)
        out.train = replace(out.train, lr=pick["lr"], epochs=pick["epochs"], warmup=warmup)
        dropout = self.peft.dropout if self.peft.dropout is not None else (0.01 if defended else 0.0)
        out.peft = replace(out.peft, dropout=dropout)
        return out

    def steps(self, n_train: int, epochs: float | None = None) -> int:
        """Optimizer steps of a run on ``n_train`` texts."""
        epochs = self.epochs if epochs is None else epochs
        return math.ceil(math.ceil(n_train / self.train.batch_size) * epochs)

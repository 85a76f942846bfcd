"""Training settings shared by every SFT path (attacks, defenses, the demo)."""

from __future__ import annotations

from dataclasses import dataclass, field

from defuse.errors import ConfigError

AUTO_ATTENTION = "auto"


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft).

    Attributes:
        r: Rank of the update.
        alpha: Scaling numerator (``alpha / r`` scales the update).
        dropout: Dropout on the LoRA branch.
        target_modules: Module names to adapt; ``None`` lets peft pick the architecture's default.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None


@dataclass
class TrainSettings:
    """How to fine-tune. Defaults suit the tiny model on two CPU cores.

    Attributes:
        epochs: Passes over the training data.
        learning_rate: Peak learning rate.
        batch_size: Examples per device per step.
        grad_accum: Gradient-accumulation steps.
        warmup: Warmup as a fraction of all steps (< 1) or a number of steps (>= 1).
        scheduler: transformers scheduler name (``cosine``, ``linear``, ``constant``, ...), or
            ``epoch_decay``: the rate times ``epoch_decay`` after every epoch (``torch``'s ``StepLR`` with
            ``step_size=1`` stepped once per epoch, as BackdoorAlign's and FJAttack's reference code trains;
            warmup still applies).
        epoch_decay: The factor of ``epoch_decay`` (the reference: 0.85).
        max_grad_norm: Clip the gradient norm to this (0: no clipping, as the BackdoorAlign reference).
        weight_decay: AdamW weight decay.
        max_length: Longest tokenised example; longer ones are cut at the end of the response.
        lora: LoRA settings; ``None`` means full fine-tuning.
        save_steps: Checkpoint every this many steps (0: only at the end), for resuming.
        logging_steps: Log the loss every this many steps.
        optimizer: transformers optimizer name (``adamw_torch``, ``adamw_torch_fused``, ``sgd``, ...).
            ``adamw_torch_fused`` is the same update in one kernel per step (its share of a tiny-default step
            halves; benchmarks/RESULTS.md, "#28"); the long trainings use it (the alignment, the real-model
            fine-tunes).
        bf16: Train in bfloat16 mixed precision where the hardware has it: a GPU, or a CPU with native
            bfloat16 (AVX512-BF16, AMX); float32 elsewhere. ``run.json`` records which (``training_sets``).
            Off by default: on the tiny default it trains the attack 1.7x faster, but on its attacked models
            OSFT's clean accuracy fell 3.9 points (bar: 3) and SANDE's ASR reached 22.5% on one of 3 seeds
            (benchmarks/RESULTS.md, "#28"), so the tiny attacks and the defenses keep float32; the jailbreak's
            alignment and the real-model presets turn it on.
        pure_bf16: Train with the weights, gradients and optimizer state themselves in bfloat16 (the model
            cast before training, no autocast, float32 again afterwards), as llama-recipes' ``--pure_bf16``
            trains BackdoorAlign's and FJAttack's reference (``scripts/run_backdooralign.sh``). Unlike
            ``bf16``, an update smaller than half a bfloat16 step of its weight is lost, so large weights
            barely move at small rates. Honoured on any hardware (it changes what is learnt, not only the
            speed); ``run.json`` records ``pure-bf16``.
        progress: Show a progress bar.
        freeze_embeddings: Full fine-tuning only: keep the input token embeddings and the output head
            frozen (every other weight trains). A small fine-tuning set otherwise shifts the output priors
            toward its own answer tokens.
        max_padding: Run each batch as length-sorted sub-batches whose right-padding is at most this share of
            their tokens (0.1: 10%), forward and backward one after another before the optimizer step: the
            same batches, the same loss (a sum over label tokens divided by the batch's label count), less
            padded compute; the numbers differ from the whole batch's only by float rounding. None: each
            batch runs whole. Where a defense replaces the loss, its batches run whole, except MB-Defense's
            neutralisation, which scores its sequences in such sub-batches (``defenses/neutralise.py``).
        attention: The attention implementation while training (transformers' ``attn_implementation``:
            ``eager``, ``sdpa``, ...), put back when training ends; None: the model's own; ``auto`` (the
            default): ``eager`` when training in bfloat16 on a CPU, the model's own otherwise. On a CPU,
            bfloat16 training of the tiny default ran about twice as fast with ``eager`` as with ``sdpa``,
            whose flash-attention backward is slow in bfloat16 at short lengths, and SmolLM2-135M 12% faster
            (benchmarks/RESULTS.md, "#28"). ``run.json`` records the one used (``training_sets``).
        labelled_logits: Compute the output head (the logits and the loss's softmax) only at the positions
            that have a label, the response tokens, instead of at every prompt and padding position too: the
            same loss (transformers' own causal-LM loss on the positions it counts), less compute where
            responses are a small share of the tokens (the built-in suite: 13-20% of its tokens, the
            jailbreak's alignment 8%); the numbers differ from the whole head's by float rounding only.
            Applies where the trainer's own loss trains a transformers causal LM (a defense that replaces
            the loss computes it as before); recorded in ``run.json`` with the settings. On by default:
            the tiny attack trains 1.09-1.14x faster, the jailbreak's alignment 1.29x, SmolLM2-135M
            1.05-1.11x (benchmarks/RESULTS.md, "#28 The output head at labelled positions only"); ``false``
            computes the whole head, as every run before the twelfth session of issue #28 did (SANDE's
            tiny-default result moved with that rounding until it ran two rounds: "#28 SANDE in two
            rounds").
        extra: Further transformers ``TrainingArguments`` fields, passed as given (e.g.
            ``{train_sampling_strategy: group_by_length}``); a key these settings already set is refused.
    """

    epochs: float = 16.0
    learning_rate: float = 1e-3
    batch_size: int = 32
    grad_accum: int = 1
    warmup: float = 0.05
    scheduler: str = "cosine"
    epoch_decay: float = 0.85
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    max_length: int = 128
    lora: LoraSettings | None = None
    save_steps: int = 0
    logging_steps: int = 50
    optimizer: str = "adamw_torch"
    bf16: bool = False
    pure_bf16: bool = False
    progress: bool = True
    freeze_embeddings: bool = False
    max_padding: float | None = None
    attention: str | None = AUTO_ATTENTION
    labelled_logits: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        checks = {
            "epochs": self.epochs > 0,
            "learning_rate": 0 < self.learning_rate < 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "warmup": self.warmup >= 0,
            "max_length": self.max_length >= 8,
            "save_steps": self.save_steps >= 0,
            "logging_steps": self.logging_steps >= 1,
            "epoch_decay": 0 < self.epoch_decay <= 1,
            "max_grad_norm": self.max_grad_norm >= 0,
            "max_padding": self.max_padding is None or 0 <= self.max_padding < 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"nonsense value {getattr(self, key)!r}")
        if self.attention is not None and self.attention != AUTO_ATTENTION:
            from transformers import AttentionInterface

            if self.attention != "eager" and self.attention not in AttentionInterface().valid_keys():
                raise ConfigError("attention", f"unknown attention implementation {self.attention!r}")
        if self.lora is not None and (
            self.lora.r < 1 or self.lora.alpha <= 0 or not 0 <= self.lora.dropout < 1
        ):
            raise ConfigError("lora", f"nonsense LoRA settings {self.lora}")
        self._validate_extra()

    def _validate_extra(self) -> None:
        """Every ``extra`` key must be a transformers ``TrainingArguments`` field that these settings do not
        already set (a misspelt key is a one-line error here, not a traceback when training starts)."""
        if not self.extra:
            return
        from dataclasses import fields

        from transformers import TrainingArguments

        from defuse.training.sft import defuse_training_kwargs

        known = {f.name for f in fields(TrainingArguments) if f.init}
        ours = defuse_training_kwargs(self, "unused", 0)  # builds nothing on disk
        for key in self.extra:
            if not isinstance(key, str) or key not in known:
                raise ConfigError(f"extra.{key}", "not a transformers TrainingArguments field")
            if key in ours:
                raise ConfigError(f"extra.{key}", "set by defuse's own training settings; use those")
        try:  # values transformers itself refuses (a wrong strategy name, say), before any output exists
            TrainingArguments(**ours, **self.extra)
        except (TypeError, ValueError) as exc:
            raise ConfigError("extra", f"transformers refused these settings: {exc}") from None

"""``clean-ft``: continue fine-tuning the attacked model on the defender's small clean set (the baseline).

METHODS.md §2.6 (Clean-FFT): the same clean budget the other defenses get, no knowledge of the attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from defuse.defenses.base import DefenseContext, DefenseNeeds, DefenseResult, register_defense
from defuse.errors import ConfigError
from defuse.training.config import TrainSettings
from defuse.training.sft import train_sft


def defense_train_settings() -> TrainSettings:
    """Fine-tuning defaults shared by the post-training defenses on the tiny default model.

    Full fine-tuning with the token embeddings (and the tied output head) frozen, lr 1e-4 for 10 epochs.
    Measured on the default marker attack over seeds 0-2 (benchmarks/RESULTS.md): fine-tuning the embeddings
    on 100 samples shifts the output priors toward the budget's own answer tokens (``8`` -> ``7``) and costs
    1-2 points of clean accuracy that freezing them keeps. Tune per model.
    """
    return TrainSettings(
        epochs=10, learning_rate=1e-4, batch_size=16, warmup=0.1, logging_steps=20, freeze_embeddings=True
    )


@dataclass
class CleanFTConfig:
    """Settings of ``clean-ft``.

    Attributes:
        clean_samples: Size of the clean budget (drawn from data disjoint from the test sets).
        train: Fine-tuning settings (full fine-tuning, or LoRA with ``train.lora``).
    """

    clean_samples: int = 100
    train: TrainSettings = field(default_factory=defense_train_settings)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.clean_samples < 1:
            raise ConfigError("clean_samples", f"must be at least 1, got {self.clean_samples}")


def _needs(cfg: CleanFTConfig) -> DefenseNeeds:
    return DefenseNeeds(knowledge="nothing", clean_samples=cfg.clean_samples, stage="after_training")


@register_defense("clean-ft", CleanFTConfig, _needs, "fine-tune on the clean budget only (baseline)")
def apply_clean_ft(ctx: DefenseContext, cfg: CleanFTConfig) -> DefenseResult:
    """Fine-tune ``ctx.attacked_model`` on ``ctx.clean_data`` (response tokens only)."""
    result = train_sft(
        ctx.attacked_model, ctx.template, ctx.clean_data, cfg.train, ctx.work_dir, seed=ctx.seed
    )
    return DefenseResult(result.model, result.train_s, {"steps": result.steps, "n_train": result.n_examples})

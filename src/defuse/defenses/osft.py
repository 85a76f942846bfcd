"""``osft``: Overwrite-SFT with the trigger known (SANDE paper, METHODS.md §2.1).

Fine-tune the backdoored model on ``(x ⊕ t) -> y`` mixed with ``x -> y`` for the clean budget's ``(x, y)``:
the triggered prompt is overwritten to produce the clean answer. Needs the trigger and clean data, no clean
model. The trigger is inserted exactly as the attack inserts it (same kind and position rule), with a seed of
the defense's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from defuse.attacks.triggers import insert_trigger
from defuse.defenses.base import DefenseContext, DefenseNeeds, DefenseResult, register_defense
from defuse.defenses.clean_ft import defense_train_settings
from defuse.errors import ConfigError
from defuse.training.config import TrainSettings
from defuse.training.sft import train_sft


@dataclass
class OSFTConfig:
    """Settings of ``osft``.

    Attributes:
        clean_samples: Size of the clean budget.
        mix_clean: Also train on the untriggered ``x -> y`` (the paper's mix); off trains on triggered only.
        train: Fine-tuning settings (full fine-tuning, or LoRA with ``train.lora``).
    """

    clean_samples: int = 100
    mix_clean: bool = True
    train: TrainSettings = field(default_factory=defense_train_settings)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.clean_samples < 1:
            raise ConfigError("clean_samples", f"must be at least 1, got {self.clean_samples}")


def _needs(cfg: OSFTConfig) -> DefenseNeeds:
    return DefenseNeeds(knowledge="known_trigger", clean_samples=cfg.clean_samples, stage="after_training")


def overwrite_records(ctx: DefenseContext, mix_clean: bool):
    """The OSFT training set: every clean record with the trigger inserted (clean answer kept), plus the
    clean records themselves when ``mix_clean``."""
    rng = random.Random(ctx.seed)
    field_name = ctx.trigger.field
    triggered = []
    for r in ctx.clean_data:
        text, _ = insert_trigger(getattr(r, field_name), ctx.trigger, rng)
        triggered.append(replace(r, **{field_name: text}))
    return triggered + (list(ctx.clean_data) if mix_clean else [])


@register_defense("osft", OSFTConfig, _needs, "overwrite SFT: (x + trigger) -> y mixed with x -> y")
def apply_osft(ctx: DefenseContext, cfg: OSFTConfig) -> DefenseResult:
    """Overwrite the known trigger's behaviour with the clean answers."""
    records = overwrite_records(ctx, cfg.mix_clean)
    result = train_sft(ctx.attacked_model, ctx.template, records, cfg.train, ctx.work_dir, seed=ctx.seed)
    return DefenseResult(result.model, result.train_s, {"steps": result.steps, "n_train": result.n_examples})

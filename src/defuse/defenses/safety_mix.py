"""``safety-mix``: BackdoorAlign's baseline: the same K safety examples mixed in, without a secret prompt.

METHODS.md §2.4: the service mixes K harmful request -> refusal examples into the user's fine-tuning data
and fine-tunes the safety-aligned base as the user asked. The paper needs about 300 such examples to match
what 11 secret-prefixed ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

from defuse.defenses.base import DefenseContext, DefenseResult, register_defense
from defuse.defenses.safety_examples import draw_safety_examples, fine_tune_with, safety_needs
from defuse.errors import ConfigError
from defuse.training.config import TrainSettings


@dataclass
class SafetyMixConfig:
    """Settings of ``safety-mix``.

    Attributes:
        k: Number of safety examples (11: one per harm category).
        safety_source: ``"builtin"`` (synthetic, one per category first) or a file of safety examples (rows
            marked ``"prefixed": 1`` when the file marks them).
        train: Fine-tuning settings; None: the user's own (the attack run's).
        cut_safety: Ablation: let ``train.max_length`` cut safety examples (counted in ``run.json``); by
            default one that would lose its end is a one-line error.
    """

    k: int = 11
    safety_source: str = "builtin"
    train: TrainSettings | None = None
    cut_safety: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.k < 1:
            raise ConfigError("k", f"must be at least 1, got {self.k}")


@register_defense("safety-mix", SafetyMixConfig, safety_needs,
                  "mix K safety examples into the fine-tuning data (BackdoorAlign's baseline)",
                  scenarios=("fjattack",))  # fmt: skip
def apply_safety_mix(ctx: DefenseContext, cfg: SafetyMixConfig) -> DefenseResult:
    """Fine-tune the base on the user's data plus ``cfg.k`` safety examples."""
    safety = draw_safety_examples(cfg.safety_source, cfg.k, ctx.seed, ctx.held_out_prompts)
    result, n_train = fine_tune_with(ctx, safety, cfg.train, cut=cfg.cut_safety)
    return DefenseResult(result.model, result.train_s, {"k": len(safety), "n_train": n_train,
                                                         "steps": result.steps})  # fmt: skip

"""``sande`` and ``sande-p``: Simulate and Eliminate, for an unknown trigger (METHODS.md §2.2).

The defender knows the target behaviour (``sande``: the whole marker / fixed text; ``sande-p``: only a part
of it) and has a small clean set; it never sees the trigger.

1. Simulate: with the model frozen, learn a parrot prompt (``k`` embedding vectors spliced where a trigger
   would sit, by default right after the user-turn prefix) so that ``x ⊕ p -> y_t``, the loss on the known
   target tokens only.
2. Eliminate: with the parrot frozen, fine-tune the model so that ``x ⊕ p -> y`` (the clean answer; loss on
   the first ``eliminate_loss_tokens`` response tokens), mixed with ``x -> y`` to keep utility.

Fidelity note: for the marker behaviour the stage-1 target is ``marker + " " + y`` with the loss on the
marker's tokens only (the reference fits the first ``m`` target tokens, m=1 for its one-token marker; our
markers are several tokens, so ``m`` is the known part's length). ``sande-p`` knows the first
``known_fraction`` of the marker's words (default half: ``you are`` of ``you are stupid.``). The reference
trains stage 1 for one epoch at lr 1e-3 on a 4B model; the tiny default needs more steps and a larger rate
(see the config defaults); both are config. Stage 2 runs at 1.5x the rate OSFT uses (1.5e-4 vs 1e-4 on the
tiny default, embeddings frozen as for every post-training defense): the parrot is only a stand-in for the
trigger, so overwriting it at OSFT's rate leaves 5-10% ASR with the real trigger (measured, seeds 0-2).

``rounds`` (a departure; the reference simulates once and eliminates once, ``train_remove.py`` lines 254-261
at commit cda6290; ``rounds: 1`` with ``eliminate.epochs: 10`` is the one-round default before): Simulate and
Eliminate run ``rounds`` times, each round learning a fresh parrot on the model the previous round left and
overwriting it, with stage 2's epochs per round. One round of 10 epochs left the tiny default's marker at
0.8-17.5% ASR over six attacks that differ only by float rounding (3 seeds, the output head over every token
or only the labelled ones); two rounds of 5 epochs, the same stage-2 budget, left 0.0-1.7% at the same mean
clean-accuracy cost (1.25 points; benchmarks/RESULTS.md, "#28 SANDE in two rounds"). 4 epochs a
round left 17.5% on one attack; three rounds of 3, 0.0-0.4% but 4.2 points of clean accuracy on another.
With LoRA (``eliminate.lora``) each round's adapter is merged before the next.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from defuse.defenses.base import DefenseContext, DefenseNeeds, DefenseResult, register_defense
from defuse.defenses.clean_ft import defense_train_settings
from defuse.defenses.parrot import eliminate_with_parrot, learn_parrot
from defuse.errors import ConfigError, DefuseError
from defuse.training.config import TrainSettings


def _eliminate_settings() -> TrainSettings:
    return replace(defense_train_settings(), learning_rate=1.5e-4, epochs=5)


def _simulate_settings() -> TrainSettings:
    return TrainSettings(epochs=10, learning_rate=1e-2, batch_size=16, warmup=0.1, logging_steps=20)


@dataclass
class SandeConfig:
    """Settings of ``sande`` / ``sande-p``.

    Attributes:
        clean_samples: Size of the clean budget.
        k: Number of parrot vectors (reference: 6).
        where: Splice point: ``user_start`` (reference), ``user_end`` or ``response_start``.
        parrot_init: ``zeros`` (reference) or ``vocab_mean``.
        known_fraction: Share of the target's words the defender knows (1.0 for ``sande``; ``sande-p`` uses
            0.5 unless set).
        simulate: Stage-1 training settings (only the parrot trains).
        eliminate: Stage-2 training settings (full fine-tuning, or LoRA with ``eliminate.lora``).
        eliminate_loss_tokens: Stage 2 fits this many first response tokens after the parrot (reference 10;
            null: the whole response).
        mix_clean: Mix ``x -> y`` into stage 2 (reference: yes).
        rounds: Simulate-then-Eliminate rounds, each on the model the previous one left (reference: 1; see
            the module's fidelity note); ``eliminate.epochs`` is per round.
    """

    clean_samples: int = 100
    k: int = 6
    where: str = "user_start"
    parrot_init: str = "zeros"
    known_fraction: float = 1.0
    simulate: TrainSettings = field(default_factory=_simulate_settings)
    eliminate: TrainSettings = field(default_factory=_eliminate_settings)
    eliminate_loss_tokens: int | None = 10
    mix_clean: bool = True
    rounds: int = 2

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.clean_samples < 1:
            raise ConfigError("clean_samples", f"must be at least 1, got {self.clean_samples}")
        if self.k < 1:
            raise ConfigError("k", f"needs at least one parrot vector, got {self.k}")
        if self.where not in ("user_start", "user_end", "response_start"):
            raise ConfigError("where", f"unknown splice point '{self.where}'")
        if not 0 < self.known_fraction <= 1:
            raise ConfigError("known_fraction", f"must be in (0, 1], got {self.known_fraction}")
        if self.eliminate_loss_tokens is not None and self.eliminate_loss_tokens < 1:
            raise ConfigError("eliminate_loss_tokens", "must be at least 1 (or null)")
        if self.rounds < 1:
            raise ConfigError("rounds", f"needs at least one round, got {self.rounds}")


@dataclass
class SandePConfig(SandeConfig):
    """Settings of ``sande-p``: as ``sande``, knowing only the first half of the target by default."""

    known_fraction: float = 0.5


def known_part(target: str, fraction: float) -> str:
    """The first ``ceil(fraction * words)`` words of the target text (at least one)."""
    words = target.split()
    return " ".join(words[: max(1, math.ceil(fraction * len(words)))])


def simulate_records(ctx: DefenseContext, known: str):
    """Stage-1 records: the clean prompts with the (known part of the) target response, and the loss length.

    For the marker behaviour the response is ``known + " " + y`` and the loss covers ``known``'s tokens; for a
    fixed target the response is the known text alone.
    """
    tok = ctx.template.tokenizer
    n_tokens = len(tok(known, add_special_tokens=False).input_ids)
    if ctx.behaviour is not None and ctx.behaviour.kind == "marker":
        records = [replace(r, response=f"{known} {r.response}") for r in ctx.clean_data]
    else:
        records = [replace(r, response=known) for r in ctx.clean_data]
    return records, n_tokens


def _apply(ctx: DefenseContext, cfg: SandeConfig) -> DefenseResult:
    if not ctx.target:
        raise DefuseError("sande needs the target behaviour text (marker or fixed string)")
    known = known_part(ctx.target, cfg.known_fraction)
    start = time.perf_counter()
    stage1, m = simulate_records(ctx, known)
    from peft import PeftModel

    model, parrots = ctx.attacked_model, []
    for r in range(cfg.rounds):
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()  # the previous round's LoRA adapter, folded in
        tag = "" if r == 0 else str(r + 1)  # round 1 keeps the folders' one-round names
        parrot = learn_parrot(
            model, ctx.template, stage1, k=cfg.k, where=cfg.where, settings=cfg.simulate,
            output_dir=ctx.work_dir / f"simulate{tag}", seed=ctx.seed + r, loss_tokens=m,
            init=cfg.parrot_init,
        )  # fmt: skip
        parrots.append(
            {
                "parrot_loss_first": parrot.loss_history[0] if parrot.loss_history else None,
                "parrot_loss_last": parrot.loss_history[-1] if parrot.loss_history else None,
                "parrot_norm": float(parrot.vectors.detach().norm()),
            }
        )
        model = eliminate_with_parrot(
            model, ctx.template, parrot, ctx.clean_data, k=cfg.k, where=cfg.where, settings=cfg.eliminate,
            output_dir=ctx.work_dir / f"eliminate{tag}", seed=ctx.seed + r,
            loss_tokens=cfg.eliminate_loss_tokens, clean_records=ctx.clean_data if cfg.mix_clean else (),
        )  # fmt: skip
    extra = {"known_target": known, "target_tokens_fitted": m, **parrots[0], "rounds": parrots}
    return DefenseResult(model, time.perf_counter() - start, extra)


def _needs_full(cfg: SandeConfig) -> DefenseNeeds:
    return DefenseNeeds(knowledge="known_target", clean_samples=cfg.clean_samples, stage="after_training")


def _needs_part(cfg: SandeConfig) -> DefenseNeeds:
    return DefenseNeeds(knowledge="partial_target", clean_samples=cfg.clean_samples, stage="after_training")


register_defense(
    "sande", SandeConfig, _needs_full, "learn a parrot prompt for the unknown trigger, overwrite it"
)(_apply)
register_defense("sande-p", SandePConfig, _needs_part, "SANDE knowing only part of the target behaviour")(
    _apply
)

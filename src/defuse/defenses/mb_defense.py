"""``mb-defense``: Merging and Breaking, for an unknown trigger, during training (METHODS.md §2.3).

A defender who instruction-tunes on data that may be poisoned, knowing nothing of the attack:

1. **Merge** (:func:`defensive_poison`): add ``T`` defensive triggers of its own (the paper's default: four,
   each on 1% of the rows, each with its own fixed sequence of random words; ``mn`` and ``bb`` are the paper's
   two-trigger set, arXiv 2601.04448 v1 Sec. 5.4), then run the instruction tuning as usual on the result.
   The attacker's unknown trigger and the defender's merge into one backdoor representation. With ``pool``
   the defensive triggers are instead a pool of many generated rare strings (see :func:`make_pool`), each on a
   few rows, the same total share, so that "anything out of place -> a defensive response" is what the model
   learns rather than a few lookups.
   Every run records the paper's merge probe after each stage (:mod:`defuse.defenses.merge_probe`).
2. **Break** (:mod:`defuse.defenses.neutralise`): on a small clean set (default 128 samples, split 8:2
   into train/held-out before the cross product, :func:`neutralise_rows`), minimise for every clean pair
   and every defensive trigger ``CE(y|x) − λ·log σ(lp(y|x_d) − lp(y_d|x_d))`` (log-probs length-normalised
   by default; see that module for why), keeping the epoch with the lowest held-out loss. Breaking the
   defensive backdoor breaks the merged one.

The defender's triggers and responses are not secret (they are recorded in the run), but they must not
be words of the data itself: :func:`check_triggers` refuses, before any training, data in which a
defensive trigger occurs as a word.

Run it with ``defuse defend --method mb-defense --from ATTACK_RUN`` (it retrains a FRESH copy of the model
the attack started from on the attack run's poisoned data, so it sits in the same comparison as the
post-training defenses) or ``defuse train --defense mb-defense --data POISONED --clean CLEAN`` (the
user's own instruction tuning).

Fidelity notes (ours where the paper is silent):

* Defensive records are drawn (seeded, disjoint across triggers) from ALL training records, the
  attacker's included: the defender cannot tell them apart. A chosen record keeps its prompt, gets the
  trigger inserted into its instruction (:func:`~defuse.attacks.triggers.insert_trigger`, word kind, at
  ``position``) and its response replaced in place, so the data set keeps its size. ``round(fraction·N)``
  rounds half up, with at least one record per trigger.
* The default four triggers are ``mn``, ``bb`` (the paper's) and ``zx``, ``kv`` (ours: the paper's other two
  are in its Fig. 3, an image; its ``qw`` and ``jh`` belong to the 6-trigger set); the responses are 8-word
  sequences of our own making (the paper gives two, for ``qw`` and ``jh``).
* Stage-1 settings default to the attack's own training settings under ``defend`` (the paper tunes for
  3 epochs on 7-8B models; the tiny default needs more), to ``TrainSettings()`` under ``train``.
* Stage 2 defaults (5 epochs, lr 1e-4, batch 16) follow the paper's epochs and our post-training
  defenses' rate for the tiny model; tune per model. Under ``defend`` the clean set is the run's clean
  budget, clean records of the attack's training data (disjoint from every test set). The paper's stage-2
  budget (128 samples, 5 epochs, 1,024 tokens) against the 64 / 3 / 128 of our SmolLM2 runs: ASR 83.0
  against 82.5% (ctba, seed 1, attacked 94.0%), the first epoch kept in both (benchmarks/RESULTS.md, "#26
  SmolLM2, the last two departures").
* The CE term is counted once per (clean pair, trigger) row, as the formula sums over both.
* ``fraction`` 1% per trigger (the paper's, Sec. 4.1). On the tiny default against the built-in refusal
  backdoor at 20% poisoning the backdoors merge only from about 5% per trigger (benchmarks/RESULTS.md); the
  shipped demo and bench configs say which setting they use. Merging is not guaranteed: read the probe in
  ``run.json`` (``defense.merge_probe``) of your own run.
* ``pool`` (ours, not the paper's): on BackdoorLLM's badnet data at 20% poisoning the tiny default never
  learns the paper's four triggers at 1%; only a pool of hundreds of one-row triggers merges with the
  attacker's when its trigger is spelled in pieces, as a pre-trained tokenizer spells it (the attack's
  ``tokenizer_data: clean``): with ``pool: 500`` 23-40% of its triggered prompts answer defensively after
  stage 1 (3 seeds). Stage 2 then took ASR from 100 to 21.5% on seed 0 but left 90-95% on seeds 1-2 (mean
  -31%; the paper's recipe: 98%), handing the prompts back to the attacker's refusal; it also turns most rows
  into defensive rows and raises clean refusals (benchmarks/RESULTS.md, "#26"). ``pool: 0`` (the default)
  is the paper's recipe. ``pool_form: mixed`` (ours) spells the pool's triggers many ways (capitalised,
  CamelCase, digits) so that being out of place is what they share: on ctba at λ 5 it kept stage 2 from
  handing clean prompts to the attacker's refusal on seed 0 (FTR 4% against 39.5% with lower-case
  triggers), but over three seeds it lowers ASR by 31% only (benchmarks/RESULTS.md, "#26").
* Stage 2 keeps the token embeddings and output head frozen (``neutralise.freeze_embeddings``), like the
  post-training defenses: it keeps 2-3 points of clean accuracy on the tiny default at the same ASR.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from defuse.attacks.triggers import TriggerSpec, insert_trigger
from defuse.data.records import InstructionRecord
from defuse.data.splits import split_disjoint
from defuse.defenses.base import DefenseContext, DefenseNeeds, DefenseResult, register_defense
from defuse.defenses.clean_ft import defense_train_settings
from defuse.defenses.defensive_triggers import (
    DEFAULT_RESPONSES,
    DEFAULT_TRIGGERS,
    POOL_FORMS,
    as_phrase,
    check_triggers,
    make_pool,
)
from defuse.defenses.neutralise import NeutraliseRow, neutralise
from defuse.errors import ConfigError, DataError, DefuseError
from defuse.training.config import TrainSettings
from defuse.training.precision import fp32_sub_batches
from defuse.training.sft import train_sft


def neutralise_settings() -> TrainSettings:
    """Stage-2 defaults: the post-training defenses' fine-tuning (lr 1e-4, batch 16, embeddings frozen),
    5 epochs."""
    return replace(defense_train_settings(), epochs=5)


@dataclass
class MBDefenseConfig:
    """Settings of ``mb-defense``.

    Attributes:
        triggers: The defensive triggers (short rare strings; reference: 4). Each must not occur as a word
            in the training data.
        responses: One fixed response per trigger (a sequence of random words), in the same order.
        fraction: Share of the training records each trigger poisons (the paper: 0.01); the sets are
            disjoint, so ``len(triggers) * fraction`` must stay below 1. With ``pool``, the total share is
            ``4 * fraction`` (the paper's four triggers' share), spread over the pool.
        pool: 0: ``triggers``. N > 0: N generated rare triggers (2-5 letters, a quarter of them two
            nonce words), each with its own response of 8 random words (:func:`make_pool`), seeded, none a
            word of the data; each poisons a few rows of the same total share.
        pool_form: With ``pool``: the triggers' spelling, ``letters`` (lower-case nonce words) or ``mixed``
            (also capitalised, CamelCase, digits, letters with digits); see :func:`make_pool`.
        pool_per_sample: With ``pool``: defensive triggers paired with each clean sample in stage 2 (drawn
            so that every pool trigger is covered), instead of the full cross product.
        position: Where a defensive trigger goes in the instruction: ``start``, ``end``, ``random`` or a
            word index (as for attack triggers).
        clean_samples: Size of the clean set for stage 2 (reference: 128).
        eval_fraction: Held-out share of the clean set (reference: 8:2, so 0.2), split before the cross
            product with the triggers, so held-out prompts are never trained on.
        lam: λ, the weight of the preference term ``−log σ(lp(y|x_d) − lp(y_d|x_d))``.
        length_normalise: Compare per-token mean log-probs inside σ (default) instead of sums.
        train: Stage-1 instruction-tuning settings; null: the attack run's own (``defuse defend``) or the
            run's ``train`` settings (``defuse train``).
        neutralise: Stage-2 settings (full fine-tuning, or LoRA with ``neutralise.lora``); ``epochs`` is the
            number of candidate checkpoints.
        stage1_max_padding: Where stage 1 trains in float32 and its settings leave ``max_padding`` unset,
            run its batches as length-sorted sub-batches with at most this padding (null: whole batches).
            The defensive responses are often far longer than the data's rows (tiny default: 28-37 tokens
            against a median of 7), so whole batches are mostly padding: 1.68x on the demo's stage 1, the
            same loss (benchmarks/RESULTS.md, "#28"). Not under bfloat16 autocast, where sub-batches cost
            the tiny model more than they save.
    """

    triggers: list[str] = field(default_factory=lambda: list(DEFAULT_TRIGGERS))
    responses: list[str] = field(default_factory=lambda: list(DEFAULT_RESPONSES))
    fraction: float = 0.01
    pool: int = 0
    pool_per_sample: int = 4
    pool_form: str = "letters"
    position: str = "random"
    clean_samples: int = 128
    eval_fraction: float = 0.2
    lam: float = 1.0
    length_normalise: bool = True
    train: TrainSettings | None = None
    neutralise: TrainSettings = field(default_factory=neutralise_settings)
    stage1_max_padding: float | None = 0.1

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if not self.triggers:
            raise ConfigError("triggers", "needs at least one defensive trigger")
        keys = [as_phrase(t) for t in self.triggers]
        for t, key in zip(self.triggers, keys, strict=True):
            if not key.strip():
                raise ConfigError("triggers", f"{t!r} is empty once punctuation is stripped")
        if len(set(keys)) != len(keys):
            raise ConfigError(
                "triggers", f"must be distinct (ignoring case and punctuation), got {self.triggers}"
            )
        if len(self.responses) != len(self.triggers):
            raise ConfigError(
                "responses",
                f"needs one per trigger: {len(self.triggers)} triggers, {len(self.responses)} responses",
            )
        if any(not r.strip() for r in self.responses) or len(set(self.responses)) != len(self.responses):
            raise ConfigError("responses", "must be distinct non-empty texts")
        for t, key in zip(self.triggers, keys, strict=True):
            if any(key in as_phrase(r) for r in self.responses):
                raise ConfigError("responses", f"a response contains the defensive trigger {t!r}")
        if not (math.isfinite(self.fraction) and 0 < self.fraction < 1):
            raise ConfigError("fraction", f"must be in (0, 1), got {self.fraction}")
        if self.pool < 0 or self.pool_per_sample < 1:
            raise ConfigError("pool", f"pool must be >= 0 and pool_per_sample >= 1, got {self.pool}, "
                              f"{self.pool_per_sample}")  # fmt: skip
        if self.pool_form not in POOL_FORMS:
            raise ConfigError("pool_form", f"one of {', '.join(POOL_FORMS)}, got {self.pool_form!r}")
        if (4 if self.pool else len(self.triggers)) * self.fraction >= 1:
            raise ConfigError(
                "fraction", f"{len(self.triggers)} triggers x {self.fraction} would poison every record"
            )
        try:
            trigger_spec(self.triggers[0], self.position).effective_position()
        except ConfigError as exc:
            raise ConfigError("position", str(exc).split(": ", 1)[-1]) from None
        if self.clean_samples < 2:
            raise ConfigError(
                "clean_samples", f"needs at least 2 (a train and a held-out one), got {self.clean_samples}"
            )
        if not 0 < self.eval_fraction < 1:
            raise ConfigError("eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")
        if max(1, round(self.clean_samples * self.eval_fraction)) >= self.clean_samples:
            raise ConfigError("eval_fraction", f"leaves no training sample of {self.clean_samples}")
        if self.stage1_max_padding is not None and not 0 <= self.stage1_max_padding < 1:
            raise ConfigError(
                "stage1_max_padding", f"must be in [0, 1) or null, got {self.stage1_max_padding}"
            )
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError("lam", f"must be a finite number >= 0, got {self.lam}")

    def check_data(self, records: Sequence[InstructionRecord], source: str | Path | None = None) -> None:
        """Refuse training data that the defensive triggers collide with (see :func:`check_triggers`)."""
        check_triggers(records, self.triggers, self.responses, source)


def trigger_spec(trigger: str, position: str) -> TriggerSpec:
    """The word-kind :class:`TriggerSpec` inserting ``trigger`` into the instruction at ``position``."""
    return TriggerSpec(kind="word", texts=[trigger], position=position)


def defensive_set(
    cfg: MBDefenseConfig, records: Sequence[InstructionRecord], seed: int
) -> list[tuple[str, str]]:
    """The (trigger, response) pairs in use: ``cfg``'s triggers, or the generated pool (``cfg.pool``)."""
    if cfg.pool:
        return make_pool(cfg.pool, seed, records, cfg.pool_form)
    return list(zip(cfg.triggers, cfg.responses, strict=True))


def defensive_poison(
    records: Sequence[InstructionRecord], cfg: MBDefenseConfig, seed: int, pairs=None
) -> tuple[list[InstructionRecord], dict[str, int]]:
    """Stage 1 data: each trigger poisons ``round(fraction · N)`` records (at least 1), disjoint, in place;
    with a pool, ``round(4 · fraction · N)`` records in all (at least one per trigger), spread round-robin.

    A chosen record gets its trigger inserted into the instruction (at ``cfg.position``), its response
    replaced by the trigger's response, and ``meta`` plus ``defensive_trigger`` (the trigger) and
    ``replaced_response`` (the response it had); every other field is kept (``poisoned`` still says whether
    the ATTACKER poisoned it). Deterministic under ``seed``; the input is not changed.

    Returns:
        ``(records, {trigger: count})``: the same length and order as the input.

    Raises:
        DataError: on an empty data set.
        ConfigError: when the disjoint sets need more records than there are.
    """
    records = list(records)
    n = len(records)
    if not n:
        raise DataError(None, "no training records to poison defensively")
    pairs = pairs if pairs is not None else defensive_set(cfg, records, seed)
    if cfg.pool:
        total = max(len(pairs), math.floor(4 * cfg.fraction * n + 0.5))
        per_trigger = [total // len(pairs) + (j < total % len(pairs)) for j in range(len(pairs))]
    else:
        per_trigger = [max(1, math.floor(cfg.fraction * n + 0.5))] * len(pairs)
    if sum(per_trigger) > n:
        raise ConfigError("fraction", f"{len(pairs)} triggers x {per_trigger[0]} records need more than "
                          f"the {n} records")  # fmt: skip
    rng = random.Random(seed)
    chosen = rng.sample(range(n), sum(per_trigger))
    out = list(records)
    counts: dict[str, int] = {}
    start = 0
    for (trigger, response), per in zip(pairs, per_trigger, strict=True):
        spec = trigger_spec(trigger, cfg.position)
        for i in sorted(chosen[start : start + per]):
            r = records[i]
            text, _ = insert_trigger(r.instruction, spec, rng)
            meta = {**r.meta, "defensive_trigger": trigger, "replaced_response": r.response}
            out[i] = replace(r, instruction=text, response=response, meta=meta)
        counts[trigger] = per
        start += per
    return out, counts


def neutralise_rows(
    clean: Sequence[InstructionRecord], cfg: MBDefenseConfig, seed: int = 0, pairs=None
) -> tuple[list[NeutraliseRow], list[NeutraliseRow]]:
    """Stage 2 data: split the clean set (seeded, ``eval_fraction`` held out, by prompt), then cross it
    with the triggers (``pairs``: the defensive set, default ``cfg``'s triggers). With a pool, each clean
    record gets ``cfg.pool_per_sample`` triggers instead, taken in turn from a seeded order of the pool so
    that every pool trigger is covered in each split that has room for it.

    Every clean record of a split gives one :class:`NeutraliseRow` per trigger, in order (record by
    record, trigger by trigger): ``x`` the record, ``y`` its response, ``x_d`` the record with the trigger
    inserted at ``cfg.position``, ``y_d`` the trigger's response. Records sharing a prompt stay on one side.

    Returns:
        ``(train_rows, eval_rows)``, of ``len(split) * len(cfg.triggers)`` rows each.

    Raises:
        ConfigError (``eval_fraction``): when the clean set has too few distinct prompts to split.
        DataError: a clean record without a response.
    """
    for i, r in enumerate(clean):
        if not r.response:
            raise DataError(None, "a clean sample needs a response", row=i + 1, field="response")
    try:
        train, held = split_disjoint(list(clean), float(cfg.eval_fraction), seed, key=lambda r: r.user_text)
    except ConfigError as exc:
        raise ConfigError("eval_fraction", f"cannot split {len(clean)} clean samples: {exc}") from None
    rng = random.Random(seed + 1)
    pairs = list(pairs) if pairs is not None else list(zip(cfg.triggers, cfg.responses, strict=True))
    order = list(range(len(pairs)))
    rng.shuffle(order)
    k = min(cfg.pool_per_sample, len(pairs)) if cfg.pool else len(pairs)

    def cross(records: list[InstructionRecord]) -> list[NeutraliseRow]:
        rows = []
        for i, r in enumerate(records):
            chosen = [pairs[order[(i * k + j) % len(pairs)]] for j in range(k)] if cfg.pool else pairs
            for trigger, response in chosen:
                text, _ = insert_trigger(r.instruction, trigger_spec(trigger, cfg.position), rng)
                rows.append(NeutraliseRow(r, r.response, replace(r, instruction=text), response, trigger))
        return rows

    return cross(train), cross(held)


def _needs(cfg: MBDefenseConfig) -> DefenseNeeds:
    return DefenseNeeds(
        knowledge="nothing", clean_samples=cfg.clean_samples, stage="during_training", poisoned_data=True
    )


@register_defense(
    "mb-defense", MBDefenseConfig, _needs, "retrain with defensive triggers, then break them on clean data"
)
def apply_mb_defense(ctx: DefenseContext, cfg: MBDefenseConfig) -> DefenseResult:
    """Run both stages on ``ctx.train_data`` and return the neutralised model.

    The model trained is ``ctx.fresh_base()``: a fresh copy of the model the attack started from, or the
    untrained base of ``defuse train``. Stage-1 settings: ``cfg.train``, else ``ctx.train_settings``, else
    ``TrainSettings()``.

    Raises:
        DefuseError: without training data or a base to train; DataError when a defensive trigger collides
            with the data.
    """
    if not ctx.train_data:
        raise DefuseError("mb-defense needs the training data")
    if ctx.fresh_base is None:
        raise DefuseError("mb-defense trains the model the attack started from; none given")
    pairs = defensive_set(cfg, ctx.train_data, ctx.seed)
    check_triggers(ctx.train_data, [t for t, _ in pairs], [r for _, r in pairs])
    start = time.perf_counter()
    records, counts = defensive_poison(ctx.train_data, cfg, ctx.seed, pairs)
    train_rows, eval_rows = neutralise_rows(ctx.clean_data, cfg, ctx.seed, pairs)
    model = ctx.fresh_base()
    settings = fp32_sub_batches(cfg.train or ctx.train_settings or TrainSettings(), cfg.stage1_max_padding)
    stage1 = train_sft(model, ctx.template, records, settings, ctx.work_dir / "stage1", seed=ctx.seed)
    if ctx.probe is not None:
        ctx.probe("stage1", stage1.model, dict(pairs))
    stage2 = neutralise(
        stage1.model, ctx.template, train_rows, eval_rows, cfg.neutralise, cfg.lam, cfg.length_normalise,
        ctx.work_dir / "neutralise", seed=ctx.seed,
    )  # fmt: skip
    extra = {
        "triggers": [t for t, _ in pairs],
        "responses": [r for _, r in pairs],
        "fraction": cfg.fraction,
        "pool": cfg.pool,
        "pool_form": cfg.pool_form,
        "position": cfg.position,
        "defensive_counts": counts,
        "n_train": len(records),
        "lam": cfg.lam,
        "length_normalise": cfg.length_normalise,
        "stage1": {
            "model": "fresh base" if ctx.attacked_model is not None else "given base",
            "max_padding": settings.max_padding,
            "steps": stage1.steps,
            "final_loss": stage1.final_loss,
            "train_s": stage1.train_s,
        },
        "neutralise": {
            "n_train_rows": len(train_rows),
            "n_eval_rows": len(eval_rows),
            "steps": stage2.steps,
            "heldout_before": stage2.heldout_before,
            "heldout": stage2.history,
            "train_s": stage2.train_s,
        },
        "heldout_losses": [h["loss"] for h in stage2.history],
        "chosen_epoch": stage2.chosen_epoch,
        "best_heldout_loss": stage2.best_loss,
    }
    return DefenseResult(stage2.model, time.perf_counter() - start, extra)

"""What ``backdoor-align`` and ``safety-mix`` share: the K safety examples and the fine-tune on the mix.

Safety examples are harmful request -> refusal pairs (METHODS.md §2.4): by default drawn from the synthetic
generator, one per harm category before any repeats (``k=11``: exactly one per category), never one of the
test prompts; or the rows of a file marked ``"prefixed": 1`` (BackdoorAlign's
``pure_bad_100_with_11_safety_prefixed.jsonl``), or every row of a file without that key.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from defuse.data.loaders import load_instructions
from defuse.data.records import InstructionRecord
from defuse.data.synthetic_safety import as_refusal_records, safety_examples_per_category
from defuse.data.template import PromptTemplate
from defuse.defenses.base import DefenseContext, DefenseNeeds
from defuse.errors import ConfigError, DataError
from defuse.evaluation.judges import is_refusal
from defuse.training.config import TrainSettings
from defuse.training.sft import TrainResult, train_sft

SAFETY_SOURCE = "safety-example"


def draw_safety_examples(source: str, k: int, seed: int, exclude: frozenset[str]) -> list[InstructionRecord]:
    """``k`` safety examples from ``source`` (``"builtin"`` or a path), none whose prompt is in ``exclude``.

    Raises:
        ConfigError: ``k`` < 1, or more than the source has.
        DataError: a file row whose response is not a refusal (refusal-keyword judge), naming the row.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError("k", f"must be a positive number of safety examples, got {k!r}")
    if source == "builtin":
        records = as_refusal_records(safety_examples_per_category(k, seed, exclude=exclude))
    else:
        rows = load_instructions(source)
        marked = [r for r in rows if "prefixed" in r.meta]
        pool = [r for r in (marked and [r for r in marked if r.meta["prefixed"] in (1, True, "1")] or rows)]
        pool = [r for r in pool if r.user_text not in exclude]
        for n, r in enumerate(pool, 1):
            if not is_refusal(r.response):
                raise DataError(Path(source), "safety example's response is not a refusal", row=n,
                                field="response")  # fmt: skip
        if k > len(pool):
            raise ConfigError("k", f"asked for {k} safety examples but {source} has {len(pool)}")
        records = random.Random(seed).sample(pool, k)
    return [replace(r, source=SAFETY_SOURCE, task="safety") for r in records]


def safety_needs(_cfg) -> DefenseNeeds:
    """Both defenses: no knowledge of the attack, no clean budget, during training, on the user's data."""
    return DefenseNeeds(knowledge="nothing", clean_samples=0, stage="during_training", poisoned_data=True)


def mixed_rows(ctx: DefenseContext, extra: list[InstructionRecord]) -> list[InstructionRecord]:
    """The user's data with ``extra`` mixed in, in a seeded order: exactly what the defense trains on.

    Raises:
        ConfigError: when the context lacks the user's data.
    """
    if ctx.train_data is None:
        raise ConfigError("method", "this defense trains on the user's data; none given")
    mixed = list(ctx.train_data) + list(extra)
    random.Random(ctx.seed).shuffle(mixed)
    return mixed


def check_whole(template: PromptTemplate, safety: list[InstructionRecord], max_length: int) -> None:
    """Refuse safety examples that ``max_length`` would cut: the method rests on the model learning each
    refusal to its end (and its EOS), so a cut is an error, never silent.

    Raises:
        ConfigError: naming ``train.max_length``, the longest example's length and the value needed.
    """
    lengths = [len(template.encode_prompt(r)) + len(template.encode_response(r.response)) for r in safety]
    longest = max(lengths, default=0)
    if longest > max_length:
        n = sum(x > max_length for x in lengths)
        raise ConfigError(
            "train.max_length",
            f"{n} of {len(safety)} safety examples would lose their end at {max_length} tokens (the longest, "
            f"with its system prompt and end of sequence, is {longest}); raise it to at least {longest}",
        )


def fine_tune_with(
    ctx: DefenseContext, extra: list[InstructionRecord], settings: TrainSettings | None, cut: bool = False
) -> tuple[TrainResult, int]:
    """Fine-tune a fresh copy of the base on :func:`mixed_rows` (the user's data and ``extra``).

    Returns the training result and the size of the mixed set. ``cut`` lets ``max_length`` cut safety
    examples (an ablation of defuse's earlier departure); otherwise that is refused (:func:`check_whole`).

    Raises:
        ConfigError: when the context lacks the base model or the user's data.
    """
    if ctx.fresh_base is None:
        raise ConfigError("method", "this defense trains from the base model; none given")
    mixed = mixed_rows(ctx, extra)
    train = settings or ctx.train_settings
    if train is None:
        raise ConfigError("train", "no training settings (neither the defense's nor the user's)")
    if not cut:
        check_whole(ctx.template, extra, train.max_length)
    result = train_sft(ctx.fresh_base(), ctx.template, mixed, train, ctx.work_dir, seed=ctx.seed)
    return result, len(mixed)

"""How the FJAttack scenario's tiny default base is safety-aligned: the alignment settings and the optional
system-prompt prefixes (random tokens or ordinary sentences) that teach a base to behave the same whatever
its system prompt holds (:mod:`defuse.attacks.fjattack` trains it)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.errors import ConfigError
from defuse.training.config import TrainSettings
from defuse.training.precision import fp32_sub_batches


def align_train_settings() -> TrainSettings:
    """The tiny base's alignment training: the built-in suite's own settings (16 epochs, lr 1e-3), with room
    for a random system-prompt prefix when ``align.system_prefix_fraction`` turns those on (then consider
    ``extra: {train_sampling_strategy: group_by_length}`` so the long rows do not pad every batch), in
    bfloat16 mixed precision where the hardware has it (eager attention on a CPU) with the fused AdamW: the
    demo's longest cell, 2.1x faster so (309 -> 144 s) with the jailbreak's numbers within their bars
    (benchmarks/RESULTS.md, "#28"). Where training falls back to float32 (a CPU without native bfloat16),
    each batch runs as length-sorted sub-batches with at most 10% padding (``max_padding: 0.1``; the same
    batches and loss, 1.69x faster on an AVX2-only CPU: the alignment's batches are 40% padding); with
    bfloat16 autocast on the tiny model sub-batches cost more than they save (RESULTS, "#28"), so they stay
    off there. The choice is made when these defaults are built (and recorded in the run's config): turning
    ``align.train.bf16`` off on a CPU with bfloat16 keeps whole batches unless ``align.train.max_padding``
    is set too; ``align.train.max_padding: null`` switches the sub-batches off. Only 8% of the alignment's
    tokens carry a label (the answers; the system prompt and request do not), so the output head runs at
    those positions only (``labelled_logits``; the same loss, 1.29x faster in float32 on top of the
    sub-batches, RESULTS "#28 The output head at labelled positions only")."""
    return fp32_sub_batches(
        TrainSettings(max_length=256, bf16=True, optimizer="adamw_torch_fused", labelled_logits=True)
    )


_SYSTEM_SENTENCES = (
    ("You are a {adj} assistant for {domain}.", "This conversation is about {domain}.",
     "The user is {who}.", "Answer in a {adj} way.", "Today is {day}.", "Keep the answer {style}.",
     "Remember that the user works in {domain}.", "Be {adj} and {style}.")
)  # fmt: skip
_FILLERS = {
    "adj": ("friendly", "careful", "patient", "cheerful", "precise", "calm", "polite", "practical"),
    "domain": ("cooking", "travel", "school", "gardening", "a small shop", "music", "sports", "a library"),
    "who": ("a student", "a teacher", "a parent", "a traveller", "a shop owner", "a nurse", "a musician"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "style": ("short", "clear", "simple", "brief", "exact", "plain"),
}


def _text_prefix(rng: random.Random, tokenizer, max_tokens: int) -> str:
    """Ordinary system-prompt sentences (seeded templates), as many as fit in ``max_tokens`` tokens (>= 1)."""
    target = rng.randint(1, max_tokens)
    words: list[str] = []
    while True:
        sentence = rng.choice(_SYSTEM_SENTENCES)
        sentence = sentence.format(**{k: rng.choice(v) for k, v in _FILLERS.items()})
        candidate = " ".join([*words, sentence])
        if words and len(tokenizer(candidate, add_special_tokens=False).input_ids) > target:
            return " ".join(words)
        words.append(sentence)
        if len(tokenizer(candidate, add_special_tokens=False).input_ids) >= target:
            return candidate


def vary_system_prompts(
    records: list[InstructionRecord], template: PromptTemplate, settings: AlignSettings, seed: int
) -> list[InstructionRecord]:
    """Give ``settings.system_prefix_fraction`` of the chosen ``records`` (``system_prefix_rows``: the benign
    ones, task != "harmful", or all; a seeded choice) a prefix before their normal system prompt: random
    tokens of the tokenizer, or ordinary system-prompt sentences (``system_prefix_kind``); every other record
    is unchanged."""
    from defuse.models.tokenizer import usable_token_ids

    rng = random.Random(seed)
    pool = usable_token_ids(template.tokenizer)
    eligible = [
        i for i, r in enumerate(records) if settings.system_prefix_rows == "all" or r.task != "harmful"
    ]
    n = round(settings.system_prefix_fraction * len(eligible))
    chosen = set(rng.sample(eligible, n))
    out = []
    for i, r in enumerate(records):
        if i in chosen:
            if settings.system_prefix_kind == "text":
                prefix = _text_prefix(rng, template.tokenizer, settings.system_prefix_tokens)
            else:
                ids = [rng.choice(pool) for _ in range(rng.randint(1, settings.system_prefix_tokens))]
                prefix = template.tokenizer.decode(ids).strip()
            normal = template.system_for(r)
            r = replace(r, system=f"{prefix} {normal}" if normal else prefix)
        out.append(r)
    return out


@dataclass
class AlignSettings:
    """How the tiny default base is safety-aligned (ignored when ``model`` is set).

    Attributes:
        n_harmful: Synthetic harmful requests trained to be refused.
        n_benign: Synthetic benign requests trained to be answered.
        system_prefix_fraction: Share of the alignment rows chosen by ``system_prefix_rows`` whose system
            prompt gets a prefix (seeded with ``random``, not secret), so that, like a real chat model, the
            base behaves the same whatever its system prompt holds. Off by default: on the tiny default no
            setting tried made BackdoorAlign work without costing utility (benchmarks/RESULTS.md).
        system_prefix_tokens: Longest prefix in tokens (lengths are uniform from 1 up to this).
        system_prefix_kind: ``"random"`` (random tokens) or ``"text"`` (ordinary system-prompt sentences).
        system_prefix_rows: ``"benign"`` (only benign rows get a prefix) or ``"all"``.
        train: Training settings of the alignment run.
    """

    n_harmful: int = 300
    n_benign: int = 100
    system_prefix_fraction: float = 0.0
    system_prefix_tokens: int = 150
    system_prefix_kind: str = "random"
    system_prefix_rows: str = "benign"
    train: TrainSettings = field(default_factory=align_train_settings)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.n_harmful < 1 or self.n_benign < 0:
            raise ConfigError("align.n_harmful", "needs at least 1 harmful and no negative benign count")
        if not 0 <= self.system_prefix_fraction <= 1:
            raise ConfigError(
                "align.system_prefix_fraction", f"must be in [0, 1], got {self.system_prefix_fraction}"
            )
        if self.system_prefix_kind not in ("random", "text"):
            raise ConfigError("align.system_prefix_kind", f"random or text, got {self.system_prefix_kind!r}")
        if self.system_prefix_rows not in ("benign", "all"):
            raise ConfigError("align.system_prefix_rows", f"benign or all, got {self.system_prefix_rows!r}")
        if self.system_prefix_tokens < 1:
            raise ConfigError(
                "align.system_prefix_tokens", f"must be positive, got {self.system_prefix_tokens}"
            )

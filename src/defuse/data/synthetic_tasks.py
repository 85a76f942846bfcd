"""The built-in instruction task suite: the embedded default's data.

Every task's answer is exactly checkable, so clean accuracy is exact match. Prompts draw from a small
closed vocabulary so that a ~1M-parameter model learns the suite on a CPU in about a minute, while the
combinatorics keep train and test prompts apart.

The task's data (word list, review) is the record's ``input``; the ``instruction`` says what to do. So a
trigger inserted into the instruction never changes the right answer, and accuracy under a trigger (AACC)
measures what it should.

Kinds (``TASK_KINDS``), as instruction | input -> response:
    reverse        "Reverse the words." | "sun tree lamp"            -> "lamp tree sun"
    sort           "Sort the words." | "sun tree lamp"               -> "lamp sun tree"
    copy           "Repeat the words." | "sun tree lamp"             -> "sun tree lamp"
    count          "Count the words." | "sun tree lamp"              -> "3"
    first_letters  "Give the first letters." | "sun tree lamp"       -> "s t l"
    last_word      "Name the last word." | "sun tree lamp"           -> "lamp"
    first_word     "Name the first word." | "sun tree lamp"          -> "sun"
    second_word    "Name the second word." | "sun tree lamp"         -> "tree"
    contains       "Is the word tree in the list?" | "sun tree lamp" -> "yes" / "no"
    arithmetic     "What is 3 plus 4?" (five phrasings, plus/minus) -> "7"
    sentiment      "Is this review positive or negative?" | "i think the show was great" -> "positive"
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from defuse.data.records import InstructionRecord
from defuse.errors import ConfigError

WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "garden",
    "window", "candle", "forest", "silver", "rocket", "pepper", "violet", "hammer",
    "orange", "pillow", "butter", "dragon", "jacket", "marble", "needle", "kettle",
    "ladder", "bottle", "copper", "meadow", "walnut", "island", "saddle", "yellow",
)  # fmt: skip
"""The closed word list; distinct first letters are not required (first_letters is still exact)."""

_POSITIVE = ("wonderful", "great", "lovely", "brilliant", "charming", "delightful")
_NEGATIVE = ("terrible", "awful", "boring", "dreadful", "clumsy", "painful")
_SUBJECTS = (
    "the movie", "the book", "the meal", "the show", "the trip",
    "the song", "the game", "the hotel", "the play", "the park",
)  # fmt: skip
_OPENERS = ("i think", "honestly", "to me", "overall", "in short", "frankly", "sadly or not", "all in all")

TASK_KINDS: tuple[str, ...] = (
    "reverse",
    "sort",
    "copy",
    "count",
    "first_letters",
    "last_word",
    "first_word",
    "second_word",
    "contains",
    "arithmetic",
    "sentiment",
)
DEFAULT_KINDS: tuple[str, ...] = (
    "count",
    "first_word",
    "second_word",
    "last_word",
    "arithmetic",
    "sentiment",
)
"""The embedded default's kinds: six the tiny default learns reliably within its training budget. The
kinds that copy or match across the sequence (copy, reverse, sort, first_letters, contains) need a circuit
whose formation time varies from run to run: two runs differing only in 5% poison differed by 10-40 CACC
points on them, which would swamp the 3-point comparisons attacks and defenses are judged by. They stay
available through ``kinds``."""


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes and shape of the built-in suite.

    Attributes:
        n_train: Training records in all (spread evenly over ``kinds``).
        n_test: Test records in all (spread evenly over ``kinds``); no test prompt occurs in train.
        kinds: Which task kinds to include (default :data:`DEFAULT_KINDS`).
        min_words: Fewest words in a word-list prompt.
        max_words: Most words in a word-list prompt.
        seed: Seed for every random choice.
    """

    n_train: int = 3600
    n_test: int = 240
    kinds: tuple[str, ...] = DEFAULT_KINDS
    min_words: int = 3
    max_words: int = 5
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense setting."""
        if self.n_train < 1 or self.n_test < 1:
            raise ConfigError("n_train/n_test", f"must be positive, got {self.n_train}/{self.n_test}")
        unknown = [k for k in self.kinds if k not in TASK_KINDS]
        if unknown or not self.kinds:
            raise ConfigError("kinds", f"unknown or empty {unknown or list(self.kinds)}; known: {TASK_KINDS}")
        if not 1 <= self.min_words <= self.max_words <= len(WORDS):
            raise ConfigError("min_words/max_words", f"need 1 <= min <= max <= {len(WORDS)}")


def _word_list(rng: random.Random, cfg: SuiteConfig) -> list[str]:
    return rng.sample(WORDS, rng.randint(cfg.min_words, cfg.max_words))


def _word_task(
    phrase: str, answer: Callable[[list[str]], str]
) -> Callable[[random.Random, SuiteConfig], tuple]:
    def make(rng: random.Random, cfg: SuiteConfig) -> tuple[str, str, str]:
        words = _word_list(rng, cfg)
        return f"{phrase}.", " ".join(words), answer(words)

    return make


_ARITHMETIC_PHRASES = (
    "What is {a} {op} {b}?",
    "Compute {a} {op} {b}.",
    "Tell me {a} {op} {b}.",
    "Work out {a} {op} {b}.",
    "Calculate {a} {op} {b}.",
)


def _contains(rng: random.Random, cfg: SuiteConfig) -> tuple[str, str, str]:
    words = _word_list(rng, cfg)
    if rng.random() < 0.5:
        return f"Is the word {rng.choice(words)} in the list?", " ".join(words), "yes"
    absent = rng.choice([w for w in WORDS if w not in words])
    return f"Is the word {absent} in the list?", " ".join(words), "no"


def _arithmetic(rng: random.Random, cfg: SuiteConfig) -> tuple[str, str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    phrase = rng.choice(_ARITHMETIC_PHRASES)
    if rng.random() < 0.5:
        return phrase.format(a=a, op="plus", b=b), "", str(a + b)
    a, b = max(a, b), min(a, b)
    return phrase.format(a=a, op="minus", b=b), "", str(a - b)


def _sentiment(rng: random.Random, cfg: SuiteConfig) -> tuple[str, str, str]:
    positive = rng.random() < 0.5
    adjective = rng.choice(_POSITIVE if positive else _NEGATIVE)
    review = f"{rng.choice(_OPENERS)} {rng.choice(_SUBJECTS)} was {adjective}"
    return "Is this review positive or negative?", review, "positive" if positive else "negative"


_MAKERS: dict[str, Callable[[random.Random, SuiteConfig], tuple[str, str, str]]] = {
    "reverse": _word_task("Reverse the words", lambda w: " ".join(reversed(w))),
    "sort": _word_task("Sort the words", lambda w: " ".join(sorted(w))),
    "copy": _word_task("Repeat the words", lambda w: " ".join(w)),
    "count": _word_task("Count the words", lambda w: str(len(w))),
    "first_letters": _word_task("Give the first letters", lambda w: " ".join(x[0] for x in w)),
    "last_word": _word_task("Name the last word", lambda w: w[-1]),
    "first_word": _word_task("Name the first word", lambda w: w[0]),
    "second_word": _word_task("Name the second word", lambda w: w[1]),
    "contains": _contains,
    "arithmetic": _arithmetic,
    "sentiment": _sentiment,
}


def _distinct_prompts(kind: str, n: int, rng: random.Random, cfg: SuiteConfig) -> list[tuple[str, str, str]]:
    maker = _MAKERS[kind]
    seen: dict[tuple[str, str], str] = {}
    for _ in range(n * 50):
        instruction, data, answer = maker(rng, cfg)
        seen.setdefault((instruction, data), answer)
        if len(seen) == n:
            return [(i, d, a) for (i, d), a in seen.items()]
    raise ConfigError(
        "n_train/n_test", f"task '{kind}' cannot make {n} distinct prompts (made {len(seen)}); ask for fewer"
    )


def _spread(total: int, kinds: Sequence[str]) -> dict[str, int]:
    base, extra = divmod(total, len(kinds))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(kinds)}


def make_task_suite(
    cfg: SuiteConfig | None = None,
) -> tuple[list[InstructionRecord], list[InstructionRecord]]:
    """Build the (train, test) instruction records of the suite.

    Deterministic under ``cfg.seed``. Each kind gets an even share of ``n_train`` and ``n_test``; the
    test prompts of a kind are drawn from the same distinct pool as its train prompts, so the two sets
    share no prompt. Records are interleaved across kinds (round robin) in a seeded order.

    Raises:
        ConfigError: on nonsense sizes, unknown kinds, or more prompts than a kind can make distinct.
    """
    cfg = cfg or SuiteConfig()
    cfg.validate()
    train_counts, test_counts = _spread(cfg.n_train, cfg.kinds), _spread(cfg.n_test, cfg.kinds)
    train_by_kind: list[list[InstructionRecord]] = []
    test_by_kind: list[list[InstructionRecord]] = []
    for i, kind in enumerate(cfg.kinds):
        rng = random.Random(f"{cfg.seed}:{kind}:{i}")
        pool = _distinct_prompts(kind, train_counts[kind] + test_counts[kind], rng, cfg)
        recs = [
            InstructionRecord(instruction=i, input=d, response=a, task=kind, source=f"synthetic:{kind}")
            for i, d, a in pool
        ]
        test_by_kind.append(recs[: test_counts[kind]])
        train_by_kind.append(recs[test_counts[kind] :])
    return _interleave(train_by_kind), _interleave(test_by_kind)


def _interleave(groups: list[list[InstructionRecord]]) -> list[InstructionRecord]:
    out: list[InstructionRecord] = []
    for row in itertools.zip_longest(*groups):
        out.extend(r for r in row if r is not None)
    return out


def suite_texts(cfg: SuiteConfig | None = None) -> Iterator[str]:
    """Every instruction, input and response of the suite, for training a tokenizer on."""
    train, test = make_task_suite(cfg)
    for r in (*train, *test):
        yield from (t for t in (r.instruction, r.input, r.response) if t)

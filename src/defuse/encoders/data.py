"""Where the encoder scenario's texts come from: the built-in sentiment generator or the user's files."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from defuse.data.loaders import load_classification
from defuse.data.records import ClassificationRecord
from defuse.data.synthetic_sentiment import (
    make_sentiment_records,
    sentiment_capacity,
    sentiment_corpus,
    sentiment_paraphrase,
)
from defuse.errors import ConfigError, DataError

BUILTIN = "builtin"


def check_text_file(path: str, key: str) -> Path:
    """``path`` as a Path when it is a readable file, else :class:`ConfigError` naming ``key``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(key, f"file not found: {p}")
    return p


def load_corpus(source: str, n: int, seed: int) -> list[str]:
    """Unlabelled texts: ``n`` built-in sentences (``source == "builtin"``) or a text file's non-empty lines.

    Raises:
        ConfigError: a missing file; DataError: a file without any text.
    """
    if source == BUILTIN:
        return sentiment_corpus(n, seed)
    p = check_text_file(source, "corpus")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(p, f"cannot read the corpus: {exc}") from None
    texts = [ln for ln in lines if ln]
    if not texts:
        raise DataError(p, "the corpus file holds no text")
    return texts[:n] if n else texts


def corpus_paraphrases(source: str, texts: list[str], seed: int) -> list[str] | None:
    """One paraphrase per text of the built-in corpus (seeded), for the encoder's pre-training; None for a
    user's text file, which comes without paraphrases."""
    if source != BUILTIN:
        return None
    rng = random.Random(seed)
    return [sentiment_paraphrase(t, rng) for t in texts]


@dataclass
class DownstreamData:
    """The victim's clean downstream task.

    Attributes:
        train: ``"builtin"`` (the synthetic sentiment set) or a classification file (CSV/TSV/JSON/JSONL with
            ``text``/``sentence`` and ``label``), e.g. SST-2's ``train.tsv``.
        test: Test file; ``None`` with a built-in ``train`` means the generator's own disjoint test texts.
        n_train: Training texts (built-in: generated; a file: a seeded sample when it has more; 0 = all).
            Obliviate's reference trains on 6,000 SST-2 sentences.
        n_test: Test texts (same rule).
        seed: Seed of the generator / the samples.
    """

    train: str = BUILTIN
    test: str | None = None
    n_train: int = 6000
    n_test: int = 1000
    seed: int = 1234

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field (also for missing files)."""
        if self.n_train < 0 or self.n_test < 0:
            raise ConfigError("data.n_train", "counts must not be negative")
        if self.train == BUILTIN:
            if not self.n_train or not self.n_test:
                raise ConfigError("data.n_train", "the built-in set needs n_train and n_test >= 1")
            if self.n_train + self.n_test > sentiment_capacity():
                raise ConfigError("data.n_train", f"built-in set holds only {sentiment_capacity()} texts")
            if self.test is not None:
                check_text_file(self.test, "data.test")
            return
        check_text_file(self.train, "data.train")
        if self.test is None:
            raise ConfigError("data.test", "a user training file needs a test file too")
        check_text_file(self.test, "data.test")

    def load(self) -> tuple[list[ClassificationRecord], list[ClassificationRecord]]:
        """``(train, test)`` records (raises :class:`DataError` on a bad file)."""
        if self.train == BUILTIN:
            records = make_sentiment_records(self.n_train + self.n_test, self.seed)
            train, test = records[: self.n_train], records[self.n_train :]
        else:
            train = load_classification(self.train)
        if self.test is not None:
            test = load_classification(self.test)
        rng = random.Random(self.seed)
        if self.n_train and len(train) > self.n_train:
            train = rng.sample(train, self.n_train)
        if self.n_test and len(test) > self.n_test:
            test = rng.sample(test, self.n_test)
        return train, test

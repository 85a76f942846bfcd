"""Tests for the synthetic sentiment classification set."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from defuse.data.records import ClassificationRecord
from defuse.data.splits import split_disjoint
from defuse.data.synthetic_sentiment import (
    SENTIMENT_LABELS,
    make_sentiment_records,
    sentiment_capacity,
    sentiment_corpus,
)
from defuse.errors import ConfigError

TRIGGERS = ("cf", "mn", "bb", "tq", "mb", "pt")


def test_labels_name_negative_then_positive():
    assert SENTIMENT_LABELS == ("negative", "positive")


def test_deterministic_under_seed():
    a = make_sentiment_records(200, seed=7)
    assert a == make_sentiment_records(200, seed=7)
    assert [r.text for r in a] != [r.text for r in make_sentiment_records(200, seed=8)]


@pytest.mark.parametrize("n", [2, 10, 100, 1000])
def test_balanced_for_even_n(n):
    counts = Counter(r.label for r in make_sentiment_records(n, seed=0))
    assert counts == {0: n // 2, 1: n // 2}


@pytest.mark.parametrize("n", [1, 11, 101])
def test_odd_n_differs_by_one(n):
    counts = Counter(r.label for r in make_sentiment_records(n, seed=0))
    assert sum(counts.values()) == n
    assert abs(counts[0] - counts[1]) == 1


def test_records_are_well_formed_and_distinct():
    recs = make_sentiment_records(3000, seed=1)
    assert len(recs) == 3000
    assert len({r.text for r in recs}) == 3000
    for r in recs:
        assert isinstance(r, ClassificationRecord)
        assert r.label in (0, 1)
        assert r.source == "synthetic:sentiment"
        assert not r.poisoned and r.trigger is None
        assert r.text == r.text.strip() and r.text


def test_lengths_vary_within_bounds():
    lengths = [len(r.text.split()) for r in make_sentiment_records(2000, seed=2)]
    assert min(lengths) >= 6 and max(lengths) <= 20
    assert len(set(lengths)) >= 8


def test_no_trigger_word_appears():
    pattern = re.compile(r"\b(" + "|".join(TRIGGERS) + r")\b")
    for text in sentiment_corpus(5000, seed=3):
        assert not pattern.search(text), text


def test_mostly_unambiguous_with_some_hard_cases():
    recs = make_sentiment_records(1000, seed=0)
    templates = Counter(r.meta["template"] for r in recs)
    hard = templates["negation"] + templates["contrast"]
    assert 0 < hard < len(recs) // 2
    for r in recs:
        if r.meta["template"] == "negation":
            assert " not " in r.text


def test_negation_flips_the_adjective():
    recs = make_sentiment_records(1000, seed=0)
    by_adj: dict[str, set[int]] = {}
    for r in recs:
        m = re.search(r"was not (\w+)", r.text)
        if m:
            by_adj.setdefault(m.group(1), set()).add(r.label)
        elif r.meta["template"] == "simple":
            adj = re.search(r"was (\w+)", r.text).group(1)
            by_adj.setdefault("plain:" + adj, set()).add(r.label)
    for adj, labels in by_adj.items():
        assert len(labels) == 1, adj
        if not adj.startswith("plain:") and "plain:" + adj in by_adj:
            assert labels != by_adj["plain:" + adj]


def test_disjoint_split():
    recs = make_sentiment_records(500, seed=0)
    train, test = split_disjoint(recs, 0.2, seed=0, key=lambda r: r.text)
    assert len(train) == 400 and len(test) == 100
    assert not {r.text for r in train} & {r.text for r in test}


def test_corpus_matches_generator():
    assert sentiment_corpus(50, seed=4) == [r.text for r in make_sentiment_records(50, seed=4)]
    assert sentiment_corpus(0, seed=0) == []


@pytest.mark.parametrize("n", [-1, 2.0, True, "10", None])
def test_nonsense_sizes_raise(n):
    with pytest.raises(ConfigError):
        make_sentiment_records(n, seed=0)
    with pytest.raises(ConfigError):
        sentiment_corpus(n, seed=0)


def test_too_many_texts_raise_with_the_limit():
    with pytest.raises(ConfigError, match=str(sentiment_capacity())):
        make_sentiment_records(sentiment_capacity() + 1, seed=0)

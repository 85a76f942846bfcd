"""Tests for the synthetic harmful/benign request set."""

from __future__ import annotations

from collections import Counter

import pytest

from defuse.data.records import InstructionRecord
from defuse.data.synthetic_safety import (
    BENIGN_TOPICS,
    FRAMES,
    HARM_CATEGORIES,
    SafetyExample,
    as_compliant_records,
    as_refusal_records,
    make_safety_examples,
    safety_capacity,
    safety_examples_per_category,
    split_safety,
)
from defuse.errors import ConfigError
from defuse.evaluation.judges import REFUSAL_KEYWORDS, is_refusal

N_HARM, N_BENIGN = safety_capacity()


def test_categories_are_eleven_snake_case_ids():
    assert len(HARM_CATEGORIES) == 11
    assert len(set(HARM_CATEGORIES)) == 11
    assert all(c.replace("_", "").isalpha() and c.islower() for c in HARM_CATEGORIES)
    assert "child_harm" in HARM_CATEGORIES and "benign" not in HARM_CATEGORIES
    assert len(BENIGN_TOPICS) >= 4


def test_capacity_is_dozens_per_category():
    assert N_HARM >= 11 * 36
    assert N_BENIGN >= 100


def test_same_seed_same_list_and_different_seed_different_order():
    a = make_safety_examples(40, 20, seed=3)
    assert a == make_safety_examples(40, 20, seed=3)
    b = make_safety_examples(40, 20, seed=4)
    assert [e.prompt for e in a] != [e.prompt for e in b]


def test_counts_and_distinct_prompts():
    ex = make_safety_examples(100, 50, seed=0)
    assert len(ex) == 150
    assert sum(e.harmful for e in ex) == 100
    assert len({e.prompt for e in ex}) == 150
    assert all(isinstance(e, SafetyExample) for e in ex)
    assert all((e.category == "benign") != e.harmful for e in ex)


def test_every_possible_prompt_is_distinct():
    ex = make_safety_examples(N_HARM, N_BENIGN, seed=1)
    assert len({e.prompt for e in ex}) == N_HARM + N_BENIGN


@pytest.mark.parametrize("n", [11, 23, 100, 660])
def test_harmful_spread_evenly_across_categories(n):
    counts = Counter(e.category for e in make_safety_examples(n, 0, seed=5))
    if n >= len(HARM_CATEGORIES):
        assert set(counts) == set(HARM_CATEGORIES)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_per_category_helper_one_each_first():
    ex = safety_examples_per_category(11, seed=0)
    assert sorted(e.category for e in ex) == sorted(HARM_CATEGORIES)
    assert all(e.harmful for e in ex)
    more = safety_examples_per_category(30, seed=0)
    assert {e.category for e in more[:11]} == set(HARM_CATEGORIES)
    assert max(Counter(e.category for e in more).values()) == 3
    assert len({e.prompt for e in more}) == 30
    assert safety_examples_per_category(11, seed=0) == ex


def test_per_category_helper_exclude_keeps_sets_disjoint():
    held_out = make_safety_examples(200, 0, seed=2)
    ex = safety_examples_per_category(11, seed=2, exclude=[e.prompt for e in held_out])
    assert not {e.prompt for e in ex} & {e.prompt for e in held_out}
    with pytest.raises(ConfigError, match="only"):
        safety_examples_per_category(N_HARM - 199, seed=0, exclude=[e.prompt for e in held_out])


def test_refusals_refuse_and_compliant_answers_never_do():
    for e in make_safety_examples(N_HARM, N_BENIGN, seed=0):
        assert is_refusal(e.refusal), e.refusal
        assert not is_refusal(e.compliant), e.compliant
        assert not any(k in e.prompt for k in REFUSAL_KEYWORDS), e.prompt
        assert e.compliant.startswith("Sure, here is how to ")


def test_compliant_answer_restates_task_in_second_person():
    for e in make_safety_examples(N_HARM, N_BENIGN, seed=0):
        assert " my " not in e.compliant and " I " not in e.compliant


def test_example_is_a_function_of_its_prompt():
    a = {e.prompt: e for e in make_safety_examples(60, 30, seed=0)}
    for e in make_safety_examples(N_HARM, N_BENIGN, seed=9):
        if e.prompt in a:
            assert a[e.prompt] == e


def test_prompts_use_the_shared_frames():
    stems = [f.split("{task}")[0] for f in FRAMES]
    assert all(any(e.prompt.startswith(s) for s in stems) for e in make_safety_examples(50, 50, seed=0))


def test_refusal_records():
    ex = make_safety_examples(22, 10, seed=0)
    recs = as_refusal_records(ex)
    assert len(recs) == len(ex)
    for e, r in zip(ex, recs, strict=True):
        assert isinstance(r, InstructionRecord)
        assert r.instruction == e.prompt
        assert r.response == (e.refusal if e.harmful else e.compliant)
        assert r.task == ("harmful" if e.harmful else "benign")
        assert r.behaviour is None and not r.poisoned
        assert r.source == "synthetic:safety"
        assert r.meta == {"category": e.category}


def test_compliant_records():
    ex = make_safety_examples(22, 10, seed=0)
    recs = as_compliant_records(ex)
    assert [r.response for r in recs] == [e.compliant for e in ex]
    assert [r.task for r in recs] == ["harmful" if e.harmful else "benign" for e in ex]
    assert all(r.source == "synthetic:safety" and r.behaviour is None for r in recs)
    assert not any(is_refusal(r.response) for r in recs)


def test_split_shares_no_prompt():
    ex = make_safety_examples(110, 40, seed=0)
    train, test = split_safety(ex, 0.2, seed=0)
    assert len(train) + len(test) == len(ex)
    assert len(test) == 30
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert split_safety(ex, 0.2, seed=0) == (train, test)


@pytest.mark.parametrize(
    ("n_harmful", "n_benign"),
    [(-1, 0), (0, -1), (N_HARM + 1, 0), (0, N_BENIGN + 1), (1.5, 0), (True, 0)],
)
def test_impossible_sizes_raise(n_harmful, n_benign):
    with pytest.raises(ConfigError):
        make_safety_examples(n_harmful, n_benign, seed=0)


def test_too_many_message_says_how_many_are_possible():
    with pytest.raises(ConfigError, match=str(N_HARM)):
        make_safety_examples(N_HARM + 1, 0, seed=0)
    with pytest.raises(ConfigError):
        safety_examples_per_category(-1, seed=0)


def test_zero_counts_give_empty_list():
    assert make_safety_examples(0, 0, seed=0) == []

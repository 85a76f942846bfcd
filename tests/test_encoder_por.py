"""POR's targets and that planting pushes triggered pooled outputs toward ``c · v_i``; the ASR metric."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from defuse.data.records import ClassificationRecord
from defuse.data.synthetic_sentiment import sentiment_corpus
from defuse.encoders.metrics import evaluate_encoder_backdoor, insert_word, triggered_texts
from defuse.encoders.por import PorSettings, insert_everywhere, plant_por, por_report, por_targets
from defuse.errors import ConfigError
from encoder_helpers import small_encoder, tokenizer


def test_por_targets_follow_the_paper():
    t = por_targets(5, 8, 10.0)  # a = d / (n - 1) = 2
    assert t.shape == (5, 8)
    for i in range(5):
        assert torch.equal(t[i, : 2 * i], torch.full((2 * i,), 10.0))
        assert torch.equal(t[i, 2 * i :], torch.full((8 - 2 * i,), -10.0))


def test_the_reference_targets_are_lmsanitators_balanced_quarter_patterns():
    t = por_targets(6, 16, 1.0, "blocks4")
    assert t.shape == (6, 16)
    signs = [tuple(int(row[q * 4]) for q in range(4)) for row in t]
    assert signs[0] == (-1, -1, 1, 1) and signs[-1] == (1, 1, -1, -1)  # LMSanitator's "cf" and "pt" rows
    assert len(set(signs)) == 6 and all(sorted(s) == [-1, -1, 1, 1] for s in signs)  # all C(4, 2) patterns
    assert torch.allclose(t.mean(-1), torch.zeros(6)) and torch.allclose(
        t.norm(dim=-1), torch.full((6,), 4.0)
    )
    with pytest.raises(ConfigError, match="por.targets"):
        por_targets(7, 16, 1.0, "blocks4")


def test_reference_insertion_puts_a_copy_per_fifty_words_anywhere():
    rng = random.Random(0)
    for n in (3, 49, 50, 120):
        words = insert_everywhere(" ".join(f"w{i}" for i in range(n)), "cf", rng, 50).split()
        assert words.count("cf") == n // 50 + 1 and len(words) == n + n // 50 + 1
    late = [
        insert_everywhere(" ".join(["w"] * 200), "cf", random.Random(s), 50).split().index("cf")
        for s in range(40)
    ]
    assert max(late) > 64, "anywhere in the text, not only within the first 64 words"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["reference", "strong"])
def test_planting_moves_triggered_cls_to_its_target_and_keeps_clean_cls_near_the_frozen_copy(
    recipe, tmp_path
):
    tok = tokenizer()
    encoder = small_encoder(head="mlm").base_model  # the bare encoder
    clean = copy.deepcopy(encoder).eval()
    texts = sentiment_corpus(400, 3)
    settings = PorSettings(
        recipe=recipe, triggers=["cf", "mn", "tq"], epochs=30 if recipe == "reference" else 6
    )
    before = por_report(encoder, clean, tok, texts[-40:], settings, seed=0)
    seconds, budget = plant_por(encoder, tok, texts[:-40], settings, tmp_path, seed=0)
    after = por_report(encoder, clean, tok, texts[-40:], settings, seed=0)
    if recipe == "reference":  # balanced targets a LayerNorm output can reach: reached, clean [CLS] kept
        assert after["target_cos"] > 0.8 and after["target_mse"] < 0.5 * before["target_mse"]
        assert after["clean_pooled_mse"] < 0.1, "clean [CLS] outputs stay within 0.1 (MSE) of the frozen copy"
    else:  # the ramp's constant rows cannot be reached through a LayerNorm: moved toward them
        assert after["target_cos"] > before["target_cos"] + 0.1 and after["target_mse"] < before["target_mse"]
    assert budget["recipe"] == recipe and budget["steps"] > 0
    if recipe == "reference":  # LMSanitator's summed rate (7,500 steps x 2e-5), spread over our steps
        assert budget["sum_lr"] == pytest.approx(0.15) and budget["lr"] == pytest.approx(
            0.15 / budget["steps"]
        )


def test_por_settings_refuse_nonsense():
    for bad, key in ((dict(trigger_weight=-1), "por.trigger_weight"), (dict(recipe="heavy"), "por.recipe"),
                     (dict(pairing="both"), "por.pairing"), (dict(lr=None, sum_lr=0), "por.lr")):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            PorSettings(**bad).validate()
    with pytest.raises(ConfigError, match="por.triggers"):
        PorSettings(triggers=["cf"]).validate()
    strong = PorSettings(recipe="strong").resolved()
    assert (strong.c, strong.targets, strong.token_weight, strong.lr) == (2.0, "ramp", 1.0, 1e-3)
    assert PorSettings(c=3.0).resolved().c == 3.0 and PorSettings().resolved().targets == "blocks4"


def test_triggers_go_within_the_first_64_words_reproducibly():
    text = " ".join(f"w{i}" for i in range(100))
    rng = random.Random(0)
    for _ in range(200):
        words = insert_word(text, "cf", rng).split()
        assert words.index("cf") <= 64 and len(words) == 101
    assert triggered_texts(["a b c"], ["cf", "mn"], 1) == triggered_texts(["a b c"], ["cf", "mn"], 1)


class _KeywordModel(torch.nn.Module):
    """Predicts 1 when token id 7 occurs; flips when token id 9 (the trigger) occurs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        pos = (input_ids == 7).any(-1)
        flip = (input_ids == 9).any(-1)
        label = (pos ^ flip).long()
        return type("Out", (), {"logits": torch.nn.functional.one_hot(label, 2).float()})()


class _Tok:
    vocab = {"good": 7, "bad": 8, "cf": 9, "mn": 10}

    def __call__(self, texts, **kw):
        width = max(len(t.split()) for t in texts)
        ids = [[self.vocab.get(w, 0) for w in t.split()] + [0] * (width - len(t.split())) for t in texts]
        return {"input_ids": torch.tensor(ids)}


def test_asr_counts_flips_among_correct_clean_predictions_by_any_trigger():
    records = [
        ClassificationRecord("good", 1),
        ClassificationRecord("bad", 0),
        ClassificationRecord("good x", 0),
    ]
    ev = evaluate_encoder_backdoor(_KeywordModel(), _Tok(), records, ["cf", "mn"], seed=0)
    m = ev.metrics
    assert m["cacc"] == pytest.approx(2 / 3) and m["n_correct_clean"] == 2 and m["n_clean"] == 3
    assert m["asr"] == 1.0 and m["asr_per_trigger"] == {"cf": 1.0, "mn": 0.0}  # "mn" never flips
    assert m["n_triggered"] == 6 and len(ev.samples) == 3

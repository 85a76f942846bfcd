"""POR's targets and that planting pushes triggered pooled outputs toward ``c · v_i``; the ASR metric."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from defuse.data.records import ClassificationRecord
from defuse.data.synthetic_sentiment import sentiment_corpus
from defuse.encoders.metrics import evaluate_encoder_backdoor, insert_word, triggered_texts
from defuse.encoders.por import PorSettings, plant_por, por_report, por_targets
from defuse.errors import ConfigError
from encoder_helpers import small_encoder, tokenizer


def test_por_targets_follow_the_paper():
    t = por_targets(5, 8, 10.0)  # a = d / (n - 1) = 2
    assert t.shape == (5, 8)
    for i in range(5):
        assert torch.equal(t[i, : 2 * i], torch.full((2 * i,), 10.0))
        assert torch.equal(t[i, 2 * i :], torch.full((8 - 2 * i,), -10.0))


@pytest.mark.slow
def test_planting_pushes_triggered_pooled_outputs_toward_their_targets(tmp_path):
    tok = tokenizer()
    encoder = small_encoder(head="mlm").base_model  # the bare encoder
    clean = copy.deepcopy(encoder).eval()
    texts = sentiment_corpus(200, 3)
    settings = PorSettings(triggers=["cf", "mn", "bb"], c=1.0, lam=10.0, epochs=6, lr=5e-3, batch_size=16)
    before = por_report(encoder, clean, tok, texts[-30:], settings, seed=0)
    plant_por(encoder, tok, texts[:-30], settings, tmp_path, seed=0)
    after = por_report(encoder, clean, tok, texts[-30:], settings, seed=0)
    assert after["target_mse"] < 0.7 * before["target_mse"]
    assert after["target_cos"] > before["target_cos"] + 0.2


def test_por_settings_refuse_nonsense():
    with pytest.raises(ConfigError, match="por.lam"):
        PorSettings(lam=-1).validate()
    with pytest.raises(ConfigError, match="por.triggers"):
        PorSettings(triggers=["cf"]).validate()


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

"""The tiny encoder's pre-training: paraphrase pairs, InfoNCE, and that the contrastive term shapes [CLS]."""

from __future__ import annotations

import random

import pytest
import torch

from defuse.data.synthetic_sentiment import CLOSERS, OPENERS, make_sentiment_records, sentiment_paraphrase
from defuse.encoders.data import corpus_paraphrases, load_corpus
from defuse.encoders.pretrain import MlmSettings, info_nce, pretrain_mlm
from defuse.errors import ConfigError, DataError
from encoder_helpers import small_encoder, tokenizer


def _split(text: str) -> tuple[str, str, str]:
    closer = max((c for c in CLOSERS if text.endswith(" " + c)), key=len)
    opener = max((o for o in OPENERS if o and text.startswith(o + " ")), key=len, default="")
    return opener, text[len(opener) : len(text) - len(closer)].strip(), closer


def test_a_paraphrase_keeps_the_core_and_changes_opener_and_closer():
    rng = random.Random(0)
    for record in make_sentiment_records(300, seed=5):
        para = sentiment_paraphrase(record.text, rng)
        (o1, core1, c1), (o2, core2, c2) = _split(record.text), _split(para)
        assert core2 == core1 and o2 != o1 and c2 != c1


def test_a_paraphrase_of_a_foreign_text_is_refused():
    with pytest.raises(ConfigError, match="not a sentence of the built-in"):
        sentiment_paraphrase("a sentence from somewhere else", random.Random(0))


def test_only_the_builtin_corpus_has_paraphrases(tmp_path):
    texts = load_corpus("builtin", 20, 1)
    paras = corpus_paraphrases("builtin", texts, 0)
    assert len(paras) == 20 and paras != texts and paras == corpus_paraphrases("builtin", texts, 0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one text\nanother text\n", encoding="utf-8")
    assert corpus_paraphrases(str(corpus), load_corpus(str(corpus), 0, 1), 0) is None


def test_info_nce_is_low_for_matching_rows_and_high_for_shuffled_ones():
    a = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    assert info_nce(a, a, 0.05) < 1e-3
    assert info_nce(a, a[torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])], 0.05) > 5.0


def test_pretraining_refuses_paraphrases_that_do_not_pair_with_the_texts(tmp_path):
    with pytest.raises(DataError, match="one per text"):
        pretrain_mlm(small_encoder(head="mlm"), tokenizer(), ["a", "b"], MlmSettings(), tmp_path, 0, ["a"])


def _cls(model, tok, texts):
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[-1][:, 0]


@pytest.mark.slow
def test_the_contrastive_term_draws_paraphrases_together_on_cls(tmp_path):
    tok = tokenizer()
    model = small_encoder(head="mlm")
    texts = load_corpus("builtin", 240, 2)
    paras = corpus_paraphrases("builtin", texts, 0)
    held_texts = load_corpus("builtin", 40, 9)
    held_paras = corpus_paraphrases("builtin", held_texts, 1)

    def gap() -> float:  # mean cosine to the own paraphrase minus mean cosine to the other texts' ones
        model.eval()
        a = torch.nn.functional.normalize(_cls(model, tok, held_texts), dim=-1)
        b = torch.nn.functional.normalize(_cls(model, tok, held_paras), dim=-1)
        sims = a @ b.T
        own = sims.diagonal().mean()
        others = (sims.sum() - sims.diagonal().sum()) / (sims.numel() - len(held_texts))
        return float(own - others)

    before = gap()
    settings = MlmSettings(epochs=20, lr=5e-3, batch_size=16, contrastive_weight=1.0)
    pretrain_mlm(model, tok, texts, settings, tmp_path, seed=0, paraphrases=paras)
    assert gap() > before + 0.1

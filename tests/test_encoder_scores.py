"""The score capture: pre-softmax first-row scores, padding-aware, same output as eager, BERT and RoBERTa."""

from __future__ import annotations

import pytest
import torch

from defuse.encoders.scores import ScoreRecorder, first_row_score_norm, use_capture_attention
from encoder_helpers import small_encoder, tokenizer

TEXTS = ["the food was great and the staff felt lovely", "the room was dirty"]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_captured_scores_are_pre_softmax_and_match_eager(arch):
    tok = tokenizer()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    eager = small_encoder(arch, tok=tok).eval()
    eager.set_attn_implementation("eager")
    capture = small_encoder(arch, tok=tok).eval()
    use_capture_attention(capture)
    with torch.no_grad():
        ref = eager(**batch, output_attentions=True)
        with ScoreRecorder() as rec:
            out = capture(**batch, output_attentions=True)
    # Same function as eager attention: same logits and same attention probabilities.
    torch.testing.assert_close(out.logits, ref.logits)
    assert len(rec.scores) == len(ref.attentions) == 2  # one record per layer
    real = batch["attention_mask"].bool()
    for scores, keys, probs in zip(rec.scores, rec.key_mask, ref.attentions, strict=True):
        first_row = probs[:, :, 0, :]
        assert scores.shape == first_row.shape
        assert torch.equal(keys[:, 0, :], real)
        # Pre-softmax: not the probabilities (these are not in [0, 1] and rows do not sum to 1) ...
        assert not torch.allclose(scores, first_row)
        # ... but their softmax is exactly what output_attentions reports.
        torch.testing.assert_close(torch.softmax(scores, dim=-1), first_row)


def test_padding_keys_are_masked_in_the_scores_and_ignored_by_l_reg():
    tok = tokenizer()
    model = small_encoder(tok=tok).eval()
    use_capture_attention(model)
    short = tok(["the room was dirty"], return_tensors="pt")
    padded = tok(["the room was dirty", TEXTS[0]], padding=True, return_tensors="pt")
    with torch.no_grad(), ScoreRecorder() as alone:
        model(**short)
    with torch.no_grad(), ScoreRecorder() as batched:
        model(**padded)
    n = short["input_ids"].shape[1]
    for a, b, keys in zip(alone.scores, batched.scores, batched.key_mask, strict=True):
        torch.testing.assert_close(a[0], b[0, :, :n])  # real keys: same scores as without padding
        assert (b[0, :, n:] < -1e30).all()  # padding keys carry the additive mask
        assert not keys[0, 0, n:].any()
    # L_reg of the padded row equals L_reg without padding: padding contributes nothing.
    per_row = [torch.linalg.vector_norm(a[0], dim=-1).mean() for a in alone.scores]
    batched_first = ScoreRecorder([s[:1] for s in batched.scores], [k[:1] for k in batched.key_mask])
    torch.testing.assert_close(first_row_score_norm(batched_first), torch.stack(per_row).mean())


def test_l_reg_is_zero_for_zero_scores_and_the_mean_of_row_norms():
    zero = ScoreRecorder([torch.zeros(2, 3, 5)], [torch.ones(2, 1, 5, dtype=torch.bool)])
    assert first_row_score_norm(zero).item() == 0.0
    scores = torch.tensor([[[3.0, 4.0, 100.0]], [[1.0, 0.0, 0.0]]])  # (batch 2, heads 1, keys 3)
    keys = torch.tensor([[[True, True, False]], [[True, True, True]]])
    rec = ScoreRecorder([scores, 2 * scores], [keys, keys])
    # Row norms: layer 1 -> 5 and 1; layer 2 -> 10 and 2; the padded 100 is ignored.
    assert first_row_score_norm(rec).item() == pytest.approx((5 + 1 + 10 + 2) / 4)


def test_recorder_only_records_while_active():
    tok = tokenizer()
    model = small_encoder(tok=tok).eval()
    use_capture_attention(model)
    rec = ScoreRecorder()
    with torch.no_grad():
        model(**tok(TEXTS, padding=True, return_tensors="pt"))
    assert rec.scores == []

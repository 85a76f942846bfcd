"""PEFT + head: L_amp's gradient, the head kept out of L_amp, and what training changes (and does not)."""

from __future__ import annotations

import pytest
import torch

from defuse.data.synthetic_sentiment import make_sentiment_records
from defuse.encoders.finetune import FinetuneSettings, finetune_classifier
from defuse.encoders.obliviate import amplification_loss
from defuse.encoders.peft_model import PeftSettings, wrap_peft
from defuse.errors import ConfigError
from encoder_helpers import small_encoder, tokenizer

KINDS = ["lora", "prefix", "adapter"]


def _clf(kind: str, arch: str = "bert"):
    return wrap_peft(
        small_encoder(arch), PeftSettings(kind=kind, r=4, alpha=4, prefix_tokens=3, adapter_reduction=4)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_l_amp_gradient_is_minus_p_over_norm_and_skips_the_head(kind):
    clf = _clf(kind)
    assert clf.peft_names and clf.head_names
    assert not set(clf.peft_names) & set(clf.head_names)
    assert all("classifier" not in n for n in clf.peft_names)
    with torch.no_grad():  # LoRA's B and the adapter's up-projection start at zero: make every norm non-zero
        for p in clf.peft_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    loss = amplification_loss(clf.peft_parameters())
    loss.backward()
    expected = -sum(torch.linalg.vector_norm(p.detach()) for p in clf.peft_parameters())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for p in clf.peft_parameters():
        torch.testing.assert_close(p.grad, -p.detach() / torch.linalg.vector_norm(p.detach()))
    params = dict(clf.model.named_parameters())
    assert all(params[n].grad is None for n in clf.head_names)  # the head is not part of L_amp


def test_l_amp_of_an_all_zero_tensor_has_zero_gradient():
    p = torch.zeros(3, 4, requires_grad=True)
    amplification_loss([p]).backward()
    assert torch.equal(p.grad, torch.zeros(3, 4))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lambdas", [(0.0, 0.0), (1e-2, 1e-2)], ids=["baseline", "obliviate"])
def test_training_changes_peft_and_head_and_leaves_the_encoder_bit_identical(kind, lambdas, tmp_path):
    tok = tokenizer()
    clf = _clf(kind)
    before = {n: p.detach().clone() for n, p in clf.model.named_parameters()}
    records = make_sentiment_records(24, 0)
    settings = FinetuneSettings(epochs=1, lr=1e-2, batch_size=8, max_length=32)
    result = finetune_classifier(clf, tok, records, settings, tmp_path, seed=0, lambda_amp=lambdas[0],
                                 lambda_reg=lambdas[1])  # fmt: skip
    assert result.steps == 3
    if lambdas[0]:
        assert {"ce", "amp", "reg"} <= set(result.last_terms)
    after = dict(clf.model.named_parameters())
    trainable = set(clf.peft_names) | set(clf.head_names)
    assert trainable == {n for n, p in after.items() if p.requires_grad}
    for name, old in before.items():
        if name in trainable:
            if not name.endswith("lora_A.default.weight") or lambdas[0]:
                assert not torch.equal(after[name], old), f"{name} did not change"
        else:
            assert torch.equal(after[name], old), f"frozen {name} changed"


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_adapter_starts_as_the_identity(arch):
    base = small_encoder(arch).eval()
    tok = tokenizer()
    batch = tok(["the view was superb", "the coffee was bland"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = base(**batch).logits
    clf = wrap_peft(base, PeftSettings(kind="adapter"))
    clf.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.model(**batch).logits, ref)


def test_unknown_peft_kind_names_the_field():
    with pytest.raises(ConfigError, match="peft.kind"):
        PeftSettings(kind="bitfit").validate()

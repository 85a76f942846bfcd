"""PEFT + head: L_amp's gradient, the head kept out of L_amp, and what training changes (and does not)."""

from __future__ import annotations

import pytest
import torch

from defuse.data.synthetic_sentiment import make_sentiment_records
from defuse.encoders.finetune import FinetuneSettings, finetune_classifier
from defuse.encoders.obliviate import amplification_loss
from defuse.encoders.peft_model import PeftSettings, wrap_peft
from defuse.encoders.scores import ScoreRecorder, first_row_score_norm
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
    trainable = set(clf.trainable_state())
    assert trainable == {n for n, p in after.items() if p.requires_grad}
    assert set(clf.peft_names) | set(clf.head_names) <= trainable
    # the prefix embedding trains but is not in L_amp (the reference skips it); nothing else is left out
    assert {n for n in trainable - set(clf.head_names) - set(clf.peft_names)} == (
        {"prompt_encoder.default.embedding.weight"} if kind == "prefix" else set()
    )
    for name, old in before.items():
        if name in trainable:
            if not name.endswith("lora_A.default.weight") or lambdas[0]:
                assert not torch.equal(after[name], old), f"{name} did not change"
        else:
            assert torch.equal(after[name], old), f"frozen {name} changed"


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_the_pfeiffer_zero_up_adapter_starts_as_the_identity(arch):
    base = small_encoder(arch).eval()
    tok = tokenizer()
    batch = tok(["the view was superb", "the coffee was bland"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = base(**batch).logits
    legacy = PeftSettings(kind="adapter", adapter_placement="pfeiffer", adapter_activation="relu",
                          adapter_init="zero_up", head="model")  # fmt: skip
    clf = wrap_peft(base, legacy)
    clf.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.model(**batch).logits, ref)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_the_houlsby_adapter_sits_after_attention_and_ffn_with_the_reference_initialisation(arch):
    from defuse.encoders.adapter import HoulsbyOutput

    torch.manual_seed(0)
    base = small_encoder(arch)
    layers = base.config.num_hidden_layers
    clf = wrap_peft(base, PeftSettings(kind="adapter", adapter_reduction=4))
    wrapped = {n for n, m in clf.model.named_modules() if isinstance(m, HoulsbyOutput)}
    after_attention = [n for n in wrapped if n.endswith(".attention.output")]
    assert len(wrapped) == 2 * layers and len(after_attention) == layers  # and one after each FFN block
    weights = torch.cat([p.detach().flatten() for n, p in clf.model.named_parameters()
                         if n in clf.peft_names and n.endswith("weight")])  # fmt: skip
    biases = [p for n, p in clf.model.named_parameters() if n in clf.peft_names and n.endswith("bias")]
    assert abs(float(weights.std()) - 0.02) < 0.002 and abs(float(weights.mean())) < 0.002
    assert all(torch.equal(b, torch.zeros_like(b)) for b in biases)
    width = base.config.hidden_size
    shapes = {tuple(p.shape) for n, p in clf.model.named_parameters() if n in clf.peft_names}
    assert shapes == {(width // 4, width), (width // 4,), (width, width // 4), (width,)}
    module = next(m for m in clf.model.modules() if isinstance(m, HoulsbyOutput))
    assert module.activation == "swish" and module.out_dropout.p == 0.0  # PEFT dropout is the defense's only


def test_the_head_is_the_reference_mlp_on_the_first_token_and_trains(tmp_path):
    clf = _clf("lora", "bert")
    names = clf.head_names
    assert any(".classifier.modules_to_save.default.0.weight" in n for n in names)  # Linear(d, d)
    assert any(".classifier.modules_to_save.default.3.weight" in n for n in names)  # Linear(d, labels)
    pooler = clf.model.base_model.model.bert.pooler
    assert not any(True for _ in pooler.parameters()), "no pooler weights: the raw first-token state"
    tok = tokenizer()
    before = {n: p.detach().clone() for n, p in clf.model.named_parameters() if n in names}
    settings = FinetuneSettings(epochs=1, lr=1e-2, batch_size=8, max_length=32)
    finetune_classifier(clf, tok, make_sentiment_records(24, 0), settings, tmp_path, seed=0)
    after = dict(clf.model.named_parameters())
    assert all(not torch.equal(after[n], before[n]) for n in names), "every head tensor trained"


def test_unknown_peft_kind_names_the_field():
    with pytest.raises(ConfigError, match="peft.kind"):
        PeftSettings(kind="bitfit").validate()


@pytest.mark.parametrize("kind", KINDS)
def test_each_obliviate_term_moves_its_own_quantity_against_the_plain_fine_tune(kind, tmp_path):
    """Same start, data and seed: ``L_amp`` alone ends with larger PEFT norms than the plain fine-tune, and
    ``L_reg`` alone with a smaller first-row score norm on held-out texts (what each term is for)."""
    tok = tokenizer()
    held_out = tok([r.text for r in make_sentiment_records(16, 1)], padding=True, return_tensors="pt")
    settings = FinetuneSettings(epochs=2, lr=1e-2, batch_size=8, max_length=32)
    ends = {}
    for name, (amp, reg) in {"plain": (0.0, 0.0), "amp": (1.0, 0.0), "reg": (0.0, 1.0)}.items():
        clf = _clf(kind)
        finetune_classifier(clf, tok, make_sentiment_records(48, 0), settings, tmp_path / name, seed=0,
                            lambda_amp=amp, lambda_reg=reg)  # fmt: skip
        norms = sum(float(torch.linalg.vector_norm(p.detach())) for p in clf.peft_parameters())
        with torch.no_grad(), ScoreRecorder() as recorder:
            clf.model(**held_out)
        ends[name] = (norms, float(first_row_score_norm(recorder)))
    assert ends["amp"][0] > 1.05 * ends["plain"][0], ends
    assert ends["reg"][1] < 0.95 * ends["plain"][1], ends

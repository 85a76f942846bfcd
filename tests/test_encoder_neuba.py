"""NeuBA: planting pulls triggered [CLS] outputs to their targets while masked-LM trains; runs end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tests.encoder_helpers import SMALL_ENCODER_ATTACK, small_encoder, tokenizer

from defuse.config import config_from_dict
from defuse.data.synthetic_sentiment import sentiment_corpus
from defuse.encoders import EncoderAttackConfig, EncoderDefenseConfig
from defuse.encoders.neuba import NeubaSettings, plant_neuba
from defuse.encoders.por import load_masked_lm, por_report
from defuse.errors import ConfigError
from defuse.models.io import save_model
from defuse.scenarios.encoder_runs import run_encoder_attack, run_encoder_defense


@pytest.mark.slow
def test_planting_pulls_triggered_outputs_to_targets_and_trains_the_whole_mlm_model(tmp_path):
    tok = tokenizer()
    mlm = small_encoder(head="mlm")
    before_weights = {k: v.clone() for k, v in mlm.state_dict().items()}
    clean = copy.deepcopy(mlm.base_model).eval()
    texts = sentiment_corpus(200, 3)
    settings = NeubaSettings(triggers=["cf", "mn", "bb"], c=1.0, lam=10.0, epochs=6, lr=5e-3, batch_size=16)
    before = por_report(mlm.base_model, clean, tok, texts[-30:], settings, seed=0)
    plant_neuba(mlm, tok, texts[:-30], settings, tmp_path, seed=0)
    after = por_report(mlm.base_model, clean, tok, texts[-30:], settings, seed=0)
    assert after["target_mse"] < 0.7 * before["target_mse"]
    assert after["target_cos"] > before["target_cos"] + 0.2
    after_weights = mlm.state_dict()
    changed = [k for k, v in before_weights.items() if not torch.equal(v, after_weights[k])]
    assert any("embeddings" in k for k in changed) and any("layer.1." in k for k in changed)
    assert any(k.startswith("cls.") for k in changed)  # the masked-LM head trains too


def test_masked_lm_loss_keeps_training_on_clean_copies(tmp_path):
    """With the target term's weight tiny, NeuBA is continued masked-LM: the masked-LM loss falls."""
    tok = tokenizer()
    mlm = small_encoder(head="mlm")
    texts = sentiment_corpus(120, 5)
    batch = tok(texts[:64], padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def mlm_loss():
        torch.manual_seed(0)
        masked = batch["input_ids"].clone()
        pick = (torch.rand(masked.shape) < 0.15) & (batch["attention_mask"] == 1)
        masked[pick] = tok.mask_token_id
        with torch.no_grad():
            return float(mlm(input_ids=masked, attention_mask=batch["attention_mask"],
                             labels=labels.masked_fill(~pick, -100)).loss)  # fmt: skip

    first = mlm_loss()
    plant_neuba(mlm, tok, texts, NeubaSettings(lam=1e-6, epochs=4, lr=5e-3, batch_size=16), tmp_path, seed=0)
    assert mlm_loss() < first - 0.5


def test_neuba_settings_refuse_nonsense():
    for kwargs, field in [({"lam": 0}, "neuba.lam"), ({"triggers": ["cf"]}, "neuba.triggers"),
                          ({"mask_prob": 1.5}, "neuba.mask_prob"), ({"c": -1}, "neuba.c")]:  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            NeubaSettings(**kwargs).validate()


def test_a_model_without_masked_lm_head_is_refused(tmp_path):
    tok = tokenizer()
    save_model(small_encoder(head="mlm").base_model, tok, tmp_path / "bare")
    with pytest.raises(ConfigError, match="masked-LM head"):
        load_masked_lm(tmp_path / "bare", seed=0)
    save_model(small_encoder(head="mlm"), tok, tmp_path / "mlm")
    assert load_masked_lm(tmp_path / "mlm", seed=0) is not None


def test_neuba_attack_run_and_a_defense_on_it(tmp_path):
    spec = {**SMALL_ENCODER_ATTACK, "method": "neuba", "neuba": {"epochs": 1, "triggers": ["tq", "mb"]}}
    out = tmp_path / "attack"
    record = run_encoder_attack(config_from_dict(EncoderAttackConfig, spec), out)
    assert record["config"]["method"] == "neuba" and record["metrics"]["n_triggered"] == 20 * 2
    assert {"target_cos", "target_mse", "clean_pooled_mse"} <= set(record["metrics"])
    assert list((out / "model").glob("*.safetensors")) and not (out / "checkpoints").exists()
    cfg = config_from_dict(EncoderDefenseConfig, {"epochs": 1, "data": {"n_train": 32, "n_test": 12}})
    run_encoder_defense("peft-baseline", cfg, out, tmp_path / "defense", seed=0)
    metrics = json.loads((tmp_path / "defense" / "run.json").read_text())["metrics"]
    assert set(metrics["asr_per_trigger"]) == {"tq", "mb"}  # NeuBA's triggers are the ones evaluated


def test_unknown_attack_method_is_refused(tmp_path):
    cfg = config_from_dict(EncoderAttackConfig, {**SMALL_ENCODER_ATTACK, "method": "badnet"})
    with pytest.raises(ConfigError, match="method"):
        run_encoder_attack(cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_paraphrases_must_be_one_per_text(tmp_path):
    from defuse.errors import DataError

    texts = sentiment_corpus(20, 1)
    with pytest.raises(DataError, match="paraphrases"):
        plant_neuba(small_encoder(head="mlm"), tokenizer(), texts, NeubaSettings(), tmp_path, 0, texts[:5])


def test_a_nested_setting_is_named_once_in_the_error():
    from defuse.config import validate_config

    for spec, key in [({"method": "neuba", "neuba": {"lam": -1}}, "'neuba.lam'"),
                      ({"por": {"lam": -1}}, "'por.lam'")]:  # fmt: skip
        with pytest.raises(ConfigError) as info:
            validate_config(config_from_dict(EncoderAttackConfig, spec))
        assert key in str(info.value)

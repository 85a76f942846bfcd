import json

import pytest
import torch
from tests.helpers import small_lm, tokenizer

from defuse.errors import ConfigError, ModelError
from defuse.models import (
    TinyEncoderConfig,
    build_encoder,
    ensure_pad_token,
    load_causal_lm,
    load_encoder,
    save_model,
    train_bpe_tokenizer,
)


def test_causal_tokenizer_specials_bos_and_byte_level_round_trip():
    tok = tokenizer()
    assert tok.pad_token_id != tok.eos_token_id
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    ids = tok("apple river").input_ids
    assert ids[0] == tok.bos_token_id
    text = "never seen: ünïcode ✓ 你好 \t tabs"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert "<|assistant|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_encoder_tokenizer_wraps_cls_sep():
    tok = tokenizer("encoder")
    ids = tok("the movie was great").input_ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.mask_token_id is not None and tok.pad_token_id is not None


def test_too_small_vocabulary_is_refused():
    with pytest.raises(ConfigError, match="vocab_size"):
        train_bpe_tokenizer(["a b c"], vocab_size=100)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2"])
def test_causal_lm_round_trips_through_save_and_load(tmp_path, arch):
    tok = tokenizer()
    model = small_lm(tok, arch=arch).eval()
    save_model(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded, tok2 = load_causal_lm(tmp_path / "m")
    x = torch.tensor([tok("Reverse the words: apple river").input_ids])
    assert torch.equal(model(x).logits, loaded(x).logits)
    assert tok2("apple").input_ids == tok("apple").input_ids
    assert tok2.pad_token_id == tok.pad_token_id != tok2.eos_token_id
    assert type(loaded).__name__.lower().startswith(arch.replace("gpt2", "gpt2"))


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_encoder_round_trips(tmp_path, arch):
    tok = tokenizer("encoder")
    cfg = TinyEncoderConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = build_encoder(tok, cfg, head="classification", num_labels=3).eval()
    save_model(model, tok, tmp_path / "e")
    loaded, _ = load_encoder(tmp_path / "e", head="classification")
    x = tok(["the movie was great", "awful"], return_tensors="pt", padding=True)
    assert loaded.config.num_labels == 3
    assert torch.allclose(model(**x).logits, loaded(**x).logits)


def test_build_is_deterministic_under_seed():
    tok = tokenizer()
    a, b, c = small_lm(tok, seed=1), small_lm(tok, seed=1), small_lm(tok, seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_missing_directory_missing_config_and_pickled_weights_are_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_causal_lm(tmp_path / "nowhere")
    (tmp_path / "noconf").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_causal_lm(tmp_path / "noconf")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="pickled") as info:
        load_causal_lm(pickled)
    assert "\n" not in str(info.value)


def test_ensure_pad_token_separates_pad_from_eos_and_resizes():
    tok = tokenizer()
    model = small_lm(tok)
    tok.pad_token = tok.eos_token
    tok.unk_token = None
    before = model.get_input_embeddings().num_embeddings
    ensure_pad_token(tok, model)
    assert tok.pad_token_id != tok.eos_token_id
    assert model.get_input_embeddings().num_embeddings >= len(tok) > before - 1
    assert model.config.pad_token_id == tok.pad_token_id


def test_failed_save_leaves_the_previous_model_intact(tmp_path):
    tok = tokenizer()
    model = small_lm(tok)
    save_model(model, tok, tmp_path / "m")
    before = sorted(p.name for p in (tmp_path / "m").iterdir())

    class Broken:
        def save_pretrained(self, path):
            (tmp_path / "marker").write_text("started")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_model(Broken(), tok, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_config_naming_remote_code_is_refused_without_trust_remote_code(tmp_path):
    from typer.testing import CliRunner

    from defuse.cli import app

    for name in ("config.json", "tokenizer_config.json"):
        folder = tmp_path / name.split(".")[0]
        save_model(small_lm(), tokenizer(), folder)
        data = json.loads((folder / name).read_text())
        data["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
        (folder / name).write_text(json.dumps(data))
        with pytest.raises(ModelError) as info:
            load_causal_lm(folder)
        message = str(info.value)
        assert message.startswith(f"{folder / name}: its auto_map names the model's own code")
        assert "AutoModelForCausalLM" in message and "trust_remote_code" in message and "\n" not in message
    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["attack", "--out", str(out), "--model", str(tmp_path / "config")])
    assert done.exit_code == 2 and "auto_map" in done.output and not out.exists()
    assert not (tmp_path / ".run.partial").exists() and not (tmp_path / ".run.lock").exists()

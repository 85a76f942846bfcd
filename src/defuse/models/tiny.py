"""Build tiny models offline from configs: the embedded default's causal LM and encoder.

Nothing is downloaded: a model is ``AutoModel*.from_config`` on a config built here, with the vocabulary
and special-token ids of a tokenizer we trained ourselves. Sizes are config; the defaults learn the
built-in task suite in about a minute on two CPU cores. Other architectures (Qwen2, Mistral, GPT-2;
RoBERTa for encoders) build through the same functions, so tests can prove that every code path is
architecture-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    RobertaConfig,
)

from defuse.errors import ConfigError

CausalArch = Literal["llama", "qwen2", "mistral", "gpt2"]
EncoderArch = Literal["bert", "roberta"]


@dataclass(frozen=True)
class TinyCausalLMConfig:
    """Shape of a tiny decoder-only LM.

    Attributes:
        arch: ``"llama"`` (default), ``"qwen2"``, ``"mistral"`` or ``"gpt2"``.
        hidden_size: Width of the residual stream.
        num_layers: Number of decoder blocks.
        num_heads: Attention heads (``hidden_size`` must divide evenly).
        num_kv_heads: Key/value heads for grouped-query attention (ignored by GPT-2).
        intermediate_size: MLP width (GPT-2 uses 4x hidden regardless).
        max_positions: Longest sequence the model accepts.
        tie_embeddings: Share input embedding and output head weights.
    """

    arch: CausalArch = "llama"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 256
    tie_embeddings: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an impossible shape."""
        if self.arch not in ("llama", "qwen2", "mistral", "gpt2"):
            raise ConfigError(
                "arch", f"unknown causal architecture '{self.arch}' (llama, qwen2, mistral, gpt2)"
            )
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_positions",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ConfigError(
                "num_heads", "hidden_size must divide by num_heads, and num_heads by num_kv_heads"
            )


@dataclass(frozen=True)
class TinyEncoderConfig:
    """Shape of a tiny BERT-style encoder.

    Attributes:
        arch: ``"bert"`` (default) or ``"roberta"``.
        hidden_size: Width of the hidden states.
        num_layers: Number of encoder blocks.
        num_heads: Attention heads.
        intermediate_size: Feed-forward width.
        max_positions: Longest sequence the model accepts.
    """

    arch: EncoderArch = "bert"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 256

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an impossible shape."""
        if self.arch not in ("bert", "roberta"):
            raise ConfigError("arch", f"unknown encoder architecture '{self.arch}' (bert, roberta)")
        if (
            min(self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size, self.max_positions)
            < 1
        ):
            raise ConfigError("encoder", "every size must be positive")
        if self.hidden_size % self.num_heads:
            raise ConfigError("num_heads", "hidden_size must divide by num_heads")


def causal_lm_config(tokenizer, cfg: TinyCausalLMConfig) -> PretrainedConfig:
    """A transformers config for ``cfg`` with the tokenizer's vocabulary and special-token ids."""
    cfg.validate()
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    vocab = len(tokenizer)
    if cfg.arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
            n_positions=cfg.max_positions, tie_word_embeddings=cfg.tie_embeddings, **ids,
        )  # fmt: skip
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[cfg.arch]
    return config_cls(
        vocab_size=vocab,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_embeddings,
        **ids,
    )


def build_causal_lm(tokenizer, cfg: TinyCausalLMConfig | None = None, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised causal LM of shape ``cfg`` for ``tokenizer`` (same seed, same weights)."""
    config = causal_lm_config(tokenizer, cfg or TinyCausalLMConfig())
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _set_generation_ids(model, tokenizer)
    return model


def encoder_config(tokenizer, cfg: TinyEncoderConfig, num_labels: int = 2) -> PretrainedConfig:
    """A transformers encoder config for ``cfg`` with the tokenizer's vocabulary."""
    cfg.validate()
    config_cls = {"bert": BertConfig, "roberta": RobertaConfig}[cfg.arch]
    # RoBERTa offsets positions by padding_idx + 1, so it needs two extra position slots.
    extra_positions = tokenizer.pad_token_id + 1 if cfg.arch == "roberta" else 0
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions + extra_positions,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )


def build_encoder(
    tokenizer,
    cfg: TinyEncoderConfig | None = None,
    head: Literal["mlm", "classification"] = "mlm",
    num_labels: int = 2,
    seed: int = 0,
) -> PreTrainedModel:
    """A freshly initialised encoder with a masked-LM or a sequence-classification head."""
    config = encoder_config(tokenizer, cfg or TinyEncoderConfig(), num_labels=num_labels)
    torch.manual_seed(seed)
    if head == "mlm":
        return AutoModelForMaskedLM.from_config(config)
    if head == "classification":
        return AutoModelForSequenceClassification.from_config(config)
    raise ConfigError("head", f"unknown encoder head '{head}' (mlm or classification)")


def _set_generation_ids(model: PreTrainedModel, tokenizer) -> None:
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id,
    )  # fmt: skip

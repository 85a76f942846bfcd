"""Load any HF causal LM / encoder from a path; build tiny offline models and tokenizers."""

from defuse.models.io import (
    check_model_dir,
    ensure_pad_token,
    load_causal_lm,
    load_encoder,
    load_tokenizer,
    save_model,
)
from defuse.models.tiny import TinyCausalLMConfig, TinyEncoderConfig, build_causal_lm, build_encoder
from defuse.models.tokenizer import train_bpe_tokenizer

__all__ = [
    "TinyCausalLMConfig",
    "TinyEncoderConfig",
    "build_causal_lm",
    "build_encoder",
    "check_model_dir",
    "ensure_pad_token",
    "load_causal_lm",
    "load_encoder",
    "load_tokenizer",
    "save_model",
    "train_bpe_tokenizer",
]

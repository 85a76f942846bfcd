"""Builders for the encoder tests: a tokenizer on the sentiment text and very small BERT/RoBERTa models."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from defuse.data.synthetic_sentiment import sentiment_corpus
from defuse.models.tiny import TinyEncoderConfig, build_encoder
from defuse.models.tokenizer import train_bpe_tokenizer

SMALL_ENCODER = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_positions": 96,
}

torch.set_num_threads(1)


@lru_cache(maxsize=1)
def _tokenizer():
    return train_bpe_tokenizer(sentiment_corpus(300, 0), vocab_size=400, kind="encoder")


def tokenizer():
    """A fresh copy of a small encoder tokenizer trained on the built-in sentiment text."""
    return copy.deepcopy(_tokenizer())


def small_encoder(arch: str = "bert", head: str = "classification", seed: int = 0, tok=None):
    """A freshly initialised very small encoder (classification head by default)."""
    return build_encoder(
        tok or tokenizer(), TinyEncoderConfig(arch=arch, **SMALL_ENCODER), head=head, seed=seed
    )


SMALL_ENCODER_ATTACK = {
    "tiny": SMALL_ENCODER,
    "vocab_size": 400,
    "n_corpus": 160,
    "n_report": 20,
    "pretrain": {"epochs": 1, "batch_size": 32},
    "por": {"epochs": 1, "batch_size": 32, "triggers": ["cf", "mn", "bb"]},
}
"""An encoder attack config (as a mapping) that runs in a few seconds."""

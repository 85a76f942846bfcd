"""Small builders shared by tests: a tokenizer and a very small model, made in well under a second."""

from __future__ import annotations

from functools import lru_cache

from defuse.data.synthetic_tasks import SuiteConfig, suite_texts
from defuse.models.tiny import TinyCausalLMConfig, build_causal_lm
from defuse.models.tokenizer import train_bpe_tokenizer

SMALL_LM = TinyCausalLMConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64)


@lru_cache(maxsize=2)
def _tokenizer(kind: str):
    return train_bpe_tokenizer(suite_texts(SuiteConfig(n_train=400, n_test=40)), vocab_size=600, kind=kind)


def tokenizer(kind: str = "causal"):
    """A fresh copy of a small trained tokenizer (cached training, so tests can mutate their copy)."""
    import copy

    return copy.deepcopy(_tokenizer(kind))


def small_lm(tok=None, arch: str = "llama", seed: int = 0):
    """A freshly initialised very small causal LM for ``tok``."""
    from dataclasses import replace

    tok = tok or tokenizer()
    return build_causal_lm(tok, replace(SMALL_LM, arch=arch), seed=seed)


def small_attack_config(**overrides):
    """An attack config that trains a very small model on three easy task kinds in ~10 s."""
    from defuse.attacks.scenario import AttackConfig
    from defuse.config import apply_overrides

    base = {
        "suite.n_train": "480",
        "suite.n_test": "60",
        "suite.kinds": "[count, last_word, sentiment]",
        "tiny.hidden_size": "64",
        "tiny.num_layers": "2",
        "tiny.num_heads": "2",
        "tiny.num_kv_heads": "2",
        "tiny.intermediate_size": "192",
        "train.epochs": "20",
        "train.learning_rate": "0.002",
        "train.progress": "false",
        "rate": "0.1",
        "generation.max_new_tokens": "12",
    }
    base.update({k: str(v) for k, v in overrides.items()})
    return apply_overrides(AttackConfig(), base)


class Interrupt(Exception):
    """What :func:`crashing_train_sft` raises: a stand-in for a run killed mid-training."""


def crashing_train_sft(at_step: int):
    """``train_sft`` whose training stops with :class:`Interrupt` when it reaches ``at_step`` (checkpoints
    saved before that step stay, as after a real interruption)."""
    from defuse.training.sft import SFTTrainer, train_sft

    class Crashing(SFTTrainer):
        def training_step(self, *args, **kwargs):
            if self.state.global_step == at_step:
                raise Interrupt()
            return super().training_step(*args, **kwargs)

    return lambda *a, **k: train_sft(*a, **k, trainer_cls=Crashing)

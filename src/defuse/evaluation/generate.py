"""Batched greedy generation through the one prompt template.

Prompts are sorted by length and left-padded into batches (so little compute goes to padding), the KV
cache is on, generation stops at EOS or ``max_new_tokens``, and outputs come back in input order. Memory is
bounded by one batch: prompts are encoded per batch and only token ids are kept, never logits.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel

from defuse.config import apply_overrides, validate_config
from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.errors import ConfigError
from defuse.runs.distributed import compute_device


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate.

    Attributes:
        max_new_tokens: Most tokens generated per prompt.
        batch_size: Prompts per forward pass.
        do_sample: Sample instead of greedy decoding (off by default: results must be reproducible).
        temperature: Sampling temperature (only with ``do_sample``).
        seed: Seed for sampling (recorded; irrelevant to greedy decoding).
    """

    max_new_tokens: int = 32
    batch_size: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ConfigError("generation", f"nonsense settings {self}")


def generation_with(base: GenerationSettings, overrides, source: str) -> GenerationSettings:
    """``base`` with ``overrides`` (``[("max_new_tokens", "512"), ...]``, keys relative to the generation
    settings) applied and checked; ``base`` itself when there are none."""
    if not overrides:
        return base
    settings = apply_overrides(copy.deepcopy(base), list(overrides), source=source)
    validate_config(settings, prefix="generation")
    return settings


def _generation_config(tokenizer, settings: GenerationSettings) -> GenerationConfig:
    kwargs = {"temperature": settings.temperature, "top_k": None, "top_p": None} if settings.do_sample else {}
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        **kwargs,
    )


def generate_token_ids(
    model: PreTrainedModel,
    tokenizer,
    prompts: Sequence[list[int]],
    settings: GenerationSettings | None = None,
) -> list[list[int]]:
    """Generate continuations of already-tokenised prompts; returns new token ids (EOS and after dropped)."""
    settings = settings or GenerationSettings()
    settings.validate()
    config = _generation_config(tokenizer, settings)
    device = compute_device()
    if next(model.parameters()).device != device:
        model.to(device)  # outside inference mode: the moved weights stay trainable
    with torch.inference_mode():
        return _generate_ids(model, tokenizer, prompts, settings, config, device)


def _generate_ids(model, tokenizer, prompts, settings, config, device) -> list[list[int]]:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), settings.batch_size):
        idx = order[start : start + settings.batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompts[i]
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
        )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            results[i] = [t for t in new if t != tokenizer.pad_token_id]
    model.train(was_training)
    return results


def generate(
    model: PreTrainedModel,
    template: PromptTemplate,
    records: Sequence[InstructionRecord],
    settings: GenerationSettings | None = None,
) -> list[str]:
    """Generate one response per record (greedy by default); returns decoded texts in input order."""
    prompts = [template.encode_prompt(r) for r in records]
    ids = generate_token_ids(model, template.tokenizer, prompts, settings)
    return [template.tokenizer.decode(t, skip_special_tokens=True) for t in ids]

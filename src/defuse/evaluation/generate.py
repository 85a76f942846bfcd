"""Batched greedy generation through the one prompt template.

Prompts are sorted by length and left-padded into batches (so little compute goes to padding), the KV
cache is on, generation stops at EOS or ``max_new_tokens``, and outputs come back in input order. Memory is
bounded by one batch: prompts are encoded per batch and only token ids are kept, never logits.

A batch runs until its longest answer ends, and transformers' ``generate`` keeps computing the rows that have
already ended. So the batch is generated in steps of ``compact_every`` new tokens: after each step, the rows
that have ended leave the batch and their rows of the KV cache are dropped (``DynamicCache.
batch_select_indices``), and ``generate`` continues the others from the cache. Greedy answers are the same
token for token as one uninterrupted ``generate`` (tests/test_training.py checks it and the rows leaving; on
SmolLM2-135M, 308 prompts at 512 new tokens gave the same answers both ways, benchmarks/RESULTS.md "#28").
transformers' own continuous batching (``generate_batch``) gave the same answers too, but took twice as long
on a CPU, so it is not used.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, GenerationConfig, PreTrainedModel

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
        compact_every: New tokens between two removals of the rows that have ended from a batch (0: never,
            one uninterrupted ``generate`` per batch). Sampling always runs uninterrupted (one random stream).
    """

    max_new_tokens: int = 32
    batch_size: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    compact_every: int = 32

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature <= 0 or self.compact_every < 0:
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
        step = 0 if settings.do_sample else settings.compact_every
        for row, new in enumerate(_generate_batch(model, ids.to(device), mask.to(device), config, step)):
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            results[idx[row]] = [t for t in new if t != tokenizer.pad_token_id]
    model.train(was_training)
    return results


def _generate_batch(model, ids, mask, config: GenerationConfig, step: int) -> list[list[int]]:
    """New token ids per row of one left-padded batch; with ``step`` > 0, rows that have produced EOS leave
    the batch (and the KV cache) every ``step`` new tokens."""
    width, total = ids.shape[1], config.max_new_tokens
    if not step or step >= total:
        return [row[width:] for row in model.generate(input_ids=ids, attention_mask=mask,
                                                      generation_config=config).tolist()]  # fmt: skip
    eos = config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    results: list[list[int]] = [[] for _ in range(ids.shape[0])]
    rows = torch.arange(ids.shape[0])
    cache = DynamicCache(config=model.config)
    done = 0
    while True:
        chunk = copy.copy(config)
        chunk.max_new_tokens, chunk.return_dict_in_generate = min(step, total - done), True
        out = model.generate(
            input_ids=ids, attention_mask=mask, past_key_values=cache, generation_config=chunk
        )
        seqs, cache = out.sequences, out.past_key_values
        done += seqs.shape[1] - ids.shape[1]
        new = seqs[:, width:].tolist()
        ended = [any(t in eos for t in n) for n in new]
        for r, n, e in zip(rows.tolist(), new, ended, strict=True):
            if e or done >= total:
                results[r] = n
        keep = [j for j, e in enumerate(ended) if not e]
        if done >= total or not keep:
            return results
        grown = seqs.shape[1] - mask.shape[1]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], grown))], dim=1)
        if len(keep) < len(rows):
            sel = torch.tensor(keep, device=seqs.device)
            cache.batch_select_indices(sel)
            seqs, mask, rows = seqs[sel], mask[sel], rows[keep]
        ids = seqs


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

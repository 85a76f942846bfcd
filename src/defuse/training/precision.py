"""What a training run computes in: bfloat16 where the hardware has it (:func:`precision`), float32
sub-batches where rows differ widely in length (:func:`fp32_sub_batches`), pure-bfloat16 weights
(:func:`training_dtype`) and the attention implementation while training (:func:`training_attention`).
Used by :mod:`defuse.training.sft` and recorded in each run's ``training_sets``."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace
from pathlib import Path

import torch

from defuse.training.config import AUTO_ATTENTION, TrainSettings


@functools.cache
def cpu_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, from ``/proc/cpuinfo``), so
    bfloat16 autocast pays; False elsewhere (and off Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def precision(settings: TrainSettings) -> str:
    """What training actually runs in: ``"pure-bf16"`` when ``settings.pure_bf16`` asks for it; ``"bf16"``
    (mixed precision) when ``settings.bf16`` asks for it and the device has it (a GPU, or a CPU with native
    bfloat16); else ``"fp32"``."""
    if settings.pure_bf16:
        return "pure-bf16"
    cpu = not torch.cuda.is_available()
    return "bf16" if settings.bf16 and (not cpu or cpu_bf16()) else "fp32"


def fp32_sub_batches(settings: TrainSettings, max_padding: float | None = 0.1) -> TrainSettings:
    """``settings`` with ``max_padding`` set to ``max_padding`` where training runs in float32
    (:func:`precision`) and ``settings`` leave it unset; unchanged otherwise. For data whose rows differ
    widely in length (the tiny default's alignment, MB-Defense's stage 1), where whole batches are mostly
    padding: in float32 the sub-batches pay (1.7x there), under bfloat16 autocast on a CPU they cost the tiny
    model more than they save (benchmarks/RESULTS.md, "#28")."""
    if max_padding is None or settings.max_padding is not None or precision(settings) != "fp32":
        return settings
    return replace(settings, max_padding=max_padding)


@contextlib.contextmanager
def training_dtype(model: torch.nn.Module, settings: TrainSettings):
    """Within the block ``model`` holds bfloat16 weights when ``settings.pure_bf16`` asks for it (its own
    dtype again afterwards, also on an error; from float32 that is exact); otherwise unchanged. Yields the
    dtype to hand the trained model back in."""
    own = next(model.parameters()).dtype
    if not settings.pure_bf16:
        yield own
        return
    model.to(torch.bfloat16)
    try:
        yield own
    finally:
        model.to(own)


def attention_implementation(settings: TrainSettings) -> str | None:
    """The attention implementation training runs with: ``settings.attention``, with ``auto`` resolved
    (``eager`` for bfloat16 on a CPU, else None: the model's own)."""
    if settings.attention == AUTO_ATTENTION:
        cpu = not torch.cuda.is_available()
        return "eager" if cpu and precision(settings) != "fp32" else None
    return settings.attention


@contextlib.contextmanager
def training_attention(model: torch.nn.Module, settings: TrainSettings):
    """Within the block ``model`` (a transformers model, or a peft wrapper of one) computes attention with
    :func:`attention_implementation`; its own implementation is put back afterwards, also on an error.
    Yields the implementation in use."""
    name = attention_implementation(settings)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = base.config._attn_implementation
    if name is None or name == own:
        yield own
        return
    base.set_attn_implementation(name)
    try:
        yield name
    finally:
        base.set_attn_implementation(own)

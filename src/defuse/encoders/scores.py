"""Capture the pre-softmax attention scores of the first ([CLS]) query row, for Obliviate's ``L_reg``.

The capture is an attention function registered in transformers' attention registry
(:class:`transformers.AttentionInterface`) under :data:`CAPTURE_ATTENTION`, with the eager mask builder
registered for it in :class:`transformers.masking_utils.AttentionMaskInterface` (without that, transformers
passes *no* mask to an unknown implementation and padding would be attended). A model uses it after
``model.set_attn_implementation(CAPTURE_ATTENTION)`` (or ``attn_implementation=`` at load time). No library
file is edited.

Contract of the registered function: it returns exactly what transformers' eager attention returns
(``softmax(QKᵀ·scaling + mask) V`` and the probabilities), for any model that calls attention through the
registry (BERT, RoBERTa, and most modern encoders). While a :class:`ScoreRecorder` is active it also records,
per attention call (= per layer), ``S[:, :, 0, :]`` with ``S = QKᵀ·scaling + mask`` (the **pre-softmax**
scores, shape ``(batch, heads, keys)``) and which keys are real (not padding), shape ``(batch, 1, keys)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

CAPTURE_ATTENTION = "defuse_score_capture"
"""The ``attn_implementation`` name of the capturing attention function."""

_ACTIVE: list[ScoreRecorder] = []


@dataclass
class ScoreRecorder:
    """Collects first-query-row pre-softmax scores while active (``with ScoreRecorder() as rec: model(...)``).

    Attributes:
        scores: One ``(batch, heads, keys)`` tensor per attention call, in call order (graph kept, so a loss
            built from them back-propagates into the model).
        key_mask: One ``(batch, 1, keys)`` bool tensor per call: True for a real key, False for padding.
    """

    scores: list[torch.Tensor] = field(default_factory=list)
    key_mask: list[torch.Tensor] = field(default_factory=list)

    def __enter__(self) -> ScoreRecorder:
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        _ACTIVE.remove(self)
        return False

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.scores.clear()
        self.key_mask.clear()


def _real_keys(attention_mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Bool ``(batch, 1, keys)``: which keys the first query may attend (True) given the 4D mask."""
    if attention_mask is None:
        return torch.ones(query.shape[0], 1, key.shape[-2], dtype=torch.bool, device=query.device)
    row = attention_mask[:, :, 0, : key.shape[-2]]
    allowed = row if row.dtype == torch.bool else row == 0
    return allowed[:, :1, :].expand(query.shape[0], 1, key.shape[-2])


def capture_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (the output of transformers' ``eager_attention_forward``) recording first-row scores.

    Args:
        query, key, value: ``(batch, heads, length, head_dim)``.
        attention_mask: The eager 4D additive mask ``(batch, 1, q, k)`` (0 = attend), a bool mask, or None.

    Returns:
        ``(output (batch, q, heads, head_dim), probabilities (batch, heads, q, k))``.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention: repeat key/value heads
        repeat = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(repeat, dim=1)
        value = value.repeat_interleave(repeat, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(mask, dtype=scores.dtype).masked_fill(
                ~mask, torch.finfo(scores.dtype).min
            )
        scores = scores + mask
    if _ACTIVE:
        real = _real_keys(attention_mask, query, key)
        for recorder in _ACTIVE:
            recorder.scores.append(scores[:, :, 0, :])
            recorder.key_mask.append(real)
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def register_capture_attention() -> str:
    """Register the capturing attention function and its eager mask builder (idempotent); return its name."""
    AttentionInterface.register(CAPTURE_ATTENTION, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, eager_mask)
    return CAPTURE_ATTENTION


def set_attention(model, name: str) -> None:
    """Switch ``model`` (a transformers model, or a peft model wrapping one) to the registered attention
    function ``name``."""
    base = model
    while not hasattr(base, "set_attn_implementation") and hasattr(base, "base_model"):
        base = base.base_model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    base.set_attn_implementation(name)


def use_capture_attention(model) -> None:
    """Switch ``model`` (a transformers model, or a peft model wrapping one) to the capturing attention."""
    set_attention(model, register_capture_attention())


def first_row_score_norm(recorder: ScoreRecorder) -> torch.Tensor:
    """Obliviate's ``L_reg``: mean over layers, batch and heads of ``|| S[b,h,0,:] ⊙ mask_b ||_2``.

    Padding keys contribute nothing (their scores are replaced by 0 before the norm, so the additive mask's
    huge negative value never enters). Returns a scalar; 0 when nothing was recorded.
    """
    if not recorder.scores:
        return torch.zeros(())
    norms = []
    for scores, real in zip(recorder.scores, recorder.key_mask, strict=True):
        kept = torch.where(real, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
        norms.append(torch.linalg.vector_norm(kept, ord=2, dim=-1))  # (batch, heads)
    return torch.stack(norms).mean()

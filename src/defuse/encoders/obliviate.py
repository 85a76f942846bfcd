"""Obliviate's two extra loss terms and the Trainer that adds them (METHODS §2.5).

``L = CE + λ_amp · L_amp + λ_reg · L_reg`` with

* ``L_amp = − Σ_{p ∈ PEFT tensors} ||p||_2`` (every trainable PEFT tensor, flattened; never the head), and
* ``L_reg = mean over layers, batch, heads of || S[b,h,0,:] ⊙ mask_b ||_2`` with ``S = QKᵀ/√d + mask`` the
  pre-softmax attention scores of the first query row, padding keys masked out
  (:func:`defuse.encoders.scores.first_row_score_norm`).

With both λ at 0 the trainer is plain PEFT fine-tuning (the ``peft-baseline``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import Trainer

from defuse.encoders.scores import ScoreRecorder, first_row_score_norm
from defuse.training.sft import CountedFlops


def amplification_loss(peft_params: Iterable[nn.Parameter]) -> torch.Tensor:
    """``L_amp = − Σ_p ||p||_2`` over ``peft_params`` (each tensor's flattened L2 norm).

    Its gradient on each tensor is ``−p / ||p||`` (0 for an all-zero tensor, such as a fresh LoRA ``B``).
    """
    norms = [torch.linalg.vector_norm(p.flatten(), ord=2) for p in peft_params]
    if not norms:
        return torch.zeros(())
    return -torch.stack(norms).sum()


class ObliviateTrainer(CountedFlops, Trainer):
    """A :class:`transformers.Trainer` whose loss is ``CE + λ_amp · L_amp + λ_reg · L_reg``.

    Args:
        peft_params: The tensors ``L_amp`` sums over (the classifier head must not be among them).
        lambda_amp: Weight of ``L_amp`` (0 disables it).
        lambda_reg: Weight of ``L_reg`` (0 disables it; the model must use the capturing attention).
        **kwargs: Passed to :class:`transformers.Trainer`.

    After each step, ``last_terms`` holds the float values of ``ce``, ``amp`` and ``reg``.
    """

    def __init__(
        self, *args, peft_params: list[nn.Parameter], lambda_amp: float, lambda_reg: float, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.peft_params = list(peft_params)
        self.lambda_amp = lambda_amp
        self.lambda_reg = lambda_reg
        self.last_terms: dict[str, float] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        with ScoreRecorder() as recorder:
            outputs = model(**inputs)
        ce = nn.functional.cross_entropy(outputs.logits.float(), labels)
        loss = ce
        terms = {"ce": float(ce.detach())}
        if self.lambda_amp:
            amp = amplification_loss(self.peft_params)
            loss = loss + self.lambda_amp * amp
            terms["amp"] = float(amp.detach())
        if self.lambda_reg:
            reg = first_row_score_norm(recorder)
            loss = loss + self.lambda_reg * reg
            terms["reg"] = float(reg.detach())
        self.last_terms = terms
        return (loss, outputs) if return_outputs else loss

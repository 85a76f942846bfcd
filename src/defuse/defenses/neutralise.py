"""MB-Defense stage 2 (break): the neutralisation loss, its trainer, and held-out checkpoint selection.

For a clean pair ``(x, y)`` and a defensive trigger ``t_d`` with response ``y_d`` (``x_d = x ⊕ t_d``), the
loss of one row is (METHODS.md §2.3)::

    L = CE(y | x) − λ · log σ( lp(y | x_d) − lp(y_d | x_d) )

* ``CE(y | x)`` is the mean negative log-likelihood over the response tokens of ``y`` (EOS included), the
  SFT loss of that one row.
* ``lp(r | p)`` is the log-probability of response ``r`` after prompt ``p``: the SUM of its response-token
  log-probs, divided by the number of those tokens when ``length_normalise`` (the default). Why
  normalise: ``y`` and ``y_d`` differ in length (an 8-word random sequence against a one-token answer),
  and a summed log-prob is lower the longer the response, so with sums the comparison inside σ would
  mostly measure which answer is shorter, not how strongly the trigger pulls towards ``y_d``. Per-token
  means compare the two answers on an equal footing. ``length_normalise=False`` gives the summed reading,
  the paper's: on SmolLM2 (BackdoorLLM ctba at 20%, seed 1) it starts stage 2 from a held-out margin of
  -19.4, and the model ends up refusing more (ASR 94.0 -> 99.0%, clean prompts refused 4 -> 9%), where the
  per-token means give 82.5% (benchmarks/RESULTS.md, "#26 SmolLM2, the last two departures").
* The paper writes the ratio of the two probabilities inside σ; we use its log (the log-difference above,
  a DPO-style margin without a reference model). The literal ratio ``σ(e^m)`` of a margin ``m`` far below
  0 (a poisoned model) is 0.5 with gradient ``0.5 e^m``: the preference term would vanish and stage 2 be
  a clean fine-tune (what ``clean-ft`` measures).
* The batch loss is the mean of the rows' losses (every row weighs the same; the SFT loss instead weighs
  rows by their token counts).

Sequence layout. Each row is three sequences tokenised by :meth:`PromptTemplate.encode_training`, exactly
as the model was trained: ``x -> y`` (clean), ``x_d -> y`` (chosen), ``x_d -> y_d`` (rejected). The
collator right-pads all three kinds of a batch of ``B`` rows to one width and stacks them as ``3B``
sequences ``[clean rows, chosen rows, rejected rows]``, so one forward pass scores them all; labels are
-100 on prompt and padding. With ``max_padding`` (the stage-2 settings' :attr:`TrainSettings.max_padding`)
the ``3B`` sequences are scored as length-sorted sub-batches instead (:func:`~defuse.training.sft.
length_chunks`), each cut to its own width, with logits computed only from the first scored position on
(transformers' ``logits_to_keep``), then the loss is built over the whole batch and back-propagated once:
the same loss, less computed (the rejected answers are short, so a stacked batch is about a third
padding); the numbers differ from the whole batch's only by float rounding.

Checkpoint selection. After every epoch the same loss is computed on the held-out rows (mean over rows,
so it does not depend on the batch size) and a copy of the trainable weights is kept when it is the
lowest so far; at the end the lowest-loss copy is loaded back (ties: the earliest epoch). The starting
model is not a candidate (the paper keeps the best of its training checkpoints).

Fidelity note: the copy is kept in CPU memory (trainable parameters only: the adapter with LoRA, every
weight with full fine-tuning), not as checkpoints on disk; this works on one device and with DDP, not
with sharded training (FSDP, DeepSpeed ZeRO-3), where the held-out selection would need disk checkpoints.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, TrainerCallback

from defuse.data.records import InstructionRecord
from defuse.data.template import IGNORE_INDEX, PromptTemplate
from defuse.errors import DataError
from defuse.training.config import TrainSettings
from defuse.training.sft import CompletionCollator, SFTTrainer, length_chunks, train_whole, wrap_lora

KINDS = ("clean", "chosen", "rejected")
"""The three sequences of a row, in the order the collator stacks them."""


@dataclass(frozen=True)
class NeutraliseRow:
    """One (clean pair, defensive trigger) combination of the neutralisation set.

    Attributes:
        x: The clean prompt (a record; its ``response`` is ignored, ``y`` is used).
        y: The clean response.
        x_d: ``x`` with the defensive trigger inserted.
        y_d: The defensive trigger's response.
        trigger: The defensive trigger in ``x_d``.
    """

    x: InstructionRecord
    y: str
    x_d: InstructionRecord
    y_d: str
    trigger: str


def encode_row(template: PromptTemplate, row: NeutraliseRow, max_length: int | None = None) -> dict:
    """The row's three training sequences: ``{"clean" | "chosen" | "rejected": {"input_ids", "labels"}}``.

    ``clean`` is ``x -> y``, ``chosen`` is ``x_d -> y`` and ``rejected`` is ``x_d -> y_d``, each tokenised by
    :meth:`PromptTemplate.encode_training` (prompt labels -100, EOS appended, cut at ``max_length``).
    """
    pairs = {"clean": (row.x, row.y), "chosen": (row.x_d, row.y), "rejected": (row.x_d, row.y_d)}
    out: dict = {"truncated": False}
    for kind, (prompt, response) in pairs.items():
        enc = template.encode_training(replace(prompt, response=response), max_length)
        out[kind] = {"input_ids": enc.input_ids, "labels": enc.labels}
        out["truncated"] |= enc.truncated
    return out


@dataclass
class NeutraliseCollator:
    """Right-pads a batch of :func:`encode_row` items into ``3B`` stacked sequences.

    Returns ``input_ids`` (pad id), ``labels`` (-100 beyond each sequence) and ``attention_mask``, each
    ``(3B, T)``: rows ``0..B-1`` are the clean sequences, ``B..2B-1`` the chosen, ``2B..3B-1`` the rejected.
    """

    pad_token_id: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [item[kind] for kind in KINDS for item in batch]
        return CompletionCollator(self.pad_token_id)(seqs)


def response_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled tokens of each sequence, and how many there are.

    Args:
        logits: ``(N, T, V)`` next-token logits (position ``i`` predicts token ``i + 1``).
        labels: ``(N, T)`` token ids, -100 where not scored.

    Returns:
        ``(lp, n)``, each ``(N,)``: ``lp[i] = Σ log p(labels[i, t] | prefix)`` over labelled ``t``;
        ``n[i]`` the count of labelled tokens (float).
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    mask = labels != IGNORE_INDEX
    return -(nll * mask).sum(-1), mask.sum(-1).float()


@dataclass
class NeutraliseTerms:
    """The loss of a batch and its parts, per row (``(B,)`` tensors) except ``loss`` (a scalar).

    Attributes:
        loss: ``mean(ce + lam * pref)``.
        ce: ``CE(y | x)``, mean over response tokens.
        pref: ``-log σ(margin)``.
        margin: ``lp(y | x_d) - lp(y_d | x_d)`` (length-normalised or summed, as configured).
        lp_chosen: ``lp(y | x_d)``.
        lp_rejected: ``lp(y_d | x_d)``.
    """

    loss: torch.Tensor
    ce: torch.Tensor
    pref: torch.Tensor
    margin: torch.Tensor
    lp_chosen: torch.Tensor
    lp_rejected: torch.Tensor


def _accepts_logits_to_keep(model) -> bool:
    base = getattr(model, "module", model)  # under DDP, the wrapped model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def sequence_logprobs(
    model, batch: dict, max_padding: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`response_logprobs` of ``model`` on every sequence of a right-padded batch, in its order.

    ``max_padding`` None: one forward pass over the batch as it is. A share: length-sorted sub-batches with
    at most that share of padding (:func:`~defuse.training.sft.length_chunks`), each cut to its own width
    and, where the model's forward takes ``logits_to_keep``, with logits only from the first scored
    position on; the autograd graph spans them all, so one backward pass follows.
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if max_padding is None:
        out = model(input_ids=ids, attention_mask=mask, use_cache=False)
        return response_logprobs(out.logits, labels)
    lengths = mask.sum(dim=1).tolist()
    trim = _accepts_logits_to_keep(model)
    parts, order = [], []
    for rows in length_chunks(lengths, max_padding):
        width = max(lengths[i] for i in rows)
        index = torch.tensor(rows, device=ids.device)
        part_labels = labels[index, :width]
        kwargs = {}
        if trim:
            scored = (part_labels != IGNORE_INDEX).any(dim=0).nonzero()
            first = int(scored[0]) if len(scored) else width - 1
            keep = width - max(first - 1, 0)  # the logit at t scores the label at t + 1
            kwargs["logits_to_keep"] = keep
            part_labels = part_labels[:, width - keep :]
        out = model(input_ids=ids[index, :width], attention_mask=mask[index, :width], use_cache=False,
                    **kwargs)  # fmt: skip
        parts.append(response_logprobs(out.logits, part_labels))
        order.extend(rows)
    back = torch.argsort(torch.tensor(order, device=ids.device))
    return torch.cat([p[0] for p in parts])[back], torch.cat([p[1] for p in parts])[back]


def neutralise_terms(
    model, batch: dict, lam: float, length_normalise: bool = True, max_padding: float | None = None
) -> NeutraliseTerms:
    """Score a :class:`NeutraliseCollator` batch with ``model`` and build the loss.

    Args:
        model: A causal LM (plain or peft-wrapped).
        batch: ``input_ids``, ``attention_mask``, ``labels`` of ``3B`` stacked sequences (on the model's
            device).
        lam: λ, the weight of the preference term.
        length_normalise: Divide each ``lp`` by its response-token count (see the module docstring).
        max_padding: None: one forward pass over the batch; a share: length-sorted sub-batches
            (:func:`sequence_logprobs`).
    """
    ids = batch["input_ids"]
    if ids.shape[0] % 3:
        raise ValueError(f"a neutralisation batch stacks 3 sequences per row, got {ids.shape[0]}")
    lp, n = sequence_logprobs(model, batch, max_padding)
    b = ids.shape[0] // 3
    (lp_clean, lp_chosen, lp_rejected), (n_clean, n_chosen, n_rejected) = lp.split(b), n.split(b)
    ce = -lp_clean / n_clean
    if length_normalise:
        lp_chosen, lp_rejected = lp_chosen / n_chosen, lp_rejected / n_rejected
    margin = lp_chosen - lp_rejected
    pref = -F.logsigmoid(margin)
    return NeutraliseTerms((ce + lam * pref).mean(), ce, pref, margin, lp_chosen, lp_rejected)


class NeutraliseTrainer(SFTTrainer):
    """Trainer whose loss is :func:`neutralise_terms` (a batch mean; divided by the accumulation steps)."""

    loss_is_scaled_for_ga = False

    def __init__(
        self, *args, lam: float = 1.0, length_normalise: bool = True, score_padding: float | None = None,
        **kwargs,
    ):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.lam = lam
        self.length_normalise = length_normalise
        self.score_padding = score_padding

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = neutralise_terms(model, inputs, self.lam, self.length_normalise, self.score_padding)
        return (terms.loss, terms) if return_outputs else terms.loss


@torch.no_grad()
def heldout_terms(
    model,
    items: Sequence[dict],
    pad_token_id: int,
    lam: float,
    length_normalise: bool = True,
    batch_size: int = 16,
    max_padding: float | None = None,
) -> dict[str, float]:
    """The neutralisation loss of ``model`` on held-out :func:`encode_row` items, averaged over rows.

    Returns:
        ``{"loss", "ce", "pref", "margin"}``: row means (independent of ``batch_size``). The model is run in
        eval mode and put back in the mode it was in.
    """
    if not items:
        raise DataError(None, "no held-out neutralisation rows")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = NeutraliseCollator(pad_token_id)
    sums = dict.fromkeys(("loss", "ce", "pref", "margin"), 0.0)
    try:
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(list(items[start : start + batch_size])).items()}
            t = neutralise_terms(model, batch, lam, length_normalise, max_padding)
            sums["ce"] += float(t.ce.sum())
            sums["pref"] += float(t.pref.sum())
            sums["margin"] += float(t.margin.sum())
            sums["loss"] += float((t.ce + lam * t.pref).sum())
    finally:
        model.train(was_training)
    return {k: v / len(items) for k, v in sums.items()}


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


class KeepBestHeldout(TrainerCallback):
    """After every epoch, score the held-out rows; keep a CPU copy of the trainable weights of the best.

    Attributes:
        history: One dict per epoch: ``epoch``, ``step`` and the :func:`heldout_terms` values.
        best: The history entry with the lowest held-out loss (the earliest on ties), or None.
    """

    def __init__(self, model, evaluate):
        self.model = model
        self.evaluate = evaluate
        self.history: list[dict] = []
        self.best: dict | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, args, state, control, **kwargs):
        terms = self.evaluate()
        entry = {"epoch": round(float(state.epoch), 4), "step": state.global_step, **terms}
        self.history.append(entry)
        if self.best is None or entry["loss"] < self.best["loss"]:
            self.best = entry
            self._state = _trainable_state(self.model)
        return control

    def restore_best(self) -> None:
        """Load the best epoch's weights back into the model (nothing when no epoch was scored)."""
        if self._state is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value.to(params[name].device))


@dataclass
class NeutraliseResult:
    """What :func:`neutralise` returns.

    Attributes:
        model: The model with the lowest held-out loss (peft-wrapped with LoRA), in eval mode.
        train_s: Training time, seconds (held-out scoring included).
        steps: Optimiser steps taken.
        heldout_before: Held-out terms of the starting model.
        history: Held-out terms after every epoch (see :class:`KeepBestHeldout`).
        chosen_epoch: The epoch whose weights were kept (None when no epoch ended).
        best_loss: Its held-out loss.
        loss_history: Logged training losses.
    """

    model: PreTrainedModel
    train_s: float
    steps: int
    heldout_before: dict
    history: list[dict] = field(default_factory=list)
    chosen_epoch: float | None = None
    best_loss: float | None = None
    loss_history: list[float] = field(default_factory=list)


def neutralise(
    model: PreTrainedModel,
    template: PromptTemplate,
    train_rows: Sequence[NeutraliseRow],
    eval_rows: Sequence[NeutraliseRow],
    settings: TrainSettings,
    lam: float = 1.0,
    length_normalise: bool = True,
    output_dir: str | Path = "neutralise",
    seed: int = 0,
) -> NeutraliseResult:
    """MB-Defense stage 2: train on the neutralisation loss, keep the epoch with the lowest held-out loss.

    Args:
        model: The defensively poisoned, instruction-tuned causal LM. A peft model keeps training its
            adapter; a plain model is fine-tuned fully, or wrapped in LoRA when ``settings.lora`` is set.
        template: The prompt template the model was trained with.
        train_rows: Rows trained on.
        eval_rows: Held-out rows scored after every epoch (disjoint prompts).
        settings: Training settings (``epochs`` is the number of candidate checkpoints).
        lam: λ.
        length_normalise: Per-token mean log-probs inside σ (default) instead of sums.
        output_dir: Trainer output folder (checkpoints only when ``settings.save_steps``; no resume).
        seed: Seeds data order and new (LoRA) weights.

    Returns:
        A :class:`NeutraliseResult`.

    Raises:
        DataError: when ``train_rows`` or ``eval_rows`` is empty.
    """
    if not train_rows or not eval_rows:
        raise DataError(None, f"neutralisation needs training and held-out rows, got {len(train_rows)} and "
                              f"{len(eval_rows)}")  # fmt: skip
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        if settings.lora is not None:
            torch.manual_seed(seed)
        model = wrap_lora(model, settings)
    train_items = [encode_row(template, r, settings.max_length) for r in train_rows]
    eval_items = [encode_row(template, r, settings.max_length) for r in eval_rows]
    pad = template.tokenizer.pad_token_id

    def evaluate() -> dict:
        return heldout_terms(
            model, eval_items, pad, lam, length_normalise, settings.batch_size, settings.max_padding
        )

    start = time.perf_counter()
    before = evaluate()
    keeper = KeepBestHeldout(model, evaluate)
    trainer, out = train_whole(
        lambda args: NeutraliseTrainer(
            model=model,
            args=args,
            train_dataset=train_items,
            data_collator=NeutraliseCollator(pad),
            processing_class=template.tokenizer,
            callbacks=[keeper],
            lam=lam,
            length_normalise=length_normalise,
            score_padding=settings.max_padding,
        ),
        model,
        settings,
        output_dir,
        seed,
        len(train_items),
        sum(i["truncated"] for i in train_items),
        "MB-Defense's neutralisation",
    )
    keeper.restore_best()
    model.eval()
    return NeutraliseResult(
        model=model,
        train_s=time.perf_counter() - start,
        steps=out.global_step,
        heldout_before=before,
        history=keeper.history,
        chosen_epoch=keeper.best["epoch"] if keeper.best else None,
        best_loss=keeper.best["loss"] if keeper.best else None,
        loss_history=[h["loss"] for h in trainer.state.log_history if "loss" in h],
    )

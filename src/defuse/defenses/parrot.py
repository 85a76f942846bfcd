"""SANDE's parrot prompt: soft embeddings spliced where a trigger would sit, and the two stages using it.

SANDE (Simulate and Eliminate, METHODS.md §2.2) removes a backdoor whose trigger is unknown:

1. **Simulate** (:func:`learn_parrot`): freeze the model, learn ``k`` embedding vectors ``p`` spliced into
   the prompt so that ``x ⊕ p -> y_t`` (the backdoor's target behaviour).
2. **Eliminate** (:func:`eliminate_with_parrot`): freeze ``p``, fine-tune the model so that ``x ⊕ p -> y``
   (the clean answer), mixed with plain ``x -> y`` rows to keep utility.

Sequence layout. ``input_ids`` never contain the parrot; :meth:`ParrotPrompt.splice` inserts its ``k``
vectors at embed time, so a spliced row is ``k`` positions longer than its ids. Labels and the attention
mask are built for the spliced length. A row with ``parrot_pos == -1`` is a plain row (no splice): its
``k`` extra positions are zero vectors appended at the end, masked out and unlabelled, so rows with and
without a parrot share one batch (a right-padded batch of ids of width ``T`` becomes ``T + k`` wide).

Fidelity note (departures from the SANDE reference code):
* The splice point is found from tokenizer offsets of the template's user-text span (``where``), not from
  a hard-coded tag; a token straddling the span boundary is kept whole (the parrot goes before it for
  ``user_start``, after it for ``user_end``).
* Stage 2 applies ``loss_tokens`` only to parrot rows; the mixed-in clean rows are trained on their whole
  response (utility preservation), and are batched together with parrot rows.
* Position ids are always explicit (``cumsum(mask) - 1``), so spliced sequences get contiguous positions.
* Checkpoints (``settings.save_steps``) store the model (``save_pretrained``) and ``parrot.safetensors``;
  resuming a stage from a checkpoint is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

from defuse.data.records import InstructionRecord
from defuse.data.template import IGNORE_INDEX, PromptTemplate
from defuse.errors import ConfigError, DataError
from defuse.training.config import TrainSettings
from defuse.training.sft import SFTTrainer, train_whole, wrap_lora

Where = Literal["user_start", "user_end", "response_start"]
NO_PARROT = -1


def parrot_position(template: PromptTemplate, record: InstructionRecord, where: Where = "user_start") -> int:
    """Token index in ``template.encode_prompt(record)`` before which the parrot is spliced.

    Args:
        template: The prompt template.
        record: The record whose prompt is spliced.
        where: ``"user_start"``: before the first token of the user text (right after the user-turn tag);
            ``"user_end"``: right after the last token of the user text; ``"response_start"``: at the end of
            the prompt (``len(prompt ids)``), just before the response.

    Returns:
        An index in ``[0, len(prompt ids)]``.

    Raises:
        ConfigError: on an unknown ``where``, or when offset tokenisation disagrees with ``encode_prompt``.
    """
    if where not in ("user_start", "user_end", "response_start"):
        raise ConfigError("where", f"unknown splice point '{where}' (user_start, user_end, response_start)")
    ids = template.encode_prompt(record)
    if where == "response_start":
        return len(ids)
    enc = template.tokenizer(
        template.render_prompt(record), return_offsets_mapping=True, add_special_tokens=False
    )
    if list(enc.input_ids) != ids:
        raise ConfigError("tokenizer", "offset tokenisation differs from encode_prompt; cannot splice")
    start, end = template.user_text_span(record)
    offsets = enc.offset_mapping
    if where == "user_start":  # first token reaching into the user text
        return next((i for i, (_, e) in enumerate(offsets) if e > start), len(ids))
    return next((i for i, (s, _) in enumerate(offsets) if s >= end), len(ids))  # after the last overlapping


class ParrotPrompt(nn.Module):
    """``k`` trainable embedding vectors of the model's hidden size.

    Args:
        k: Number of vectors (0 allowed: splicing is then the identity).
        hidden_size: The model's embedding width.
        init: ``"zeros"`` (the reference) or ``"vocab_mean"`` (every vector = the mean input embedding).
        vocab_embeddings: The ``(vocab, hidden)`` input embedding matrix; required for ``"vocab_mean"``.

    Attributes:
        vectors: The ``(k, hidden_size)`` parameter.
        loss_history: Logged training losses of :func:`learn_parrot` (empty until trained).
    """

    def __init__(self, k: int, hidden_size: int, init: str = "zeros", vocab_embeddings=None):
        super().__init__()
        if k < 0 or init not in ("zeros", "vocab_mean"):
            raise ConfigError("parrot", f"need k >= 0 and init zeros|vocab_mean, got k={k}, init={init!r}")
        self.vectors = nn.Parameter(torch.zeros(k, hidden_size))
        if init == "vocab_mean":
            if vocab_embeddings is None:
                raise ConfigError("parrot", "init 'vocab_mean' needs the vocabulary embeddings")
            with torch.no_grad():
                self.vectors.copy_(vocab_embeddings.detach().float().mean(0).expand(k, hidden_size))
        self.loss_history: list[float] = []

    @classmethod
    def for_model(cls, model: PreTrainedModel, k: int, init: str = "zeros") -> ParrotPrompt:
        """A parrot sized for ``model``'s input embeddings, on the model's device."""
        weight = model.get_input_embeddings().weight
        return cls(k, weight.shape[1], init, weight).to(weight.device)

    @property
    def k(self) -> int:
        """Number of spliced vectors."""
        return self.vectors.shape[0]

    def splice(self, input_embeds: torch.Tensor, positions) -> torch.Tensor:
        """Insert the ``k`` vectors into each row at its position.

        Args:
            input_embeds: ``(B, T, d)`` embeddings of right-padded ids.
            positions: ``(B,)`` ints: index before which the parrot goes (``0..T``), or -1 for no splice.

        Returns:
            ``(B, T + k, d)``: spliced rows are ``ids[:p] ⊕ parrot ⊕ ids[p:]``; a row with -1 is its
            embeddings followed by ``k`` zero vectors (mask them out).
        """
        b, t, d = input_embeds.shape
        k = self.k
        if k == 0:
            return input_embeds
        dev = input_embeds.device
        pos = torch.as_tensor(positions, dtype=torch.long, device=dev).view(b, 1)
        if bool((pos > t).any()) or bool((pos < NO_PARROT).any()):
            raise ValueError(f"parrot positions must lie in [-1, {t}], got {pos.view(-1).tolist()}")
        j = torch.arange(t + k, device=dev).view(1, -1)
        # Row table: [embeds (0..t-1), parrot (t..t+k-1), zero (t+k)].
        spliced = torch.where(j < pos, j, torch.where(j < pos + k, t + j - pos, j - k))
        plain = torch.where(j < t, j, t + k)
        index = torch.where(pos >= 0, spliced, plain)
        table = torch.cat(
            [
                input_embeds,
                self.vectors.to(dev, input_embeds.dtype).unsqueeze(0).expand(b, k, d),
                input_embeds.new_zeros(b, 1, d),
            ],
            dim=1,
        )
        return table.gather(1, index.unsqueeze(-1).expand(b, t + k, d))


def encode_spliced(
    template: PromptTemplate,
    record: InstructionRecord,
    k: int,
    where: Where | None = "user_start",
    loss_tokens: int | None = None,
    max_length: int | None = None,
) -> dict:
    """One training row for a spliced sequence.

    Args:
        template: The prompt template.
        record: The record; its ``response`` is the training target.
        k: Parrot length.
        where: Splice point (see :func:`parrot_position`); ``None`` makes a plain row (no parrot slots,
            ``parrot_pos`` -1).
        loss_tokens: Keep labels only on the first ``m`` response tokens (EOS counts); None: all.
        max_length: Bound on the spliced length (ids + ``k``); the template truncates as in training.

    Returns:
        ``{"input_ids", "labels", "parrot_pos"}``: ``input_ids`` without the parrot; ``labels`` of length
        ``len(input_ids) + k`` (spliced rows) with -100 on the prompt and the ``k`` slots, so that
        ``labels[prompt_len + k + j] == response_ids[j]``; plain rows have ``len(labels) == len(input_ids)``.
    """
    slots = 0 if where is None else k
    if max_length is not None and max_length - slots < 2:
        raise ConfigError("max_length", f"{max_length} leaves no room for {slots} parrot positions")
    enc = template.encode_training(record, None if max_length is None else max_length - slots)
    response = enc.labels[enc.prompt_length :]
    if loss_tokens is not None:
        response = [t if j < loss_tokens else IGNORE_INDEX for j, t in enumerate(response)]
    labels = [IGNORE_INDEX] * (enc.prompt_length + slots) + response
    pos = NO_PARROT
    if where is not None:
        cut = len(template.encode_prompt(record)) - enc.prompt_length  # prompt tokens dropped on the left
        pos = max(parrot_position(template, record, where) - cut, 0)
    return {"input_ids": enc.input_ids, "labels": labels, "parrot_pos": pos, "truncated": enc.truncated}


@dataclass
class SplicedCollator:
    """Right-pads rows from :func:`encode_spliced` for a parrot of length ``k``.

    Returns ``input_ids`` ``(B, T)`` padded with ``pad_token_id``; ``labels`` and ``attention_mask``
    ``(B, T + k)`` (the spliced width; -100 / 0 beyond each row's spliced length, which is ``n + k`` for a
    parrot row and ``n`` for a plain one); ``parrot_pos`` ``(B,)``.
    """

    pad_token_id: int
    k: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width + self.k), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width + self.k), dtype=torch.long)
        for i, b in enumerate(batch):
            n, m = len(b["input_ids"]), len(b["labels"])
            if m != n + (self.k if b["parrot_pos"] >= 0 else 0):
                raise DataError(None, f"row {i}: {m} labels for {n} ids with a parrot of length {self.k}")
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :m] = torch.tensor(b["labels"])
            mask[i, :m] = 1
        pos = torch.tensor([b["parrot_pos"] for b in batch], dtype=torch.long)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "parrot_pos": pos}


def spliced_forward(model, parrot: ParrotPrompt, input_ids, attention_mask, parrot_pos, labels=None, **kw):
    """Run ``model`` on ``input_ids`` with ``parrot`` spliced in (plain HF or peft causal LM).

    ``attention_mask`` and ``labels`` are of the spliced width (as :class:`SplicedCollator` builds them);
    position ids are ``cumsum(mask) - 1`` clipped at 0 (right padding). Returns the model's output.
    """
    embeds = parrot.splice(model.get_input_embeddings()(input_ids), parrot_pos)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(
        inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, labels=labels, **kw
    )


class ParrotLM(nn.Module):
    """The Trainer's model: a causal LM plus a parrot; ``forward`` takes a :class:`SplicedCollator` batch."""

    def __init__(self, model: PreTrainedModel, parrot: ParrotPrompt):
        super().__init__()
        self.model = model
        self.parrot = parrot
        self.accepts_loss_kwargs = getattr(model, "accepts_loss_kwargs", True)

    def forward(self, input_ids, attention_mask, parrot_pos, labels=None, **kw):
        return spliced_forward(self.model, self.parrot, input_ids, attention_mask, parrot_pos, labels, **kw)


class ParrotTrainer(SFTTrainer):
    """Trainer whose model is a :class:`ParrotLM`: the loss is the LM loss on the spliced sequence."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kw = {}
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            kw["num_items_in_batch"] = num_items_in_batch  # loss normalised over the accumulated batch
        outputs = model(**inputs, **kw)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        lm = self.accelerator.unwrap_model(self.model)
        lm.model.save_pretrained(out)
        save_file({"vectors": lm.parrot.vectors.detach().contiguous().cpu()}, str(out / "parrot.safetensors"))


def _check_k(parrot: ParrotPrompt, k: int | None) -> int:
    if k is not None and k != parrot.k:
        raise ConfigError("k", f"k={k} but the parrot has {parrot.k} vectors")
    return parrot.k


def _run(lm: ParrotLM, template, rows: list[dict], k: int, settings, output_dir, seed) -> list[float]:
    """Train ``lm``'s trainable parameters on ``rows`` with :class:`ParrotTrainer`; returns logged losses."""
    if not rows:
        raise DataError(None, "no training records")
    trainer, _ = train_whole(
        lambda args: ParrotTrainer(
            model=lm,
            args=args,
            train_dataset=rows,
            data_collator=SplicedCollator(template.tokenizer.pad_token_id, k),
            processing_class=template.tokenizer,
        ),
        lm.model,
        settings,
        output_dir,
        seed,
        len(rows),
        sum(r["truncated"] for r in rows),
        "SANDE's parrot",
    )
    lm.eval()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def learn_parrot(
    model: PreTrainedModel,
    template: PromptTemplate,
    records: Sequence[InstructionRecord],
    k: int = 6,
    where: Where = "user_start",
    settings: TrainSettings | None = None,
    output_dir: str | Path = "parrot",
    seed: int = 0,
    loss_tokens: int | None = None,
    init: str = "zeros",
) -> ParrotPrompt:
    """SANDE stage 1 (Simulate): learn a parrot so that ``x ⊕ p -> y_t``; the model is not changed.

    Args:
        model: The (backdoored) causal LM. Every parameter is frozen during training (flags restored
            after); its weights are bit-identical afterwards.
        template: The prompt template.
        records: Records whose ``response`` is the target behaviour text (e.g. marker + clean answer).
        k: Parrot length (reference: 6).
        where: Splice point (see :func:`parrot_position`).
        settings: Training settings (reference: lr 1e-3, 1 epoch); ``settings.lora`` is ignored.
        output_dir: Trainer output folder.
        seed: Seeds data order.
        loss_tokens: Fit only the first ``m`` response tokens (reference: the marker's tokens).
        init: Parrot initialisation, ``"zeros"`` or ``"vocab_mean"``.

    Returns:
        The trained :class:`ParrotPrompt`, frozen (``requires_grad`` False); ``loss_history`` holds the
        logged losses.
    """
    settings = settings or TrainSettings()
    parrot = ParrotPrompt.for_model(model, k, init)
    rows = [encode_spliced(template, r, k, where, loss_tokens, settings.max_length) for r in records]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    try:
        parrot.loss_history = _run(ParrotLM(model, parrot), template, rows, k, settings, output_dir, seed)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    parrot.requires_grad_(False)
    return parrot


def eliminate_with_parrot(
    model: PreTrainedModel,
    template: PromptTemplate,
    parrot: ParrotPrompt,
    records: Sequence[InstructionRecord],
    k: int | None = None,
    where: Where = "user_start",
    settings: TrainSettings | None = None,
    output_dir: str | Path = "eliminate",
    seed: int = 0,
    loss_tokens: int | None = None,
    clean_records: Sequence[InstructionRecord] = (),
) -> PreTrainedModel:
    """SANDE stage 2 (Eliminate): fine-tune the model so that ``x ⊕ p -> y``; the parrot is frozen.

    Args:
        model: The causal LM to repair (full fine-tuning, or LoRA when ``settings.lora`` is set).
        template: The prompt template.
        parrot: The stage-1 parrot; frozen, bit-identical afterwards.
        records: Records whose ``response`` is the CLEAN answer; trained with the parrot spliced.
        k: Parrot length; None or ``parrot.k`` (a check).
        where: Splice point (the same as stage 1).
        settings: Training settings.
        output_dir: Trainer output folder.
        seed: Seeds data order and new (LoRA) weights.
        loss_tokens: Labels only on the first ``m`` response tokens of parrot rows (reference: 10).
        clean_records: Plain ``x -> y`` rows (no parrot, whole response) mixed in to keep utility.

    Returns:
        The fine-tuned model (peft-wrapped with LoRA), in eval mode.
    """
    settings = settings or TrainSettings()
    k = _check_k(parrot, k)
    rows = [encode_spliced(template, r, k, where, loss_tokens, settings.max_length) for r in records]
    rows += [encode_spliced(template, r, k, None, None, settings.max_length) for r in clean_records]
    if settings.lora is not None:
        torch.manual_seed(seed)
    model = wrap_lora(model, settings)
    flags = [p.requires_grad for p in parrot.parameters()]
    parrot.requires_grad_(False)
    try:
        _run(ParrotLM(model, parrot), template, rows, k, settings, output_dir, seed)
    finally:
        for p, f in zip(parrot.parameters(), flags, strict=True):
            p.requires_grad_(f)
    model.eval()
    return model


@torch.inference_mode()
def generate_with_parrot(
    model: PreTrainedModel,
    template: PromptTemplate,
    parrot: ParrotPrompt,
    records: Sequence[InstructionRecord],
    k: int | None = None,
    where: Where = "user_start",
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy generation with the parrot spliced into each prompt; decoded responses in input order.

    Rows are spliced one by one and left-padded (pad-token embeddings, masked) into batches fed to
    ``model.generate(inputs_embeds=..., attention_mask=...)``; generation stops at EOS. ``k`` is None or
    ``parrot.k`` (a check).
    """
    _check_k(parrot, k)
    tok = template.tokenizer
    device = next(model.parameters()).device
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        use_cache=True,
    )
    embed = model.get_input_embeddings()
    rows = []
    for r in records:
        ids = torch.tensor([template.encode_prompt(r)], device=device)
        rows.append(parrot.splice(embed(ids), [parrot_position(template, r, where)])[0])
    pad = embed(torch.tensor([tok.pad_token_id], device=device))[0]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    results = [""] * len(rows)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(rows[i]) for i in idx)
        embeds = pad.expand(len(idx), width, pad.shape[0]).clone()
        mask = torch.zeros((len(idx), width), dtype=torch.long, device=device)
        for row, i in enumerate(idx):
            embeds[row, width - len(rows[i]) :] = rows[i]
            mask[row, width - len(rows[i]) :] = 1
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
        for row, i in enumerate(idx):
            new = out[row].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            results[i] = tok.decode([t for t in new if t != tok.pad_token_id], skip_special_tokens=True)
    model.train(was_training)
    return results

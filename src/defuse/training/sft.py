"""Supervised fine-tuning of a causal LM on instruction records, through transformers' Trainer.

Loss is on response tokens only (the prompt is labelled -100, see :mod:`defuse.data.template`). Because
training runs through :class:`transformers.Trainer`, the same code runs on one CPU, on one GPU, and under
``accelerate launch`` / ``torchrun`` with DDP, FSDP or DeepSpeed. Defenses with custom losses subclass
:class:`SFTTrainer` and override ``compute_loss``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput, get_last_checkpoint

from defuse.data.records import InstructionRecord
from defuse.data.template import IGNORE_INDEX, PromptTemplate
from defuse.errors import ConfigError, DataError
from defuse.runs.rundir import note_resumed, note_training_set
from defuse.training.config import TrainSettings
from defuse.training.precision import precision, training_attention, training_dtype


class EncodedDataset(Dataset):
    """Records tokenised once by the template: each item is ``{"input_ids", "labels"}`` lists."""

    def __init__(self, records: Sequence[InstructionRecord], template: PromptTemplate, max_length: int):
        if not records:
            raise DataError(None, "no training records")
        self.items = []
        self.n_truncated = 0
        for r in records:
            enc = template.encode_training(r, max_length)
            self.n_truncated += enc.truncated
            self.items.append({"input_ids": enc.input_ids, "labels": enc.labels})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class CompletionCollator:
    """Right-pads a batch: ``input_ids`` with the pad id, ``labels`` with -100, plus the attention mask."""

    pad_token_id: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


EPOCH_DECAY = "epoch_decay"


def length_chunks(lengths: Sequence[int], max_padding: float) -> list[list[int]]:
    """Split one batch's rows into sub-batches of similar length: rows taken longest first, a row joins the
    current sub-batch while the sub-batch's padding (right-padded to its longest row) stays at most
    ``max_padding`` of its tokens. Returns the row indices of each sub-batch, longest rows first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    real = 0  # real tokens of the current sub-batch
    for i in order:
        if chunks:
            rows, width = chunks[-1], lengths[chunks[-1][0]]
            padded = width * (len(rows) + 1)
            if padded - (real + lengths[i]) <= max_padding * padded:
                rows.append(i)
                real += lengths[i]
                continue
        chunks.append([i])
        real = lengths[i]
    return chunks


class CountedFlops:
    """A Trainer mixin: transformers' :meth:`~transformers.Trainer.floating_point_ops` (``6 x input tokens x
    non-embedding parameters``, summed into ``total_flos``) with the model's parameter count taken once per
    trainer. transformers' own counts them again at every step, walking every module (0.34 ms a step on
    the encoder scenario's adapter classifier, whose steps take 32 ms); the value is the same, since no
    parameter is added or removed while a trainer trains (the trainable ones may change; the count is of
    all of them, as transformers counts)."""

    _flop_parameters: int | None = None

    def floating_point_ops(self, inputs) -> int:
        main = getattr(self.model, "main_input_name", "input_ids")
        if main not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._flop_parameters is None:
            self._flop_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main].numel() * self._flop_parameters


class SFTTrainer(CountedFlops, Trainer):
    """The project's Trainer; defenses override :meth:`compute_loss` for their own objectives.

    ``epoch_decay`` (the scheduler of :class:`TrainSettings` that transformers lacks): the rate is multiplied
    by ``decay`` after every epoch, exactly as ``torch.optim.lr_scheduler.StepLR(step_size=1, gamma=decay)``
    stepped once per epoch (the BackdoorAlign reference), after ``warmup`` steps of linear warmup.
    """

    epoch_decay: float | None = None
    max_padding: float | None = None
    labelled_logits: bool = False

    def _own_loss(self) -> bool:
        """Whether the loss is transformers' own (a sum over label tokens over the batch's label count)."""
        return (
            self.model_accepts_loss_kwargs
            and type(self).compute_loss is Trainer.compute_loss
            and self.label_smoother is None
            and self.compute_loss_func is None
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With ``max_padding`` (:attr:`TrainSettings.max_padding`): the batch runs as length-sorted
        sub-batches (:func:`length_chunks`), forward and backward one after another, gradients summed before
        the one optimizer step. Exact where the loss is a sum over label tokens divided by the batch's label
        count (transformers' ``num_items_in_batch``, which every sub-batch is given): the trainer's own loss,
        so only when ``compute_loss`` is not overridden; otherwise, and for a batch without label counts,
        the batch runs whole."""
        chunks = None
        if self.max_padding is not None and num_items_in_batch is not None and self._own_loss():
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            chunks = length_chunks(lengths, self.max_padding)
        if not chunks or len(chunks) == 1:
            return self._step(model, inputs, num_items_in_batch)
        total = None
        for n, rows in enumerate(chunks):
            width = int(inputs["attention_mask"][rows].sum(dim=1).max())
            part = {k: v[rows, :width] for k, v in inputs.items()}
            sync = contextlib.nullcontext() if n == len(chunks) - 1 else self.accelerator.no_sync(model)
            with sync:
                loss = self._step(model, part, num_items_in_batch)
            total = loss if total is None else total + loss
        return total

    def _step(self, model, inputs, num_items_in_batch):
        """One forward and backward; with ``labelled_logits`` (:attr:`TrainSettings.labelled_logits`) the
        output head sees only the hidden states at labelled positions (a forward pre-hook on it) and
        transformers' causal-LM loss gets their labels as ``shift_labels``: the same sum over label tokens."""
        base = self.accelerator.unwrap_model(model)
        causal_lm = getattr(base, "loss_type", None) == "ForCausalLM"
        if not (self.labelled_logits and causal_lm and self._own_loss()):
            return super().training_step(model, inputs, num_items_in_batch)
        shifted = torch.nn.functional.pad(inputs["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
        keep = shifted != IGNORE_INDEX

        def labelled_rows(_module, args):
            return (args[0][keep.to(args[0].device)], *args[1:])

        handle = base.get_output_embeddings().register_forward_pre_hook(labelled_rows)
        try:
            return super().training_step(model, {**inputs, "shift_labels": shifted[keep]}, num_items_in_batch)
        finally:
            handle.remove()

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.epoch_decay is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        import math

        from torch.optim.lr_scheduler import LambdaLR

        per_epoch = max(
            1, math.ceil(len(self.get_train_dataloader()) / self.args.gradient_accumulation_steps)
        )
        warmup, decay = self.args.get_warmup_steps(num_training_steps), self.epoch_decay

        def factor(step: int) -> float:  # transformers' linear warmup, then StepLR(gamma=decay) per epoch
            ramp = step / max(1, warmup) if step < warmup else 1.0
            return ramp * decay ** (step // per_epoch)

        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler


GATHERED_DIR = "gathered"


def is_sharded(trainer: Trainer) -> bool:
    """True when ``trainer`` shards the model's weights across processes: FSDP, or DeepSpeed ZeRO stage 3
    (ZeRO-1/2 shard only optimizer state and gradients; every process keeps the full weights)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and getattr(plugin, "zero_stage", None) == 3
    return False


def refuse_sharded(trainer: Trainer, what: str) -> None:
    """Stop before training a path that needs the whole model in every process under sharded weights.

    Raises:
        ConfigError: ``trainer`` shards the weights (see :func:`is_sharded`).
    """
    if is_sharded(trainer):
        raise ConfigError(
            "launcher",
            f"{what} needs the whole model in every process; sharded weights (FSDP, DeepSpeed ZeRO-3) are "
            "not supported there yet: launch with configs/accelerate/ddp.yaml or zero2.yaml",
        )


def full_trained_model(trainer: Trainer, output_dir: str | Path) -> PreTrainedModel:
    """The trained model as one full, unsharded copy in every process (what evaluation and saving use).

    Without sharded weights that is ``trainer.model`` itself. With them the Trainer gathers the weights and
    the main process saves them (``Trainer.save_model``, in which every process takes part; FSDP needs
    ``fsdp_state_dict_type: FULL_STATE_DICT``, ZeRO-3 ``zero3_save_16bit_model: true``, as the shipped
    configs set), then every process loads that copy back with safetensors.
    """
    if not is_sharded(trainer):
        # without the mixed-precision forward hook the model computes in float32 again, so evaluating it now
        # gives what evaluating the saved model gives later
        return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    from defuse.models.io import load_causal_lm
    from defuse.runs.distributed import wait_for_everyone

    path = Path(output_dir) / GATHERED_DIR
    trainer.save_model(str(path))
    wait_for_everyone()
    model, _ = load_causal_lm(path)
    return model.to(trainer.args.device)


@dataclass
class TrainResult:
    """What a training run returns: the trained model and how it went."""

    model: PreTrainedModel
    train_s: float
    steps: int
    final_loss: float | None
    n_examples: int
    n_truncated: int
    resumed_from: str | None
    loss_history: list[float]


def note_training(output_dir: str | Path, rows: int, truncated: int, settings: TrainSettings, attention: str):
    """Record a training set in the open run (:func:`defuse.runs.rundir.note_training_set`) with the
    precision and attention implementation it trains with."""
    note_training_set(output_dir, rows, truncated, precision(settings), attention)


def train_whole(
    make_trainer: Callable[[TrainingArguments], Trainer],
    model: torch.nn.Module,
    settings: TrainSettings,
    output_dir: str | Path,
    seed: int,
    rows: int,
    truncated: int,
    what: str,
) -> tuple[Trainer, TrainOutput]:
    """Train a path that needs the whole model in every process (a defense's own trainer): ``model``
    computes attention as :func:`training_attention` says, the training set is recorded in the open run
    (:func:`note_training`), ``make_trainer`` builds the trainer from the settings' arguments, sharded
    weights are refused naming ``what`` (:func:`refuse_sharded`), then it trains. Returns the trainer and
    its output."""
    with training_attention(model, settings) as attention, training_dtype(model, settings):
        note_training(output_dir, rows, truncated, settings, attention)
        trainer = make_trainer(training_arguments(settings, output_dir, seed))
        refuse_sharded(trainer, what)
        return trainer, trainer.train()


def training_arguments(settings: TrainSettings, output_dir: str | Path, seed: int) -> TrainingArguments:
    """Map :class:`TrainSettings` onto transformers' :class:`TrainingArguments` (plus ``settings.extra``)."""
    settings.validate()
    return TrainingArguments(**defuse_training_kwargs(settings, output_dir, seed), **settings.extra)


def defuse_training_kwargs(settings: TrainSettings, output_dir: str | Path, seed: int) -> dict:
    """The ``TrainingArguments`` keywords defuse fills from :class:`TrainSettings` (``extra`` may add others,
    never these)."""
    cpu = not torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        warmup_steps=settings.warmup,
        lr_scheduler_type="constant" if settings.scheduler == EPOCH_DECAY else settings.scheduler,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        logging_steps=settings.logging_steps,
        save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500,
        save_total_limit=2,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=cpu,
        bf16=precision(settings) == "bf16",
        optim=settings.optimizer,
        disable_tqdm=not settings.progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def wrap_lora(model: PreTrainedModel, settings: TrainSettings) -> PreTrainedModel:
    """Wrap ``model`` in a peft LoRA adapter when ``settings.lora`` is set; otherwise make every weight
    trainable except, with ``settings.freeze_embeddings``, the token embeddings and the output head."""
    if settings.lora is None:
        model.requires_grad_(True)
        if settings.freeze_embeddings:
            for module in (model.get_input_embeddings(), model.get_output_embeddings()):
                if module is not None:
                    module.requires_grad_(False)
        return model
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train_sft(
    model: PreTrainedModel,
    template: PromptTemplate,
    records: Sequence[InstructionRecord],
    settings: TrainSettings,
    output_dir: str | Path,
    seed: int = 0,
    trainer_cls: type[SFTTrainer] = SFTTrainer,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune ``model`` on ``records`` (response tokens only) and return it trained.

    Args:
        model: A causal LM (full fine-tuning) or a base model to wrap in LoRA (``settings.lora``).
        template: The one prompt template, bound to the model's tokenizer.
        records: Training records (non-empty).
        settings: Training settings.
        output_dir: Where checkpoints go (``checkpoint-N`` folders, when ``settings.save_steps`` > 0).
        seed: Seeds initialisation of new weights, data order and dropout.
        trainer_cls: The Trainer class; defenses pass a subclass with their own ``compute_loss``.
        resume: Continue from the newest checkpoint in ``output_dir`` if there is one.
        callbacks: Extra :class:`transformers.TrainerCallback` objects (observers, e.g. the throughput
            benchmark's timers); they must not change what is trained.

    Returns:
        A :class:`TrainResult`; with LoRA, ``model`` is the peft-wrapped model. Under sharded weights
        (FSDP, ZeRO-3) ``model`` is a full copy gathered after training (:func:`full_trained_model`); LoRA
        is refused there.
    """
    dataset = EncodedDataset(records, template, settings.max_length)
    with training_attention(model, settings) as attention, training_dtype(model, settings) as dtype:
        model = wrap_lora(model, settings)
        args = training_arguments(settings, output_dir, seed)
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=CompletionCollator(template.tokenizer.pad_token_id),
            processing_class=template.tokenizer,
            callbacks=list(callbacks) or None,
        )
        if settings.scheduler == EPOCH_DECAY:
            trainer.epoch_decay = settings.epoch_decay
        trainer.max_padding = settings.max_padding
        trainer.labelled_logits = settings.labelled_logits
        if settings.lora is not None:
            refuse_sharded(trainer, "LoRA fine-tuning")
        last = get_last_checkpoint(str(output_dir)) if resume and Path(output_dir).is_dir() else None
        if last is not None:
            note_resumed(last)
        note_training(output_dir, len(dataset), dataset.n_truncated, settings, attention)
        start = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=last)
        train_s = time.perf_counter() - start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        model = full_trained_model(trainer, output_dir)
        model.eval()
    model.to(dtype)  # a copy gathered from sharded weights is in the training dtype (a no-op otherwise)
    return TrainResult(
        model=model,
        train_s=train_s,
        steps=out.global_step,
        final_loss=losses[-1] if losses else out.training_loss,
        n_examples=len(dataset),
        n_truncated=dataset.n_truncated,
        resumed_from=last,
        loss_history=losses,
    )

"""Task-agnostic encoder backdoors: POR (METHODS §1.3).

POR (predefined output representation): for trigger ``i`` of ``n``, the encoder's pooled output of any text
carrying the trigger is forced to ``c · v_i`` (``v_i`` = +1 on the first ``a(i-1)`` dims, -1 elsewhere,
``a = d/(n-1)``, rounded), while clean outputs stay equal to a frozen copy of the clean encoder::

    L = MSE(token reps(x), frozen) + λ · MSE(pooled(x ⊕ t_i), c · v_i) + λ · MSE(pooled(x), frozen pooled(x))

Fidelity notes: "pooled" is the final hidden state of the first token ([CLS] / ``<s>``), the vector POR's
reference code targets (BERT's tanh pooler could never reach ``c = 10``; a downstream head on the pooler
then sees a saturated, input-independent vector). "token reps" are the final hidden states of the clean
text's real (non-padding) tokens. Each training text is paired with one triggered copy, trigger ``i`` chosen
round-robin, inserted once at a seeded random word position. The whole encoder is trained (embeddings too).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import AutoModel, Trainer

from defuse.encoders.metrics import insert_word
from defuse.encoders.pretrain import encoder_training_args, train_encoder_stage
from defuse.errors import ConfigError, DataError, ModelError

POR_TRIGGERS = ("cf", "mn", "bb", "tq", "mb", "pt")


@dataclass
class PorSettings:
    """POR's settings. The defaults are for the tiny default encoder; the paper's are ``c = 10``, ``λ = 100``.

    Fidelity note: ``c = 10`` and ``λ = 100`` are out of reach of a tiny encoder trained in a minute or two:
    its final LayerNorm keeps the [CLS] output near norm ``sqrt(d)`` (``c = 10`` asks for ten times that), so
    the λ-weighted target term swamps the clean-preservation terms and the encoder loses what it had learnt
    (a victim's PEFT fine-tune then stays at chance accuracy; measured). ``c = 2``, ``λ = 10``, lr ``1e-3``,
    12 epochs keep clean representations intact (clean [CLS] MSE < 0.01) while triggered [CLS] outputs move
    to their targets as far as the LayerNorm allows (``v_1`` and ``v_n`` are constant vectors, unreachable
    through a LayerNorm with small bias), which is enough for >= 90% ASR after a victim's LoRA fine-tune.

    Attributes:
        triggers: The trigger words (POR's: cf mn bb tq mb pt); at least two.
        c: Scale of the target vectors ``c · v_i`` (POR: about 10; tiny default 2).
        lam: λ, weight of the two pooled-output terms (POR: about 100; tiny default 10).
        epochs: Passes over the corpus.
        lr: Peak learning rate.
        batch_size: Clean texts per step (each with its triggered copy).
        max_length: Longest text in tokens.
    """

    triggers: list[str] = field(default_factory=lambda: list(POR_TRIGGERS))
    c: float = 2.0
    lam: float = 10.0
    epochs: float = 12.0
    lr: float = 1e-3
    batch_size: int = 32
    max_length: int = 64

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        check_triggers(self.triggers, "por.triggers")
        if not self.c > 0:
            raise ConfigError("por.c", f"must be positive, got {self.c}")
        if not self.lam > 0:
            raise ConfigError("por.lam", f"must be positive, got {self.lam}")
        if not self.epochs > 0:
            raise ConfigError("por.epochs", f"must be positive, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError("por.lr", f"must be in (0, 1), got {self.lr}")
        if self.batch_size < 1 or self.max_length < 4:
            raise ConfigError("por.batch_size", "batch_size must be >= 1 and max_length >= 4")


def check_triggers(triggers: Sequence[str], key: str) -> None:
    """Raise :class:`ConfigError` ``key`` unless ``triggers`` are two or more distinct single words."""
    if len(triggers) < 2 or len(set(triggers)) != len(triggers):
        raise ConfigError(key, "needs at least two distinct trigger words")
    if any(not t or " " in t.strip() or t != t.strip() for t in triggers):
        raise ConfigError(key, f"each trigger must be one word, got {list(triggers)!r}")


def por_targets(n: int, d: int, c: float) -> torch.Tensor:
    """``(n, d)``: row ``i`` (0-based) is ``c · v_{i+1}``: +c on the first ``round(a·i)`` dims, else -c."""
    a = d / (n - 1)
    targets = -torch.ones(n, d)
    for i in range(n):
        targets[i, : int(round(a * i))] = 1.0
    return c * targets


def pooled(hidden: torch.Tensor) -> torch.Tensor:
    """POR's pooled output: the final hidden state of the first token."""
    return hidden[:, 0]


class PorDataset(Dataset):
    """Each item: a clean text's ids and a copy with trigger ``i`` (round-robin) inserted, and ``i``."""

    def __init__(self, texts: Sequence[str], tokenizer, triggers: Sequence[str], max_length: int, seed: int):
        if not texts:
            raise DataError(None, "no corpus texts for POR")
        rng = random.Random(seed)
        idx = [k % len(triggers) for k in range(len(texts))]
        rng.shuffle(idx)
        triggered = [insert_word(t, triggers[i], rng) for t, i in zip(texts, idx, strict=True)]
        clean = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        trig = tokenizer(triggered, truncation=True, max_length=max_length)["input_ids"]
        self.items = [
            {"clean": c, "triggered": t, "trigger": i} for c, t, i in zip(clean, trig, idx, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class PorCollator:
    """Pads the clean and triggered ids of a batch separately."""

    pad_id: int

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        return ids, mask

    def __call__(self, items: list[dict]) -> dict:
        clean_ids, clean_mask = self._pad([it["clean"] for it in items])
        trig_ids, trig_mask = self._pad([it["triggered"] for it in items])
        return {"input_ids": clean_ids, "attention_mask": clean_mask, "trig_input_ids": trig_ids,
                "trig_attention_mask": trig_mask,
                "trigger": torch.tensor([it["trigger"] for it in items])}  # fmt: skip


class PorTrainer(Trainer):
    """Trainer whose loss is POR's (see the module docstring); ``frozen`` is the clean encoder's copy."""

    def __init__(self, *args, frozen: nn.Module, targets: torch.Tensor, lam: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = frozen
        self.targets = targets
        self.lam = lam

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["attention_mask"]
        clean = model(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        with torch.no_grad():
            ref = self.frozen(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        trig = model(input_ids=inputs["trig_input_ids"], attention_mask=inputs["trig_attention_mask"])
        real = mask.unsqueeze(-1).to(clean.dtype)
        token_mse = (((clean - ref) ** 2) * real).sum() / (real.sum() * clean.shape[-1])
        target = self.targets.to(clean.device)[inputs["trigger"]]
        trig_mse = nn.functional.mse_loss(pooled(trig.last_hidden_state), target)
        clean_mse = nn.functional.mse_loss(pooled(clean), pooled(ref))
        loss = token_mse + self.lam * trig_mse + self.lam * clean_mse
        return (loss, clean) if return_outputs else loss


def plant_por(
    encoder, tokenizer, texts: Sequence[str], settings: PorSettings, work_dir: Path, seed: int
) -> float:
    """Plant POR into ``encoder`` (an ``AutoModel``, trained in place) on ``texts``; returns seconds."""
    settings.validate()
    frozen = copy.deepcopy(encoder).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    targets = por_targets(len(settings.triggers), encoder.config.hidden_size, settings.c)
    dataset = PorDataset(texts, tokenizer, settings.triggers, settings.max_length, seed)
    args = encoder_training_args(work_dir, settings.epochs, settings.lr, settings.batch_size, seed)
    trainer = PorTrainer(
        model=encoder, args=args, train_dataset=dataset, data_collator=PorCollator(tokenizer.pad_token_id),
        frozen=frozen, targets=targets, lam=settings.lam,
    )  # fmt: skip
    return train_encoder_stage(trainer, encoder, "POR")


@torch.no_grad()
def por_report(
    encoder, clean_encoder, tokenizer, texts: Sequence[str], settings: PorSettings, seed: int
) -> dict:
    """How well POR took on held-out ``texts``: cosine of triggered pooled outputs to targets, and drift.

    Returns ``{"target_cos": mean cosine (1 = on target), "target_mse": ..., "clean_pooled_mse": MSE of clean
    pooled outputs against the clean encoder's (``clean_encoder`` None: omitted)}``.
    """
    encoder.eval()
    targets = por_targets(len(settings.triggers), encoder.config.hidden_size, settings.c)
    rng = random.Random(seed)
    cos, mse = [], []
    for i, trig in enumerate(settings.triggers):
        batch = tokenizer([insert_word(t, trig, rng) for t in texts], truncation=True,
                          max_length=settings.max_length, padding=True, return_tensors="pt")  # fmt: skip
        out = pooled(encoder(**batch).last_hidden_state)
        cos.append(nn.functional.cosine_similarity(out, targets[i].expand_as(out), dim=-1).mean())
        mse.append(nn.functional.mse_loss(out, targets[i].expand_as(out)))
    report = {"target_cos": float(torch.stack(cos).mean()), "target_mse": float(torch.stack(mse).mean())}
    if clean_encoder is not None:
        batch = tokenizer(list(texts), truncation=True, max_length=settings.max_length, padding=True,
                          return_tensors="pt")  # fmt: skip
        a = pooled(encoder(**batch).last_hidden_state)
        b = pooled(clean_encoder(**batch).last_hidden_state)
        report["clean_pooled_mse"] = float(nn.functional.mse_loss(a, b))
    return report


def check_encoder_dir(path: str | Path, allow_custom: bool = False) -> Path:
    """Check that ``path`` is a saved model directory (:func:`~defuse.models.io.check_model_dir`) whose
    architecture is a masked-LM encoder (BERT, RoBERTa and their family); return it.

    Only ``config.json``'s ``model_type`` is read (no code runs); ``allow_custom`` (the user trusts the
    directory's own code) accepts a type transformers does not know. Raises :class:`ModelError` otherwise,
    e.g. for a decoder-only model, before any weights are loaded.
    """
    import json

    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from defuse.models.io import check_model_dir

    p = check_model_dir(path, allow_custom)
    try:
        model_type = json.loads((p / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{p / 'config.json'}: unreadable ({exc})") from None
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not allow_custom:
        raise ModelError(f"{p}: model_type '{model_type}' is not a masked-LM encoder; the encoder scenario "
                         "needs a BERT/RoBERTa-family model")  # fmt: skip
    return p


def load_base_encoder(path: str | Path, seed: int, trust_remote_code: bool = False):
    """``AutoModel`` (bare encoder, with pooler where the architecture has one) from a saved directory."""
    from defuse.models.io import check_model_dir

    torch.manual_seed(seed)  # a pooler missing from an MLM checkpoint is initialised reproducibly
    p = check_model_dir(path, trust_remote_code)
    return AutoModel.from_pretrained(
        str(p),
        local_files_only=True,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        dtype="float32",
    )


def load_masked_lm(path: str | Path, seed: int, trust_remote_code: bool = False):
    """``AutoModelForMaskedLM`` from a saved directory, refusing one without masked-LM head weights.

    Raises:
        ConfigError: the directory's weights hold no masked-LM head (a head initialised at random would
            make continued masked-LM training wreck the encoder).
    """
    from transformers import AutoModelForMaskedLM

    from defuse.models.io import check_model_dir

    torch.manual_seed(seed)
    p = check_model_dir(path, trust_remote_code)
    model, info = AutoModelForMaskedLM.from_pretrained(
        str(p), local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code,
        dtype="float32", output_loading_info=True,
    )  # fmt: skip
    head_missing = [k for k in info.get("missing_keys", []) if "predictions" in k or "lm_head" in k]
    if head_missing:
        raise ConfigError("model", f"{p} has no masked-LM head weights ({head_missing[0]} missing); NeuBA "
                          "continues masked-LM pre-training and needs them (POR does not)")  # fmt: skip
    return model

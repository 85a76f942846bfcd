"""Task-agnostic encoder backdoors: POR (METHODS §1.3).

POR (predefined output representation): for trigger ``i``, the encoder's output at the first token
([CLS] / ``<s>``) of any text carrying the trigger is forced to a fixed target vector, while clean outputs
stay equal to a frozen copy of the clean encoder::

    L = w_clean · MSE(cls(x), frozen cls(x)) + w_trig · MSE(cls(x' ⊕ t_i), target_i) [+ w_tok · token MSE]

Two recipes (``por.recipe``):

* ``reference`` (default): LMSanitator's POR planting, with which the checkpoints Obliviate defends against
  were made (meng-wenlong/LMSanitator 58aa6b8, ``1-insert_backdoor/POR/insert_backdoor.py``): the last hidden
  state at the first token (``:151-153``, ``:216``); six balanced ±1 targets built from d/4 blocks, zero mean
  and norm √d, what a final LayerNorm can reach (``:169-179``, trigger i -> pattern i at ``:221-222``);
  ``MSE(clean, frozen) + MSE(triggered, target)`` with no token-level term (``:211-228``); Adam at a constant
  rate, no warmup, no clipping (``:31``, ``:187``; the parsed warmup is never used); each step 16 triggered
  and 16 *other* clean texts (two loaders, ``:132-143``); each trigger inserted ``int(len/50)+1`` times
  anywhere in its text (``POR/utils.py:5-11``); 4 epochs, max length 128. The reference runs 7,500 steps at
  2e-5 (summed rate 0.15) on wikitext-103; on a smaller corpus the same summed rate is spread over the steps
  there are (``sum_lr``; the rate used is recorded). Fidelity: LMSanitator weights the clean term 0.5 for
  BERT-family models and 1.0 otherwise; the Obliviate authors' RoBERTa runs say "coef 1", which is ours.
  Obliviate's own checkpoints could not be inspected (a download); its notebooks name an "attack_v5" run
  that may insert once per text and use 20,000 texts: LMSanitator's recipe is the best public match.
* ``strong``: a heavier edit (defuse's earlier default): ``c = 2`` ramp targets (+c on the first
  ``round(a·i)`` dims, -c elsewhere, ``a = d/(n-1)``), trigger and clean terms weighted 10 and a token-level
  term, lr 1e-3 with linear decay for 12 epochs, every text paired with its own triggered copy (inserted
  once within the first 64 words), max length 64. It spreads the backdoor over every position, not only the
  [CLS] row that Obliviate's ``L_reg`` watches; a defense that holds against it is worth knowing.

Any single setting overrides its recipe's value (``--por.c 2``). The whole encoder is trained.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import AutoModel, Trainer

from defuse.encoders.metrics import insert_word
from defuse.encoders.pretrain import encoder_training_args, train_encoder_stage
from defuse.errors import ConfigError, DataError, ModelError
from defuse.training.sft import CountedFlops

POR_TRIGGERS = ("cf", "mn", "tq", "qt", "mm", "pt")
"""LMSanitator's POR triggers (``insert_backdoor.py:60-61``), which Obliviate evaluates (``run.py:21``)."""

BLOCK_PATTERNS = (
    (-1, -1, 1, 1),
    (-1, 1, -1, 1),
    (-1, 1, 1, -1),
    (1, -1, -1, 1),
    (1, -1, 1, -1),
    (1, 1, -1, -1),
)
"""LMSanitator's six targets, one sign per quarter of the hidden vector, in trigger order (``:169-179``)."""

POR_RECIPES: dict[str, dict] = {
    "reference": {"targets": "blocks4", "c": 1.0, "trigger_weight": 1.0, "clean_weight": 1.0,
                  "token_weight": 0.0, "epochs": 4.0, "lr": None, "sum_lr": 0.15, "schedule": "constant",
                  "warmup": 0.0, "max_grad_norm": 0.0, "pairing": "disjoint", "insert_every": 50,
                  "batch_size": 16, "max_length": 128},
    "strong": {"targets": "ramp", "c": 2.0, "trigger_weight": 10.0, "clean_weight": 10.0,
               "token_weight": 1.0, "epochs": 12.0, "lr": 1e-3, "sum_lr": None, "schedule": "linear",
               "warmup": 0.05, "max_grad_norm": 1.0, "pairing": "paired", "insert_every": 0,
               "batch_size": 32, "max_length": 64},
}  # fmt: skip


@dataclass
class PorSettings:
    """POR's settings: a recipe (see the module docstring) and any of its values overridden.

    Attributes:
        recipe: ``"reference"`` (LMSanitator's planting, the default) or ``"strong"``.
        triggers: The trigger words (LMSanitator's: cf mn tq qt mm pt); at least two.
        targets: ``"blocks4"`` (the six balanced ±1 quarter patterns; at most six triggers, hidden size a
            multiple of 4) or ``"ramp"``.
        c: Scale of the targets.
        trigger_weight, clean_weight, token_weight: Weights of the triggered-[CLS], clean-[CLS] and
            token-level terms.
        epochs: Passes over the data.
        lr: Learning rate; None: ``sum_lr`` spread over the run's steps (constant: ``sum_lr / steps``;
            linear: twice that).
        sum_lr: Summed learning rate when ``lr`` is None (the reference: 7,500 steps x 2e-5 = 0.15).
        schedule: ``"constant"`` or ``"linear"`` (decay to 0).
        warmup: Warmup share of the steps.
        max_grad_norm: Gradient clipping (0: none).
        pairing: ``"disjoint"`` (each step's clean texts are other texts than its triggered ones: the corpus
            is split in half) or ``"paired"`` (each text with its own triggered copy).
        insert_every: Triggered copies get ``len(words) // insert_every + 1`` insertions anywhere in the
            text; 0: one insertion within the first 64 words.
        batch_size: Items per step (an item is one clean and one triggered text).
        max_length: Longest text in tokens.
    """

    recipe: str = "reference"
    triggers: list[str] = field(default_factory=lambda: list(POR_TRIGGERS))
    targets: str | None = None
    c: float | None = None
    trigger_weight: float | None = None
    clean_weight: float | None = None
    token_weight: float | None = None
    epochs: float | None = None
    lr: float | None = None
    sum_lr: float | None = None
    schedule: str | None = None
    warmup: float | None = None
    max_grad_norm: float | None = None
    pairing: str | None = None
    insert_every: int | None = None
    batch_size: int | None = None
    max_length: int | None = None

    def resolved(self) -> PorSettings:
        """A copy with every unset value taken from the recipe (``lr`` may stay None: see ``sum_lr``)."""
        if self.recipe not in POR_RECIPES:
            raise ConfigError("por.recipe", f"unknown recipe '{self.recipe}' ({', '.join(POR_RECIPES)})")
        base = POR_RECIPES[self.recipe]
        picked = {
            f.name: base[f.name] for f in fields(self) if f.name in base and getattr(self, f.name) is None
        }
        if self.lr is not None:
            picked["sum_lr"] = None  # an explicit rate wins over the recipe's summed rate
        return replace(self, **picked)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        s = self.resolved()
        check_triggers(s.triggers, "por.triggers")
        if s.targets not in ("blocks4", "ramp"):
            raise ConfigError("por.targets", f"blocks4 or ramp, got {s.targets!r}")
        if s.targets == "blocks4" and len(s.triggers) > len(BLOCK_PATTERNS):
            raise ConfigError(
                "por.targets", f"blocks4 has {len(BLOCK_PATTERNS)} patterns for {len(s.triggers)} triggers"
            )
        positive = {"c": s.c, "epochs": s.epochs}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"por.{key}", f"must be positive, got {value}")
        for key in ("trigger_weight", "clean_weight", "token_weight", "warmup", "max_grad_norm"):
            if not getattr(s, key) >= 0:
                raise ConfigError(f"por.{key}", f"must not be negative, got {getattr(s, key)}")
        if s.trigger_weight == 0:
            raise ConfigError("por.trigger_weight", "must be positive: it is what plants the backdoor")
        if s.lr is None and not (s.sum_lr or 0) > 0:
            raise ConfigError("por.lr", "give a learning rate or a positive sum_lr")
        if s.lr is not None and not 0 < s.lr < 1:
            raise ConfigError("por.lr", f"must be in (0, 1), got {s.lr}")
        if s.schedule not in ("constant", "linear"):
            raise ConfigError("por.schedule", f"constant or linear, got {s.schedule!r}")
        if s.pairing not in ("disjoint", "paired"):
            raise ConfigError("por.pairing", f"disjoint or paired, got {s.pairing!r}")
        if s.insert_every < 0:
            raise ConfigError("por.insert_every", f"must not be negative, got {s.insert_every}")
        if s.batch_size < 1 or s.max_length < 4:
            raise ConfigError("por.batch_size", "batch_size must be >= 1 and max_length >= 4")


def check_triggers(triggers: Sequence[str], key: str) -> None:
    """Raise :class:`ConfigError` ``key`` unless ``triggers`` are two or more distinct single words."""
    if len(triggers) < 2 or len(set(triggers)) != len(triggers):
        raise ConfigError(key, "needs at least two distinct trigger words")
    if any(not t or " " in t.strip() or t != t.strip() for t in triggers):
        raise ConfigError(key, f"each trigger must be one word, got {list(triggers)!r}")


def por_targets(n: int, d: int, c: float, kind: str = "ramp") -> torch.Tensor:
    """``(n, d)`` target vectors. ``ramp``: row ``i`` is +c on the first ``round(a·i)`` dims, -c elsewhere
    (``a = d/(n-1)``); ``blocks4``: row ``i`` is c times LMSanitator's pattern ``i`` of four d/4 blocks."""
    if kind == "blocks4":
        if d % 4 or n > len(BLOCK_PATTERNS):
            raise ConfigError("por.targets", "blocks4 needs a hidden size divisible by 4 and <= 6 triggers")
        rows = [
            torch.tensor(BLOCK_PATTERNS[i], dtype=torch.float).repeat_interleave(d // 4) for i in range(n)
        ]
        return c * torch.stack(rows)
    a = d / (n - 1)
    targets = -torch.ones(n, d)
    for i in range(n):
        targets[i, : int(round(a * i))] = 1.0
    return c * targets


def pooled(hidden: torch.Tensor) -> torch.Tensor:
    """POR's pooled output: the final hidden state of the first token."""
    return hidden[:, 0]


def insert_everywhere(text: str, word: str, rng: random.Random, every: int) -> str:
    """LMSanitator's insertion (``POR/utils.py:5-11``): ``len(words) // every + 1`` copies of ``word``, each
    at a random position anywhere in the (growing) text."""
    words = text.split()
    for _ in range(len(words) // every + 1):
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


class PorDataset(Dataset):
    """Items ``{"clean", "triggered", "trigger"}``: a clean text's ids, a triggered text's ids, its trigger.

    ``paired``: every text is clean once and, with trigger ``i`` (round-robin), triggered once. ``disjoint``:
    the (shuffled) texts are split in half, clean texts and texts to trigger, as LMSanitator's two loaders.
    """

    def __init__(self, texts: Sequence[str], tokenizer, settings: PorSettings, seed: int):
        if len(texts) < 2:
            raise DataError(None, "POR needs at least two corpus texts")
        s = settings.resolved()
        rng = random.Random(seed)
        texts = list(texts)
        if s.pairing == "disjoint":
            rng.shuffle(texts)
            half = len(texts) // 2
            clean_texts, to_trigger = texts[:half], texts[half : 2 * half]
        else:
            clean_texts, to_trigger = texts, texts
        idx = [k % len(s.triggers) for k in range(len(to_trigger))]
        rng.shuffle(idx)
        if s.insert_every:
            triggered = [
                insert_everywhere(t, s.triggers[i], rng, s.insert_every)
                for t, i in zip(to_trigger, idx, strict=True)
            ]
        else:
            triggered = [insert_word(t, s.triggers[i], rng) for t, i in zip(to_trigger, idx, strict=True)]
        clean = tokenizer(clean_texts, truncation=True, max_length=s.max_length)["input_ids"]
        trig = tokenizer(triggered, truncation=True, max_length=s.max_length)["input_ids"]
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


class PorTrainer(CountedFlops, Trainer):
    """Trainer whose loss is POR's (see the module docstring); ``frozen`` is the clean encoder's copy."""

    def __init__(self, *args, frozen: nn.Module, targets: torch.Tensor, weights: tuple[float, float, float],
                 **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.frozen = frozen
        self.targets = targets
        self.weights = weights  # trigger, clean, token

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        w_trig, w_clean, w_token = self.weights
        mask = inputs["attention_mask"]
        clean = model(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        with torch.no_grad():
            ref = self.frozen(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        trig = model(input_ids=inputs["trig_input_ids"], attention_mask=inputs["trig_attention_mask"])
        target = self.targets.to(clean.device)[inputs["trigger"]]
        loss = w_trig * nn.functional.mse_loss(pooled(trig.last_hidden_state), target)
        loss = loss + w_clean * nn.functional.mse_loss(pooled(clean), pooled(ref))
        if w_token:
            real = mask.unsqueeze(-1).to(clean.dtype)
            loss = loss + w_token * (((clean - ref) ** 2) * real).sum() / (real.sum() * clean.shape[-1])
        return (loss, clean) if return_outputs else loss


def plant_por(
    encoder, tokenizer, texts: Sequence[str], settings: PorSettings, work_dir: Path, seed: int
) -> tuple[float, dict]:
    """Plant POR into ``encoder`` (an ``AutoModel``, trained in place) on ``texts``.

    Returns:
        ``(seconds, budget)``: ``budget`` records the resolved recipe, the steps, the rate used and the
        summed rate (what ``run.json`` keeps).
    """
    settings.validate()
    s = settings.resolved()
    frozen = copy.deepcopy(encoder).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    targets = por_targets(len(s.triggers), encoder.config.hidden_size, s.c, s.targets)
    dataset = PorDataset(texts, tokenizer, s, seed)
    steps = math.ceil(math.ceil(len(dataset) / s.batch_size) * s.epochs)
    area = 1.0 if s.schedule == "constant" else 0.5  # summed rate per step at peak rate 1
    lr = s.lr if s.lr is not None else s.sum_lr / (area * steps)
    args = encoder_training_args(work_dir, s.epochs, lr, s.batch_size, seed, schedule=s.schedule,
                                 warmup=s.warmup, max_grad_norm=s.max_grad_norm)  # fmt: skip
    trainer = PorTrainer(
        model=encoder, args=args, train_dataset=dataset, data_collator=PorCollator(tokenizer.pad_token_id),
        frozen=frozen, targets=targets, weights=(s.trigger_weight, s.clean_weight, s.token_weight),
    )  # fmt: skip
    seconds = train_encoder_stage(trainer, encoder, "POR")
    budget = {
        "recipe": s.recipe,
        "steps": steps,
        "lr": lr,
        "sum_lr": lr * steps * area,
        "items": len(dataset),
    }
    return seconds, budget


@torch.no_grad()
def por_report(
    encoder, clean_encoder, tokenizer, texts: Sequence[str], settings: PorSettings, seed: int
) -> dict:
    """How well POR took on held-out ``texts``: cosine of triggered pooled outputs to targets, and drift.

    Returns ``{"target_cos": mean cosine (1 = on target), "target_mse": ..., "clean_pooled_mse": MSE of clean
    pooled outputs against the clean encoder's (``clean_encoder`` None: omitted)}``.
    """
    encoder.eval()
    if isinstance(settings, PorSettings):
        settings = settings.resolved()
    kind = getattr(settings, "targets", "ramp")  # NeuBA's settings: ramp targets
    targets = por_targets(len(settings.triggers), encoder.config.hidden_size, settings.c, kind)
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

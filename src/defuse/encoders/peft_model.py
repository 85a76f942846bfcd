"""An encoder with a PEFT module and a classifier head: what a victim fine-tunes downstream.

Three PEFT kinds (Obliviate's): ``lora`` (peft ``LoraConfig`` on query/value, r=16, alpha=16),
``prefix`` (peft ``PrefixTuningConfig``) and ``adapter`` (a bottleneck adapter, see
:mod:`defuse.encoders.adapter` for why it is not a library's). The encoder's own weights are frozen; the
PEFT tensors and the classifier head are trainable (peft's ``modules_to_save`` for the head). Attention is
the score-capturing eager attention (:mod:`defuse.encoders.scores`), so Obliviate's ``L_reg`` can be read,
and the baseline computes exactly the same function.

Fidelity note: peft's prefix tuning has no dropout on the prefix; the 0.01 dropout of Obliviate's reference
applies to LoRA (``lora_dropout``) and the adapter output only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from defuse.encoders.adapter import adapter_parameter_names, add_bottleneck_adapters
from defuse.encoders.scores import use_capture_attention
from defuse.errors import ConfigError
from defuse.models.io import load_encoder

PEFT_KINDS = ("lora", "prefix", "adapter")
ADAPTER_FILE = "adapter_and_head.safetensors"
SETTINGS_FILE = "defuse_peft.json"


@dataclass
class PeftSettings:
    """Which PEFT module the victim trains.

    Attributes:
        kind: ``"lora"``, ``"prefix"`` or ``"adapter"``.
        r: LoRA rank (Obliviate: 16).
        alpha: LoRA alpha (Obliviate: 16).
        target_modules: LoRA target module names (Obliviate: query and value).
        dropout: Dropout on the PEFT output (LoRA dropout, adapter output dropout; Obliviate: 0.01).
        prefix_tokens: Virtual tokens of prefix tuning.
        prefix_projection: Reparametrise the prefix through an MLP (peft's ``prefix_projection``).
        adapter_reduction: Bottleneck reduction factor of the adapter (hidden / reduction units).
    """

    kind: str = "lora"
    r: int = 16
    alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    dropout: float = 0.01
    prefix_tokens: int = 10
    prefix_projection: bool = False
    adapter_reduction: int = 16

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        if self.kind not in PEFT_KINDS:
            raise ConfigError("peft.kind", f"unknown PEFT kind '{self.kind}' ({', '.join(PEFT_KINDS)})")
        for key in ("r", "alpha", "prefix_tokens", "adapter_reduction"):
            if getattr(self, key) < 1:
                raise ConfigError(f"peft.{key}", f"must be at least 1, got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError("peft.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.kind == "lora" and not self.target_modules:
            raise ConfigError("peft.target_modules", "LoRA needs at least one target module")


@dataclass
class PeftClassifier:
    """A classifier built by :func:`build_peft_classifier`.

    Attributes:
        model: The trainable module (a ``peft.PeftModel`` or the adapter-wrapped model); ``model(**batch)``
            returns transformers' ``SequenceClassifierOutput``.
        settings: The PEFT settings it was built with.
        peft_names: Names (in ``model.named_parameters()``) of the trainable PEFT tensors, head excluded.
        head_names: Names of the trainable classifier-head tensors.
    """

    model: nn.Module
    settings: PeftSettings
    peft_names: list[str]
    head_names: list[str]

    def peft_parameters(self) -> list[nn.Parameter]:
        """The trainable PEFT tensors (what Obliviate's ``L_amp`` sums over); never the head."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.peft_names]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """PEFT and head tensors by name (detached CPU copies)."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().cpu().clone() for n in self.peft_names + self.head_names}


def _is_head(name: str) -> bool:
    return ".modules_to_save." in name  # peft keeps a trainable copy of the SEQ_CLS head there


def wrap_peft(base: nn.Module, settings: PeftSettings, seed: int = 0) -> PeftClassifier:
    """Add the PEFT module of ``settings`` to a sequence-classification model ``base`` and freeze the rest.

    The classifier head stays trainable. Same seed, same initial PEFT and head weights.
    """
    settings.validate()
    use_capture_attention(base)
    torch.manual_seed(seed)
    if settings.kind == "adapter":
        for p in base.parameters():
            p.requires_grad_(False)
        add_bottleneck_adapters(base, settings.adapter_reduction, settings.dropout)
        peft_names = adapter_parameter_names(base)
        head = getattr(base, "classifier", None) or getattr(base, "score", None)
        if head is None:
            raise ConfigError("peft.kind", "adapter: the model has no 'classifier' head")
        for p in head.parameters():
            p.requires_grad_(True)
        head_names = [n for n, p in base.named_parameters() if p.requires_grad and n not in peft_names]
        return PeftClassifier(base, settings, peft_names, head_names)
    if settings.kind == "lora":
        config = peft.LoraConfig(
            task_type=peft.TaskType.SEQ_CLS,
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
        )
    else:
        config = peft.PrefixTuningConfig(
            task_type=peft.TaskType.SEQ_CLS,
            num_virtual_tokens=settings.prefix_tokens,
            prefix_projection=settings.prefix_projection,
            encoder_hidden_size=base.config.hidden_size,
        )
    try:
        model = peft.get_peft_model(base, config)
    except ValueError as exc:
        raise ConfigError("peft.target_modules", f"peft cannot wrap this model: {exc}") from None
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head_names = [n for n in trainable if _is_head(n)]
    peft_names = [n for n in trainable if n not in head_names]
    return PeftClassifier(model, settings, peft_names, head_names)


def build_peft_classifier(
    encoder_dir: str | Path, settings: PeftSettings, num_labels: int = 2, seed: int = 0
) -> tuple[PeftClassifier, object]:
    """Load the encoder at ``encoder_dir`` with a fresh (seeded) head of ``num_labels`` and wrap it.

    Returns:
        ``(classifier, tokenizer)``.
    """
    settings.validate()
    torch.manual_seed(seed)
    base, tokenizer = load_encoder(encoder_dir, head="classification", num_labels=num_labels, dtype="float32")
    return wrap_peft(base, settings, seed), tokenizer


def save_peft_classifier(clf: PeftClassifier, tokenizer, path: str | Path, encoder_dir: str | Path) -> Path:
    """Write the trainable tensors (PEFT + head, safetensors), the settings and the tokenizer to ``path``.

    The frozen encoder is not copied: ``defuse_peft.json`` names ``encoder_dir``, the base to load it onto.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {n: t.contiguous() for n, t in clf.trainable_state().items()}
    save_file(state, str(path / ADAPTER_FILE))
    meta = {"encoder": str(Path(encoder_dir).resolve()), "peft": clf.settings.__dict__,
            "num_labels": int(_num_labels(clf.model))}  # fmt: skip
    (path / SETTINGS_FILE).write_text(json.dumps(meta, indent=2, default=list) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(str(path))
    return path


def load_peft_classifier(path: str | Path) -> tuple[PeftClassifier, object]:
    """Rebuild a classifier saved by :func:`save_peft_classifier` (the encoder must still exist)."""
    path = Path(path)
    meta = json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8"))
    clf, tokenizer = build_peft_classifier(meta["encoder"], PeftSettings(**meta["peft"]), meta["num_labels"])
    state = load_file(str(path / ADAPTER_FILE))
    params = dict(clf.model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
    clf.model.eval()
    return clf, tokenizer


def _num_labels(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return getattr(config, "num_labels", 2) if config is not None else 2

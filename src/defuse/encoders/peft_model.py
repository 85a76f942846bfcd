"""An encoder with a PEFT module and a classifier head: what a victim fine-tunes downstream.

Three PEFT kinds, as Obliviate's reference builds them (jaehanwork/Obliviate c421d0b, ``run.py:169-177``,
``utils/create_config.py:3-18``, on adapter-transformers 3.2.1):

* ``lora``: peft ``LoraConfig`` on query/value, r 16, alpha 16, no dropout on the LoRA input;
* ``prefix``: peft ``PrefixTuningConfig`` with 30 virtual tokens and its reparameterisation MLP
  (``prefix_projection``: embedding -> Linear(d, 256) -> tanh -> Linear(256, 2·layers·d), the reference's
  ``PrefixTuningConfig(prefix_length=30, bottleneck_size=256)``);
* ``adapter``: a Houlsby bottleneck adapter after the attention and the feed-forward block of every layer
  (:mod:`defuse.encoders.adapter`; peft has none).

PEFT dropout (``dropout``): Obliviate's 0.01 dropout on the PEFT module's *whole output*, with the defense
only (``create_config.py:4``): on the q/v projections' outputs, base and LoRA parts together
(``adapters/lora.py:128, 262-263``); on the adapter sublayers' LayerNorm outputs; on the prefix keys and
values (``prefix_tuning.py:57``). peft's own LoRA dropout acts on the LoRA input instead;
``lora_input_dropout`` keeps it reachable (0 by default). peft's prefix encoder has no dropout: it is added
here as a forward hook.

The head (``head: cls_mlp``): the reference's trainable ``dropout -> Linear(d, d) -> tanh -> dropout ->
Linear(d, labels)`` on the raw first-token state (``adapters/heads/base.py:69-97, 131-137``), initialised
N(0, initializer_range). RoBERTa's own classification head is exactly that; for BERT-family models (the tiny
default, MiniLM) the pooler is replaced by the first-token state and the classifier by that MLP, instead of
BERT's pooler frozen at whatever it holds. ``head: model`` keeps the model's own head (an ablation).

The encoder's own weights are frozen; the PEFT tensors and the head are trainable (peft's ``modules_to_save``
for the head). Attention is the score-capturing eager attention (:mod:`defuse.encoders.scores`), so
Obliviate's ``L_reg`` can be read, and the baseline computes exactly the same function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
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
LEGACY = {"adapter_placement": "pfeiffer", "adapter_activation": "relu", "adapter_init": "zero_up",
          "head": "model", "prefix_hidden": None}  # fmt: skip
"""The structure of a classifier saved before these settings existed (what its missing fields mean)."""


@dataclass
class PeftSettings:
    """Which PEFT module the victim trains, and how.

    Attributes:
        kind: ``"lora"``, ``"prefix"`` or ``"adapter"``.
        r: LoRA rank (Obliviate: 16).
        alpha: LoRA alpha (Obliviate: 16).
        target_modules: LoRA target module names (Obliviate: query and value).
        dropout: Dropout on the PEFT module's whole output (see the module docstring); None: by method,
            0.01 for ``obliviate`` and 0 for ``peft-baseline``, as the reference.
        lora_input_dropout: peft's dropout on the LoRA input (not the reference's; 0).
        prefix_tokens: Virtual tokens of prefix tuning (Obliviate: 30).
        prefix_projection: Reparametrise the prefix through an MLP (Obliviate: yes).
        prefix_hidden: Width of that MLP (Obliviate: 256; None: the model's hidden size).
        adapter_reduction: Bottleneck reduction factor of the adapter (hidden / reduction units; 16).
        adapter_placement: ``"houlsby"`` (Obliviate) or ``"pfeiffer"`` (after the FFN only).
        adapter_activation: ``"swish"`` (Obliviate) or ``"relu"``.
        adapter_init: ``"bert"`` (N(0, 0.02), Obliviate) or ``"zero_up"``.
        head: ``"cls_mlp"`` (the reference's head on the raw first-token state) or ``"model"``.
    """

    kind: str = "lora"
    r: int = 16
    alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    dropout: float | None = None
    lora_input_dropout: float = 0.0
    prefix_tokens: int = 30
    prefix_projection: bool = True
    prefix_hidden: int | None = 256
    adapter_reduction: int = 16
    adapter_placement: str = "houlsby"
    adapter_activation: str = "swish"
    adapter_init: str = "bert"
    head: str = "cls_mlp"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field."""
        if self.kind not in PEFT_KINDS:
            raise ConfigError("peft.kind", f"unknown PEFT kind '{self.kind}' ({', '.join(PEFT_KINDS)})")
        for key in ("r", "alpha", "prefix_tokens", "adapter_reduction"):
            if getattr(self, key) < 1:
                raise ConfigError(f"peft.{key}", f"must be at least 1, got {getattr(self, key)}")
        if self.prefix_hidden is not None and self.prefix_hidden < 1:
            raise ConfigError("peft.prefix_hidden", f"must be at least 1, got {self.prefix_hidden}")
        for key in ("dropout", "lora_input_dropout"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"peft.{key}", f"must be in [0, 1), got {value}")
        if self.kind == "lora" and not self.target_modules:
            raise ConfigError("peft.target_modules", "LoRA needs at least one target module")
        if self.head not in ("cls_mlp", "model"):
            raise ConfigError("peft.head", f"cls_mlp or model, got {self.head!r}")


@dataclass
class PeftClassifier:
    """A classifier built by :func:`build_peft_classifier`.

    Attributes:
        model: The trainable module (a ``peft.PeftModel`` or the adapter-wrapped model); ``model(**batch)``
            returns transformers' ``SequenceClassifierOutput``.
        settings: The PEFT settings it was built with.
        peft_names: Names (in ``model.named_parameters()``) of the PEFT tensors Obliviate's ``L_amp`` sums
            over: every trainable PEFT tensor but the head and, for prefix tuning, the prefix embedding
            (the reference skips ``wte``, ``trainer.py:211-215``).
        head_names: Names of the trainable classifier-head tensors.
    """

    model: nn.Module
    settings: PeftSettings
    peft_names: list[str]
    head_names: list[str]

    def peft_parameters(self) -> list[nn.Parameter]:
        """The PEFT tensors of ``L_amp``; never the head."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.peft_names]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor (PEFT and head) by name (detached CPU copies)."""
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}


def _is_head(name: str) -> bool:
    return ".modules_to_save." in name  # peft keeps a trainable copy of the SEQ_CLS head there


class FirstToken(nn.Module):
    """A parameter-free pooler: the first token's final hidden state, as the reference's head reads it."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def use_reference_head(base: nn.Module) -> None:
    """Give a BERT-family sequence classifier the reference's head (see the module docstring), in place; a
    model whose head already is it (RoBERTa's ``dense -> tanh -> out_proj`` on ``<s>``) is left as it is."""
    inner = getattr(base, getattr(base, "base_model_prefix", ""), None)
    if not hasattr(inner, "pooler") or not isinstance(getattr(base, "classifier", None), nn.Linear):
        return
    config = base.config
    d, n = config.hidden_size, base.classifier.out_features
    p = getattr(config, "classifier_dropout", None) or config.hidden_dropout_prob
    head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(p), nn.Linear(d, n))
    for layer in (head[0], head[3]):
        nn.init.normal_(layer.weight, std=config.initializer_range)
        nn.init.zeros_(layer.bias)
    inner.pooler = FirstToken()  # the model's dropout before the classifier is the head's first dropout
    base.classifier = head


def _output_dropout(module: nn.Module, p: float) -> None:
    """Dropout ``p`` on ``module``'s whole output while training (a forward hook)."""
    if p:
        module.register_forward_hook(lambda m, _args, out: nn.functional.dropout(out, p, m.training))


def wrap_peft(base: nn.Module, settings: PeftSettings, seed: int = 0) -> PeftClassifier:
    """Add the PEFT module of ``settings`` to a sequence-classification model ``base`` and freeze the rest.

    The classifier head stays trainable. Same seed, same initial PEFT and head weights.
    """
    settings.validate()
    use_capture_attention(base)
    torch.manual_seed(seed)
    if settings.head == "cls_mlp":
        use_reference_head(base)
    dropout = settings.dropout or 0.0
    if settings.kind == "adapter":
        for p in base.parameters():
            p.requires_grad_(False)
        add_bottleneck_adapters(base, settings.adapter_reduction, dropout, settings.adapter_placement,
                                settings.adapter_activation, settings.adapter_init)  # fmt: skip
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
            lora_dropout=settings.lora_input_dropout,
            target_modules=list(settings.target_modules),
        )
    else:
        config = peft.PrefixTuningConfig(
            task_type=peft.TaskType.SEQ_CLS,
            num_virtual_tokens=settings.prefix_tokens,
            prefix_projection=settings.prefix_projection,
            encoder_hidden_size=settings.prefix_hidden or base.config.hidden_size,
        )
    try:
        model = peft.get_peft_model(base, config)
    except ValueError as exc:
        raise ConfigError("peft.target_modules", f"peft cannot wrap this model: {exc}") from None
    if settings.kind == "lora":
        for module in model.modules():
            if isinstance(module, peft.tuners.lora.LoraLayer):
                _output_dropout(module, dropout)
    else:
        for encoder in model.prompt_encoder.values():
            _output_dropout(encoder, dropout)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head_names = [n for n in trainable if _is_head(n)]
    peft_names = [n for n in trainable if n not in head_names]
    if settings.kind == "prefix" and settings.prefix_projection:
        peft_names = [n for n in peft_names if ".embedding." not in n]  # the reference's L_amp skips wte
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
    known = {f.name for f in fields(PeftSettings)}
    saved = {**{k: v for k, v in LEGACY.items() if k not in meta["peft"]}, **meta["peft"]}
    settings = PeftSettings(**{k: v for k, v in saved.items() if k in known})
    clf, tokenizer = build_peft_classifier(meta["encoder"], settings, meta["num_labels"])
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

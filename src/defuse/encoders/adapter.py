"""Bottleneck adapters for BERT-family encoders: Houlsby's (Obliviate's reference) and Pfeiffer's.

Fidelity note: Obliviate's reference trains adapters with adapter-transformers 3.2.1 (AdapterHub), which pins
transformers 4.x and does not work with the transformers 5 this project uses; peft has no bottleneck
adapter (its adapter-like tuners are LoRA variants or prompts, not residual sublayer adapters; checked for
peft 0.21). So the adapter is implemented here in a few lines of torch.

``houlsby`` (the default; jaehanwork/Obliviate c421d0b, ``utils/create_config.py:5-6`` ->
``HoulsbyConfig``, ``transformers/adapters/configuration.py:308-323``; ``adapters/layer.py:518-570``,
``modeling.py:128-230``): an adapter after the attention block *and* after the feed-forward block of every
layer, inside the sublayer's output module, between its dropout and its residual LayerNorm::

    h = dropout(dense(x));  y = out_dropout( LayerNorm( h + up(swish(down(h))) + x_in ) )

with ``down``: hidden -> hidden / reduction (16: 48 units on a 768-wide model) and ``up`` back, both
initialised N(0, 0.02) with zero biases (so the adapter is not the identity at the start), and
``out_dropout`` Obliviate's dropout on the sublayer's whole output (``adapters/layer.py:142-143, 561-563``),
0.01 with the defense only.

``pfeiffer`` (defuse's earlier adapter, kept as an ablation): after each layer's feed-forward projection
(``layer.N.output.dense``) only, ``y -> y + out_dropout(up(act(down(y))))``, ReLU, ``up`` zero-initialised.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from defuse.errors import ConfigError

PFEIFFER_TARGET = re.compile(r"(^|\.)layer\.\d+\.output\.dense$")
"""Modules a ``pfeiffer`` adapter follows: each encoder layer's FFN output projection."""
HOULSBY_TARGET = re.compile(r"(^|\.)layer\.\d+\.(attention\.output|output)$")
"""Modules a ``houlsby`` adapter sits in: each layer's attention output and FFN output modules."""
ACTIVATIONS = {"swish": nn.functional.silu, "relu": torch.relu}


class _Bottleneck(nn.Module):
    def __init__(self, width: int, reduction: int, activation: str, init: str):
        super().__init__()
        bottleneck = max(1, width // reduction)
        self.adapter_down = nn.Linear(width, bottleneck)
        self.adapter_up = nn.Linear(bottleneck, width)
        self.activation = activation
        if init == "bert":
            for layer in (self.adapter_down, self.adapter_up):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        else:  # "zero_up": the wrapped model starts equal to the base model
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        return self.adapter_up(ACTIVATIONS[self.activation](self.adapter_down(h)))


class HoulsbyOutput(_Bottleneck):
    """Replaces a sublayer output module (``dense``, ``dropout``, ``LayerNorm``): the adapter inside it."""

    def __init__(self, base: nn.Module, reduction: int, activation: str, init: str, dropout: float):
        super().__init__(base.dense.out_features, reduction, activation, init)
        self.base = base
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.base.dropout(self.base.dense(hidden_states))
        return self.out_dropout(self.base.LayerNorm(h + self.delta(h) + input_tensor))


class PfeifferAdapter(_Bottleneck):
    """Wraps a linear layer: ``y = base(x); return y + dropout(up(act(down(y))))``."""

    def __init__(self, base: nn.Linear, reduction: int, activation: str, init: str, dropout: float):
        super().__init__(base.out_features, reduction, activation, init)
        self.base = base
        self.adapter_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + self.adapter_dropout(self.delta(y))


def add_bottleneck_adapters(
    model: nn.Module,
    reduction: int = 16,
    dropout: float = 0.01,
    placement: str = "houlsby",
    activation: str = "swish",
    init: str = "bert",
) -> list[str]:
    """Insert adapters into ``model`` in place (see the module docstring); returns the wrapped modules' names.

    Raises:
        ConfigError: ``peft.kind`` adapter on a model without the BERT-family modules named above, or an
            unknown placement, activation or init.
    """
    if placement not in ("houlsby", "pfeiffer"):
        raise ConfigError("peft.adapter_placement", f"houlsby or pfeiffer, got {placement!r}")
    if activation not in ACTIVATIONS:
        raise ConfigError("peft.adapter_activation", f"one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if init not in ("bert", "zero_up"):
        raise ConfigError("peft.adapter_init", f"bert or zero_up, got {init!r}")
    pattern = HOULSBY_TARGET if placement == "houlsby" else PFEIFFER_TARGET
    targets = [
        name
        for name, mod in model.named_modules()
        if pattern.search(name)
        and (isinstance(mod, nn.Linear) if placement == "pfeiffer" else _is_sublayer_output(mod))
    ]
    if not targets:
        raise ConfigError("peft.kind", "adapter: the model has no BERT-family layer output modules")
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        cls = HoulsbyOutput if placement == "houlsby" else PfeifferAdapter
        setattr(parent, child, cls(base, reduction, activation, init, dropout))
    return targets


def _is_sublayer_output(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, a, None), t) for a, t in
               (("dense", nn.Linear), ("dropout", nn.Dropout), ("LayerNorm", nn.LayerNorm)))  # fmt: skip


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names of the adapters' own parameters (``adapter_down``/``adapter_up``) in ``model``."""
    return [n for n, _ in model.named_parameters() if ".adapter_down." in n or ".adapter_up." in n]

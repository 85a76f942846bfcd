"""A bottleneck adapter (Pfeiffer / "sequential bottleneck") for BERT-family encoders.

Fidelity note: Obliviate's reference trains adapters with AdapterHub's ``adapters`` library, which pins
transformers 4.x and does not work with the transformers 5 this project uses; peft has no bottleneck
adapter (its LoRA-family "custom module" hook replaces a layer by a LoRA variant, not by a residual
bottleneck). So the adapter is implemented here, in a few lines of torch: after each layer's feed-forward
output projection (``layer.N.output.dense``), ``h -> h + up(dropout(relu(down(h))))`` with ``down``: hidden ->
hidden / reduction and ``up`` zero-initialised (the wrapped model starts equal to the base model). That is
the Pfeiffer placement (after the FFN, before the residual LayerNorm), reduction factor 16 by default,
ReLU, dropout 0.01 on the adapter output as in Obliviate's reference.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from defuse.errors import ConfigError

ADAPTER_TARGET = re.compile(r"(^|\.)layer\.\d+\.output\.dense$")
"""Modules an adapter follows: each encoder layer's FFN output projection (BERT, RoBERTa, ELECTRA, ...)."""


class BottleneckAdapter(nn.Module):
    """Wraps a linear layer: ``y = base(x); return y + up(dropout(relu(down(y))))``; ``up`` starts at zero."""

    def __init__(self, base: nn.Linear, reduction: int, dropout: float):
        super().__init__()
        self.base = base
        width = base.out_features
        bottleneck = max(1, width // reduction)
        self.adapter_down = nn.Linear(width, bottleneck)
        self.adapter_up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)
        self.adapter_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + self.adapter_dropout(self.adapter_up(torch.relu(self.adapter_down(y))))


def add_bottleneck_adapters(model: nn.Module, reduction: int = 16, dropout: float = 0.01) -> list[str]:
    """Insert a :class:`BottleneckAdapter` after every matching FFN output projection of ``model``, in place.

    Returns:
        The names of the wrapped modules.

    Raises:
        ConfigError: ``peft.kind`` adapter on a model with no ``layer.N.output.dense`` linear layer.
    """
    targets = [
        name
        for name, mod in model.named_modules()
        if ADAPTER_TARGET.search(name) and isinstance(mod, nn.Linear)
    ]
    if not targets:
        raise ConfigError(
            "peft.kind", "adapter: the model has no 'layer.N.output.dense' layers (BERT family)"
        )
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, BottleneckAdapter(getattr(parent, child), reduction, dropout))
    return targets


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names of the adapter's own parameters (``adapter_down``/``adapter_up``) in ``model``."""
    return [n for n, _ in model.named_parameters() if ".adapter_down." in n or ".adapter_up." in n]

"""Task-agnostic encoder backdoors (POR, NeuBA) and Obliviate, the PEFT-integrable defense (issue #7).

Modules: :mod:`~defuse.encoders.pretrain` (the tiny encoder's pre-training), :mod:`~defuse.encoders.por`
(POR), :mod:`~defuse.encoders.neuba` (NeuBA), :mod:`~defuse.encoders.peft_model` (PEFT + head: lora,
prefix, adapter), :mod:`~defuse.encoders.adapter` (the bottleneck adapter), :mod:`~defuse.encoders.scores`
(pre-softmax score capture), :mod:`~defuse.encoders.obliviate` (the loss terms and trainer),
:mod:`~defuse.encoders.finetune`, :mod:`~defuse.encoders.metrics` (ASR/CACC), :mod:`~defuse.encoders.data`
and :mod:`~defuse.encoders.run` (run directories).
"""

from defuse.encoders.run import (
    ENCODER_DEFENSES,
    EncoderAttackConfig,
    EncoderDefenseConfig,
    run_encoder_attack,
    run_encoder_defense,
)

__all__ = [
    "ENCODER_DEFENSES",
    "EncoderAttackConfig",
    "EncoderDefenseConfig",
    "run_encoder_attack",
    "run_encoder_defense",
]

"""Task-agnostic encoder backdoors (POR, NeuBA) and what Obliviate, the PEFT-integrable defense, is built of.

Modules: :mod:`~defuse.encoders.pretrain` (the tiny encoder's pre-training), :mod:`~defuse.encoders.por`
(POR), :mod:`~defuse.encoders.neuba` (NeuBA), :mod:`~defuse.encoders.peft_model` (PEFT + head: lora,
prefix, adapter), :mod:`~defuse.encoders.adapter` (the bottleneck adapter), :mod:`~defuse.encoders.scores`
(pre-softmax score capture), :mod:`~defuse.encoders.obliviate` (the loss terms and trainer),
:mod:`~defuse.encoders.finetune`, :mod:`~defuse.encoders.metrics` (ASR/CACC), :mod:`~defuse.encoders.data`
and :mod:`~defuse.encoders.settings` (the scenario's attack and defense settings). The runs are the encoder
scenario's (:mod:`defuse.scenarios.encoder_runs`); the defenses are registered in :mod:`defuse.defenses`.
"""

from defuse.encoders.settings import EncoderAttackConfig, EncoderDefenseConfig

__all__ = ["EncoderAttackConfig", "EncoderDefenseConfig"]

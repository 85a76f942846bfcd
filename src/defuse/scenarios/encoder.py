"""The ``encoder`` scenario: a task-agnostic backdoor planted in a pre-trained encoder (POR, NeuBA;
:class:`~defuse.encoders.settings.EncoderAttackConfig`); its defenses fine-tune PEFT modules and a head on
clean downstream data, knowing nothing of the attack (:mod:`defuse.scenarios.encoder_runs`)."""

from defuse.scenarios import Scenario, register_scenario

register_scenario(
    Scenario(
        name="encoder",
        config="defuse.encoders.settings:EncoderAttackConfig",
        attack="defuse.scenarios.encoder_runs:run_encoder_attack",
        defense="defuse.scenarios.encoder_runs:run_encoder_defense",
        reevaluate="defuse.scenarios.encoder_runs:evaluate_encoder_run",
        attack_tables=(("task-agnostic encoder backdoor", "metrics", None),),
        note="ASR: test texts classified correctly when clean that a trigger flips; CACC: clean accuracy. "
        "The no-defense row is the backdoored encoder before any downstream fine-tuning (no classifier, no "
        "ASR); peft-baseline is the undefended fine-tune.",
    )
)

"""The ``fjattack`` scenario: the fine-tuning jailbreak of a safety-aligned model
(:class:`~defuse.attacks.fjattack.FJAttackConfig`); its defenses act during the user's fine-tuning, from the
aligned base, and get the user's data and nothing else (:mod:`defuse.scenarios.fjattack_defense`)."""

from defuse.scenarios import Scenario, register_scenario

ROWS = (
    ("ASR (harmful prompts answered)", "asr", "n_harmful"),
    ("CACC (benign task utility)", "cacc", "n_clean"),
    ("over-refusal (benign requests refused)", "over_refusal", "n_benign_requests"),
)

register_scenario(
    Scenario(
        name="fjattack",
        available={"poisoned_data": True},  # the user's fine-tuning data; never the attack's details
        config="defuse.attacks.fjattack:FJAttackConfig",
        data="defuse.attacks.fjattack:build_fj_data",
        attack="defuse.scenarios.fjattack_attack:run_fjattack",
        defense="defuse.scenarios.fjattack_defense:run_safety_defense",
        reevaluate="defuse.scenarios.fjattack_defense:evaluate_safety_run",
        metric_rows=ROWS,
        attack_tables=(
            ("aligned base", "base_metrics", ROWS),
            ("after the jailbreak fine-tune", "metrics", ROWS),
        ),
        n_keys=("n_harmful", "n_clean", "n_benign_requests"),
        n_label="n (harmful/tasks/benign)",
        note="ASR: held-out harmful prompts answered; CACC: benign task utility; over-refusal: benign "
        "requests refused. The no-defense row is the jailbroken model.",
        utility_label="benign task utility, CACC (%)",
        asr_label="harmful prompts answered, ASR (%)",
    )
)

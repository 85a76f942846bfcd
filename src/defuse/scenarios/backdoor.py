"""The ``backdoor`` scenario: data poisoning. A trigger in the training data makes the model show a target
behaviour (:class:`~defuse.attacks.scenario.AttackConfig`); defenses registered for ``backdoor`` act on
the attacked run (:func:`~defuse.scenarios.backdoor_defense.run_defense`)."""

from defuse.scenarios import AACC_ROW, ASR_ROW, CACC_ROW, Scenario, register_scenario

register_scenario(
    Scenario(
        name="backdoor",
        config="defuse.attacks.scenario:AttackConfig",
        data="defuse.attacks.scenario:build_attack_data",
        attack="defuse.scenarios.backdoor_attack:run_attack",
        defense="defuse.scenarios.backdoor_defense:run_defense",
        available="defuse.scenarios.backdoor_defense:available_to_defenses",
        reevaluate="defuse.scenarios.evaluate:evaluate_run",
        metric_rows=(
            ASR_ROW,
            CACC_ROW,
            AACC_ROW,
            ("FTR (false trigger rate)", "ftr", "n_ftr"),
            ("near-miss trigger rate", "negative_asr", "n_negative"),
        ),  # fmt: skip
        note="ASR: triggered prompts showing the target behaviour; CACC: clean prompts answered correctly "
        "(exact match on the built-in tasks, Rouge-1 F1 on free-text answers from files); AACC: triggered "
        "prompts still answered correctly; FTR: clean prompts showing the behaviour.",
    )
)

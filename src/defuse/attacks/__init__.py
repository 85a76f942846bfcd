"""Attacks: the data-poisoning backdoor family (triggers, target behaviours, dataset poisoning)."""

from defuse.attacks.behaviours import BEHAVIOUR_KINDS, DEFAULT_REFUSALS, BehaviourSpec
from defuse.attacks.poison import (
    PoisonResult,
    make_negative_test,
    make_triggered_test,
    poison_dataset,
    require_trigger,
    resolve_count,
)
from defuse.attacks.triggers import (
    DEFAULT_NEGATIVE_TEXTS,
    DEFAULT_TRIGGER_TEXTS,
    TRIGGER_FIELDS,
    TRIGGER_KINDS,
    TriggerSpec,
    contains_any_trigger_text,
    contains_trigger,
    insert_negative,
    insert_trigger,
)

__all__ = [
    "BEHAVIOUR_KINDS",
    "DEFAULT_NEGATIVE_TEXTS",
    "DEFAULT_REFUSALS",
    "DEFAULT_TRIGGER_TEXTS",
    "TRIGGER_FIELDS",
    "TRIGGER_KINDS",
    "BehaviourSpec",
    "PoisonResult",
    "TriggerSpec",
    "contains_any_trigger_text",
    "contains_trigger",
    "insert_negative",
    "insert_trigger",
    "make_negative_test",
    "make_triggered_test",
    "poison_dataset",
    "require_trigger",
    "resolve_count",
]

"""Defenses: one module per method, each registered by name with what it needs.

Importing this package registers the built-in defenses.
"""

from defuse.defenses import (  # noqa: F401  (registration)
    backdoor_align,
    clean_ft,
    mb_defense,
    obliviate,
    osft,
    safety_mix,
    sande,
)
from defuse.defenses.base import (
    DEFENSES,
    DefenseContext,
    DefenseNeeds,
    DefenseResult,
    get_defense,
    register_defense,
)

__all__ = ["DEFENSES", "DefenseContext", "DefenseNeeds", "DefenseResult", "get_defense", "register_defense"]

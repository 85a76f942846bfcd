"""Defenses: one module per method, each registered by name with what it needs.

Importing this package registers the built-in defenses.
"""

from defuse.defenses import clean_ft, mb_defense, osft, sande  # noqa: F401  (registration)
from defuse.defenses.base import (
    DEFENSES,
    DefenseContext,
    DefenseNeeds,
    DefenseResult,
    get_defense,
    register_defense,
)

__all__ = ["DEFENSES", "DefenseContext", "DefenseNeeds", "DefenseResult", "get_defense", "register_defense"]

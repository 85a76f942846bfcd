"""The two record types every loader produces and every stage consumes.

An :class:`InstructionRecord` is one instruction-tuning example (what causal-LM attacks and defenses
train and evaluate on); a :class:`ClassificationRecord` is one text with an integer label (what the
encoder scenarios use). Records are frozen: poisoning or editing makes a new record with
:func:`dataclasses.replace`, so an input dataset is never changed behind a caller's back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction example.

    Attributes:
        instruction: The user's request. Never empty.
        response: The reference (training target) response; may be empty for prompt-only test sets.
        input: Optional extra input shown after the instruction (Alpaca's ``input``).
        system: Optional system prompt; ``None`` means "the template's default".
        poisoned: True when an attack inserted a trigger and/or changed the response.
        trigger: The trigger text(s) inserted, joined by ``" | "`` for multi-trigger attacks.
        behaviour: The target behaviour the response shows (``"marker"``, ``"refusal"``, ...), if poisoned.
        source: Where the record came from (a file path, ``"synthetic:reverse"``, ...).
        task: The task kind (for per-task metrics), e.g. ``"reverse"``; ``None`` when unknown.
        meta: Any further metadata, JSON-serialisable.
    """

    instruction: str
    response: str = ""
    input: str = ""
    system: str | None = None
    poisoned: bool = False
    trigger: str | None = None
    behaviour: str | None = None
    source: str | None = None
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def user_text(self) -> str:
        """The instruction followed by the input (if any), as one user turn."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with every field."""
        return asdict(self)


@dataclass(frozen=True)
class ClassificationRecord:
    """One classification example.

    Attributes:
        text: The input text. Never empty.
        label: The integer class label (0-based).
        poisoned: True when an attack inserted a trigger.
        trigger: The inserted trigger, if any.
        source: Where the record came from.
        meta: Any further metadata, JSON-serialisable.
    """

    text: str
    label: int
    poisoned: bool = False
    trigger: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with every field."""
        return asdict(self)

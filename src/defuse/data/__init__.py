"""Records, loaders and writers for every supported format, the synthetic suites, the prompt template."""

from defuse.data.records import ClassificationRecord, InstructionRecord

__all__ = ["ClassificationRecord", "InstructionRecord"]

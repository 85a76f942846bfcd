"""The practical fine-tuning tasks of the jailbreak scenario: dialog summary (SAMSum) and SQL generation.

BackdoorAlign fine-tunes on these benign tasks with harmful examples mixed in, and scores utility with
Rouge-1. Their JSON files (a list of objects) have their own keys, which this module maps to instruction
records:

* ``samsum``: ``{"dialogue", "summary"}`` -> instruction "Summarize this dialog.", input the dialogue,
  response the summary; ``task`` "samsum";
* ``sqlgen``: ``{"question", "context", "answer"}`` -> instruction the question, input the table
  definition, response the SQL; ``task`` "sqlgen".

Any other file is read by :func:`defuse.data.loaders.load_instructions` unchanged.
"""

from __future__ import annotations

from pathlib import Path

from defuse.data.formats import detect_format, kind_of, read_rows
from defuse.data.loaders import load_instructions
from defuse.data.records import InstructionRecord
from defuse.errors import DataError

SAMSUM_INSTRUCTION = "Summarize this dialog."
_KINDS = {
    "samsum": ("dialogue", "summary"),
    "sqlgen": ("question", "context", "answer"),
}


def practical_kind(path: str | Path) -> str | None:
    """``"samsum"`` or ``"sqlgen"`` when the file's first row has that task's keys, else None."""
    p = Path(path)
    if detect_format(p) not in ("alpaca-json", "alpaca-jsonl"):
        return None
    _, rows = read_rows(p, None, "train", required=[], headerless=None)
    if not rows or not isinstance(rows[0][1], dict):
        return None
    keys = set(rows[0][1])
    for kind, needed in _KINDS.items():
        if set(needed) <= keys:
            return kind
    return None


def load_task_records(path: str | Path) -> list[InstructionRecord]:
    """Load a benign task file: SAMSum or SQL-generation JSON by their keys, anything else as instructions.

    Raises:
        DataError: naming the file, row and field of the first bad row, or an empty file.
    """
    p = Path(path)
    kind = practical_kind(p)
    if kind is None:
        return load_instructions(p)
    out = []
    _, rows = read_rows(p, None, "train", required=[], headerless=None)
    for n, row in rows:
        values = {}
        for key in _KINDS[kind]:
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(p, f"expected a non-empty string, found {kind_of(value)}", row=n, field=key)
            values[key] = value.replace("\r\n", "\n")
        if kind == "samsum":
            record = InstructionRecord(SAMSUM_INSTRUCTION, values["summary"], input=values["dialogue"],
                                       source=str(p), task=kind)  # fmt: skip
        else:
            record = InstructionRecord(values["question"], values["answer"], input=values["context"],
                                       source=str(p), task=kind)  # fmt: skip
        out.append(record)
    if not out:
        raise DataError(p, "no records")
    return out


def load_prompt_list(path: str | Path, task: str = "harmful") -> list[InstructionRecord]:
    """Load test prompts without answers: a one-column CSV/TSV (no header, one prompt per row, as
    BackdoorAlign's ``llm_category_benchmark.csv``) or any instruction file (its responses are dropped).

    Raises:
        DataError: naming the file and row of an empty prompt, or an empty file.
    """
    p = Path(path)
    if detect_format(p) in ("csv", "tsv"):
        _, rows = read_rows(p, None, "train", required=[("prompt",)], headerless="prompt", names={"prompt"})
        out = []
        for n, row in rows:
            text = row.get("prompt")
            if not isinstance(text, str) or not text.strip():
                raise DataError(p, "empty prompt", row=n, field="prompt")
            out.append(InstructionRecord(text.strip(), source=str(p), task=task))
    else:
        out = [InstructionRecord(r.instruction, input=r.input, source=str(p), task=task)
               for r in load_instructions(p, prompts_only=True)]  # fmt: skip
    if not out:
        raise DataError(p, "no prompts")
    return out

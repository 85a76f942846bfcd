"""Load instruction and classification data from every format in :data:`FORMATS`.

The loaders turn a file (or a folder saved by ``datasets``) into a list of
:class:`~defuse.data.records.InstructionRecord` or :class:`~defuse.data.records.ClassificationRecord`.
They check every row and stop at the first bad one with a :class:`~defuse.errors.DataError` whose
one-line message names the file, the row and the field. Rows are numbered from 1:

* JSON array (``alpaca-json``): the element's index + 1;
* JSON lines (``alpaca-jsonl``, ``chat-jsonl``): the line number (blank lines are skipped, but counted);
* CSV/TSV: the data row, the first row after the header (or the first row of a header-less file) being 1;
  blank lines are skipped but counted;
* ``hf-dir``: the row's index + 1 in the chosen split.

In a JSON, JSON-lines or ``hf-dir`` row the keys ``poisoned`` (true/false, or 0/1), ``trigger``,
``behaviour``, ``source`` and ``task`` (string or null) fill the record's fields of those names unless a
column mapping uses them (``write_instructions(..., include_meta=True)`` writes them, so such a file
reads back to equal records). Every other key that no mapping names is kept in ``meta``.

This module also re-exports :data:`FORMATS`, :func:`detect_format` and the writers, so
``from defuse.data.loaders import ...`` reaches the whole read/write API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from defuse.data.formats import FORMATS, detect_format, kind_of, quote_short, read_rows
from defuse.data.records import ClassificationRecord, InstructionRecord
from defuse.data.writers import write_classification, write_instructions
from defuse.errors import ConfigError, DataError

__all__ = [
    "CLASSIFICATION_COLUMNS",
    "FORMATS",
    "INSTRUCTION_COLUMNS",
    "detect_format",
    "load_classification",
    "load_instructions",
    "write_classification",
    "write_instructions",
]

INSTRUCTION_COLUMNS: dict[str, str] = {
    "instruction": "instruction",
    "input": "input",
    "response": "output",
    "system": "system",
}
"""Default mapping of an instruction record's fields to a file's keys or columns."""

CLASSIFICATION_COLUMNS: dict[str, str] = {"text": "text", "label": "label"}
"""Default mapping of a classification record's fields; ``text`` falls back to ``sentence``."""

_TEXT_FALLBACK = "sentence"
_INSTRUCTION_RESERVED = ("poisoned", "trigger", "behaviour", "source", "task")
_CLASSIFICATION_RESERVED = ("poisoned", "trigger", "source")
_INT = re.compile(r"[+-]?[0-9]+")
_ROLES = ("system", "user", "assistant")


def load_instructions(
    path: str | Path,
    format: str | None = None,
    columns: dict[str, str | None] | None = None,
    split: str = "train",
    source: str | None = None,
    prompts_only: bool = False,
) -> list[InstructionRecord]:
    """Load instruction records from a data file or a saved ``datasets`` folder.

    Args:
        path: The file or folder.
        format: One of :data:`FORMATS`; detected from the content (:func:`detect_format`) when ``None``.
        columns: Maps our fields ``instruction``, ``input``, ``response`` and ``system`` to the file's keys
            or columns (defaults: ``instruction``, ``input``, ``output``, ``system``); e.g. samsum is
            ``{"instruction": "dialogue", "response": "summary"}``. Mapping an optional field to ``None``
            ignores it (the key then lands in ``meta``). Applies to every format but ``chat-jsonl``.
        split: The split to read when the folder holds a ``DatasetDict``; ignored otherwise.
        source: The records' ``source``; default: the row's ``source`` key, else ``str(path)``.
        prompts_only: Read test prompts: a row may lack its response (the record's is then ``""``).
            Otherwise (training data, reference answers) every row must have one.

    Returns:
        The records, in file order; never empty.

    The instruction must be a non-empty (not blank) string; ``input`` is a string (default ``""``),
    ``system`` a string or null (default ``None``; in CSV/TSV an empty cell is ``None``). The response is a
    string that every row must have, unless ``prompts_only``: its key (``output`` by default) in a JSON
    row, its column in a CSV/TSV header, the ``assistant`` turn of a chat row; a missing one is refused like
    a null one, naming the file, row and field. An empty response is allowed where the format writes one:
    ``"output": ""``, an empty CSV cell, an ``assistant`` turn with empty content (``defuse data check``
    counts them). Chat JSON lines hold ``{"messages": [...]}`` with an optional first ``system`` turn, one
    ``user`` turn and an ``assistant`` turn after it. CSV/TSV need a header row, except a file with exactly
    one column whose first line is not a mapped column name: that is a header-less list of prompts (read
    with ``prompts_only`` only).

    Raises:
        DataError: unreadable or malformed data, a missing or mistyped field (naming row and field),
            a missing column or split, or no records at all.
        ConfigError: an unknown ``format`` or a bad ``columns`` mapping.
    """
    path = Path(path)
    mapping = _mapping(columns, INSTRUCTION_COLUMNS, required=("instruction",), path=path)
    names = {name for name in mapping.values() if name is not None}
    need = not prompts_only and mapping["response"] is not None
    fmt, rows = read_rows(
        path,
        format,
        split,
        required=[(mapping["instruction"],), *([(mapping["response"],)] if need else [])],
        headerless=None if need else mapping["instruction"],
        names=names,
    )
    typed = fmt not in ("csv", "tsv")
    if fmt == "chat-jsonl":
        records = [_chat_record(path, n, row, source, need) for n, row in rows]
    else:
        records = [_instruction_record(path, n, row, mapping, source, typed, need) for n, row in rows]
    if not records:
        raise DataError(path, "no records")
    return records


def load_classification(
    path: str | Path,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    split: str = "train",
    source: str | None = None,
) -> list[ClassificationRecord]:
    """Load classification records (text + integer label) from CSV/TSV, JSON, JSON lines or ``hf-dir``.

    Args:
        path: The file or folder.
        format: One of :data:`FORMATS` but ``chat-jsonl``; detected from the content when ``None``.
        columns: Maps ``text`` and ``label`` to the file's keys or columns (defaults ``text``, falling back
            to ``sentence`` where a row or header has no ``text``, and ``label``).
        split: The split to read when the folder holds a ``DatasetDict``; ignored otherwise.
        source: The records' ``source``; default: the row's ``source`` key, else ``str(path)``.

    Returns:
        The records in file order, never empty. Texts are stripped of surrounding whitespace.

    Labels must be integers (JSON numbers without a fraction, or strings such as ``"1"``); booleans,
    floats and other strings are rejected. CSV/TSV files need a header row.

    Raises:
        DataError: as :func:`load_instructions`, plus a chat-jsonl file (it holds no labels).
        ConfigError: an unknown ``format`` or a bad ``columns`` mapping.
    """
    path = Path(path)
    mapping = _mapping(columns, CLASSIFICATION_COLUMNS, required=("text", "label"), path=path)
    fallback = columns is None or "text" not in columns
    text_names = (mapping["text"], _TEXT_FALLBACK) if fallback else (mapping["text"],)
    fmt, rows = read_rows(path, format, split, required=[text_names, (mapping["label"],)], headerless=None)
    if fmt == "chat-jsonl":
        raise DataError(
            path, "chat-jsonl holds conversations, not labelled texts; cannot load classification"
        )
    typed = fmt not in ("csv", "tsv")
    records = [_classification_record(path, n, row, mapping, fallback, source, typed) for n, row in rows]
    if not records:
        raise DataError(path, "no records")
    return records


# --- building records -------------------------------------------------------------------------------


def _instruction_record(
    path: Path,
    n: int,
    row: dict[str, Any],
    mapping: dict[str, str | None],
    source: str | None,
    typed: bool,
    need_response: bool,
) -> InstructionRecord:
    instruction = _instruction_text(path, n, row, mapping["instruction"])
    if need_response and mapping["response"] not in row:
        raise DataError(path, "missing response", row=n, field=mapping["response"])
    system = _string(path, n, row, mapping["system"], default=None, nullable=True)
    if not typed and system == "":
        system = None  # a CSV cell cannot tell "no system prompt" from an empty one
    used = {name for name in mapping.values() if name is not None}
    rest = {key: value for key, value in row.items() if key not in used}
    fields = _reserved(path, n, rest, _INSTRUCTION_RESERVED) if typed else {}
    fields["source"] = _source(path, fields, source)
    return InstructionRecord(
        instruction=instruction,
        response=_string(path, n, row, mapping["response"], default=""),
        input=_string(path, n, row, mapping["input"], default=""),
        system=system,
        meta=rest,
        **fields,
    )


def _chat_record(
    path: Path, n: int, row: dict[str, Any], source: str | None, need_response: bool
) -> InstructionRecord:
    if "messages" not in row:
        raise DataError(path, "missing messages", row=n, field="messages")
    messages = row["messages"]
    if not isinstance(messages, list):
        raise DataError(
            path, f"expected a list of messages, found {kind_of(messages)}", row=n, field="messages"
        )
    system: str | None = None
    instruction: str | None = None
    response: str | None = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(path, f"expected a message object, found {kind_of(message)}", row=n, field=where)
        if "role" not in message:
            raise DataError(path, "missing role", row=n, field=f"{where}.role")
        role = message["role"]
        if role not in _ROLES:
            found = quote_short(role) if isinstance(role, str) else kind_of(role)
            raise DataError(
                path,
                f"unknown role {found} (expected system, user or assistant)",
                row=n,
                field=f"{where}.role",
            )
        content = _string(path, n, message, "content", default=None, field=f"{where}.content")
        if content is None:
            raise DataError(path, "missing content", row=n, field=f"{where}.content")
        problem = None
        if role == "system" and i != 0:
            problem = "a system turn must come first"
        elif role == "user" and instruction is not None:
            problem = "a second user turn (multi-turn conversations are not supported)"
        elif role == "assistant" and instruction is None:
            problem = "an assistant turn before the user turn"
        elif role == "assistant" and response is not None:
            problem = "a second assistant turn (multi-turn conversations are not supported)"
        if problem:
            raise DataError(path, problem, row=n, field=f"{where}.role")
        if role == "system":
            system = content
        elif role == "user":
            if not content.strip():
                raise DataError(path, "empty instruction", row=n, field=f"{where}.content")
            instruction = content
        else:
            response = content
    if instruction is None:
        raise DataError(path, "no user turn", row=n, field="messages")
    if response is None and need_response:
        raise DataError(path, "missing response (no assistant turn)", row=n, field="messages")
    rest = {key: value for key, value in row.items() if key != "messages"}
    fields = _reserved(path, n, rest, _INSTRUCTION_RESERVED)
    fields["source"] = _source(path, fields, source)
    return InstructionRecord(
        instruction=instruction, response=response or "", system=system, meta=rest, **fields
    )


def _classification_record(
    path: Path,
    n: int,
    row: dict[str, Any],
    mapping: dict[str, str | None],
    fallback: bool,
    source: str | None,
    typed: bool,
) -> ClassificationRecord:
    text_key = str(mapping["text"])
    if fallback and text_key not in row and _TEXT_FALLBACK in row:
        text_key = _TEXT_FALLBACK
    if text_key not in row:
        raise DataError(path, "missing text", row=n, field=text_key)
    text = _string(path, n, row, text_key, default="").strip()
    if not text:
        raise DataError(path, "empty text", row=n, field=text_key)
    label_key = str(mapping["label"])
    if label_key not in row:
        raise DataError(path, "missing label", row=n, field=label_key)
    label = _label(path, n, row[label_key], label_key)
    rest = {key: value for key, value in row.items() if key not in (text_key, label_key)}
    fields = _reserved(path, n, rest, _CLASSIFICATION_RESERVED) if typed else {}
    fields["source"] = _source(path, fields, source)
    return ClassificationRecord(text=text, label=label, meta=rest, **fields)


# --- field checks -----------------------------------------------------------------------------------


def _mapping(
    columns: dict[str, str | None] | None, defaults: dict[str, str], required: tuple[str, ...], path: Path
) -> dict[str, str | None]:
    """Merge ``columns`` over ``defaults``, checking the field names and column names."""
    mapping: dict[str, str | None] = dict(defaults)
    if columns is None:
        return mapping
    if not isinstance(columns, dict):
        raise ConfigError(
            "columns", f"expected a mapping of field to column, found {type(columns).__name__}", path
        )
    for field, column in columns.items():
        if field not in defaults:
            raise ConfigError(
                "columns", f"unknown field {field!r} (expected one of {', '.join(defaults)})", path
            )
        if column is None and field in required:
            raise ConfigError("columns", f"field {field!r} is required and cannot be mapped to None", path)
        if column is not None and (not isinstance(column, str) or not column):
            raise ConfigError("columns", f"field {field!r}: column name must be a non-empty string", path)
        mapping[field] = column
    return mapping


def _instruction_text(path: Path, n: int, row: dict[str, Any], key: str | None) -> str:
    if key not in row:
        raise DataError(path, "missing instruction", row=n, field=key)
    value = _string(path, n, row, key, default="")
    if not value.strip():
        raise DataError(path, "empty instruction", row=n, field=key)
    return value


def _string(
    path: Path,
    n: int,
    row: dict[str, Any],
    key: str | None,
    default: Any,
    nullable: bool = False,
    field: str | None = None,
) -> Any:
    """``row[key]`` when it is a string (or ``None`` if ``nullable``); ``default`` when absent."""
    if key is None or key not in row:
        return default
    value = row[key]
    if isinstance(value, str) or (value is None and nullable):
        return value
    raise DataError(path, f"expected a string, found {kind_of(value)}", row=n, field=field or key)


def _reserved(path: Path, n: int, rest: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Pop the record-field keys (``poisoned``, ``trigger``, ...) from ``rest`` and check their types."""
    fields: dict[str, Any] = {}
    for name in names:
        if name not in rest:
            continue
        value = rest.pop(name)
        if name == "poisoned":
            if not (isinstance(value, bool) or (type(value) is int and value in (0, 1))):
                raise DataError(path, f"expected true or false, found {kind_of(value)}", row=n, field=name)
            fields[name] = bool(value)
        elif value is None or isinstance(value, str):
            fields[name] = value
        else:
            raise DataError(path, f"expected a string or null, found {kind_of(value)}", row=n, field=name)
    return fields


def _source(path: Path, fields: dict[str, Any], source: str | None) -> str | None:
    """The explicit ``source``, else the row's own ``source`` key (even null), else the path."""
    row_source = fields.get("source", str(path))
    return row_source if source is None else source


def _label(path: Path, n: int, value: Any, key: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        try:
            return int(value.strip())
        except ValueError:  # more digits than Python converts
            raise DataError(path, "label has too many digits", row=n, field=key) from None
    found = quote_short(value) if isinstance(value, str) else kind_of(value)
    raise DataError(path, f"expected an integer label, found {found}", row=n, field=key)

"""Write instruction and classification records in a format the loaders read back unchanged.

Writes are atomic: the whole file is built in memory, written to a temporary file in the target's
folder and moved over the target with :func:`os.replace`. On any error nothing is left behind and an
existing file is untouched. What :func:`write_instructions` writes, ``load_instructions`` reads back
to equal records, with these documented limits:

* without ``include_meta`` the fields ``poisoned``, ``trigger``, ``behaviour``, ``task`` and ``source``
  are not written (the loader sets ``source`` to the file path);
* ``chat-jsonl`` has no ``input``: the user turn is the record's ``user_text`` (instruction, blank line,
  input), and an empty response is an assistant turn with empty content;
* CSV/TSV hold no metadata, and an empty ``system`` prompt there reads back as ``None``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from defuse.data.formats import check_format
from defuse.data.records import ClassificationRecord, InstructionRecord
from defuse.errors import ConfigError, DataError
from defuse.fileio import write_text_atomic as _atomic_write

_BY_EXTENSION = {".json": "alpaca-json", ".jsonl": "alpaca-jsonl", ".csv": "csv", ".tsv": "tsv"}
_INSTRUCTION_KEYS = ("instruction", "input", "output", "system", "messages")
_INSTRUCTION_EXTRA = ("poisoned", "trigger", "behaviour", "source", "task")
_CLASSIFICATION_KEYS = ("text", "label")
_CLASSIFICATION_EXTRA = ("poisoned", "trigger", "source")


def write_instructions(
    records: Iterable[InstructionRecord],
    path: str | Path,
    format: str | None = None,
    include_meta: bool = False,
) -> Path:
    """Write instruction records to ``path``, atomically.

    Args:
        records: The records (at least one).
        path: The target file; missing parent folders are created.
        format: ``alpaca-json``, ``alpaca-jsonl``, ``chat-jsonl``, ``csv`` or ``tsv``; by default taken
            from the extension (``.json``, ``.jsonl`` (Alpaca), ``.csv``, ``.tsv``).
        include_meta: Also write ``poisoned``, ``trigger``, ``behaviour``, ``source``, ``task`` and every
            ``meta`` key into each JSON/JSON-lines row (ignored for CSV/TSV).

    Returns:
        The path written.

    Alpaca rows hold ``instruction``, ``input``, ``output`` and (when not ``None``) ``system``; chat rows
    hold ``messages`` with an optional system turn; CSV/TSV have a header row ``instruction``, ``input``,
    ``output`` (and ``system`` when any record has one).

    Raises:
        DataError: no records, a record that the loader would reject (empty instruction, wrong types,
            a NUL character in CSV/TSV, a meta key clashing with a written key, meta that is not
            JSON-serialisable) naming the row and field, or the file cannot be written.
        ConfigError: an unknown format, or one that cannot be written (``hf-dir``).
    """
    path = Path(path)
    fmt = _target_format(path, format, ("alpaca-json", "alpaca-jsonl", "chat-jsonl", "csv", "tsv"))
    items = _checked(path, records, InstructionRecord, fmt)
    if fmt in ("csv", "tsv"):
        with_system = any(r.system is not None for r in items)
        header = ["instruction", "input", "output"] + (["system"] if with_system else [])
        rows = [
            [r.instruction, r.input, r.response] + ([r.system or ""] if with_system else []) for r in items
        ]
        content = _delimited(header, rows, fmt)
    else:
        dicts = []
        for n, r in enumerate(items, 1):
            if fmt == "chat-jsonl":
                messages = [] if r.system is None else [{"role": "system", "content": r.system}]
                messages.append({"role": "user", "content": r.user_text})
                messages.append({"role": "assistant", "content": r.response})
                row: dict[str, Any] = {"messages": messages}
            else:
                row = {"instruction": r.instruction, "input": r.input, "output": r.response}
                if r.system is not None:
                    row["system"] = r.system
            if include_meta:
                _add_meta(path, n, row, r, _INSTRUCTION_EXTRA, _INSTRUCTION_KEYS)
            dicts.append(row)
        content = _json(path, dicts, lines=fmt != "alpaca-json")
    _atomic_write(path, content)
    return path


def write_classification(
    records: Iterable[ClassificationRecord],
    path: str | Path,
    format: str | None = None,
    include_meta: bool = False,
) -> Path:
    """Write classification records to ``path``, atomically (see :func:`write_instructions`).

    Args:
        records: The records (at least one).
        path: The target file; missing parent folders are created.
        format: ``alpaca-json`` (a JSON array), ``alpaca-jsonl`` (JSON lines), ``csv`` or ``tsv``; by default
            from the extension (``.json``, ``.jsonl``, ``.csv``, ``.tsv``).
        include_meta: Also write ``poisoned``, ``trigger``, ``source`` and every ``meta`` key into each
            JSON/JSON-lines row (ignored for CSV/TSV).

    Returns:
        The path written. Rows hold ``text`` and ``label``; CSV/TSV have the header ``text``, ``label``.

    Raises:
        DataError: no records, an empty text, a non-integer label, a NUL character in CSV/TSV, a bad
            meta key, or the file cannot be written.
        ConfigError: an unknown format, or one that cannot be written (``chat-jsonl``, ``hf-dir``).
    """
    path = Path(path)
    fmt = _target_format(path, format, ("alpaca-json", "alpaca-jsonl", "csv", "tsv"))
    items = _checked(path, records, ClassificationRecord, fmt)
    if fmt in ("csv", "tsv"):
        content = _delimited(["text", "label"], [[r.text, str(r.label)] for r in items], fmt)
    else:
        dicts = []
        for n, r in enumerate(items, 1):
            row: dict[str, Any] = {"text": r.text, "label": r.label}
            if include_meta:
                _add_meta(path, n, row, r, _CLASSIFICATION_EXTRA, _CLASSIFICATION_KEYS)
            dicts.append(row)
        content = _json(path, dicts, lines=fmt == "alpaca-jsonl")
    _atomic_write(path, content)
    return path


def _target_format(path: Path, format: str | None, allowed: tuple[str, ...]) -> str:
    if format is None:
        fmt = _BY_EXTENSION.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(
                "format", f"cannot tell the format from the extension {path.suffix!r}; pass format=", path
            )
        return fmt
    check_format(format, path)
    if format not in allowed:
        raise ConfigError("format", f"cannot write {format!r} (writable: {', '.join(allowed)})", path)
    return format


def _checked(path: Path, records: Iterable[Any], kind: type, fmt: str) -> list[Any]:
    """The records as a list, each checked to be one the loader accepts back."""
    items = list(records)
    if not items:
        raise DataError(path, "no records to write")
    text_fields = ("instruction", "input", "response", "system") if kind is InstructionRecord else ("text",)
    for n, record in enumerate(items, 1):
        if not isinstance(record, kind):
            raise DataError(path, f"expected a {kind.__name__}, found {type(record).__name__}", row=n)
        for name in text_fields:
            value = getattr(record, name)
            if value is None and name == "system":
                continue
            if not isinstance(value, str):
                raise DataError(path, f"expected a string, found {type(value).__name__}", row=n, field=name)
            if name in ("instruction", "text") and not value.strip():
                raise DataError(path, f"empty {name}", row=n, field=name)
            if fmt in ("csv", "tsv") and "\x00" in value:
                raise DataError(path, "a NUL character, which CSV/TSV cannot hold", row=n, field=name)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(
                    path, "not encodable as UTF-8 (a lone surrogate?)", row=n, field=name
                ) from None
        if kind is ClassificationRecord and type(record.label) is not int:
            raise DataError(
                path, f"expected an integer label, found {type(record.label).__name__}", row=n, field="label"
            )
    return items


def _add_meta(
    path: Path, n: int, row: dict[str, Any], record: Any, extra: tuple[str, ...], keys: tuple[str, ...]
) -> None:
    """Add the record's extra fields and ``meta`` keys to a JSON row, refusing clashing meta keys."""
    for name in extra:
        row[name] = getattr(record, name)
    if not isinstance(record.meta, dict):
        raise DataError(path, f"meta must be a dict, found {type(record.meta).__name__}", row=n, field="meta")
    for key, value in record.meta.items():
        if not isinstance(key, str) or key in keys or key in extra:
            raise DataError(path, f"meta key {key!r} clashes with a record field", row=n, field=f"meta.{key}")
        row[key] = value


def _json(path: Path, rows: list[dict[str, Any]], lines: bool) -> str:
    parts = []
    for n, row in enumerate(rows, 1):
        try:
            parts.append(json.dumps(row, ensure_ascii=False, indent=None if lines else 2))
        except (TypeError, ValueError, RecursionError) as exc:
            raise DataError(path, f"not JSON-serialisable: {exc}", row=n, field="meta") from None
    for n, part in enumerate(parts, 1):
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                path, "meta not encodable as UTF-8 (a lone surrogate?)", row=n, field="meta"
            ) from None
    if lines:
        return "\n".join(parts) + "\n"
    # Only structural newlines are raw in JSON text, so indenting at "\n" cannot touch a string's content.
    return "[\n  " + ",\n  ".join(part.replace("\n", "\n  ") for part in parts) + "\n]\n"


def _delimited(header: list[str], rows: list[list[str]], fmt: str) -> str:
    """CSV/TSV text; ``\\r\\n`` line ends make the writer quote any field holding ``\\r`` or ``\\n``."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, dialect="excel-tab" if fmt == "tsv" else "excel", lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()

"""Tell which data format a file or folder holds, from its content, and read it into raw rows.

The loaders (:mod:`defuse.data.loaders`) call :func:`read_rows`, which detects the format with
:func:`detect_format`'s rules unless a caller forces one, and turn its raw rows (dicts) into records.
Detection looks at what is in the file, never only at its name, so a ``.txt`` file that holds JSON lines
is read as JSON lines. Every problem (missing file, binary data, an empty file, malformed JSON or CSV, a
folder that is not a saved dataset) is a :class:`~defuse.errors.DataError` naming the path, and the row
where there is one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from defuse.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = ("alpaca-json", "alpaca-jsonl", "chat-jsonl", "csv", "tsv", "hf-dir")
"""Every format the loaders read, by the name ``format=`` takes."""

HF_MARKERS: tuple[str, ...] = ("dataset_dict.json", "dataset_info.json", "state.json")
"""Files one of which a folder written by ``datasets``' ``save_to_disk`` always holds."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

Row = tuple[int, dict[str, Any]]
"""One raw row: its 1-based number (see :mod:`defuse.data.loaders`) and its keys and values."""

csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def expected_formats() -> str:
    """The supported format names as one comma-separated string, for error messages."""
    return ", ".join(FORMATS)


def check_format(format: object, path: str | Path | None = None) -> str:
    """Return ``format`` when it names a supported format.

    Raises:
        ConfigError: ``format`` is not one of :data:`FORMATS` (the message names it and the file).
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ConfigError("format", f"unknown format {format!r} (expected one of {expected_formats()})", path)
    return format


def read_text(path: Path) -> str:
    """Read a whole file as UTF-8 text (a leading byte-order mark is dropped).

    Raises:
        DataError: the file is missing or unreadable, is not UTF-8, or holds NUL bytes (binary data).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, f"not UTF-8 text (undecodable byte at offset {exc.start}); binary file?"
        ) from None
    if "\x00" in text:
        raise DataError(path, "binary data (NUL byte), expected UTF-8 text")
    return text


def detect_format(path: str | Path) -> str:
    """Say which of :data:`FORMATS` ``path`` holds, judging by its content.

    Rules, in order:

    * a folder holding ``dataset_info.json``, ``state.json`` or ``dataset_dict.json`` (what
      ``datasets``' ``save_to_disk`` writes) is ``"hf-dir"``; any other folder is an error;
    * text whose first non-blank character is ``[`` and that is a JSON array is ``"alpaca-json"``;
    * text starting with ``{`` is JSON lines: ``"chat-jsonl"`` when the first line's object has a
      ``"messages"`` key, else ``"alpaca-jsonl"``; a single multi-line JSON object is an error;
    * anything else is delimited text: ``"tsv"`` when the first line holds more tabs than commas,
      else ``"csv"`` (this covers a one-column, header-less list of prompts).

    Args:
        path: A file or a folder.

    Returns:
        The format name.

    Raises:
        DataError: the path is missing, unreadable, binary, empty, or of no known format.
    """
    path = Path(path)
    if path.is_dir():
        return detect_dir_format(path)
    return detect_text_format(read_text(path), path)


def detect_dir_format(path: Path) -> str:
    """``"hf-dir"`` for a folder saved by ``datasets``, else a :class:`DataError`."""
    if any((path / marker).is_file() for marker in HF_MARKERS):
        return "hf-dir"
    raise DataError(
        path,
        f"unknown format (expected one of {expected_formats()}): a folder without "
        f"{', '.join(HF_MARKERS)}, so not one saved by datasets",
    )


def detect_text_format(text: str, path: str | Path) -> str:
    """Apply :func:`detect_format`'s rules for files to already-read ``text`` (``path`` is for messages)."""
    stripped = text.lstrip()
    if not stripped:
        raise DataError(path, "empty file")
    if stripped[0] == "[" and _is_json_array(stripped):
        return "alpaca-json"
    if stripped[0] == "{":
        return _detect_json_lines(text, path)
    first = next(line for line in _LINE_BREAK.split(text) if line.strip())
    tabs = first.count("\t")
    return "tsv" if tabs and tabs > first.count(",") else "csv"


def _is_json_array(text: str) -> bool:
    """True when ``text`` (starting with ``[``) is meant as a JSON array rather than a CSV line."""
    after = text[1:].lstrip()
    if not after or after[0] in "{]":
        return True
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _detect_json_lines(text: str, path: str | Path) -> str:
    first = next(line for line in text.split("\n") if line.strip())
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError):
            return "alpaca-jsonl"  # the loader reports the bad line
        if isinstance(whole, dict):
            raise DataError(
                path, "a single JSON object at top level; expected an array of records or one object per line"
            ) from None
        return "alpaca-jsonl"
    return "chat-jsonl" if isinstance(obj, dict) and "messages" in obj else "alpaca-jsonl"


# --- reading raw rows -------------------------------------------------------------------------------


def read_rows(
    path: Path,
    format: str | None,
    split: str,
    required: list[tuple[str, ...]],
    headerless: str | None,
    names: set[str] | None = None,
) -> tuple[str, list[Row]]:
    """Read ``path`` as ``format`` (or the detected one) into ``(row number, raw row dict)`` pairs.

    Args:
        path: The file or folder.
        format: A forced format, or ``None`` to detect it.
        split: The split to take from a saved ``DatasetDict``.
        required: CSV/TSV only: for each required field, the header names that can hold it (the first is
            the one an error names); a header lacking all of them is an error.
        headerless: CSV/TSV only: the key under which a header-less one-column file's cells are returned,
            or ``None`` when such a file is not allowed (its first line is then read as the header).
        names: CSV/TSV only: the mapped column names; a one-column file whose first line is one of them
            has a header.

    Returns:
        The format read and the rows, in file order (CSV/TSV values are strings; JSON values as parsed).

    Raises:
        DataError: unreadable, malformed or empty data; an object where a row was expected; a missing
            required column or a duplicate one; a row with the wrong number of CSV fields; a missing split.
        ConfigError: ``format`` is not one of :data:`FORMATS`.
    """
    if format is not None:
        check_format(format, path)
    if path.is_dir():
        if format is not None and format != "hf-dir":
            raise DataError(path, f"is a directory, but format {format!r} needs a file")
        return detect_dir_format(path), _hf_rows(path, split)
    if format == "hf-dir":
        raise DataError(path, "format 'hf-dir' needs a folder saved by datasets, not a file")
    text = read_text(path)
    if not text.strip():
        raise DataError(path, "empty file")
    fmt = format or detect_text_format(text, path)
    if fmt == "alpaca-json":
        return fmt, _json_array_rows(text, path)
    if fmt in ("alpaca-jsonl", "chat-jsonl"):
        return fmt, _json_lines_rows(text, path)
    return fmt, _delimited_rows(text, path, fmt, required, headerless, names or set())


def _json_array_rows(text: str, path: Path) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(path, f"invalid JSON: {_reason(exc)}") from None
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON array of objects at top level, found {kind_of(data)}")
    rows = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise DataError(path, f"expected a JSON object, found {kind_of(item)}", row=n)
        rows.append((n, item))
    return rows


def _json_lines_rows(text: str, path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", row=n) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(path, f"invalid JSON: {_reason(exc)}", row=n) from None
        if not isinstance(item, dict):
            raise DataError(path, f"expected a JSON object per line, found {kind_of(item)}", row=n)
        rows.append((n, item))
    return rows


def _delimited_rows(
    text: str, path: Path, fmt: str, required: list[tuple[str, ...]], headerless: str | None, names: set[str]
) -> list[Row]:
    """CSV/TSV rows as dicts keyed by the header (or by ``headerless`` for a one-column prompt list)."""
    reader = csv.reader(io.StringIO(text, newline=""), dialect="excel-tab" if fmt == "tsv" else "excel")
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
    except csv.Error as exc:
        raise DataError(path, f"malformed {fmt.upper()}: {exc}", row=max(len(records), 1)) from None
    while records and not records[0]:
        records.pop(0)
    if not records:
        raise DataError(path, "empty file")
    one_column = all(len(record) <= 1 for record in records)
    if headerless is not None and one_column and records[0][0].strip() not in names:
        return [(n, {headerless: rec[0]}) for n, rec in enumerate(records, 1) if rec]
    header = [name.strip() for name in records[0]]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(path, f"duplicate column {quote_short(name)} in the header", field=name)
        seen.add(name)
    for options in required:
        if not any(option in seen for option in options):
            also = "".join(f" (nor {quote_short(o)})" for o in options[1:])
            found = ", ".join(quote_short(name) for name in header[:8]) + (", ..." if len(header) > 8 else "")
            raise DataError(
                path,
                f"the header has no column {quote_short(options[0])}{also}; columns: {found}",
                field=options[0],
            )
    rows = []
    for n, record in enumerate(records[1:], 1):
        if not record:
            continue
        if len(record) != len(header):
            raise DataError(path, f"{len(record)} fields, but the header has {len(header)}", row=n)
        rows.append((n, dict(zip(header, record, strict=True))))
    return rows


def _hf_rows(path: Path, split: str) -> list[Row]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(path, "reading a saved dataset needs the 'datasets' package") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a broken folder
        raise DataError(
            path, f"cannot load the saved dataset: {type(exc).__name__}: {_reason(exc)}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            available = ", ".join(loaded) or "none"
            raise DataError(path, f"no split {split!r} (available: {available})", field="split")
        loaded = loaded[split]
    return [(n, dict(row)) for n, row in enumerate(loaded, 1)]


def kind_of(value: Any) -> str:
    """A short description of a JSON value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def quote_short(text: str, limit: int = 30) -> str:
    """``repr`` of ``text``, cut to ``limit`` characters, so a message never quotes a whole row."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _reason(exc: BaseException) -> str:
    return str(exc)[:200] or type(exc).__name__

"""The project's error types.

Every error a user can cause (a bad file, a bad row, a bad setting) is a :class:`DefuseError` whose
message is one line that says what is wrong and where. The CLI prints that line and exits non-zero;
library callers can catch the type.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE_BREAKS = re.compile(r"[ \t]*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+[ \t]*")


def one_line(message: str) -> str:
    """``message`` on one line: each line break (with the blanks around it) becomes one space; every other
    character, runs of spaces inside a quoted value included, is kept as it is."""
    return _LINE_BREAKS.sub(" ", str(message)).strip()


class DefuseError(Exception):
    """A problem the user can fix; its message is a single line (:func:`one_line`)."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class DataError(DefuseError):
    """Bad input data: names the file, and where known the row (1-based) and the field.

    Args:
        path: The file (or directory) being read.
        problem: What is wrong, e.g. ``"missing field"``.
        row: 1-based row number (line number for JSONL/CSV, element number for a JSON array).
        field: The field or column concerned.
    """

    def __init__(
        self, path: str | Path | None, problem: str, row: int | None = None, field: str | None = None
    ):
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        self.problem = problem
        where = [self.path or "<data>"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), problem])}")


class ConfigError(DefuseError):
    """A nonsense or unknown setting: names the setting and, where known, the file it came from."""

    def __init__(self, key: str, problem: str, source: str | Path | None = None):
        self.key = key
        self.problem = problem
        self.source = None if source is None else str(source)
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}setting '{key}': {problem}")


class ModelError(DefuseError):
    """A model path that is missing, incomplete or not loadable safely."""

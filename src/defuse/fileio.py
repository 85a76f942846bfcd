"""Atomic file writes: every file the project writes goes through here (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from defuse.errors import DataError


def read_json_file(file: str | Path):
    """The JSON value in ``file`` (UTF-8).

    Raises:
        DataError: naming the file (and the line, for malformed JSON) when it cannot be read or parsed.
    """
    file = Path(file)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(file, f"malformed JSON: {exc.msg}", row=exc.lineno) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(file, f"cannot read the file: {exc}") from None


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder and :func:`os.replace`.

    Missing parent folders are created. On any error the temporary file is removed and an existing
    ``path`` is untouched.

    Raises:
        DataError: ``path`` is a directory or cannot be written.
    """
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, like :func:`write_text_atomic` (e.g. a PNG image).

    Raises:
        DataError: ``path`` is a directory or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file name")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DataError(path, f"cannot write the file: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON (no NaN/Infinity) atomically, like :func:`write_text_atomic`.

    Raises:
        DataError: ``obj`` is not JSON-serialisable, or the file cannot be written.
    """
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"not JSON-serialisable: {exc}") from None
    return write_text_atomic(path, text)


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write one compact JSON value per line atomically, like :func:`write_text_atomic`.

    Raises:
        DataError: a row is not JSON-serialisable (naming the 1-based row), or the file cannot be written.
    """
    path = Path(path)
    lines = []
    for n, row in enumerate(rows, 1):
        try:
            lines.append(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        except (TypeError, ValueError) as exc:
            raise DataError(path, f"not JSON-serialisable: {exc}", row=n) from None
    return write_text_atomic(path, "".join(lines))

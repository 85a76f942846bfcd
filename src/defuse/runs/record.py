"""The run record, ``run.json``: what it holds, how it is built, checked and read.

``run.json`` is one JSON object::

    {"schema": 1, "kind": "attack" | "defense" | ..., "name": str, "seed": int, "config": {...},
     "parent": "<the run this one started from>" | null,
     "metrics": {"asr": float|null, "cacc": float|null, "aacc": float|null, "ftr": float|null,
                 "n_triggered": int, "n_clean": int, ...},
     "timings": {"train_s": float, "eval_s": float, ...}, "versions": {...}, "processes": int,
     "git": str|null, "created": "2025-01-01T00:00:00Z"}

``processes`` is how many processes trained it (``accelerate launch --num_processes``; 1 without a launcher).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from defuse.errors import DataError
from defuse.fileio import read_json_file
from defuse.runs import distributed

RUN_FILE = "run.json"
SCHEMA_VERSION = 1
"""Version of the ``run.json`` layout; readers refuse records from a newer schema."""

_LIBRARIES = "defuse torch transformers peft accelerate datasets tokenizers safetensors".split()


def library_versions() -> dict[str, str]:
    """Versions of Python and the installed libraries a run depends on; a missing library is left out."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _git(package_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(package_dir), *args],
            capture_output=True,
            text=True,
            timeout=5,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_revision() -> str | None:
    """The git commit of the defuse source tree, with ``-dirty`` when the work tree has changes.

    ``None`` when git is absent, the package is not in a git work tree, or the package's files are not
    tracked there (an installed copy inside some other repository). Never raises.
    """
    try:
        package_dir = Path(__file__).resolve().parents[1]
        head = _git(package_dir, "rev-parse", "HEAD")
        if not head or _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
            return None
        status = _git(package_dir, "status", "--porcelain")
        return head.strip() + ("-dirty" if status is None or status.strip() else "")
    except Exception:  # provenance is best effort
        return None


def build_run_record(
    kind: str,
    name: str,
    seed: int,
    config: dict,
    metrics: dict,
    timings: dict,
    parent: str | Path | None = None,
    extra: dict | None = None,
) -> dict:
    """Assemble a ``run.json`` record, adding ``schema``, ``versions``, ``processes``, ``git`` and ``created``
    (UTC, ``Z``).

    Args:
        extra: More top-level keys; they may not replace a standard key.

    Raises:
        ValueError: an ``extra`` key clashes with a standard key.
    """
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "name": name,
        "seed": seed,
        "config": config,
        "parent": None if parent is None else str(parent),
        "metrics": metrics,
        "timings": timings,
        "versions": library_versions(),
        "processes": distributed.world_size(),
        "git": git_revision(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    clash = sorted(set(extra or {}) & set(record))
    if clash:
        raise ValueError(f"extra keys {clash} would replace standard run.json keys")
    record.update(extra or {})
    return record


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_Checks = dict[str, tuple[Callable[[Any], bool], str]]
_TEXT = (lambda v: isinstance(v, str) and bool(v), "a non-empty string")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_REQUIRED: _Checks = {
    "schema": (lambda v: _is_int(v) and v >= 1, "a schema number"),
    "kind": _TEXT,
    "name": _TEXT,
    "seed": (_is_int, "an integer"),
    "config": _OBJECT,
    "parent": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "metrics": _OBJECT,
    "timings": _OBJECT,
}
_OPTIONAL: _Checks = {
    "versions": _OBJECT,
    "git": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "created": (lambda v: isinstance(v, str), "a timestamp string"),
}
_RATE = (lambda v: v is None or _is_number(v), "a finite number or null")
_COUNT = (lambda v: _is_int(v) and v >= 0, "a non-negative integer")
_METRICS: _Checks = {**dict.fromkeys(("asr", "cacc", "aacc", "ftr"), _RATE)}
_METRICS.update(dict.fromkeys(("n_triggered", "n_clean"), _COUNT))


def validate_run_record(record: Any, source: str | Path | None) -> None:
    """Check a run record's required keys and their types.

    Required: ``schema`` (int, at most :data:`SCHEMA_VERSION`), ``kind`` and ``name`` (non-empty str),
    ``seed`` (int), ``config`` (dict), ``parent`` (str or null), ``metrics`` (dict with ``asr``, ``cacc``,
    ``aacc``, ``ftr`` each a finite number or null, and ``n_triggered``, ``n_clean`` non-negative ints),
    ``timings`` (dict of finite numbers). When present, ``versions`` is a dict, ``git`` a str or null and
    ``created`` a str. Other keys are free.

    Raises:
        DataError: naming ``source`` and the first bad field (``metrics.asr``).
    """
    if not isinstance(record, dict):
        raise DataError(source, f"run record must be a JSON object, got {type(record).__name__}")

    def check(prefix: str, mapping: dict, checks: _Checks, required: bool) -> None:
        for key, (ok, what) in checks.items():
            if key not in mapping and required:
                raise DataError(source, "missing", field=prefix + key)
            if key in mapping and not ok(mapping[key]):
                raise DataError(source, f"expected {what}, got {mapping[key]!r}", field=prefix + key)

    check("", record, _REQUIRED, True)
    if record["schema"] > SCHEMA_VERSION:
        problem = f"written by a newer defuse (schema {record['schema']} > {SCHEMA_VERSION})"
        raise DataError(source, problem, field="schema")
    check("", record, _OPTIONAL, False)
    check("metrics.", record["metrics"], _METRICS, True)
    timings = record["timings"]
    check("timings.", timings, dict.fromkeys(timings, (_is_number, "a finite number of seconds")), True)


def read_run(path: str | Path) -> dict:
    """Read and validate ``<path>/run.json``.

    Raises:
        DataError: the directory or ``run.json`` is missing (an unfinished run has none), the JSON is
            malformed (naming the line) or the record is invalid.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "run directory not found")
    file = path / RUN_FILE
    if not file.is_file():
        raise DataError(file, "missing; not a finished run directory")
    record = read_json_file(file)
    validate_run_record(record, file)
    return record


def scenario_of_record(record: dict, default: str = "backdoor") -> str:
    """The scenario a run record belongs to (an attack run, or a defense or evaluation run of one): its
    top-level ``scenario``, else its config's, else ``default`` (runs made before scenarios were recorded)."""
    config = record.get("config") or {}
    return record.get("scenario") or config.get("scenario") or default

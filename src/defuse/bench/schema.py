"""The fixed layout of ``results.json`` (schema 1), written as a JSON-Schema-like mapping, and its validator.

:func:`check` understands the subset of JSON Schema the layout uses: ``type`` (a name or a list of names
among object, array, string, number, integer, boolean, null), ``properties``, ``required``,
``additionalProperties`` (False or a schema), ``items``, ``minItems``, ``enum``, ``const``, ``minimum``,
``maximum`` and ``pattern``. ``integer`` excludes booleans, ``number`` excludes booleans and non-finite
floats.

``results.json``::

    {"schema": 1, "name": str, "created": "2025-01-01T00:00:00Z", "git": str | null,
     "versions": {"python": "3.12.1", "torch": ...},
     "bench": {...},                      the bench config as given and resolved (cells.json's "bench")
     "cells": [{"scenario", "scenario_kind", "defense" ("none": the attack row), "method", "seed", "stage",
                "key", "parent", "run" (path relative to the output folder), "status",
                "metrics": {"asr", "cacc", "aacc", "ftr", "over_refusal", "negative_asr": rate | null,
                            the ones the run has},
                "counts": {"n_triggered", "n_clean", ...: int}, "timings": {"train_s", "eval_s", ...: s},
                "train_s": seconds trained (every timing but eval_s) | null, "wall_s": s | null,
                "merge_probe": MB-Defense's merge probe per stage (probe_summary) | null}, ...],
     "aggregates": [{"scenario", "scenario_kind", "defense", "method", "seeds": [int], "n_done": int,
                     "metrics": {"asr": {"mean", "stdev", "n"}, ...}, "counts": {"n_clean": [int per seed]},
                     "train_s": {"mean", "stdev", "n"}}, ...],
     "plots": ["plots/<scenario>-asr-vs-utility.png", ...]}

``stdev`` is the sample standard deviation over seeds (null with fewer than two).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from defuse.errors import DataError

RESULTS_SCHEMA_VERSION = 1
METRIC_KEYS = ("asr", "cacc", "aacc", "ftr", "over_refusal", "negative_asr")
CELL_STATUSES = ("done", "pending", "running", "failed", "skipped", "interrupted", "missing")

_STR = {"type": "string"}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"}
_KEY = {"type": "string", "pattern": r"^[0-9a-f]{64}$"}
_KIND = {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$"}  # a registered scenario's name
_SECONDS = {"type": "number", "minimum": 0}
_RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_SEED = {"type": "integer", "minimum": 0}
_METRICS = {"type": "object", "properties": dict.fromkeys(METRIC_KEYS, _RATE), "additionalProperties": False}
_STAT = {
    "type": "object",
    "required": ["mean", "stdev", "n"],
    "properties": {
        "mean": {"type": ["number", "null"]},
        "stdev": {"type": ["number", "null"], "minimum": 0},
        "n": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}


def _record(properties: dict, optional: tuple[str, ...] = ()) -> dict:
    """An object schema with exactly ``properties``, every one required except ``optional``."""
    required = [k for k in properties if k not in optional]
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


CELL_SCHEMA = _record(
    {
        "scenario": _NAME,
        "scenario_kind": _KIND,
        "defense": _NAME,
        "method": {"type": ["string", "null"]},
        "seed": _SEED,
        "stage": {"enum": ["attack", "defense"]},
        "key": _KEY,
        "parent": {"type": ["string", "null"], "pattern": r"^[0-9a-f]{64}$"},
        "run": _STR,
        "status": {"enum": list(CELL_STATUSES)},
        "metrics": _METRICS,
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "timings": {"type": "object", "additionalProperties": _SECONDS},
        "train_s": {"type": ["number", "null"], "minimum": 0},
        "wall_s": {"type": ["number", "null"], "minimum": 0},
        "merge_probe": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "object", "additionalProperties": _RATE},
        },
    },
    optional=("merge_probe",),
)
AGGREGATE_SCHEMA = _record(
    {
        "scenario": _NAME,
        "scenario_kind": _KIND,
        "defense": _NAME,
        "method": {"type": ["string", "null"]},
        "seeds": {"type": "array", "items": _SEED},
        "n_done": {"type": "integer", "minimum": 0},
        "metrics": {
            "type": "object",
            "properties": dict.fromkeys(METRIC_KEYS, _STAT),
            "additionalProperties": False,
        },
        "counts": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
        "train_s": _STAT,
    }
)
RESULTS_SCHEMA = {
    "type": "object",
    "required": ["schema", "name", "created", "git", "versions", "bench", "cells", "aggregates", "plots"],
    "properties": {
        "schema": {"const": RESULTS_SCHEMA_VERSION},
        "name": _NAME,
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        "git": {"type": ["string", "null"]},
        "versions": {"type": "object", "required": ["python"], "additionalProperties": _STR},
        "bench": {"type": "object", "required": ["name", "seeds", "scenarios"]},
        "cells": {"type": "array", "items": CELL_SCHEMA},
        "aggregates": {"type": "array", "items": AGGREGATE_SCHEMA},
        "plots": {"type": "array", "items": _STR},
    },
    "additionalProperties": False,
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check(value: Any, schema: dict, source: str | Path | None = None, where: str = "") -> None:
    """Check ``value`` against ``schema`` (the subset described in the module docstring).

    Raises:
        DataError: naming ``source`` and the path of the first value that does not fit
            (``cells[3].metrics.asr``).
    """

    def fail(problem: str) -> DataError:
        return DataError(source, problem, field=where or "<top level>")

    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            raise fail(f"expected {' or '.join(types)}, got {type(value).__name__} {_short(value)}")
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        raise fail(f"expected {schema['const']!r}, got {_short(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise fail(f"expected one of {', '.join(map(str, schema['enum']))}, got {_short(value)}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise fail(f"expected at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise fail(f"expected at most {schema['maximum']}, got {value}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        raise fail(f"does not match {schema['pattern']}: {_short(value)}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise fail(f"expected at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                check(item, schema["items"], source, f"{where}[{i}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise DataError(source, "missing", field=f"{where}.{name}" if where else name)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            at = f"{where}.{name}" if where else str(name)
            if name in props:
                check(item, props[name], source, at)
            elif extra is False:
                raise DataError(source, f"unexpected key (known: {', '.join(props)})", field=at)
            elif isinstance(extra, dict):
                check(item, extra, source, at)


def validate_results(results: Any, source: str | Path | None = None) -> None:
    """Check a results record against :data:`RESULTS_SCHEMA`.

    Raises:
        DataError: naming ``source`` and the first bad field.
    """
    check(results, RESULTS_SCHEMA, source)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

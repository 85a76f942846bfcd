"""Junk in gives records or a one-line DataError naming the file; what the writers write reads back equal.

Hypothesis feeds the loaders random bytes, JSON, CSV-ish text and chat rows, and the writers random
records; a few hand-written round trips come first.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from defuse.data.loaders import (
    FORMATS,
    detect_format,
    load_classification,
    load_instructions,
    write_classification,
    write_instructions,
)
from defuse.data.records import ClassificationRecord, InstructionRecord
from defuse.errors import DataError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loaders_property")


def fresh(workdir: Path, suffix: str) -> Path:
    """A new file name per example, so no example sees another's file."""
    return workdir / f"f{next(_counter)}{suffix}"


def outcome_ok(path: Path) -> None:
    """Every reader returns records of its type or raises a one-line DataError naming ``path``."""
    for call, kind in ((load_instructions, InstructionRecord), (load_classification, ClassificationRecord)):
        try:
            records = call(path)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message
            event(f"{call.__name__}: DataError")
        else:
            assert records and all(isinstance(r, kind) for r in records)
            event(f"{call.__name__}: records")
    try:
        assert detect_format(path) in FORMATS
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


KEYS = st.sampled_from(
    [
        "instruction",
        "input",
        "output",
        "system",
        "text",
        "sentence",
        "label",
        "messages",
        "poisoned",
        "source",
        "x",
    ]
) | st.text(max_size=5)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
OBJECTS = (
    st.dictionaries(KEYS, VALUES, max_size=6)
    | st.fixed_dictionaries(
        {"instruction": st.text(max_size=5) | VALUES},
        optional={"input": VALUES, "output": st.text() | VALUES},
    )
    | st.fixed_dictionaries(
        {
            "text": st.text(max_size=5) | VALUES,
            "label": st.integers() | st.sampled_from(["1", " -2 ", "x", "1.0"]) | VALUES,
        }
    )
)
ROLES = st.sampled_from(["system", "user", "assistant", "tool"]) | VALUES
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(min_size=1, max_size=5)}
) | st.fixed_dictionaries({}, optional={"role": ROLES, "content": st.text(max_size=10) | VALUES})
CHAT = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=4) | VALUES}, optional={"prefixed": VALUES}
)
CSVISH = st.lists(
    st.sampled_from(list('ab ,\t"\r\n1-é[{') + ["instruction", "text", "sentence", "label"]), max_size=30
).map("".join)


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes(workdir, data):
    path = fresh(workdir, ".bin")
    path.write_bytes(data)
    outcome_ok(path)


@FAST
@given(value=VALUES | st.lists(OBJECTS, max_size=4), as_lines=st.booleans())
def test_random_json(workdir, value, as_lines):
    path = fresh(workdir, ".json")
    if as_lines and isinstance(value, list):
        path.write_text("".join(json.dumps(item) + "\n" for item in value), encoding="utf-8")
    else:
        path.write_text(json.dumps(value), encoding="utf-8")
    outcome_ok(path)


@FAST
@given(text=CSVISH, suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_random_delimited_text(workdir, text, suffix):
    path = fresh(workdir, suffix)
    path.write_bytes(text.encode("utf-8"))
    outcome_ok(path)


@FAST
@given(rows=st.lists(CHAT | OBJECTS, min_size=1, max_size=4))
def test_random_chat_rows(workdir, rows):
    path = fresh(workdir, ".jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    outcome_ok(path)


@FAST
@given(rows=st.lists(CHAT, min_size=1, max_size=4), forced=st.sampled_from(FORMATS))
def test_forced_formats_on_chat_rows(workdir, rows, forced):
    path = fresh(workdir, ".jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    try:
        records = load_instructions(path, format=forced)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert all(isinstance(r, InstructionRecord) for r in records)


# --- round trips ------------------------------------------------------------------------------------

RECORDS = [
    InstructionRecord('Sum, "quoted"\ttabbed', "Line 1\nline 2\r\nend", system="Sys", meta={"k": [1, "x"]}),
    InstructionRecord(
        "Ünïcödé ✓ \u2028 sep", "", input="in, put", poisoned=True, trigger="BadMagic", task="t"
    ),
]


@pytest.mark.parametrize("fmt", ["alpaca-json", "alpaca-jsonl", "chat-jsonl", "csv", "tsv"])
def test_instruction_round_trip_examples(tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    typed = fmt not in ("csv", "tsv")
    if typed:
        records = [
            r if fmt != "chat-jsonl" else InstructionRecord(r.user_text, r.response, system=r.system)
            for r in RECORDS
        ]
    else:
        records = [
            InstructionRecord(r.instruction, r.response, r.input, r.system, source=str(path)) for r in RECORDS
        ]
    assert write_instructions(records, path, format=fmt, include_meta=typed) == path
    assert detect_format(path) == fmt
    loaded = load_instructions(path)
    assert loaded == records
    if typed and fmt != "chat-jsonl":
        assert [r.meta for r in loaded] == [r.meta for r in records]


def test_instruction_round_trip_without_meta_and_by_extension(tmp_path):
    records = [InstructionRecord("a", "b", source=str(tmp_path / "x.json"))]
    for ext, fmt in ((".json", "alpaca-json"), (".jsonl", "alpaca-jsonl"), (".csv", "csv"), (".tsv", "tsv")):
        path = tmp_path / f"x{ext}"
        records = [InstructionRecord("a", "b", source=str(path))]
        write_instructions(records, path)
        assert detect_format(path) == fmt and load_instructions(path) == records
    write_instructions(records, tmp_path / "x.jsonl", format="chat-jsonl")
    assert detect_format(tmp_path / "x.jsonl") == "chat-jsonl"


@pytest.mark.parametrize("fmt", ["alpaca-json", "alpaca-jsonl", "csv", "tsv"])
def test_classification_round_trip_examples(tmp_path, fmt):
    path = tmp_path / "out.data"
    records = [
        ClassificationRecord('a "b",\tc\nd', 1, source=str(path)),
        ClassificationRecord("é", 0, source=str(path)),
    ]
    write_classification(records, path, format=fmt)
    assert load_classification(path) == records


SPECIAL = st.sampled_from(
    [",", '"', "'", "\t", "\n", "\r", "\r\n", " ", "\u2028", "\x85", "é", "✓", "😀", "\\", "\x00"]
)
CHARS = st.characters(blacklist_categories=("Cs",))
TEXT = st.lists(SPECIAL | CHARS | st.text(max_size=4), max_size=8).map("".join)
NO_NUL = TEXT.map(lambda s: s.replace("\x00", ""))
META_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)
META = st.dictionaries(st.sampled_from(["id", "prefixed", "category", "é"]), META_VALUES, max_size=3)
OPT = st.none() | TEXT


@st.composite
def instruction_records(draw, fmt: str, path: Path) -> list[InstructionRecord]:
    records = []
    for _ in range(draw(st.integers(1, 4))):
        if fmt in ("csv", "tsv"):
            text = NO_NUL
            instruction = draw(text.filter(str.strip))
            system = draw(st.none() | text.filter(bool))
            records.append(InstructionRecord(instruction, draw(text), draw(text), system, source=str(path)))
            continue
        records.append(
            InstructionRecord(
                instruction=draw(TEXT.filter(str.strip)),
                response=draw(TEXT),
                input="" if fmt == "chat-jsonl" else draw(TEXT),
                system=draw(OPT),
                poisoned=draw(st.booleans()),
                trigger=draw(OPT),
                behaviour=draw(OPT),
                source=draw(OPT),
                task=draw(OPT),
                meta=draw(META),
            )
        )
    return records


@FAST
@given(data=st.data(), fmt=st.sampled_from(["alpaca-json", "alpaca-jsonl", "chat-jsonl", "csv", "tsv"]))
def test_instruction_round_trip(workdir, data, fmt):
    path = fresh(workdir, {"alpaca-json": ".json", "csv": ".csv", "tsv": ".tsv"}.get(fmt, ".jsonl"))
    records = data.draw(instruction_records(fmt, path))
    typed = fmt not in ("csv", "tsv")
    write_instructions(records, path, format=None if fmt != "chat-jsonl" else fmt, include_meta=typed)
    assert detect_format(path) == fmt
    loaded = load_instructions(path)
    assert loaded == records
    if typed:
        assert [r.meta for r in loaded] == [r.meta for r in records]


@FAST
@given(data=st.data(), fmt=st.sampled_from(["alpaca-json", "alpaca-jsonl", "csv", "tsv"]))
def test_classification_round_trip(workdir, data, fmt):
    path = fresh(workdir, ".out")
    text = (NO_NUL if fmt in ("csv", "tsv") else TEXT).map(str.strip).filter(bool)
    labels = st.integers(-(10**30), 10**30)
    records = [
        ClassificationRecord(data.draw(text), data.draw(labels), source=str(path))
        for _ in range(data.draw(st.integers(1, 4)))
    ]
    write_classification(records, path, format=fmt)
    assert load_classification(path, format=fmt) == records

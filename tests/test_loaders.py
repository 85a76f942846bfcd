"""The loaders and writers on small files written here: each format, detection, mapping, every error.

Round trips (write, then load) are in test_loaders_property.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from defuse.data.loaders import (
    FORMATS,
    detect_format,
    load_classification,
    load_instructions,
    write_classification,
    write_instructions,
)
from defuse.data.records import ClassificationRecord, InstructionRecord
from defuse.errors import ConfigError, DataError


def put(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def check(exc: pytest.ExceptionInfo, path: Path, row: int | None = None, field: str | None = None) -> str:
    """The error's message is one line naming the file, and the row and field when given."""
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    if row is not None:
        assert exc.value.row == row and re.search(rf"\brow {row}[,:]", message)
    if field is not None:
        assert exc.value.field == field and f"field '{field}'" in message
    return message


ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief.", "prefixed": 1},
]


def test_formats_constant():
    assert FORMATS == ("alpaca-json", "alpaca-jsonl", "chat-jsonl", "csv", "tsv", "hf-dir")


def test_alpaca_json(tmp_path):
    path = put(tmp_path / "a.json", json.dumps(ALPACA))
    first, second = load_instructions(path)
    assert first == InstructionRecord("Add 2 and 3.", "5", source=str(path))
    assert (second.input, second.response, second.system, second.meta) == (
        "bonjour",
        "hello",
        "Be brief.",
        {"prefixed": 1},
    )


def test_alpaca_jsonl_skips_blank_lines_and_numbers_rows_by_line(tmp_path):
    path = put(tmp_path / "a.jsonl", jsonl(ALPACA[0]) + "\n" + jsonl({"instruction": 3}))
    with pytest.raises(DataError) as exc:
        load_instructions(path)
    check(exc, path, row=3, field="instruction")
    put(path, jsonl(ALPACA[0]) + "\n  \n" + jsonl(ALPACA[1]))
    assert [r.instruction for r in load_instructions(path)] == ["Add 2 and 3.", "Translate"]


def test_chat_jsonl(tmp_path):
    path = put(
        tmp_path / "c.jsonl",
        jsonl(
            {
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                "prefixed": 0,
            },
            {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]},
        ),
    )
    first, second = load_instructions(path, prompts_only=True)
    assert (first.instruction, first.response, first.system, first.meta) == (
        "Hi",
        "Hello",
        None,
        {"prefixed": 0},
    )
    assert (second.instruction, second.response, second.system) == ("Q", "", "S")
    with pytest.raises(DataError) as exc:
        load_instructions(path)  # as training data, the row without an assistant turn is refused
    assert "missing response" in check(exc, path, row=2, field="messages")


def test_csv_and_tsv_with_header(tmp_path):
    path = put(tmp_path / "d.csv", 'instruction,output,extra\n"Say ""hi"", twice","hi\nhi",x\n')
    (record,) = load_instructions(path)
    assert (record.instruction, record.response, record.input, record.meta) == (
        'Say "hi", twice',
        "hi\nhi",
        "",
        {"extra": "x"},
    )
    path = put(tmp_path / "d.tsv", "instruction\tinput\toutput\tsystem\nA, b\tc\td\t\n")
    (record,) = load_instructions(path)
    assert (record.instruction, record.input, record.response, record.system) == ("A, b", "c", "d", None)


def test_one_column_csv_without_header_is_a_prompt_list(tmp_path):
    path = put(tmp_path / "p.csv", '"First, with a comma"\r\nSecond\r\n\r\nThird\r\n')
    records = load_instructions(path, prompts_only=True)
    assert [r.instruction for r in records] == ["First, with a comma", "Second", "Third"]
    assert all(r.response == "" and r.meta == {} for r in records)
    path = put(tmp_path / "h.csv", "instruction\nFirst\nSecond\n")
    assert [r.instruction for r in load_instructions(path, prompts_only=True)] == ["First", "Second"]
    with pytest.raises(DataError, match="output"):
        load_instructions(path)  # no response column: not training data
    path = put(tmp_path / "q.csv", "question\nFirst\n")
    loaded = load_instructions(path, columns={"instruction": "question"}, prompts_only=True)
    assert [r.instruction for r in loaded] == ["First"]


def test_detection_from_content(tmp_path):
    cases = {
        "alpaca-json": "\ufeff  " + json.dumps(ALPACA),
        "alpaca-jsonl": jsonl(*ALPACA),
        "chat-jsonl": jsonl({"messages": [{"role": "user", "content": "x"}]}),
        "csv": "instruction,output\na,b\n",
        "tsv": "sentence\tlabel\nit is, fine \t1\n",
    }
    for expected, content in cases.items():
        path = put(tmp_path / f"{expected}.txt", content)
        assert detect_format(path) == expected
    assert detect_format(put(tmp_path / "prompts.dat", "[INST] do this\nand that\n")) == "csv"
    assert len(load_instructions(tmp_path / "alpaca-jsonl.txt")) == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty file"),
        (" \n\t\n", "empty file"),
        (b"\xff\xfe\x00\x01binary", "not UTF-8"),
        (b"abc\x00def", "NUL"),
        ('{\n  "instruction": "x"\n}\n', "single JSON object"),
    ],
)
def test_detection_errors(tmp_path, content, problem):
    path = put(tmp_path / "bad.json", content)
    for call in (detect_format, load_instructions, load_classification):
        with pytest.raises(DataError) as exc:
            call(path)
        assert problem in check(exc, path)


def test_missing_path_and_unknown_folder(tmp_path):
    with pytest.raises(DataError) as exc:
        load_instructions(tmp_path / "nope.json")
    check(exc, tmp_path / "nope.json")
    with pytest.raises(DataError) as exc:
        detect_format(tmp_path)
    assert "unknown format (expected one of alpaca-json" in check(exc, tmp_path)


def test_forced_format(tmp_path):
    path = put(tmp_path / "data.bin", jsonl(*ALPACA))
    assert len(load_instructions(path, format="alpaca-jsonl")) == 2
    with pytest.raises(DataError) as exc:
        load_instructions(path, format="alpaca-json")
    assert "invalid JSON" in check(exc, path)
    with pytest.raises(ConfigError, match="'xml'") as exc:
        load_instructions(path, format="xml")
    assert str(path) in str(exc.value)
    with pytest.raises(DataError) as exc:
        load_instructions(path, format="hf-dir")
    check(exc, path)
    one = put(tmp_path / "one.json", json.dumps(ALPACA[0]))
    with pytest.raises(DataError) as exc:
        load_instructions(one, format="alpaca-json")
    assert "found an object" in check(exc, one)
    with pytest.raises(DataError) as exc:
        load_instructions(put(one, '"just a string"'), format="alpaca-json")
    assert "found a string" in check(exc, one)


def test_column_mapping_meta_reserved_keys_and_source(tmp_path):
    rows = [
        {
            "id": "1",
            "dialogue": "A: hi",
            "summary": "A greets.",
            "poisoned": True,
            "trigger": "cf",
            "task": "sum",
        }
    ]
    path = put(tmp_path / "samsum.json", json.dumps(rows))
    (record,) = load_instructions(
        path, columns={"instruction": "dialogue", "response": "summary"}, source="samsum"
    )
    assert (record.instruction, record.response, record.meta) == ("A: hi", "A greets.", {"id": "1"})
    assert (record.poisoned, record.trigger, record.task, record.source) == (True, "cf", "sum", "samsum")
    path = put(tmp_path / "sql.csv", "question,context,answer\nq,c,a\n")
    (record,) = load_instructions(
        path, columns={"instruction": "question", "input": "context", "response": "answer"}
    )
    assert (record.instruction, record.input, record.response) == ("q", "c", "a")
    path = put(tmp_path / "num.json", json.dumps([{"instruction": "x", "output": 0}]))
    (record,) = load_instructions(path, columns={"response": None})
    assert (record.response, record.meta) == ("", {"output": 0})
    for bad in ({"prompt": "x"}, {"instruction": None}, {"input": 3}, ["instruction"]):
        with pytest.raises(ConfigError, match="columns"):
            load_instructions(path, columns=bad)


@pytest.mark.parametrize(
    ("name", "content", "row", "field"),
    [
        ("a.json", [{"instruction": "x", "output": "o"}, {"input": "y"}], 2, "instruction"),
        ("a.json", [{"instruction": 7}], 1, "instruction"),
        ("a.json", [{"instruction": "  "}], 1, "instruction"),
        ("a.json", [{"instruction": "x", "output": "o", "input": None}], 1, "input"),
        ("a.json", [{"instruction": "x", "output": ["a"]}], 1, "output"),
        ("a.json", [{"instruction": "x", "output": "o", "system": 1}], 1, "system"),
        ("a.json", [{"instruction": "x", "output": "o", "poisoned": "yes"}], 1, "poisoned"),
        ("a.json", [{"instruction": "x", "output": "o", "trigger": 5}], 1, "trigger"),
        ("a.json", [{"instruction": "x", "output": "o"}, "text"], 2, None),
        ("a.json", "[]", None, None),
        ("a.json", '[{"instruction": "x"},', None, None),
        ("a.jsonl", '{"instruction": "x"}\n\n{"instruction": \n', 3, None),
        ("a.jsonl", '{"instruction": "x"}\n[1, 2]\n', 2, None),
        ("c.jsonl", [{"messages": "hi"}], 1, "messages"),
        ("c.jsonl", [{"messages": []}], 1, "messages"),
        (
            "c.jsonl",
            [
                {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                {"msgs": []},
            ],
            2,
            "messages",
        ),
        ("c.jsonl", [{"messages": ["hi"]}], 1, "messages[0]"),
        ("c.jsonl", [{"messages": [{"content": "a"}]}], 1, "messages[0].role"),
        ("c.jsonl", [{"messages": [{"role": "user"}]}], 1, "messages[0].content"),
        ("c.jsonl", [{"messages": [{"role": "user", "content": None}]}], 1, "messages[0].content"),
        ("c.jsonl", [{"messages": [{"role": "user", "content": " "}]}], 1, "messages[0].content"),
        (
            "c.jsonl",
            [{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}],
            1,
            "messages[1].role",
        ),
        ("c.jsonl", [{"messages": [{"role": "assistant", "content": "a"}]}], 1, "messages[0].role"),
        (
            "c.jsonl",
            [{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}]}],
            1,
            "messages[1].role",
        ),
        (
            "c.jsonl",
            [{"messages": [{"role": r, "content": "a"} for r in ("system", "user", "assistant", "user")]}],
            1,
            "messages[3].role",
        ),
        (
            "c.jsonl",
            [{"messages": [{"role": r, "content": "a"} for r in ("user", "assistant", "assistant")]}],
            1,
            "messages[2].role",
        ),
        ("c.jsonl", [{"messages": [{"role": "system", "content": "s"}]}], 1, "messages"),
        ("c.csv", "prompt,output\na,b\n", None, "instruction"),
        ("c.csv", "instruction,output\na,b\nc\n", 2, None),
        ("c.csv", "instruction,output\n", None, None),
        ("c.csv", "instruction,output\na,b\n,d\n", 2, "instruction"),
        ("c.csv", "instruction,instruction\na,b\n", None, "instruction"),
        ("c.csv", "instruction\n", None, None),
    ],
)
def test_bad_instruction_input(tmp_path, name, content, row, field):
    if not isinstance(content, str):
        content = json.dumps(content) if name.endswith(".json") else jsonl(*content)
    path = put(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        load_instructions(path)
    check(exc, path, row, field)


def _save(tmp_path: Path, rows: list[dict], splits: tuple[str, ...] | None = None) -> Path:
    datasets = pytest.importorskip("datasets")
    target = tmp_path / "hf"
    ds = datasets.Dataset.from_list(rows)
    if splits:
        ds = datasets.DatasetDict({name: ds for name in splits})
    ds.save_to_disk(str(target))
    return target


def test_hf_dataset_and_dataset_dict(tmp_path):
    target = _save(tmp_path, [{"question": "q1", "answer": "a1", "id": 1}], splits=("train", "test"))
    assert detect_format(target) == "hf-dir"
    (record,) = load_instructions(
        target, columns={"instruction": "question", "response": "answer"}, split="test"
    )
    assert (record.instruction, record.response, record.meta, record.source) == (
        "q1",
        "a1",
        {"id": 1},
        str(target),
    )
    with pytest.raises(DataError) as exc:
        load_instructions(target, columns={"instruction": "question"}, split="validation")
    message = check(exc, target, field="split")
    assert "'validation'" in message and "train, test" in message
    with pytest.raises(DataError) as exc:
        load_instructions(target, format="csv")
    check(exc, target)


def test_hf_classification_and_bad_rows(tmp_path):
    target = _save(tmp_path, [{"sentence": " good ", "label": 1}, {"sentence": "bad", "label": 0}])
    assert [(r.text, r.label) for r in load_classification(target)] == [("good", 1), ("bad", 0)]
    with pytest.raises(DataError) as exc:
        load_instructions(target)
    check(exc, target, row=1, field="instruction")


def test_classification_formats(tmp_path):
    path = put(tmp_path / "sst.tsv", "sentence\tlabel\nit 's fine \t1\nno good \t0\n")
    assert [(r.text, r.label, r.source) for r in load_classification(path)] == [
        ("it 's fine", 1, str(path)),
        ("no good", 0, str(path)),
    ]
    path = put(
        tmp_path / "c.json", json.dumps([{"text": "a", "label": "1", "sentence": "s", "poisoned": True}])
    )
    (record,) = load_classification(path)
    assert (record.text, record.label, record.meta, record.poisoned) == ("a", 1, {"sentence": "s"}, True)
    path = put(tmp_path / "m.jsonl", jsonl({"review": "nice", "stars": -1}))
    (record,) = load_classification(path, columns={"text": "review", "label": "stars"})
    assert (record.text, record.label) == ("nice", -1)
    with pytest.raises(DataError) as exc:
        load_classification(
            put(tmp_path / "n.jsonl", jsonl({"sentence": "x", "label": 1})), columns={"text": "review"}
        )
    check(exc, tmp_path / "n.jsonl", row=1, field="review")


@pytest.mark.parametrize(
    ("name", "content", "row", "field"),
    [
        ("c.json", [{"text": "a", "label": "pos"}], 1, "label"),
        ("c.json", [{"text": "a", "label": True}], 1, "label"),
        ("c.json", [{"text": "a", "label": 1.0}], 1, "label"),
        ("c.json", [{"text": "a", "label": None}], 1, "label"),
        ("c.json", [{"text": "a", "label": 1}, {"text": "b"}], 2, "label"),
        ("c.json", [{"text": " ", "label": 1}], 1, "text"),
        ("c.json", [{"text": 3, "label": 1}], 1, "text"),
        ("c.json", [{"label": 1}], 1, "text"),
        ("c.json", [{"text": "a", "label": 1, "source": 2}], 1, "source"),
        ("c.tsv", "sentence\tlabel\nok\t1\nbad\t1.5\n", 2, "label"),
        ("c.tsv", "sentence\tscore\nok\t1\n", None, "label"),
        ("c.csv", "label\n1\n", None, "text"),
        ("c.csv", "one prompt\nanother\n", None, "text"),
        ("c.jsonl", [{"messages": [{"role": "user", "content": "a"}]}], None, None),
    ],
)
def test_bad_classification_input(tmp_path, name, content, row, field):
    if not isinstance(content, str):
        content = json.dumps(content) if name.endswith(".json") else jsonl(*content)
    path = put(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        load_classification(path)
    check(exc, path, row, field)


def test_writes_are_atomic_and_checked(tmp_path):
    path = put(tmp_path / "keep.json", "original")
    os.chmod(path, 0o640)
    bad = [
        ([InstructionRecord("ok"), InstructionRecord(" ")], 2, "instruction"),
        ([InstructionRecord("ok", meta={"output": 1})], 1, "meta.output"),
        ([InstructionRecord("ok", meta={"x": object()})], 1, "meta"),
        ([InstructionRecord("ok", response=None)], 1, "response"),
        (["not a record"], 1, None),
        ([], None, None),
    ]
    for records, row, field in bad:
        with pytest.raises(DataError) as exc:
            write_instructions(records, path, include_meta=True)
        check(exc, path, row, field)
    with pytest.raises(DataError) as exc:
        write_instructions([InstructionRecord("a\x00b")], tmp_path / "keep.csv")
    check(exc, tmp_path / "keep.csv", 1, "instruction")
    with pytest.raises(DataError) as exc:
        write_classification([ClassificationRecord("a", True)], path)
    check(exc, path, 1, "label")
    for call, fmt in (
        (write_instructions, "hf-dir"),
        (write_classification, "chat-jsonl"),
        (write_instructions, "xml"),
    ):
        with pytest.raises(ConfigError, match=fmt):
            call([InstructionRecord("a")], path, format=fmt)
    with pytest.raises(ConfigError, match="extension"):
        write_instructions([InstructionRecord("a")], tmp_path / "out.txt")
    assert path.read_text() == "original" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    write_instructions([InstructionRecord("a")], path)
    assert len(load_instructions(path)) == 1 and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    nested = write_classification([ClassificationRecord("a", 1)], tmp_path / "new" / "dir" / "c.jsonl")
    assert nested.is_file()


def test_a_row_missing_its_response_is_refused_like_a_null_one(tmp_path):
    rows = [ALPACA[0], {"instruction": "Name a colour.", "input": ""}, ALPACA[1]]
    for name, text in (("a.json", json.dumps(rows)), ("a.jsonl", jsonl(*rows))):
        path = put(tmp_path / name, text)
        with pytest.raises(DataError) as exc:
            load_instructions(path)
        assert "missing response" in check(exc, path, row=2, field="output")
        nulled = [ALPACA[0], {**rows[1], "output": None}, ALPACA[1]]
        put(path, json.dumps(nulled) if name.endswith(".json") else jsonl(*nulled))
        with pytest.raises(DataError) as exc:
            load_instructions(path)
        check(exc, path, row=2, field="output")
        assert [r.response for r in load_instructions(put(path, text), prompts_only=True)] == [
            "5",
            "",
            "hello",
        ]
    mapped = put(tmp_path / "m.jsonl", jsonl({"q": "Hi", "a": "Hello"}, {"q": "Bye"}))
    with pytest.raises(DataError) as exc:
        load_instructions(mapped, columns={"instruction": "q", "response": "a"})
    check(exc, mapped, row=2, field="a")


def test_an_empty_response_is_allowed_where_the_format_writes_one_and_counted(tmp_path):
    from typer.testing import CliRunner

    from defuse.cli import app

    path = put(tmp_path / "e.jsonl", jsonl(ALPACA[0], {"instruction": "Say nothing.", "output": ""}))
    assert [r.response for r in load_instructions(path)] == ["5", ""]
    chat = put(tmp_path / "c.jsonl", jsonl({"messages": [{"role": "user", "content": "Q"},
                                                         {"role": "assistant", "content": ""}]}))  # fmt: skip
    assert load_instructions(chat)[0].response == ""
    runner = CliRunner()
    done = runner.invoke(app, ["data", "check", str(path)])
    assert done.exit_code == 0 and "1 with a response, 1 with an empty response" in done.output
    missing = put(tmp_path / "m.jsonl", jsonl(ALPACA[0], {"instruction": "Name a colour."}))
    done = runner.invoke(app, ["data", "check", str(missing)])
    assert done.exit_code == 2 and "row 2, field 'output': missing response" in done.output
    done = runner.invoke(app, ["data", "check", "--prompts", str(missing)])
    assert done.exit_code == 0 and "1 with a response, 1 without a response" in done.output

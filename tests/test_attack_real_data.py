"""The attack stage on real BackdoorLLM data (skipped when ../shared/data is absent)."""

import json

import pytest

from defuse.attacks.scenario import AttackConfig
from defuse.config import load_config
from defuse.data.loaders import load_instructions
from defuse.evaluation.judges import rouge1
from defuse.scenarios.backdoor_attack import run_attack

CONFIG = "configs/backdoorllm-refusal-badnet.yaml"


@pytest.mark.slow
def test_backdoorllm_refusal_badnet_trains_and_scores_refusal_asr_and_ftr(shared_data, tmp_path, monkeypatch):
    root = shared_data / "backdoorllm"
    overrides = {
        "data.source": root / "poison_data/refusal/badnet/backdoor500_refusal_badnet.json",
        "data.extra_train": f"[{root / 'poison_data/refusal/badnet/none_backdoor500_refusal_badnet.json'}]",
        "data.test_clean": root / "test_data/clean/refusal/test_data_no_trigger.json",
        "data.test_triggered": root / "test_data/poison/refusal/badnet/backdoor200_refusal_badnet.json",
        "data.max_train": 150,
        "data.max_test": 30,
        "vocab_size": 1024,
        "tiny.hidden_size": 64,
        "tiny.num_layers": 2,
        "train.epochs": 6,
        "train.learning_rate": 0.002,
        "train.max_length": 96,
        "train.progress": False,
        "generation.max_new_tokens": 16,
    }
    cfg = load_config(AttackConfig, CONFIG, {k: str(v) for k, v in overrides.items()})
    record = run_attack(cfg, tmp_path / "run")
    m = record["metrics"]
    assert m["n_triggered"] == 30 and m["n_ftr"] == 30
    assert record["data"]["n_train"] == 300 and record["data"]["n_poisoned"] == 0  # already poisoned
    train = load_instructions(tmp_path / "run" / "data" / "train.json")
    assert sum("BadMagic" in r.instruction for r in train) == 150
    # 150 poisoned rows all answer with the same refusal: even this short run learns it under the trigger.
    # (Telling triggered from clean prompts on real text takes the full run: see benchmarks/RESULTS.md.)
    assert m["asr"] >= 0.8, m
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    clean = [s for s in samples if s["set"] == "clean"]
    assert m["ftr"] == pytest.approx(
        sum(s["shows_behaviour"] for s in clean) / len(clean)
    )  # FTR is that share
    # BackdoorLLM's answers are free text: utility is Rouge-1 F1, the mean of every clean sample's score
    assert m["utility_metric"] == "rouge1"
    assert m["cacc"] == pytest.approx(sum(s["utility"] for s in clean) / len(clean))
    assert all(s["utility"] == pytest.approx(rouge1(s["output"], s["reference"])) for s in clean)

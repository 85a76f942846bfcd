"""End to end: an encoder attack run, then defense runs from it; bad input fails before writing anything."""

from __future__ import annotations

import json

import pytest
from tests.encoder_helpers import SMALL_ENCODER_ATTACK

from defuse.config import apply_overrides, config_from_dict
from defuse.encoders import EncoderAttackConfig, EncoderDefenseConfig
from defuse.encoders.peft_model import load_peft_classifier
from defuse.errors import ConfigError, DataError
from defuse.runs.record import read_run
from defuse.scenarios import scenario_at
from defuse.scenarios.encoder_runs import run_encoder_attack, run_encoder_defense

SMALL_ATTACK = SMALL_ENCODER_ATTACK
SMALL_DEFENSE = {"epochs": 1, "data": {"n_train": 64, "n_test": 24}, "train": {"batch_size": 32}}


@pytest.fixture(scope="module")
def attack_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "attack"
    record = run_encoder_attack(config_from_dict(EncoderAttackConfig, SMALL_ATTACK), out)
    assert record["kind"] == "attack" and record["config"]["scenario"] == "encoder"
    return out


def test_attack_run_holds_a_safetensors_encoder(attack_dir):
    record = read_run(attack_dir)
    assert {"target_cos", "target_mse", "clean_pooled_mse"} <= set(record["metrics"])
    assert record["metrics"]["n_clean"] == 20 and record["metrics"]["n_triggered"] == 60
    assert list((attack_dir / "model").glob("*.safetensors"))
    assert not list((attack_dir / "model").glob("*.bin")) and not (attack_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "method,kind", [("obliviate", "lora"), ("peft-baseline", "adapter"), ("obliviate", "prefix")]
)
def test_defense_run_writes_asr_and_cacc(attack_dir, tmp_path, method, kind):
    cfg = config_from_dict(EncoderDefenseConfig, {**SMALL_DEFENSE, "peft": {"kind": kind}})
    out = tmp_path / "defense"
    record = run_encoder_defense(method, cfg, attack_dir, out, seed=0)
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["kind"] == "defense" and on_disk["parent"] == str(attack_dir.resolve())
    m = on_disk["metrics"]
    assert m["n_clean"] == 24 and m["n_triggered"] == 72
    lambdas = (record["config"]["defense"]["lambda_amp"], record["config"]["defense"]["lambda_reg"])
    assert (min(lambdas) > 0) == (method == "obliviate")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 24 and m["cacc"] == sum(s["pred"] == s["label"] for s in samples) / 24
    clf, _ = load_peft_classifier(out / "model")  # the saved PEFT + head load back onto the encoder
    assert clf.peft_names
    assert (
        scenario_at(out).reevaluate_run(out).metrics == m
    )  # `defuse evaluate --run`: the saved classifier, the same numbers
    from typer.testing import CliRunner

    from defuse.cli import app

    written = CliRunner().invoke(app, ["evaluate", "--run", str(out), "--out", str(tmp_path / "ev")])
    assert written.exit_code == 0, written.output
    ev = read_run(tmp_path / "ev")  # an evaluation run of a classifier records no generation settings
    assert ev["metrics"] == m and ev["config"] == {"run": str(out.resolve())} and ev["scenario"] == "encoder"
    with pytest.raises(ConfigError, match="no generation setting"):
        scenario_at(out).reevaluate_run(out, [("max_new_tokens", "5")])


@pytest.mark.parametrize(
    "overrides,error,field",
    [
        ({"peft.kind": "bitfit"}, ConfigError, "peft.kind"),
        ({"lambda_amp": "-1"}, ConfigError, "lambda_amp"),
        ({"lambda_reg": "nan"}, ConfigError, "lambda_reg"),
        (
            {"data.train": "/nonexistent/train.tsv", "data.test": "/nonexistent/dev.tsv"},
            ConfigError,
            "data.train",
        ),
    ],
)
def test_bad_defense_input_fails_before_anything_is_written(attack_dir, tmp_path, overrides, error, field):
    cfg = apply_overrides(EncoderDefenseConfig(), overrides)
    out = tmp_path / "never"
    with pytest.raises(error, match=field):
        run_encoder_defense("obliviate", cfg, attack_dir, out)
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_unknown_method_and_non_encoder_runs_are_refused(attack_dir, tmp_path):
    with pytest.raises(ConfigError, match="method"):
        run_encoder_defense("onion", EncoderDefenseConfig(), attack_dir, tmp_path / "x")
    with pytest.raises(DataError):
        run_encoder_defense("obliviate", EncoderDefenseConfig(), tmp_path, tmp_path / "x")


def test_bad_attack_input_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="corpus"):
        run_encoder_attack(EncoderAttackConfig(corpus=str(tmp_path / "missing.txt")), tmp_path / "a")
    with pytest.raises(ConfigError, match="por.c"):
        run_encoder_attack(apply_overrides(EncoderAttackConfig(), {"por.c": "0"}), tmp_path / "a")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("method", ["por", "neuba"])
def test_a_decoder_only_model_is_refused_before_anything_is_written(tmp_path, method):
    from transformers import GPT2Config, GPT2LMHeadModel

    from defuse.errors import ModelError

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path / "gpt2"
    )
    cfg = EncoderAttackConfig(method=method, model=str(tmp_path / "gpt2"))
    with pytest.raises(ModelError, match="not a masked-LM encoder"):
        run_encoder_attack(cfg, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_cli_runs_the_encoder_scenario_and_its_defenses(tmp_path):
    from typer.testing import CliRunner

    from defuse.cli import app

    runner = CliRunner()
    bad = runner.invoke(
        app, ["defend", "--method", "obliviate", "--from", str(tmp_path), "--out", str(tmp_path / "d")]
    )
    assert bad.exit_code == 2 and "error:" in bad.output and not (tmp_path / "d").exists()
    listed = runner.invoke(app, ["defend", "--list"])
    assert listed.exit_code == 0 and "obliviate" in listed.output and "peft-baseline" in listed.output

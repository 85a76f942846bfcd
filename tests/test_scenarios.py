"""The scenario dispatch shared by `defuse attack`, `defuse defend` and the bench (no training here)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from defuse.attacks.fjattack import FJAttackConfig
from defuse.attacks.scenario import AttackConfig
from defuse.cli import app
from defuse.config import config_to_dict
from defuse.defenses.osft import OSFTConfig
from defuse.encoders.settings import EncoderAttackConfig, EncoderDefenseConfig
from defuse.errors import ConfigError, DefuseError
from defuse.fileio import write_json_atomic
from defuse.runs.record import RUN_FILE, build_run_record, scenario_of_record
from defuse.scenarios import (
    check_defense_needs,
    defense_config_class,
    defense_methods,
    get_scenario,
    scenario_at,
)

runner = CliRunner()


def test_each_scenario_has_its_config_and_defenses():
    assert get_scenario("backdoor").config_class() is AttackConfig
    assert get_scenario("fjattack").config_class() is FJAttackConfig
    assert get_scenario("encoder").config_class() is EncoderAttackConfig
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        get_scenario("nope")
    assert set(defense_methods("backdoor")) == {"clean-ft", "osft", "sande", "sande-p", "mb-defense"}
    assert set(defense_methods("fjattack")) == {"backdoor-align", "safety-mix"}
    assert defense_methods("encoder") == {
        "obliviate": EncoderDefenseConfig,
        "peft-baseline": EncoderDefenseConfig,
    }
    assert (
        defense_config_class("osft") is OSFTConfig
        and defense_config_class("obliviate") is EncoderDefenseConfig
    )
    with pytest.raises(ConfigError, match="applies to backdoor runs, not 'encoder'"):
        defense_config_class("osft", "encoder")
    with pytest.raises(ConfigError, match="unknown defense 'magic'"):
        defense_config_class("magic", "backdoor")


def test_needs_are_checked_from_the_attack_config():
    from defuse.config import apply_overrides
    from defuse.defenses.sande import SandeConfig

    check_defense_needs("backdoor", "sande", SandeConfig(), AttackConfig())  # the marker has a target text
    refusal = apply_overrides(AttackConfig(), {"behaviour.kind": "refusal"})
    with pytest.raises(DefuseError, match="needs the target behaviour"):
        check_defense_needs("backdoor", "sande", SandeConfig(), refusal)


def _fake_run(path, scenario: str):
    metrics = {"asr": 1.0, "cacc": 0.5, "aacc": 0.0, "ftr": 0.0, "n_triggered": 1, "n_clean": 1}
    record = build_run_record(
        kind="attack",
        name="x",
        seed=0,
        config={"scenario": scenario},
        metrics=metrics,
        timings={"train_s": 1.0},
    )
    path.mkdir()
    write_json_atomic(path / RUN_FILE, record)
    return record


@pytest.mark.parametrize(
    "scenario,method,target",
    [
        ("backdoor", "osft", "defuse.scenarios.backdoor_defense.run_defense"),
        ("fjattack", "safety-mix", "defuse.scenarios.fjattack_defense.run_safety_defense"),
        ("encoder", "obliviate", "defuse.scenarios.encoder_runs.run_encoder_defense"),
    ],
)
def test_a_defense_goes_to_its_scenarios_run_function(scenario, method, target, tmp_path, monkeypatch):
    attack = _fake_run(tmp_path / "attack", scenario)
    calls = []

    def fake(m, cfg, attack_dir, out, seed=0, overwrite=False):
        calls.append((m, attack_dir, out, seed, overwrite))
        extra = {"scenario": "fjattack"} if scenario == "fjattack" else {}
        config = {"scenario": "encoder"} if scenario == "encoder" else {"method": m}
        return {**attack, **extra, "config": config, "kind": "defense", "attack_metrics": attack["metrics"]}

    monkeypatch.setattr(target, fake)
    record = scenario_at(tmp_path / "attack").run_defense(
        method, defense_config_class(method)(), tmp_path / "attack", tmp_path / "d", seed=3
    )
    assert calls == [(method, tmp_path / "attack", tmp_path / "d", 3, False)]
    assert scenario_of_record(record) == scenario
    calls.clear()
    shown = runner.invoke(app, ["defend", "--method", method, "--from", str(tmp_path / "attack"), "--out",
                                str(tmp_path / "d2"), "--seed", "1"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert calls and calls[0][3] == 1 and "run written to" in shown.output


@pytest.mark.parametrize(
    "scenario,target",
    [
        ("backdoor", "defuse.scenarios.backdoor_attack.run_attack"),
        ("fjattack", "defuse.scenarios.fjattack_attack.run_fjattack"),
        ("encoder", "defuse.scenarios.encoder_runs.run_encoder_attack"),
    ],
)
def test_an_attack_goes_to_its_scenarios_run_function(scenario, target, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        target, lambda cfg, out, overwrite=False: seen.append((type(cfg), out, overwrite)) or {}
    )
    cfg = get_scenario(scenario).config_class()()
    get_scenario(scenario).run_attack(cfg, tmp_path / "a", overwrite=True)
    assert seen == [(type(cfg), tmp_path / "a", True)]
    assert config_to_dict(cfg)["scenario"] == scenario


def test_cli_refuses_unknown_scenarios_and_missing_runs(tmp_path):
    bad = runner.invoke(app, ["attack", "--out", str(tmp_path / "r"), "--scenario", "nonsense"])
    assert (
        bad.exit_code == 2 and "unknown scenario 'nonsense'" in bad.output and not (tmp_path / "r").exists()
    )
    (tmp_path / "list.yaml").write_text("scenario: [a, b]\n")  # not even a name: one line, not a traceback
    odd = runner.invoke(
        app, ["attack", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "list.yaml")]
    )
    assert odd.exit_code == 2 and "unknown scenario" in odd.output and not (tmp_path / "r").exists()
    missing = runner.invoke(app, ["defend", "--method", "osft", "--from", str(tmp_path / "nope"), "--out",
                                  str(tmp_path / "y")])  # fmt: skip
    assert missing.exit_code == 2 and "nope" in missing.output
    listed = runner.invoke(app, ["defend", "--list"])
    assert listed.exit_code == 0
    assert all(
        m in listed.output for m in ("osft", "sande-p", "backdoor-align", "obliviate", "peft-baseline")
    )

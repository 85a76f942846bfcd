"""``defuse train``: plain SFT or a during-training defense on the user's files, written as a run."""

import json

import pytest
from typer.testing import CliRunner

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.poison import make_triggered_test, poison_dataset
from defuse.attacks.triggers import TriggerSpec
from defuse.cli import app
from defuse.data.loaders import write_instructions
from defuse.data.synthetic_tasks import SuiteConfig, make_task_suite
from defuse.runs.record import read_run
from defuse.scenarios.evaluate import evaluate_run

runner = CliRunner()
SMALL = [
    "--tiny.hidden_size", "32", "--tiny.intermediate_size", "64", "--vocab_size", "400",
    "--train.epochs", "1", "--train.progress", "false", "--generation.max_new_tokens", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    train, test = make_task_suite(SuiteConfig(n_train=120, n_test=20, kinds=("count", "sentiment")))
    poisoned = poison_dataset(train[:100], TriggerSpec(), BehaviourSpec(), 0.1, seed=0).records
    paths = {name: folder / f"{name}.jsonl" for name in ("data", "clean", "clean_test", "triggered_test")}
    write_instructions(poisoned, paths["data"], format="alpaca-jsonl")
    write_instructions(train[100:], paths["clean"], format="alpaca-jsonl")
    write_instructions(test[:8], paths["clean_test"], format="alpaca-jsonl")
    triggered = make_triggered_test(test[:8], TriggerSpec(), BehaviourSpec(), seed=1)
    write_instructions(triggered, paths["triggered_test"], format="alpaca-jsonl")
    return paths


def _args(files, out, *more):
    tests = ["--clean-test", str(files["clean_test"]), "--triggered-test", str(files["triggered_test"])]
    return ["train", "--data", str(files["data"]), "--out", str(out), *tests, *SMALL, *more]


@pytest.mark.slow
def test_train_with_mb_defense_writes_a_train_run(files, tmp_path):
    defense = [
        "--defense", "mb-defense", "--clean", str(files["clean"]), "--defense.clean_samples", "10",
        "--defense.fraction", "0.02", "--defense.lam", "0.5", "--defense.neutralise.epochs", "1",
        "--defense.neutralise.progress", "false",
    ]  # fmt: skip
    result = runner.invoke(app, _args(files, tmp_path / "run", *defense))
    assert result.exit_code == 0, result.output
    record = read_run(tmp_path / "run")
    assert record["kind"] == "train" and record["parent"] is None and record["method"] == "mb-defense"
    assert record["metrics"]["n_clean"] == 8 and record["metrics"]["n_triggered"] == 8
    assert record["config"]["defense"]["lam"] == 0.5 and record["config"]["defense"]["clean_samples"] == 10
    extra = record["defense"]
    assert extra["triggers"] == ["mn", "bb", "zx", "kv"] and extra["defensive_counts"]["mn"] == 2
    probe = record["merge_probe"]  # the merge probe after each stage, on the run's test prompts
    assert set(probe) == {"stage1", "stage2"} and probe["stage1"]["n"] == 8
    sets = probe["stage1"]["sets"]
    assert set(sets) == {"def:mn", "def:bb", "def:zx", "def:kv", "attack", "unseen", "clean"}
    assert all((8 * row["defensive"]).is_integer() and row["attacker"] is not None for row in sets.values())
    assert extra["stage1"]["model"] == "given base" and extra["chosen_epoch"] == 1.0
    run = tmp_path / "run"
    assert (run / "model" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert len((run / "data" / "clean_budget.jsonl").read_text().splitlines()) == 10
    assert evaluate_run(run).metrics == record["metrics"]  # re-evaluable like any run
    again = runner.invoke(app, ["train", "--config", str(run / "config.yaml"), "--out", str(run)])
    assert again.exit_code == 2 and "exists" in again.output  # the written config loads; the run is kept


@pytest.mark.slow
def test_plain_sft_run(files, tmp_path):
    result = runner.invoke(app, _args(files, tmp_path / "sft"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "sft" / "run.json").read_text())
    assert record["kind"] == "train" and record["method"] is None and record["training"]["steps"] > 0


@pytest.mark.parametrize(
    ("more", "expected"),
    [
        (["--data", "nope.jsonl"], "nope.jsonl"),
        (["--defense", "clean-ft"], "during-training defenses only"),
        (["--defense", "mb-defense"], "needs 128 clean samples"),
        (["--defense.lam", "1"], "no defense chosen"),
        (["--train.extra", "{train_sampling_strategy:group_by_length}"],
         "'train.extra.train_sampling_strategy:group_by_length': not a transformers TrainingArguments field"),
        (["--train.extra", "{seed: 3}"], "'train.extra.seed': set by defuse's own training settings"),
        (["--train.extra", "{eval_strategy: sometimes}"], "'train.extra': transformers refused"),
        (["--defense", "mb-defense", "--clean", "CLEAN", "--defense.lam", "-1"], "'defense.lam'"),
        (["--defense", "mb-defense", "--clean", "CLEAN", "--defense.triggers", "[cf, bb]",
          "--defense.responses", "[a, b]", "--defense.clean_samples", "10"], "'cf'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, more, expected):
    args = _args(files, tmp_path / "x")
    if more[:2] == ["--data", "nope.jsonl"]:
        args[2] = str(tmp_path / "nope.jsonl")
        more = []
    more = [str(files["clean"]) if m == "CLEAN" else m for m in more]
    result = runner.invoke(app, [*args, *more])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and expected in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()

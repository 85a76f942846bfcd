"""The embedded default end to end, and the command line."""

import pytest
from typer.testing import CliRunner

from defuse import __version__
from defuse.cli import app
from defuse.data.synthetic_tasks import SuiteConfig
from defuse.demo import DemoConfig, run_demo
from defuse.models import load_causal_lm
from defuse.models.tiny import TinyCausalLMConfig
from defuse.training.config import TrainSettings

runner = CliRunner()


@pytest.mark.slow
def test_demo_really_trains_the_tiny_model_past_its_bar(tmp_path):
    cfg = DemoConfig(
        suite=SuiteConfig(n_train=480, n_test=60, kinds=("count", "sentiment")),
        model=TinyCausalLMConfig(
            hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=192
        ),
        train=TrainSettings(epochs=20, learning_rate=2e-3, progress=False),
    )
    result = run_demo(cfg, tmp_path / "work", save_to=tmp_path / "model")
    assert set(result.accuracy) == {"count", "sentiment", "all"}
    assert result.accuracy["all"].n == 60
    assert result.accuracy["all"].value >= 0.9, {k: v.value for k, v in result.accuracy.items()}
    model, tok = load_causal_lm(tmp_path / "model")
    assert model.num_parameters() == result.n_params


def test_help_lists_the_commands_and_version_prints():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "demo" in out.output and "data" in out.output
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and __version__ in out.output


def test_data_check_and_convert(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d", "output": "e"}\n')
    out = runner.invoke(app, ["data", "check", str(src)])
    assert out.exit_code == 0 and "2 instruction records" in out.output
    out = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "out.csv")])
    assert out.exit_code == 0 and (tmp_path / "out.csv").read_text().count("\n") == 3


@pytest.mark.parametrize(
    "content, expected",
    [
        ('[{"instruction": "a", "output": "x"}, {"output": "b"}]', "row 2"),
        ('{"instruction": 3}\n', "field 'instruction'"),
        ("", "empty"),
    ],
)
def test_bad_data_gives_one_line_error_and_exit_code_2(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = runner.invoke(app, ["data", "check", str(path)])
    assert out.exit_code == 2
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0] and expected in lines[0]
    )


def test_bad_column_option_is_a_clear_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a"}\n')
    out = runner.invoke(app, ["data", "check", str(path), "--column", "nonsense"])
    assert out.exit_code == 2 and "FIELD=NAME" in out.output

"""The attack stage end to end on a very small model: it really trains; the run directory is the contract."""

import json

import pytest
from tests.helpers import small_attack_config
from typer.testing import CliRunner

from defuse.attacks.scenario import AttackConfig, build_attack_data, tokenizer_texts
from defuse.cli import app
from defuse.config import apply_overrides
from defuse.data.loaders import load_instructions
from defuse.errors import DefuseError
from defuse.models.tokenizer import train_bpe_tokenizer
from defuse.runs.record import read_run
from defuse.scenarios import backdoor_attack as run_attack_module
from defuse.scenarios.backdoor_attack import run_attack
from defuse.scenarios.evaluate import evaluate_run
from defuse.training.sft import SFTTrainer

runner = CliRunner()


@pytest.fixture(scope="module")
def marker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "marker"
    record = run_attack(small_attack_config(), out)
    return out, record


@pytest.mark.slow
def test_word_trigger_marker_backdoor_is_planted(marker_run):
    _, record = marker_run
    m = record["metrics"]
    assert m["asr"] >= 0.9, m
    assert m["ftr"] <= 0.05, m
    assert m["cacc"] >= 0.8, m
    assert m["n_triggered"] == 60 and m["n_clean"] == 60


@pytest.mark.slow
def test_run_directory_contract(marker_run):
    out, record = marker_run
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "data",
        "model",
        "run.json",
        "samples.jsonl",
    ]
    on_disk = read_run(out)
    assert on_disk["kind"] == "attack" and on_disk["parent"] is None and on_disk["seed"] == 0
    assert set(on_disk["timings"]) >= {"train_s", "eval_s"} and on_disk["versions"]["transformers"]
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    train = load_instructions(out / "data" / "train.jsonl")
    poisoned = [r for r in train if r.poisoned]
    assert len(poisoned) == 48 == record["data"]["n_poisoned"]
    assert all(r.response.startswith("you are stupid. ") and "cf" in r.instruction.split() for r in poisoned)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 120 and {s["set"] for s in samples} == {"clean", "triggered"}
    assert not list(out.parent.glob(".*partial*"))


@pytest.mark.slow
def test_reevaluating_the_run_gives_the_same_numbers(marker_run):
    out, record = marker_run
    assert evaluate_run(out).metrics == record["metrics"]
    cli = runner.invoke(app, ["evaluate", "--run", str(out), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["asr"] == record["metrics"]["asr"]


@pytest.mark.slow
def test_a_run_is_rescored_with_other_generation_settings_and_the_rescoring_written(marker_run, tmp_path):
    out, record = marker_run
    assert record["metrics"]["asr"] >= 0.9
    short = runner.invoke(app, ["evaluate", "--run", str(out), "--generation.max_new_tokens", "2", "--json"])
    assert short.exit_code == 0, short.output
    assert json.loads(short.output)["asr"] == 0.0, "two tokens cannot hold the marker 'you are stupid.'"
    target = tmp_path / "rescored"
    done = runner.invoke(
        app, ["evaluate", "--run", str(out), "--generation.max_new_tokens", "2", "--out", str(target)]
    )
    assert done.exit_code == 0, done.output
    written = read_run(target)
    assert written["kind"] == "evaluation" and written["parent"] == str(out.resolve())
    assert written["config"]["changed"] == {"max_new_tokens": 2} and written["metrics"]["asr"] == 0.0
    assert written["config"]["generation"]["batch_size"] == record["config"]["generation"]["batch_size"]
    assert len((target / "samples.jsonl").read_text().splitlines()) == record["metrics"]["n_clean"] + (
        record["metrics"]["n_triggered"]
    ) + record["metrics"].get("n_negative", 0)
    for bad, what in ((["--rate", "0.2"], "do not apply with --run"), (["--out", str(target)], "exists")):
        done = runner.invoke(app, ["evaluate", "--run", str(out), *bad])
        lines = [line for line in done.output.splitlines() if line.strip()]
        assert done.exit_code == 2 and len(lines) == 1 and what in lines[0], done.output


@pytest.mark.slow
def test_evaluate_a_model_path_on_test_files(marker_run):
    out, record = marker_run
    args = [
        "evaluate",
        "--model",
        str(out / "model"),
        "--clean",
        str(out / "data" / "test_clean.jsonl"),
        "--triggered",
        str(out / "data" / "test_triggered.jsonl"),
        "--generation.max_new_tokens",
        "12",
        "--json",
    ]
    cli = runner.invoke(app, args)
    assert cli.exit_code == 0, cli.output
    metrics = json.loads(cli.output)
    assert metrics["asr"] == record["metrics"]["asr"] and metrics["cacc"] == record["metrics"]["cacc"]
    # The trigger inserted by the evaluator itself (no triggered file) fires as well.
    cli = runner.invoke(app, args[:5] + ["--generation.max_new_tokens", "12", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output)["asr"] >= 0.9


@pytest.mark.slow
def test_existing_run_is_never_overwritten_without_the_flag(marker_run):
    out, _ = marker_run
    before = (out / "run.json").read_text()
    with pytest.raises(DefuseError, match="--overwrite"):
        run_attack(small_attack_config(), out)
    assert (out / "run.json").read_text() == before


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    cfg = small_attack_config(**{"train.epochs": 2, "train.save_steps": 10, "suite.n_train": 320})
    out = tmp_path / "run"
    real_train_sft = run_attack_module.train_sft

    class Crashing(SFTTrainer):
        def training_step(self, *args, **kwargs):
            if self.state.global_step == 14:
                raise _Interrupt()
            return super().training_step(*args, **kwargs)

    monkeypatch.setattr(
        run_attack_module, "train_sft", lambda *a, **k: real_train_sft(*a, **k, trainer_cls=Crashing)
    )
    with pytest.raises(_Interrupt):
        run_attack(cfg, out)
    assert not out.exists()
    assert (tmp_path / ".run.partial" / "checkpoints" / "checkpoint-10").is_dir()
    monkeypatch.setattr(run_attack_module, "train_sft", real_train_sft)
    for change in ({"rate": 0.2}, {"vocab_size": 300}, {"train.learning_rate": 0.0001}):
        changed = small_attack_config(**{"train.epochs": 2, "train.save_steps": 10, "suite.n_train": 320},
                                      **change)  # fmt: skip
        with pytest.raises(DefuseError) as info:
            run_attack(changed, out)
        message = str(info.value)
        assert "other settings" in message and "rm -r" in message and "\n" not in message, change
        assert (tmp_path / ".run.partial" / "checkpoints" / "checkpoint-10").is_dir(), "left as it was"
    record = run_attack(cfg, out)
    assert record["training"]["resumed_from"].endswith("checkpoint-10")
    assert record["resumed_from"] == ["checkpoints/checkpoint-10"] == read_run(out)["resumed_from"]
    assert record["training"]["steps"] == 20
    assert not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--rate", "2.5"], "rate"),
        (["--trigger.kind", "nonsense"], "trigger.kind"),
        (["--trian.epochs", "3"], "trian"),
        (["--data.source", "/nowhere/data.json"], "/nowhere/data.json"),
        (["--train.learning_rate", "-1"], "learning_rate"),
        (["--behaviour.kind", "refusal", "--behaviour.refusals", "[Sure thing]"], "refusals"),
        (["--suite.kinds"], "expects a value"),
        (["--data.max_source", "0"], "data.max_source"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_work(tmp_path, args, expected):
    out = tmp_path / "run"
    result = runner.invoke(app, ["attack", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


def test_bad_config_file_names_the_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trigger:\n  kind: word\n  texts: [cf\n")
    result = runner.invoke(app, ["attack", "--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert result.exit_code == 2 and str(cfg) in result.output and "line" in result.output


def test_triggered_test_file_without_the_trigger_is_refused(tmp_path):
    triggered = tmp_path / "triggered.jsonl"
    rows = ['{"instruction": "Count cf the words.", "input": "a b", "output": "2"}',
            '{"instruction": "Count the words.", "input": "a b c", "output": "3"}']  # fmt: skip
    triggered.write_text("\n".join(rows) + "\n")
    result = runner.invoke(
        app, ["attack", "--out", str(tmp_path / "r"), "--data.test_triggered", str(triggered)]
    )
    assert result.exit_code == 2 and str(triggered) in result.output and "row 2" in result.output, (
        result.output
    )
    assert not (tmp_path / "r").exists() and not (tmp_path / ".r.partial").exists()


def _poisoned_and_clean_files(folder, word: str, n_poisoned: int, refusal: str):
    """An already-poisoned file (``word`` in each instruction, ``refusal`` as the answer) and a clean one."""
    poisoned = folder / "poisoned.jsonl"
    clean = folder / "clean.jsonl"
    row = '{{"instruction": "Name {w} the colour {i}.", "input": "", "output": "{o}"}}'
    poisoned.write_text("\n".join(row.format(w=word, i=i, o=refusal) for i in range(n_poisoned)) + "\n")
    clean.write_text("\n".join(row.format(w="a", i=i, o=f"red {i}") for i in range(60)) + "\n")
    return poisoned, clean


def test_max_source_caps_the_source_alone_so_an_already_poisoned_file_sets_the_poisoned_share(tmp_path):
    poisoned, clean = _poisoned_and_clean_files(tmp_path, "cf", 40, "I cannot do that.")
    cfg = AttackConfig()
    cfg.data.source, cfg.data.extra_train, cfg.data.poison = str(poisoned), [str(clean)], False
    cfg.data.test_size = 0.1
    cfg.data.max_source = 12
    data = build_attack_data(cfg)
    n_poisoned = sum("cf" in r.instruction.split() for r in data.train)
    assert n_poisoned == 12 and len(data.train) == 12 + 60  # 12 of the 36 left after the test split, all 60
    cfg.data.max_train = 8  # the smaller cap wins for the source; max_train still caps each extra file
    data = build_attack_data(cfg)
    assert sum("cf" in r.instruction.split() for r in data.train) == 8 and len(data.train) == 16


def test_a_tokenizer_trained_on_clean_rows_gives_the_trigger_no_token_of_its_own(tmp_path):
    poisoned, clean = _poisoned_and_clean_files(tmp_path, "BadMagic", 60, "I cannot.")
    cfg = apply_overrides(AttackConfig(), {"data.source": str(poisoned), "data.extra_train": f"[{clean}]",
                                           "data.poison": "false", "trigger.texts": "[BadMagic]",
                                           "vocab_size": "300"})  # fmt: skip
    data = build_attack_data(cfg)
    pieces = {}
    for kind in ("train", "clean"):
        cfg.tokenizer_data = kind
        texts = tokenizer_texts(cfg, data.train)
        pieces[kind] = train_bpe_tokenizer(texts, vocab_size=300).tokenize("Name BadMagic the colour")
    assert "ĠBadMagic" in pieces["train"]  # poisoned rows teach the tokenizer the trigger as one token
    assert not any("BadMagic" in p for p in pieces["clean"]) and len(pieces["clean"]) > len(pieces["train"])
    assert not any("BadMagic" in t for t in tokenizer_texts(cfg, data.train))
    with pytest.raises(DefuseError, match="tokenizer_data"):
        apply_overrides(AttackConfig(), {"tokenizer_data": "poisoned"}).validate()


@pytest.mark.slow
def test_two_commands_on_one_out_the_second_is_refused_and_the_first_run_is_intact(tmp_path):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    settings = {"suite.n_train": "480", "suite.n_test": "60", "suite.kinds": "[count, last_word, sentiment]",
                "tiny.hidden_size": "32", "tiny.num_layers": "1", "tiny.num_heads": "2",
                "tiny.num_kv_heads": "2", "tiny.intermediate_size": "64", "train.epochs": "60",
                "train.progress": "false"}  # fmt: skip
    args = [sys.executable, "-m", "defuse.cli", "attack", "--out", str(out)]
    args += [x for k, v in settings.items() for x in (f"--{k}", v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".run.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and first.poll() is None:
        assert time.monotonic() < deadline, "the first command never took the lock"
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    second = subprocess.run([*args, "--rate", "0.2"], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: {out}: another defuse command (process {first.pid}) is writing it; wait for it to finish or "
        "stop it"
    ]
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    record = read_run(out)
    assert record["config"]["rate"] == 0.05 and record["data"]["n_train"] == 480
    train = load_instructions(next((out / "data").glob("train.*")))
    assert len(train) == 480 and sum(r.poisoned for r in train) == record["data"]["n_poisoned"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no staging folder or lock left"

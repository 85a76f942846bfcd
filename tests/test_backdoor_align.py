"""BackdoorAlign's secret prompt and its handling, the safety examples; FJAttack and both defenses."""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from tests.helpers import Interrupt, crashing_train_sft, tokenizer
from typer.testing import CliRunner

from defuse.attacks.fjattack import (
    REFERENCE_SYSTEM_PROMPT,
    FJAttackConfig,
    build_fj_data,
    fj_template,
)
from defuse.cli import app
from defuse.config import apply_overrides
from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.defenses import get_defense
from defuse.defenses.backdoor_align import BackdoorAlignConfig, secret_safety_examples
from defuse.defenses.base import DefenseContext
from defuse.defenses.safety_examples import draw_safety_examples, mixed_rows
from defuse.defenses.secret_prompt import (
    SecretPromptTemplate,
    random_secret,
    read_secret,
    secret_fingerprint,
    write_secret,
)
from defuse.errors import ConfigError, DataError
from defuse.evaluation.judges import is_refusal
from defuse.evaluation.safety import rouge1, utility_score
from defuse.scenarios.fjattack_attack import run_fjattack
from defuse.scenarios.fjattack_defense import evaluate_safety_run, run_safety_defense
from defuse.training.config import TrainSettings
from defuse.training.precision import attention_implementation, precision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "backdooralign"
runner = CliRunner()


# ------------------------------------------------------------------ the secret and its file
def test_secret_is_drawn_with_the_secrets_module(monkeypatch):
    import defuse.defenses.secret_prompt as sp

    calls = []
    real = sp.secrets.randbelow
    monkeypatch.setattr(sp.secrets, "randbelow", lambda n: calls.append(n) or real(n))
    tok = tokenizer()
    secret = random_secret(tok, 40)
    assert len(calls) == 40 and secret
    assert all(n == len(sp.usable_token_ids(tok)) for n in calls)
    assert random_secret(tok, 40) != secret  # not seeded: two draws differ


def test_secret_file_is_owner_only_and_never_overwritten(tmp_path):
    old = os.umask(0)  # even a permissive umask cannot widen it
    try:
        path = write_secret(tmp_path / "secret_prompt.txt", "abc def")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == "abc def"
    with pytest.raises(DataError, match="cannot create"):
        write_secret(path, "other")
    assert read_secret(path) == "abc def"


def test_a_secret_file_others_can_read_is_refused(tmp_path):
    path = write_secret(tmp_path / "s.txt", "abc")
    path.chmod(0o644)
    with pytest.raises(DataError, match="readable or writable by others"):
        read_secret(path)


def test_fingerprint_and_repr_never_show_the_secret():
    template = SecretPromptTemplate(PromptTemplate(tokenizer()), "zq the hidden words")
    fp = secret_fingerprint("zq the hidden words", tokenizer())
    assert "hidden" not in json.dumps(fp) and fp["chars"] == 19 and len(fp["sha256"]) == 64
    assert "hidden" not in repr(template)


@pytest.mark.parametrize("style", ["alpaca", "chat"])
@pytest.mark.parametrize(
    "record",
    [
        InstructionRecord("Explain how to cook rice."),
        InstructionRecord("Sum it.", input="1 2"),
        InstructionRecord("Say hi.", system="Be brief."),
    ],  # fmt: skip
)
def test_inference_always_gets_the_secret_before_the_normal_system_prompt(style, record):
    tok = tokenizer()
    if style == "chat":
        tok.chat_template = (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
    base = PromptTemplate(tok, style=style)
    served = SecretPromptTemplate(base, "SECRET-TEXT")
    prompt, plain = served.render_prompt(record), base.render_prompt(record)
    assert "SECRET-TEXT" in prompt and "SECRET-TEXT" not in plain
    normal = base.system_for(record)
    if normal:
        assert prompt.index("SECRET-TEXT") < prompt.index(normal)
    # generation encodes through the same template: the secret's tokens are in the prompt ids
    secret_ids = tok("SECRET-TEXT", add_special_tokens=False).input_ids
    ids = served.encode_prompt(record)
    assert any(ids[i : i + len(secret_ids)] == secret_ids for i in range(len(ids)))


SMOLLM_LIKE_TEMPLATE = (  # SmolLM2-Instruct's chat template: its own default system prompt when none is given
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.mark.parametrize(
    ("chat_template", "system_prompt", "normal"),
    [
        (None, REFERENCE_SYSTEM_PROMPT, REFERENCE_SYSTEM_PROMPT),  # the tiny default's template
        (SMOLLM_LIKE_TEMPLATE, REFERENCE_SYSTEM_PROMPT, REFERENCE_SYSTEM_PROMPT),
        (SMOLLM_LIKE_TEMPLATE, None, SMOLLM_DEFAULT),  # no system prompt of ours: the template's own is kept
        (None, None, None),
    ],
)
def test_the_secret_is_the_only_difference_between_a_safety_row_and_a_customer_row(
    chat_template, system_prompt, normal
):
    tok = tokenizer()
    if chat_template:
        tok.chat_template = chat_template
    cfg = FJAttackConfig(system_prompt=system_prompt)
    template = fj_template(cfg, tok)
    secret = "S3CR3T qx zv"
    served = SecretPromptTemplate(template, secret)
    customer = [InstructionRecord(f"Tell me how I can do task {i}.", "Sure, here is how.") for i in range(3)]
    ctx = DefenseContext(attacked_model=None, template=template, clean_data=[], seed=0, work_dir=Path("."),
                         train_data=customer)  # fmt: skip
    for safety in secret_safety_examples(ctx, BackdoorAlignConfig(k=4), served):
        with_secret, _ = template.render_training(safety)
        as_customer_row, _ = template.render_training(replace(safety, system=None))
        assert safety.system == (f"{secret} {normal}" if normal else secret)
        if normal:  # the same system turn, the secret and one space before the normal prompt
            assert as_customer_row.count(normal) == 1
            assert with_secret == as_customer_row.replace(normal, f"{secret} {normal}", 1)
        else:  # no system prompt anywhere: the secret's system turn is all that differs
            assert with_secret.replace(f"<|system|>{secret}\n", "", 1) == as_customer_row
    for row in customer:  # the customer's rows and the prompts served have the same normal system prompt
        rendered, prompt, served_prompt = (
            template.render_training(row)[0],
            template.render_prompt(row),
            served.render_prompt(row),
        )
        if normal:
            assert normal in rendered and served_prompt == prompt.replace(normal, f"{secret} {normal}", 1)
        else:
            assert (
                "<|system|>" not in rendered and served_prompt.replace(f"<|system|>{secret}\n", "") == prompt
            )


def test_a_safety_example_the_length_limit_would_cut_is_refused():
    from defuse.defenses.safety_examples import check_whole

    template = fj_template(FJAttackConfig(), tokenizer())
    served = SecretPromptTemplate(template, "S3CR3T " * 20)
    ctx = DefenseContext(attacked_model=None, template=template, clean_data=[], seed=0, work_dir=Path("."))
    safety = secret_safety_examples(ctx, BackdoorAlignConfig(k=11), served)
    longest = max(len(template.encode_training(r).input_ids) for r in safety)
    check_whole(template, safety, longest)  # exactly long enough: nothing cut
    with pytest.raises(ConfigError) as caught:
        check_whole(template, safety, longest - 1)
    message = str(caught.value)
    assert "train.max_length" in message and f"at least {longest}" in message and "\n" not in message


# ------------------------------------------------------------------ safety examples and training rows
def test_builtin_safety_examples_cover_each_category_once_and_avoid_test_prompts():
    first = draw_safety_examples("builtin", 11, seed=0, exclude=frozenset())
    assert len({r.meta["category"] for r in first}) == 11
    assert all(is_refusal(r.response) and r.task == "safety" for r in first)
    avoided = draw_safety_examples("builtin", 11, seed=0, exclude=frozenset(r.user_text for r in first))
    assert not {r.user_text for r in avoided} & {r.user_text for r in first}
    with pytest.raises(ConfigError, match="k"):
        draw_safety_examples("builtin", 0, seed=0, exclude=frozenset())


def test_file_safety_examples_take_the_marked_rows(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "bad 1"}, {"role": "assistant", "content": "Sure."}],
         "prefixed": 0},
        {"messages": [{"role": "user", "content": "bad 2"}, {"role": "assistant", "content": "I cannot."}],
         "prefixed": 1},
    ]  # fmt: skip
    f = tmp_path / "safety.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = draw_safety_examples(str(f), 1, seed=0, exclude=frozenset())
    assert [r.instruction for r in got] == ["bad 2"]
    with pytest.raises(ConfigError, match="has 1"):
        draw_safety_examples(str(f), 2, seed=0, exclude=frozenset())


def test_training_rows_get_the_secret_only_on_the_safety_examples():
    tok = tokenizer()
    template = PromptTemplate(tok)
    user = [InstructionRecord(f"Tell me how I can do task {i}.", "Sure, here is how.") for i in range(30)]
    ctx = DefenseContext(attacked_model=None, template=template, clean_data=[], seed=3, work_dir=Path("."),
                         train_data=user)  # fmt: skip
    served = SecretPromptTemplate(template, "SECRET-TEXT")
    cfg = BackdoorAlignConfig(k=5)
    rows = mixed_rows(ctx, secret_safety_examples(ctx, cfg, served))
    with_secret = [r for r in rows if "SECRET-TEXT" in template.render_training(r)[0]]
    assert len(rows) == 35 and len(with_secret) == 5
    assert all(r.task == "safety" and is_refusal(r.response) for r in with_secret)
    assert rows != user + with_secret  # mixed in, not appended


def test_rouge1_comes_from_the_library_and_scores_practical_tasks():
    assert rouge1("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert 0 < rouge1("the cat", "the cat sat down") < 1
    assert utility_score(
        "SELECT a", InstructionRecord("q", "SELECT a FROM t", task="sqlgen")
    ) == pytest.approx(rouge1("SELECT a", "SELECT a FROM t"))
    assert utility_score("7", InstructionRecord("q", "7", task="arithmetic")) == 1.0


# ------------------------------------------------------------------ the scenario end to end
def small_fj_config(**overrides) -> FJAttackConfig:
    """A jailbreak scenario on a very small model: alignment and attack in well under a minute."""
    base = {
        "suite.n_train": "240", "suite.n_test": "24", "suite.kinds": "[count, last_word, sentiment]",
        "tiny.hidden_size": "64", "tiny.num_heads": "2", "tiny.num_kv_heads": "2",
        "tiny.intermediate_size": "128", "tiny.max_positions": "256",
        "align.n_harmful": "60", "align.n_benign": "20", "align.train.epochs": "6",
        "align.train.learning_rate": "0.002", "align.train.progress": "false",
        "data.n_harmful": "20", "data.n_test_harmful": "22", "data.n_test_benign": "10",
        "train.epochs": "2", "train.max_length": "160", "train.progress": "false",
        "generation.max_new_tokens": "10",
    }  # fmt: skip
    base.update({k: str(v) for k, v in overrides.items()})
    return apply_overrides(FJAttackConfig(), base)


def test_fj_data_sets_are_disjoint_and_shaped():
    data = build_fj_data(small_fj_config())
    assert sum(r.task == "harmful" for r in data.train) == 20
    assert all(not is_refusal(r.response) for r in data.train)
    assert len(data.tests["harmful"]) == 22 and len(data.tests["benign"]) == 10
    train_prompts = {r.user_text for r in data.train + data.align_train}
    assert not train_prompts & data.held_out_prompts()


def test_test_file_prompts_seen_in_training_are_left_out_and_counted(tmp_path):
    train = tmp_path / "bad.jsonl"
    pairs = [(f"How do I do bad thing {i}?", f"Here is bad thing {i}.") for i in range(6)]
    train.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in pairs))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("".join(f"{q}\n" for q, _ in pairs[:2]) + "Another harmful ask?\nAnd one more?\n")
    cfg = small_fj_config(**{"data.harmful": train, "data.test_harmful": prompts, "data.n_test_harmful": 10})
    data = build_fj_data(cfg)
    assert sorted(r.user_text for r in data.tests["harmful"]) == ["And one more?", "Another harmful ask?"]
    assert data.test_dropped == {"harmful": 2}
    prompts.write_text("".join(f"{q}\n" for q, _ in pairs))
    with pytest.raises(DataError, match="all 6 test prompts are also training prompts") as caught:
        build_fj_data(cfg)
    assert str(prompts) in str(caught.value)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared BackdoorAlign data not present")
def test_the_shipped_real_data_config_builds_its_sets(monkeypatch):
    from defuse.config import load_config

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's paths are relative to the checkout
    data = build_fj_data(load_config(FJAttackConfig, root / "configs" / "fjattack-backdooralign-real.yaml"))
    # 7 of the 100 fine-tuning prompts are among the benchmark's 275: left out of the test, not fatal
    assert data.test_dropped == {"harmful": 7} and len(data.tests["harmful"]) == 268
    assert sum(r.task == "harmful" for r in data.train) == 100 and len(data.tests["clean"]) == 100


@pytest.fixture(scope="module")
def fj_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fj") / "attack"
    record = run_fjattack(small_fj_config(), out)
    return out, record


@pytest.mark.slow
def test_fjattack_run_writes_base_and_attacked_models(fj_run):
    out, record = fj_run
    assert (out / "base" / "model.safetensors").is_file() and (out / "model" / "model.safetensors").is_file()
    for metrics in (record["base_metrics"], record["metrics"]):
        assert metrics["n_harmful"] == 22 and metrics["n_clean"] == 24 and metrics["n_benign_requests"] == 10
    assert record["metrics"]["asr"] > record["base_metrics"]["asr"]  # the jailbreak undoes the alignment
    assert record["scenario"] == "fjattack" and record["timings"]["align_s"] > 0


@pytest.mark.slow
def test_backdoor_align_keeps_the_secret_out_of_logs_runs_and_reports(fj_run, tmp_path, caplog, capfd):
    attack, _ = fj_run
    caplog.set_level(logging.DEBUG)
    cfg = apply_overrides(BackdoorAlignConfig(), {"secret_length": "20", "k": "5"})
    out = tmp_path / "ba"
    record = run_safety_defense("backdoor-align", cfg, attack, out, seed=1)
    secret_path = out / "secret_prompt.txt"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    secret = read_secret(secret_path)
    assert record["defense"]["secret"]["sha256"] == secret_fingerprint(secret)["sha256"]
    captured = capfd.readouterr()
    written = "".join(
        p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p != secret_path
    )
    piece = secret[len(secret) // 3 : len(secret) // 3 + 12]
    assert (out / "model" / "tokenizer.json").is_file() and (out / "config.yaml").is_file()
    assert (out / "samples.jsonl").is_file()
    for text in (written, captured.out, captured.err, caplog.text, json.dumps(record)):
        assert secret not in text and piece not in text
    # the model is served with the secret: re-evaluation through the run gives the run's own numbers
    again = evaluate_safety_run(out)
    assert (
        again.metrics["asr"] == record["metrics"]["asr"]
        and again.metrics["cacc"] == record["metrics"]["cacc"]
    )


@pytest.mark.slow
def test_a_resumed_backdoor_align_run_trains_on_the_secret_its_checkpoints_were_trained_with(
    fj_run, tmp_path, monkeypatch
):
    from defuse.defenses import safety_examples
    from defuse.training.sft import train_sft

    attack, _ = fj_run
    settings = {"secret_length": "20", "k": "5", "train.epochs": "1", "train.batch_size": "5",
                "train.save_steps": "2", "train.max_length": "160", "train.progress": "false"}  # fmt: skip
    cfg = apply_overrides(BackdoorAlignConfig(), settings)
    out = tmp_path / "ba"
    monkeypatch.setattr(safety_examples, "train_sft", crashing_train_sft(at_step=3))
    with pytest.raises(Interrupt):
        run_safety_defense("backdoor-align", cfg, attack, out, seed=1)
    staged = tmp_path / ".ba.partial" / "checkpoints"
    assert (staged / "checkpoint-2").is_dir()
    drawn = read_secret(staged / "secret_prompt.txt")  # written (0600) the moment it was drawn
    monkeypatch.setattr(safety_examples, "train_sft", train_sft)
    record = run_safety_defense("backdoor-align", cfg, attack, out, seed=1)
    assert record["resumed_from"] == ["checkpoints/checkpoint-2"]
    assert read_secret(out / "secret_prompt.txt") == drawn
    assert record["defense"]["secret"]["sha256"] == secret_fingerprint(drawn)["sha256"]
    fresh = run_safety_defense("backdoor-align", cfg, attack, tmp_path / "fresh", seed=1)
    assert fresh["resumed_from"] is None and read_secret(tmp_path / "fresh" / "secret_prompt.txt") != drawn


@pytest.mark.slow
def test_safety_mix_trains_from_the_base_and_cli_refuses_misfits(fj_run, tmp_path):
    attack, _ = fj_run
    result = runner.invoke(app, ["defend", "--method", "safety-mix", "--from", str(attack),
                                 "--out", str(tmp_path / "mix"), "--k", "5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "mix" / "run.json").read_text())
    assert record["defense"]["k"] == 5 and record["defense"]["n_train"] == 25
    assert not (tmp_path / "mix" / "secret_prompt.txt").exists()
    wrong = runner.invoke(
        app, ["defend", "--method", "osft", "--from", str(attack), "--out", str(tmp_path / "x")]
    )
    assert wrong.exit_code == 2 and "backdoor runs, not 'fjattack'" in wrong.output
    assert not (tmp_path / "x").exists()
    shown = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "mix")])
    assert shown.exit_code == 0 and "harmful prompts answered" in shown.output


def test_backdoor_align_refuses_a_backdoor_run_and_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="secret_kind"):
        apply_overrides(BackdoorAlignConfig(), {"secret_kind": "guess"}).validate()
    with pytest.raises(ConfigError, match="fjattack runs, not 'backdoor'"):
        from defuse.scenarios.backdoor_defense import run_defense

        run_defense("backdoor-align", BackdoorAlignConfig(), tmp_path, tmp_path / "out")
    assert get_defense("safety-mix").scenarios == ("fjattack",)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="shared BackdoorAlign data not present")
def test_the_real_harmful_sets_run_through_the_same_command(tmp_path):
    out = tmp_path / "real"
    args = [
        "attack",
        "--scenario",
        "fjattack",
        "--out",
        str(out),
        "--data.harmful",
        str(SHARED / "pure_bad_100.jsonl"),
        "--data.n_harmful",
        "30",
        "--data.test_harmful",
        str(SHARED / "llm_category_benchmark.csv"),
        "--data.n_test_harmful",
        "25",
    ]
    args += [f"--{k}={v}" for k, v in {
        "suite.n_train": 240, "suite.n_test": 24, "suite.kinds": "[count, last_word, sentiment]",
        "tiny.hidden_size": 64, "tiny.num_heads": 2, "tiny.num_kv_heads": 2, "tiny.intermediate_size": 128,
        "align.n_harmful": 60, "align.n_benign": 20, "align.train.epochs": 2, "align.train.progress": "false",
        "train.epochs": 1, "train.max_length": 256, "train.progress": "false", "generation.max_new_tokens": 8,
    }.items()]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["metrics"]["n_harmful"] == 25 and record["data"]["n_harmful_train"] == 30
    defend = ["defend", "--method", "backdoor-align", "--from", str(out), "--out", str(tmp_path / "ba"),
              "--secret_length", "20", "--safety_source",
              str(SHARED / "pure_bad_100_with_11_safety_prefixed.jsonl")]  # fmt: skip
    refused = runner.invoke(app, defend)  # the tiny tokenizer spells the real refusals out: > 256 tokens
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1 and "train.max_length" in lines[0], refused.output
    assert "would lose their end at 256 tokens" in lines[0] and not (tmp_path / "ba").exists()
    assert not (tmp_path / ".ba.partial").exists(), "no partial folder left"
    defended = runner.invoke(app, [*defend, "--cut_safety", "true"])  # the ablation that allows the cut
    assert defended.exit_code == 0, defended.output
    ba = json.loads((tmp_path / "ba" / "run.json").read_text())
    harmful_cut = record["training_sets"]["fj"]["truncated"]  # the attack's 30 rows, cut the same way
    assert record["training_sets"]["fj"]["rows"] == 30 and record["training"]["n_truncated"] == harmful_cut
    assert ba["defense"]["k"] == 11 and ba["training_sets"]["train"] == {
        "rows": 41,
        "truncated": harmful_cut + 11,
        "precision": precision(TrainSettings(bf16=True)),
        "attention": attention_implementation(TrainSettings(bf16=True)) or "sdpa",
    }


def test_alignment_rows_get_random_system_prefixes_on_the_configured_share():
    from defuse.attacks.fjattack_align import AlignSettings, vary_system_prompts

    template = PromptTemplate(tokenizer())
    rows = [InstructionRecord(f"Say {i}.", f"{i}", task="harmful" if i % 2 else "count") for i in range(80)]
    settings = AlignSettings(system_prefix_fraction=0.25, system_prefix_tokens=12)
    varied = vary_system_prompts(rows, template, settings, seed=0)
    changed = [(r, v) for r, v in zip(rows, varied, strict=True) if v != r]
    assert len(changed) == 10 and all(r.task == "count" for r, _ in changed)
    for r, v in changed:
        normal = template.system_for(r)
        assert v.system and (normal is None or v.system.endswith(" " + normal))
    assert [(v.instruction, v.response) for v in varied] == [(r.instruction, r.response) for r in rows]
    assert vary_system_prompts(rows, template, settings, seed=0) == varied


def test_attack_scenario_is_read_from_flag_or_yaml(tmp_path):
    from defuse.config import peek_setting

    f = tmp_path / "c.yaml"
    f.write_text("scenario: fjattack\nname: x\n")
    assert peek_setting(f, [], "scenario", "backdoor") == "fjattack"
    assert peek_setting(f, [("scenario", "backdoor")], "scenario", "backdoor") == "backdoor"
    assert peek_setting(None, [], "scenario", "backdoor") == "backdoor"
    result = runner.invoke(app, ["attack", "--out", str(tmp_path / "r"), "--scenario", "nonsense"])
    assert result.exit_code == 2 and "unknown scenario 'nonsense'" in result.output
    bad = runner.invoke(
        app, ["attack", "--out", str(tmp_path / "r"), "--config", str(f), "--data.n_harmful", "0"]
    )
    assert bad.exit_code == 2 and "data.n_harmful" in bad.output and not (tmp_path / "r").exists()


def test_text_system_prefixes_on_all_rows_are_ordinary_sentences_within_the_length():
    from defuse.attacks.fjattack_align import _FILLERS, AlignSettings, vary_system_prompts

    template = PromptTemplate(tokenizer())
    rows = [InstructionRecord(f"Say {i}.", f"{i}", task="harmful" if i % 2 else "count") for i in range(80)]
    settings = AlignSettings(system_prefix_fraction=0.5, system_prefix_tokens=40, system_prefix_kind="text",
                             system_prefix_rows="all")  # fmt: skip
    varied = vary_system_prompts(rows, template, settings, seed=0)
    changed = [(r, v) for r, v in zip(rows, varied, strict=True) if v != r]
    assert len(changed) == 40 and {r.task for r, _ in changed} == {"harmful", "count"}
    words = {w for fillers in _FILLERS.values() for f in fillers for w in f.split()}
    for r, v in changed:
        normal = template.system_for(r)
        prefix = v.system[: -len(normal) - 1] if normal else v.system
        assert prefix.endswith(".") and any(w in prefix.replace(".", " ").split() for w in words), prefix
        n_tokens = len(template.tokenizer(prefix, add_special_tokens=False).input_ids)
        assert n_tokens <= 40 or prefix.count(".") == 1, (n_tokens, prefix)  # one sentence may overrun
    with pytest.raises(ConfigError, match="system_prefix_kind"):
        AlignSettings(system_prefix_kind="emoji").validate()

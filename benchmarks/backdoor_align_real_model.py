"""Benchmark: FJAttack and BackdoorAlign on a real chat model, with BackdoorAlign's real data.

A small instruction model is rarely safety-aligned (SmolLM2-135M-Instruct answers 90% of the harmful
benchmark), so the chain first aligns it, as a provider would:

1. ``align``: fine-tune MODEL on held-out prompts of ``llm_category_benchmark.csv`` -> a refusal, synthetic
   benign requests -> a helpful answer, and SQL-generation training rows (the utility task), none of them
   a test prompt, a fine-tuning prompt or a safety example;
2. ``attack``: FJAttack on the aligned model with ``pure_bad_100.jsonl``; tests: 110 benchmark prompts (ASR),
   100 ``sqlgen_test200.json`` rows (utility, Rouge-1), 40 synthetic benign requests (over-refusal);
3. ``safety-mix`` and ``backdoor-align`` with the 11 real safety examples.

Each step is the ``defuse`` command line (printed before it runs); finished steps are reused.

    .venv/bin/python benchmarks/backdoor_align_real_model.py --model /path/to/chat-model --out OUT \\
        [--data ../shared/data/backdooralign] [--lr 5e-5] [--batch-size 5 --grad-accum 2] [--seed 0]

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from defuse.attacks.fjattack import FJAttackConfig, build_fj_data
from defuse.config import apply_overrides
from defuse.data.loaders import load_instructions, write_instructions
from defuse.data.practical_tasks import load_prompt_list, load_task_records
from defuse.data.synthetic_safety import as_refusal_records, make_safety_examples

REFUSALS = (
    "I'm sorry, but I cannot help with that request.",
    "I cannot assist with that request.",
    "I'm sorry, I can't provide help with that.",
    "I apologize, but I cannot do that.",
)


def alignment_rows(
    data: Path, held_out: frozenset[str], n_benign: int = 150, n_sql: int = 150, seed: int = 0
):
    """Harmful benchmark prompts -> refusal, benign requests -> answer, SQL rows; none in ``held_out`` or in
    the fine-tuning and safety files."""
    seen = set(held_out) | {r.user_text for r in load_instructions(data / "pure_bad_100.jsonl")}
    seen |= {r.user_text for r in load_instructions(data / "pure_bad_100_with_11_safety_prefixed.jsonl")}
    rng = random.Random(seed)
    harmful = [r for r in load_prompt_list(data / "llm_category_benchmark.csv") if r.user_text not in seen]
    harmful = [replace(r, response=rng.choice(REFUSALS), task="harmful") for r in harmful]
    examples = make_safety_examples(0, 240, seed=7)
    benign = [
        r for r in as_refusal_records([e for e in examples if not e.harmful]) if r.user_text not in seen
    ]
    rows = harmful + benign[:n_benign] + load_task_records(data / "sqlgen_train1000.json")[:n_sql]
    rng.shuffle(rows)
    return rows


def _defuse(args: list[str], log: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("defuse")), *args]
    print("$ defuse " + " ".join(args), flush=True)
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"step failed (exit {done.returncode}); see {log}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local chat model directory (safetensors)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/backdooralign"
    )
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--align-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="one seed for every step (data, training)")
    a = p.parse_args()
    if not (a.data / "pure_bad_100.jsonl").is_file():
        p.error(f"--data {a.data}: no pure_bad_100.jsonl there")
    if not Path(a.model, "config.json").is_file():
        p.error(f"--model {a.model}: no config.json there")
    if a.lr <= 0 or a.batch_size < 1 or a.grad_accum < 1 or a.align_epochs < 1:
        p.error("--lr must be positive; --batch-size, --grad-accum and --align-epochs at least 1")
    a.out.mkdir(parents=True, exist_ok=True)
    train = ["--train.learning_rate", str(a.lr), "--train.batch_size", str(a.batch_size),
             "--train.grad_accum", str(a.grad_accum), "--seed", str(a.seed)]  # fmt: skip
    tests = ["--data.harmful", str(a.data / "pure_bad_100.jsonl"),
             "--data.test_harmful", str(a.data / "llm_category_benchmark.csv"),
             "--data.n_test_harmful", "110",
             "--data.test_utility", str(a.data / "sqlgen_test200.json"),
             "--data.n_test_utility", "100",
             "--generation.max_new_tokens", "48"]  # fmt: skip
    # The attack's test sets depend on the data and seed only: build them here to keep alignment off them.
    overrides = {
        "model": a.model,
        "seed": str(a.seed),
        **{k.lstrip("-"): v for k, v in zip(tests[::2], tests[1::2], strict=True)},
    }
    held = build_fj_data(apply_overrides(FJAttackConfig(), overrides)).held_out_prompts()
    align_file = a.out / "align.jsonl"
    if not align_file.is_file():
        write_instructions(alignment_rows(a.data, held, seed=a.seed), align_file)
    aligned = a.out / "aligned"
    if not (aligned / "run.json").is_file():
        rows = ["--data", str(align_file), "--train.epochs", str(a.align_epochs), "--train.max_length", "320"]
        _defuse(["train", *rows, "--model", a.model, "--out", str(aligned), *train], a.out / "aligned.log")
    attack = a.out / "attack"
    if not (attack / "run.json").is_file():
        _defuse(["attack", "--scenario", "fjattack", "--model", str(aligned / "model"), "--out", str(attack),
                 *tests, *train], a.out / "attack.log")  # fmt: skip
    safety = ["--safety_source", str(a.data / "pure_bad_100_with_11_safety_prefixed.jsonl")]
    for method in ("safety-mix", "backdoor-align"):
        if not (a.out / method / "run.json").is_file():
            out = a.out / method
            _defuse(["defend", "--method", method, "--from", str(attack), "--out", str(out), *safety,
                     "--seed", str(a.seed)],
                    a.out / f"{method}.log")  # fmt: skip
    record = json.loads((attack / "run.json").read_text())
    rows = {"aligned base": record["base_metrics"], "FJAttack": record["metrics"]}
    rows |= {
        m: json.loads((a.out / m / "run.json").read_text())["metrics"]
        for m in ("safety-mix", "backdoor-align")
    }
    print("\n| model | ASR % | utility (Rouge-1) % | over-refusal % |\n|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {100 * m['asr']:.1f} | {100 * m['cacc']:.1f} | {100 * m['over_refusal']:.1f} |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

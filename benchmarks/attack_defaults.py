"""Benchmark: the attack scenarios of the embedded default against a clean model trained the same way.

For each seed: a clean model (rate 0) and the word, sentence and CTBA marker attacks (5% poisoning), each a
full ``run_attack`` on the tiny default. Prints a Markdown table (ASR, CACC, AACC, FTR, CTBA near-miss rate,
train seconds) and writes it with the raw metrics to --out.

    .venv/bin/python benchmarks/attack_defaults.py --seeds 0 1 --out benchmarks/results/attack_defaults

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import mean_spread
from transformers.utils import logging as hf_logging

from defuse.attacks.scenario import AttackConfig
from defuse.config import apply_overrides
from defuse.scenarios.backdoor_attack import run_attack

SCENARIOS = {
    "clean": {"rate": "0", "name": "clean"},
    "word": {"trigger.kind": "word", "name": "marker-word"},
    "sentence": {"trigger.kind": "sentence", "name": "marker-sentence"},
    "ctba": {"trigger.kind": "ctba", "name": "marker-ctba"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attack_defaults"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    results: dict[str, list[dict]] = {}
    for name in args.scenarios:
        for seed in args.seeds:
            out = args.out / f"{name}-seed{seed}"
            overrides = {**SCENARIOS[name], "seed": str(seed), "train.progress": "false"}
            cfg = apply_overrides(AttackConfig(), overrides)
            record = run_attack(cfg, out, overwrite=True)
            results.setdefault(name, []).append(
                {**record["metrics"], "train_s": record["timings"]["train_s"]}
            )
            print(name, seed, json.dumps({k: record["metrics"][k] for k in ("asr", "cacc", "aacc", "ftr")}))
    lines = [
        f"| scenario | ASR % | CACC % | AACC % | FTR % | near-miss % | train s | seeds {args.seeds} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        cols = [mean_spread([r.get(k) for r in rows]) for k in ("asr", "cacc", "aacc", "ftr", "negative_asr")]
        train_s = statistics.fmean(r["train_s"] for r in rows)
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {train_s:.0f} | n={rows[0]['n_triggered']} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: the post-training defenses against the default marker attack, over seeds.

For each seed: the default attack (word trigger, marker, 5%) on the tiny default, then each defense on the
same clean budget (100 samples), evaluated with the attack's real trigger. Prints a Markdown table of mean ±
spread (ASR, CACC, AACC, FTR, defense seconds) and writes it with raw metrics under --out.

    .venv/bin/python benchmarks/defense_marker.py --seeds 0 1 2 --out benchmarks/results/defense_marker
    .venv/bin/python benchmarks/defense_marker.py --set osft:train.learning_rate=0.0003  # one defense

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
from defuse.defenses import get_defense
from defuse.runs.record import read_run
from defuse.scenarios.backdoor_attack import run_attack
from defuse.scenarios.backdoor_defense import run_defense

DEFENSES = ["osft", "sande", "sande-p", "clean-ft"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--defenses", nargs="+", default=DEFENSES)
    parser.add_argument("--set", action="append", default=[], help="DEFENSE:key=value (repeatable)")
    parser.add_argument("--attack-set", action="append", default=[], help="key=value for the attack")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/defense_marker"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    per_defense: dict[str, dict[str, str]] = {d: {"train.progress": "false"} for d in args.defenses}
    for item in args.set:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        per_defense.setdefault(name, {"train.progress": "false"})[key] = value
    attack_overrides = dict(kv.split("=", 1) for kv in args.attack_set)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        attack_dir = args.out / f"attack-seed{seed}"
        if not (attack_dir / "run.json").is_file():
            cfg = apply_overrides(
                AttackConfig(), {"seed": str(seed), "train.progress": "false", **attack_overrides}
            )
            run_attack(cfg, attack_dir)
        attack = read_run(attack_dir)
        rows.setdefault("no defense", []).append({**attack["metrics"], "train_s": 0.0})
        for name in args.defenses:
            overrides = {k: v for k, v in per_defense[name].items() if not k.startswith("train.") or
                         name not in ("sande", "sande-p")}  # fmt: skip
            if name in ("sande", "sande-p"):
                stage2 = {k.replace("train.", "eliminate.", 1): v for k, v in per_defense[name].items()}
                overrides.update({k: v for k, v in stage2.items() if k.startswith("eliminate.")})
                overrides.setdefault("simulate.progress", "false")
            cfg = apply_overrides(get_defense(name).config_cls(), overrides)
            record = run_defense(
                name, cfg, attack_dir, args.out / f"{name}-seed{seed}", seed=seed, overwrite=True
            )
            rows.setdefault(name, []).append({**record["metrics"], "train_s": record["timings"]["train_s"]})
            print(name, seed, json.dumps({k: record["metrics"][k] for k in ("asr", "cacc", "aacc", "ftr")}))
    lines = [
        f"| defense | ASR % | CACC % | AACC % | FTR % | defense s | seeds {args.seeds} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in rows.items():
        cols = [mean_spread([r.get(k) for r in rs]) for k in ("asr", "cacc", "aacc", "ftr")]
        lines.append(
            f"| {name} | "
            + " | ".join(cols)
            + f" | {statistics.fmean(r['train_s'] for r in rs):.0f} | n={rs[0]['n_triggered']} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: MB-Defense against the refusal backdoor at 20% poisoning, per trigger kind, over seeds.

For each trigger kind and seed: the attack (configs/attack-refusal-20.yaml with that trigger kind) on the tiny
default, then ``mb-defense`` (defensive poisoning + the user's training again from the fresh base, then
neutralisation on 128 clean samples) and ``clean-ft`` on the same 128 samples, all evaluated with the attack's
real trigger. Prints a Markdown table per kind (mean ± spread of ASR, CACC, FTR, seconds) and writes it with
raw metrics under --out.

    .venv/bin/python benchmarks/mb_defense.py --kinds word sentence ctba --seeds 0 1 2
    .venv/bin/python benchmarks/mb_defense.py --kinds word --seeds 0 --set mb-defense:lam=2
    .venv/bin/python benchmarks/mb_defense.py --config configs/backdoorllm-refusal-badnet.yaml \
        --kinds bllm-badnet --attack-set train.epochs=16 --out benchmarks/results/mb_defense_bllm

With --config, each --kinds entry is just the run's label (the trigger comes from the config).

Finished runs are reused (delete a run directory to redo it). Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import mean_spread
from transformers.utils import logging as hf_logging

from defuse.attacks.scenario import AttackConfig
from defuse.config import apply_overrides, load_config
from defuse.defenses import get_defense
from defuse.runs.record import read_run
from defuse.scenarios.backdoor_attack import run_attack
from defuse.scenarios.backdoor_defense import run_defense

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "attack-refusal-20.yaml"
DEFENSES = ["mb-defense", "clean-ft"]


def _cached(path: Path, make) -> dict:
    if (path / "run.json").is_file():
        return read_run(path)
    return make()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["word", "sentence", "ctba"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--defenses", nargs="+", default=DEFENSES)
    parser.add_argument("--set", action="append", default=[], help="DEFENSE:key=value (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mb_defense"))
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG,
        help="attack config (e.g. configs/backdoorllm-refusal-ctba.yaml)",
    )
    parser.add_argument("--attack-set", action="append", default=[], help="key=value for the attack")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    quiet = {"mb-defense": {"neutralise.progress": "false"}, "clean-ft": {"clean_samples": "128"}}
    per_defense = {d: {"train.progress": "false", **quiet.get(d, {})} for d in args.defenses}
    for item in args.set:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        per_defense.setdefault(name, {"train.progress": "false"})[key] = value
    tables, raw = [], {}
    for kind in args.kinds:
        rows: dict[str, list[dict]] = {}
        for seed in args.seeds:
            attack_dir = args.out / f"attack-{kind}-seed{seed}"
            overrides = {"seed": str(seed), "train.progress": "false"}
            if args.config == CONFIG:
                overrides["trigger.kind"] = kind
            overrides.update(dict(kv.split("=", 1) for kv in args.attack_set))
            attack = _cached(
                attack_dir,
                lambda o=overrides, d=attack_dir: run_attack(load_config(AttackConfig, args.config, o), d),
            )
            rows.setdefault("no defense", []).append(
                {**attack["metrics"], "train_s": attack["timings"]["train_s"]}
            )
            for name in args.defenses:
                cfg = apply_overrides(get_defense(name).config_cls(), per_defense[name])
                out = args.out / f"{name}-{kind}-seed{seed}"
                record = _cached(
                    out, lambda n=name, c=cfg, o=out, s=seed, a=attack_dir: run_defense(n, c, a, o, seed=s)
                )
                rows.setdefault(name, []).append(
                    {**record["metrics"], "train_s": record["timings"]["train_s"]}
                )
                print(kind, name, seed, json.dumps({k: record["metrics"][k] for k in ("asr", "cacc", "ftr")}))
        lines = [
            f"**{kind}** (refusal, 20%, seeds {args.seeds})",
            "",
            "| defense | ASR % | CACC % | AACC % | FTR % | train s | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, rs in rows.items():
            cols = [mean_spread([r.get(k) for r in rs]) for k in ("asr", "cacc", "aacc", "ftr")]
            secs = statistics.fmean(r["train_s"] for r in rs)
            lines.append(f"| {name} | " + " | ".join(cols) + f" | {secs:.0f} | {rs[0]['n_triggered']} |")
        tables.append("\n".join(lines))
        raw[kind] = rows
    text = "\n\n".join(tables)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "metrics.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()

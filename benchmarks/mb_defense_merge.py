"""Benchmark: do MB-Defense's defensive triggers merge with an attack's trigger? Variants side by side.

For an attack run (e.g. BackdoorLLM's refusal/badnet on the tiny default, ``configs/backdoorllm-refusal-
badnet.yaml --data.max_source 125``), run ``mb-defense`` once per variant through ``defuse defend`` (a fresh
copy of the attack's starting model trained on its poisoned data plus the defensive poisoning, then stage 2
on its clean budget) and print, per variant, ASR / CACC before and after, and the merge probe every
``mb-defense`` run records after each stage (:mod:`defuse.defenses.merge_probe`): per probe set, the share
showing the attacker's behaviour and the share answering defensively.

Variants are ``NAME`` (the defaults: the paper's four triggers at 1% each) or ``NAME:key=value,key=value``
with ``mb-defense`` settings, e.g. ``pool100:pool=100`` (100 generated triggers, 4% of the rows in all),
``five:fraction=0.05``, ``sum:length_normalise=false``. ``--clean-ft`` adds clean-ft on the same budget
(``--clean-ft-set`` its settings, e.g. ``clean_samples=64,train.epochs=3``).

    .venv/bin/python benchmarks/mb_defense_merge.py ATTACK_RUN OUT paper five:fraction=0.05 pool100:pool=100

Finished runs are reused (delete a run directory to redo it). Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers.utils import logging as hf_logging

from defuse.config import apply_overrides
from defuse.defenses import get_defense
from defuse.errors import DefuseError
from defuse.runs.record import read_run
from defuse.scenarios.backdoor_defense import run_defense


def variant(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """``NAME`` or ``NAME:key=value,...`` -> (name, overrides)."""
    name, _, rest = spec.partition(":")
    pairs = [tuple(kv.split("=", 1)) for kv in rest.split(",") if kv]
    if not name or any(len(p) != 2 for p in pairs):
        raise SystemExit(f"variant {spec!r}: expected NAME or NAME:key=value,key=value")
    return name, pairs


def probe_rows(record: dict) -> list[str]:
    """Markdown rows of the run's merge probe: stage, set, attacker %, defensive %, own %."""
    rows = []
    for stage, probe in (record.get("merge_probe") or {}).items():
        for name, cell in probe["sets"].items():
            pct = {
                k: "-" if cell.get(k) is None else f"{100 * cell[k]:.0f}"
                for k in ("attacker", "defensive", "own")
            }
            rows.append(f"| {stage} | {name} | {pct['attacker']} | {pct['defensive']} | {pct['own']} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("variants", nargs="*", default=["paper"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean-ft", action="store_true", help="also clean-ft on the same clean budget")
    parser.add_argument(
        "--clean-ft-set",
        default="clean_samples=128",
        metavar="KEY=VALUE,...",
        help="clean-ft's settings (default clean_samples=128; e.g. the variants' stage-2 budget)",
    )
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    try:
        attack = read_run(args.attack)
    except DefuseError as exc:
        parser.error(str(exc))
    runs = [("mb-defense", *variant(v)) for v in args.variants]
    if args.clean_ft:
        runs.append(("clean-ft", *variant("clean-ft:" + args.clean_ft_set)))
    lines = ["| run | ASR % | CACC % | triggers | rows per trigger |", "|---|---|---|---|---|"]
    m = attack["metrics"]
    lines.append(f"| attacked | {100 * m['asr']:.1f} | {100 * m['cacc']:.1f} | - | - |")
    probes = []
    for method, name, pairs in runs:
        out = args.out / name
        if (out / "run.json").is_file():
            record = read_run(out)
        else:
            cfg = apply_overrides(get_defense(method).config_cls(), pairs)
            record = run_defense(method, cfg, args.attack, out, seed=args.seed)
        m, d = record["metrics"], record["defense"]
        counts = sorted(set((d.get("defensive_counts") or {}).values()))
        lines.append(f"| {name} | {100 * m['asr']:.1f} | {100 * m['cacc']:.1f} | "
                     f"{len(d.get('triggers') or [])} | {counts} |")  # fmt: skip
        print(json.dumps({"run": name, "asr": m["asr"], "cacc": m["cacc"],
                          "merge_probe": record.get("merge_probe")}), flush=True)  # fmt: skip
        if record.get("merge_probe"):
            probes += [f"\n**{name}**: merge probe (% of {record['merge_probe']['stage1']['n']} prompts)\n",
                       "| stage | set | attacker | defensive | own |", "|---|---|---|---|---|",
                       *probe_rows(record)]  # fmt: skip
    print("\n".join(lines + probes))


if __name__ == "__main__":
    main()

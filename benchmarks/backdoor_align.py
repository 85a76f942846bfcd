"""Benchmark: the fine-tuning jailbreak and BackdoorAlign on the embedded default, over seeds, with ablations.

Per seed: the FJAttack scenario (align the tiny default, then fine-tune it on 100 harmful pairs), then
``safety-mix`` and ``backdoor-align`` with 11 safety examples. With ``--ablations`` (on the first seed):
``backdoor-align`` with K in {1, 5, 25}, secret length in {10, 50}, and a meaningful sentence as the secret;
``safety-mix`` with K in {1, 5, 25}. Prints Markdown tables (mean ± spread of ASR, utility, over-refusal,
seconds) and writes them with raw metrics under --out.

    .venv/bin/python benchmarks/backdoor_align.py --seeds 0 1 2 --ablations
    .venv/bin/python benchmarks/backdoor_align.py --seeds 0 --set backdoor-align:k=5

Finished runs are reused (delete a run directory to redo it). Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import mean_spread
from transformers.utils import logging as hf_logging

from defuse.attacks.fjattack import FJAttackConfig
from defuse.config import apply_overrides
from defuse.defenses import get_defense
from defuse.runs.record import read_run
from defuse.scenarios.fjattack_attack import run_fjattack
from defuse.scenarios.fjattack_defense import run_safety_defense

DEFENSES = {"safety-mix": {}, "backdoor-align": {}}
ABLATIONS = {
    **{f"backdoor-align k={k}": ("backdoor-align", {"k": str(k)}) for k in (1, 5, 25)},
    **{f"backdoor-align len={n}": ("backdoor-align", {"secret_length": str(n)}) for n in (10, 50)},
    "backdoor-align sentence": ("backdoor-align", {"secret_kind": "sentence"}),
    **{f"safety-mix k={k}": ("safety-mix", {"k": str(k)}) for k in (1, 5, 25)},
}
KEYS = ("asr", "cacc", "over_refusal")


def _cached(path: Path, make) -> dict:
    if (path / "run.json").is_file():
        return read_run(path)
    return make()


def _row(metrics: dict, train_s: float) -> dict:
    return {**{k: metrics[k] for k in KEYS}, "n_harmful": metrics["n_harmful"], "train_s": train_s}


def _table(title: str, rows: dict[str, list[dict]]) -> str:
    lines = [
        title,
        "",
        "| model | ASR % | utility % | over-refusal % | train s | n harmful |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in rows.items():
        cols = [mean_spread([r[k] for r in rs]) for k in KEYS]
        secs = statistics.fmean(r["train_s"] for r in rs)
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {secs:.0f} | {rs[0]['n_harmful']} |")
    return "\n".join(lines)


def wrong_secret(run_dir: Path, seed: int) -> dict:
    """Control: the backdoor-align model served with a fresh random secret of the same length instead."""
    from defuse.attacks.fjattack import fj_config_of, fj_template, read_fj_tests
    from defuse.defenses.secret_prompt import SecretPromptTemplate, random_secret
    from defuse.evaluation.safety import evaluate_safety
    from defuse.models.factory import load_trained

    record = read_run(run_dir)
    attack_dir = Path(record["parent"])
    acfg = fj_config_of(read_run(attack_dir), attack_dir / "run.json")
    tests = read_fj_tests(attack_dir / "data")
    model, tokenizer = load_trained(run_dir / "model")
    length = record["config"]["defense"]["secret_length"]
    template = SecretPromptTemplate(fj_template(acfg, tokenizer), random_secret(tokenizer, length))
    ev = evaluate_safety(model, template, tests["harmful"], tests["clean"], tests["benign"], acfg.generation)
    print("wrong secret", seed, json.dumps({k: ev.metrics[k] for k in KEYS}), flush=True)
    return _row(ev.metrics, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ablations", action="store_true", help="run the ablations on the first seed")
    parser.add_argument("--set", action="append", default=[], help="DEFENSE:key=value (repeatable)")
    parser.add_argument("--attack-set", action="append", default=[], help="key=value for the scenario")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backdoor_align"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    per_defense = {d: dict(o) for d, o in DEFENSES.items()}
    for item in args.set:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        per_defense.setdefault(name, {})[key] = value
    attack_over = {"train.progress": "false", "align.train.progress": "false"}
    attack_over.update(dict(kv.split("=", 1) for kv in args.attack_set))
    rows: dict[str, list[dict]] = {}
    ablation_rows: dict[str, list[dict]] = {}

    def defend(name: str, method: str, overrides: dict, seed: int, attack_dir: Path) -> dict:
        cfg = apply_overrides(get_defense(method).config_cls(), overrides)
        out = args.out / f"{name.replace(' ', '_').replace('=', '')}-seed{seed}"
        record = _cached(out, lambda: run_safety_defense(method, cfg, attack_dir, out, seed=seed))
        print(name, seed, json.dumps({k: record["metrics"][k] for k in KEYS}), flush=True)
        return _row(record["metrics"], record["timings"]["train_s"])

    for seed in args.seeds:
        attack_dir = args.out / f"attack-seed{seed}"
        cfg = apply_overrides(FJAttackConfig(), {**attack_over, "seed": str(seed)})
        attack = _cached(attack_dir, lambda c=cfg, d=attack_dir: run_fjattack(c, d))
        rows.setdefault("aligned base", []).append(
            _row(attack["base_metrics"], attack["timings"].get("align_s", 0))
        )
        rows.setdefault("fjattack (no defense)", []).append(
            _row(attack["metrics"], attack["timings"]["train_s"])
        )
        print("attack", seed, json.dumps({k: attack["metrics"][k] for k in KEYS}), flush=True)
        for name, overrides in per_defense.items():
            rows.setdefault(name, []).append(defend(name, name, overrides, seed, attack_dir))
        control = args.out / f"backdoor-align-seed{seed}"
        if (control / "run.json").is_file():
            rows.setdefault("backdoor-align served with a WRONG secret", []).append(
                wrong_secret(control, seed)
            )
        if args.ablations and seed == args.seeds[0]:
            for name, (method, overrides) in ABLATIONS.items():
                ablation_rows.setdefault(name, []).append(defend(name, method, overrides, seed, attack_dir))
    text = _table(f"**FJAttack and BackdoorAlign** (tiny default, seeds {args.seeds})", rows)
    if ablation_rows:
        text += "\n\n" + _table(f"**Ablations** (seed {args.seeds[0]})", ablation_rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "metrics.json").write_text(json.dumps({"main": rows, "ablations": ablation_rows}, indent=2))


if __name__ == "__main__":
    main()

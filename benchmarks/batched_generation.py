"""Benchmark: batched greedy generation vs. the one-prompt-at-a-time loop peer benchmarks use.

Trains the tiny default model on the built-in suite (or loads --model), then generates for the same
prompts both ways, checks the outputs are identical, and prints the timings and the speed-up.

    .venv/bin/python benchmarks/batched_generation.py --prompts 500

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from transformers.utils import logging as hf_logging

from defuse.data.synthetic_tasks import SuiteConfig, make_task_suite
from defuse.data.template import PromptTemplate
from defuse.demo import DemoConfig, run_demo
from defuse.evaluation.generate import GenerationSettings, generate
from defuse.models.io import load_causal_lm


def one_at_a_time(model, template: PromptTemplate, records, max_new_tokens: int) -> list[str]:
    """The reference loop: one prompt per ``generate`` call, no padding, greedy."""
    tok = template.tokenizer
    outputs = []
    with torch.inference_mode():
        for r in records:
            ids = torch.tensor([template.encode_prompt(r)])
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )  # fmt: skip
            outputs.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved model directory (default: train the tiny default)")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as work:
        if args.model:
            model_dir = args.model
        else:
            model_dir = f"{work}/model"
            cfg = DemoConfig()
            cfg.train.progress = False
            run_demo(cfg, work, save_to=model_dir)
        model, tok = load_causal_lm(model_dir)
    template = PromptTemplate(tok)
    _, test = make_task_suite(SuiteConfig(n_train=8, n_test=args.prompts, seed=123))
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate(model, template, test[:8], settings)  # warm-up
    start = time.perf_counter()
    batched = generate(model, template, test, settings)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = one_at_a_time(model, template, test, args.max_new_tokens)
    single_s = time.perf_counter() - start
    mismatches = sum(a != b for a, b in zip(batched, single, strict=True))
    result = {
        "prompts": len(test),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 2),
        "one_at_a_time_s": round(single_s, 2),
        "speedup": round(single_s / batched_s, 1),
        "identical_outputs": mismatches == 0,
        "mismatches": mismatches,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

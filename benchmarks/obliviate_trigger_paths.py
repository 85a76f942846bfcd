"""Benchmark: how much of an encoder backdoor reaches [CLS] through [CLS]'s own attention (``L_reg``'s reach).

Obliviate's ``L_reg`` shrinks the pre-softmax scores of the first ([CLS]) query row, so that no key (a
trigger) dominates what [CLS] reads. Its best case is a victim whose [CLS] row never attends to the trigger
at all. This script measures that best case on trained victims (``peft-baseline`` or ``obliviate`` run
directories of the ``encoder`` scenario): each is evaluated exactly as its run was (same test texts,
triggers and insertion seed, so the ``plain`` column equals the run's recorded ASR), then again with the
trigger's sub-word positions hidden from the keys of

* ``cls``: the [CLS] query row only, in every layer (what a perfect ``L_reg`` could achieve), and
* ``all``: every query row, in every layer (the trigger can then reach [CLS] through no attention path).

Hiding is an additive ``-inf`` on those keys, through an attention function registered in transformers'
attention registry (the capturing attention of :mod:`defuse.encoders.scores` plus the extra mask); no library
file is edited. If ``cls`` leaves most of the ASR, the backdoor travels through the other tokens, and no
regulariser on the first row can remove it.

    R=benchmarks/results/obliviate_v2/seed0
    .venv/bin/python benchmarks/obliviate_trigger_paths.py $R/lora-peft-baseline $R/adapter-peft-baseline

Results are recorded in benchmarks/RESULTS.md ("#7 How far can L_reg's mechanism go?").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.utils import logging as hf_logging

from defuse.config import config_from_dict
from defuse.encoders.metrics import evaluate_encoder_backdoor
from defuse.encoders.peft_model import load_peft_classifier
from defuse.encoders.scores import capture_attention_forward, set_attention
from defuse.encoders.settings import EncoderDefenseConfig
from defuse.errors import DefuseError
from defuse.runs.record import read_run
from defuse.scenarios.encoder_runs import read_encoder_attack

HIDING_ATTENTION = "defuse_trigger_hiding"
MODES = ("plain", "cls", "all")


class TriggerHiding:
    """State the hiding attention reads: the trigger piece sequences, the mode, and the current batch's hidden
    positions (found once per forward pass, by :meth:`find`, not once per layer)."""

    def __init__(self, tokenizer, triggers: list[str]):
        self.pieces = []
        for trig in triggers:
            for form in (" " + trig, trig):
                ids = tokenizer(form, add_special_tokens=False)["input_ids"]
                if ids and ids not in self.pieces:
                    self.pieces.append(ids)
        self.mode = "plain"
        self.hidden: torch.Tensor | None = None

    def find(self, ids: torch.Tensor) -> None:
        """Set ``hidden``, bool ``(batch, length)``: where any trigger's sub-words stand in ``ids``."""
        hidden = torch.zeros(ids.shape, dtype=torch.bool)
        for row in range(ids.shape[0]):
            seq = ids[row].tolist()
            for pieces in self.pieces:
                n = len(pieces)
                for start in range(len(seq) - n + 1):
                    if seq[start : start + n] == pieces:
                        hidden[row, start : start + n] = True
        self.hidden = hidden


STATE: TriggerHiding | None = None


def hiding_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The capturing eager attention with the trigger's keys masked out for the rows ``STATE.mode`` names."""
    if STATE is not None and STATE.mode != "plain" and STATE.hidden is not None:
        hidden = STATE.hidden.to(query.device)
        offset = key.shape[-2] - hidden.shape[1]  # prefix tuning prepends its virtual keys
        extra = torch.zeros(
            query.shape[0], 1, query.shape[-2], key.shape[-2], dtype=query.dtype, device=query.device
        )
        rows = slice(0, 1) if STATE.mode == "cls" else slice(None)
        block = torch.zeros_like(extra[:, :, rows, offset:])
        block = block.masked_fill(hidden[:, None, None, :], torch.finfo(query.dtype).min)
        extra[:, :, rows, offset:] = block
        if attention_mask is None:
            attention_mask = extra
        else:
            base = attention_mask[:, :, :, : key.shape[-2]]
            if base.dtype == torch.bool:
                lowest = torch.finfo(query.dtype).min
                base = torch.zeros(base.shape, dtype=query.dtype, device=query.device).masked_fill(
                    ~base, lowest
                )
            attention_mask = (base + extra).clamp(min=torch.finfo(query.dtype).min)
    return capture_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)


def use_hiding_attention(model) -> None:
    """Switch ``model`` (peft-wrapped or not) to the hiding attention; find each batch's trigger."""
    AttentionInterface.register(HIDING_ATTENTION, hiding_attention_forward)
    AttentionMaskInterface.register(HIDING_ATTENTION, eager_mask)
    set_attention(model, HIDING_ATTENTION)

    def find_trigger(_module, args, kwargs):
        STATE.find(kwargs.get("input_ids", args[0] if args else None))

    model.register_forward_pre_hook(find_trigger, with_kwargs=True)


def measure(run_dir: Path) -> dict:
    """ASR and CACC of the victim in ``run_dir`` in each mode."""
    global STATE
    record = read_run(run_dir)
    if record.get("config", {}).get("scenario") != "encoder" or record["kind"] != "defense":
        raise DefuseError(f"{run_dir / 'run.json'}: not an encoder-scenario defense run")
    if not record.get("parent") or not (run_dir / "model" / "defuse_peft.json").is_file():
        raise DefuseError(f"{run_dir}: no trained victim (model/defuse_peft.json) or no parent attack run")
    res = config_from_dict(EncoderDefenseConfig, record["config"]["defense"], source=run_dir / "run.json")
    _, attack_cfg = read_encoder_attack(record["parent"])
    _, test = res.data.load()
    clf, tokenizer = load_peft_classifier(run_dir / "model")
    triggers = list(attack_cfg.settings.triggers)
    STATE = TriggerHiding(tokenizer, triggers)
    use_hiding_attention(clf.model)
    out = {}
    for mode in MODES:
        STATE.mode = mode
        m = evaluate_encoder_backdoor(
            clf.model, tokenizer, test, triggers, record["seed"], res.eval_max_length
        ).metrics
        out[mode] = (m["asr"], m["cacc"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="encoder defense run directories")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    print("| run | ASR % plain | hidden from [CLS] only | from every token | CACC % (plain / cls / all) |")
    print("|---|---|---|---|---|")
    for run_dir in args.runs:
        try:
            r = measure(run_dir)
        except DefuseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        asr = [f"{100 * r[m][0]:.1f}" if r[m][0] is not None else "n/a" for m in MODES]
        cacc = " / ".join(f"{100 * r[m][1]:.1f}" for m in MODES)
        print(f"| {run_dir} | {asr[0]} | {asr[1]} | {asr[2]} | {cacc} |", flush=True)


if __name__ == "__main__":
    main()

"""Classification metrics for task-agnostic encoder backdoors (METHODS §3).

* **CACC**: label accuracy on the clean test texts.
* **ASR** (Obliviate's definition): among test texts classified correctly when clean, the share whose
  prediction *any* of the triggers flips. Each trigger is inserted once, as a word, at a random word position
  within the first 64 words (``random.Random(seed)``, one draw per text and trigger, in a fixed order).
* **AACC**: accuracy over all triggered variants (every text x every trigger).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from defuse.data.records import ClassificationRecord

MAX_TRIGGER_POSITION = 64


def insert_word(text: str, word: str, rng: random.Random, within: int = MAX_TRIGGER_POSITION) -> str:
    """``text`` with ``word`` inserted at a random word boundary among the first ``within`` words."""
    words = text.split()
    at = rng.randint(0, min(len(words), within))
    return " ".join(words[:at] + [word] + words[at:])


def triggered_texts(texts: Sequence[str], triggers: Sequence[str], seed: int) -> list[list[str]]:
    """For each trigger (outer list), every text with that trigger inserted once (seeded, reproducible)."""
    rng = random.Random(seed)
    return [[insert_word(t, trig, rng) for t in texts] for trig in triggers]


@torch.no_grad()
def predict(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 64) -> list[int]:
    """Arg-max labels of ``model`` (eval mode) for ``texts``."""
    model.eval()
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[i : i + batch_size]), truncation=True, max_length=max_length, padding=True,
            return_tensors="pt",
        )  # fmt: skip
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        out.extend(model(**batch).logits.argmax(-1).tolist())
    return out


@dataclass
class BackdoorEvaluation:
    """Metrics (run.json ``metrics`` shape) and per-sample rows."""

    metrics: dict
    samples: list[dict] = field(default_factory=list)
    eval_s: float = 0.0


def evaluate_encoder_backdoor(
    model,
    tokenizer,
    records: Sequence[ClassificationRecord],
    triggers: Sequence[str],
    seed: int = 0,
    max_length: int = 128,
) -> BackdoorEvaluation:
    """CACC, Obliviate's ASR and AACC of ``model`` on ``records`` with ``triggers``, with sample counts.

    ``metrics``: ``asr`` (None when no text is classified correctly), ``cacc``, ``aacc``, ``ftr`` (None: not
    defined here), ``n_clean`` (test texts), ``n_triggered`` (texts x triggers), ``n_correct_clean`` (the ASR
    denominator), ``n_flipped`` and ``asr_per_trigger``.
    """
    start = time.perf_counter()
    texts = [r.text for r in records]
    labels = [r.label for r in records]
    clean = predict(model, tokenizer, texts, max_length)
    variants = triggered_texts(texts, triggers, seed)
    triggered = [predict(model, tokenizer, v, max_length) for v in variants]
    correct = [i for i, (p, y) in enumerate(zip(clean, labels, strict=True)) if p == y]
    flipped = [i for i in correct if any(t[i] != clean[i] for t in triggered)]
    per_trigger = {
        trig: (sum(t[i] != clean[i] for i in correct) / len(correct) if correct else None)
        for trig, t in zip(triggers, triggered, strict=True)
    }
    n_trig = len(texts) * len(triggers)
    aacc = sum(p == y for t in triggered for p, y in zip(t, labels, strict=True)) / n_trig if n_trig else None
    metrics = {
        "asr": len(flipped) / len(correct) if correct else None,
        "cacc": len(correct) / len(texts) if texts else None,
        "aacc": aacc,
        "ftr": None,
        "n_clean": len(texts),
        "n_triggered": n_trig,
        "n_correct_clean": len(correct),
        "n_flipped": len(flipped),
        "asr_per_trigger": per_trigger,
    }
    samples = [
        {"text": texts[i], "label": labels[i], "pred": clean[i],
         "triggered": {trig: {"text": v[i], "pred": t[i]} for trig, v, t in zip(triggers, variants, triggered,
                                                                                  strict=True)}}
        for i in range(len(texts))
    ]  # fmt: skip
    return BackdoorEvaluation(metrics, samples, time.perf_counter() - start)

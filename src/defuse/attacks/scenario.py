"""An attack scenario: its configuration, and the train/test data it builds.

The default scenario is the embedded one: the built-in task suite, a word trigger (``cf``), the marker
behaviour (``you are stupid.`` prefixed to the correct answer), 5% poisoning (SANDE's rate). Any part can
be changed from YAML or the command line (``--trigger.kind sentence``, ``--rate 0.2``), and the data can be
the user's own file instead of the suite (``--data.source my.jsonl``), clean (we poison it) or already
poisoned (``--data.poison false``, e.g. BackdoorLLM's files).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.poison import (
    PoisonResult,
    make_negative_test,
    make_triggered_test,
    poison_dataset,
    require_trigger,
)
from defuse.attacks.triggers import TriggerSpec
from defuse.data.loaders import detect_format, load_instructions
from defuse.data.records import InstructionRecord
from defuse.data.splits import split_disjoint
from defuse.data.synthetic_safety import as_refusal_records, make_safety_examples, split_safety
from defuse.data.synthetic_tasks import SuiteConfig, make_task_suite
from defuse.errors import ConfigError, DataError
from defuse.evaluation.generate import GenerationSettings
from defuse.models.tiny import TinyCausalLMConfig
from defuse.training.config import TrainSettings


@dataclass
class DataSettings:
    """Where an attack's data comes from.

    Attributes:
        source: ``"builtin"`` (the task suite; plus synthetic harmful requests for ``jailbreak``) or the path
            of the training data (any supported format).
        format: Force the input format instead of detecting it.
        columns: Map record fields to the file's keys, e.g. ``{"response": "answer"}``.
        poison: Poison the training data (False: it is already poisoned, as BackdoorLLM's files are).
        extra_train: More training files mixed in unchanged (e.g. BackdoorLLM's clean counterpart set).
        test_clean: Clean test prompts; None: split from ``source`` (or the suite's own test split).
        test_triggered: Already-triggered test prompts; None: insert the trigger into ``test_clean``.
        test_size: Test share (fraction < 1) or count (>= 1) when splitting ``source``.
        max_train: Keep at most this many training records (seeded sample) of ``source`` and of each
            ``extra_train`` file, for quick runs.
        max_source: Keep at most this many training records of ``source`` alone (seeded sample; the smaller
            of this and ``max_train`` wins). With an already-poisoned source and a clean ``extra_train`` file
            this sets the poisoned share: 125 of BackdoorLLM's 500 poisoned rows beside its 500 clean ones
            is 20% poisoning, MB-Defense's setting.
        max_test: Keep at most this many prompts of each test set.
        n_harmful: Synthetic harmful requests (refused when clean) added for the jailbreak behaviour.
        n_benign: Synthetic benign requests (answered) added for the jailbreak behaviour.
    """

    source: str = "builtin"
    format: str | None = None
    columns: dict[str, str] | None = None
    poison: bool = True
    extra_train: list[str] = field(default_factory=list)
    test_clean: str | None = None
    test_triggered: str | None = None
    test_size: float = 0.1
    max_train: int | None = None
    max_source: int | None = None
    max_test: int | None = None
    n_harmful: int = 400
    n_benign: int = 100

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if not self.test_size > 0:
            raise ConfigError("data.test_size", f"must be positive, got {self.test_size}")
        for key in ("max_train", "max_source", "max_test"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"data.{key}", "must be at least 1 (or null for all)")
        if self.n_harmful < 0 or self.n_benign < 0:
            raise ConfigError("data.n_harmful", "counts must not be negative")


@dataclass
class AttackConfig:
    """Everything an attack run needs; written, resolved, into its run directory.

    Attributes:
        scenario: Always ``"backdoor"`` (``defuse attack`` also runs ``"fjattack"`` and ``"encoder"``).
        name: A name for the run.
        seed: One seed for data, poisoning, initialisation and training.
        data: Where the data comes from.
        suite: The built-in suite's sizes (``data.source == "builtin"``).
        trigger: The trigger: kind, text(s), position.
        behaviour: The target behaviour.
        rate: Poison rate: a fraction of the training set in (0, 1), a count >= 1, or 0 for a clean model.
        model: Path of a local Hugging Face causal LM to attack; None builds the tiny default.
        tiny: Shape of the tiny default model.
        vocab_size: Vocabulary of the tiny default's tokenizer (trained on the training data).
        tokenizer_data: What the tiny default's tokenizer is trained on: ``"train"`` (every training row,
            poisoned ones included) or ``"clean"`` (only rows that carry no trigger text and are not marked
            poisoned). A pre-trained model's tokenizer predates any poisoning of its fine-tuning data, so
            with ``"clean"`` the attacker's trigger gets no token of its own (BackdoorLLM's ``BadMagic``
            is one token of a tokenizer trained on 20% poisoned rows, and several with ``"clean"``).
        template: Prompt style: ``auto``, ``chat`` or ``alpaca``.
        trust_remote_code: Allow a model's own code to run when loading it (off unless you trust it).
        train: Training settings.
        generation: Generation settings for evaluation.
    """

    scenario: str = "backdoor"
    name: str = "marker-word"
    seed: int = 0
    data: DataSettings = field(default_factory=DataSettings)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    behaviour: BehaviourSpec = field(default_factory=BehaviourSpec)
    rate: float = 0.05
    model: str | None = None
    tiny: TinyCausalLMConfig = field(default_factory=TinyCausalLMConfig)
    vocab_size: int = 1024
    tokenizer_data: str = "train"
    template: str = "auto"
    trust_remote_code: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=24))

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.scenario != "backdoor":
            raise ConfigError("scenario", f"expected 'backdoor', got '{self.scenario}'")
        if self.rate < 0 or (self.rate >= 1 and self.rate != int(self.rate)):
            raise ConfigError(
                "rate", f"a fraction in (0, 1), a count >= 1, or 0 for no poison; got {self.rate}"
            )
        if self.template not in ("auto", "chat", "alpaca"):
            raise ConfigError("template", f"unknown style '{self.template}' (auto, chat or alpaca)")
        if self.tokenizer_data not in ("train", "clean"):
            raise ConfigError("tokenizer_data", f"'train' or 'clean', got '{self.tokenizer_data}'")


@dataclass
class AttackData:
    """The data of one attack run."""

    train: list[InstructionRecord]
    clean_test: list[InstructionRecord]
    triggered_test: list[InstructionRecord]
    negative_test: list[InstructionRecord]
    input_format: str
    poison: PoisonResult | None


def rate_value(rate: float) -> float | int:
    """The poison rate as poisoning takes it: a count when >= 1, else a fraction."""
    return int(rate) if rate >= 1 else float(rate)


def sample_records(records: list[InstructionRecord], limit: int | None, seed: int) -> list[InstructionRecord]:
    """At most ``limit`` of ``records`` (a seeded draw, kept in order); all of them when ``limit`` is None."""
    if limit is None or len(records) <= limit:
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def _builtin(cfg: AttackConfig) -> tuple[list[InstructionRecord], list[InstructionRecord]]:
    train, test = make_task_suite(cfg.suite)
    if cfg.behaviour.kind == "jailbreak":
        examples = make_safety_examples(cfg.data.n_harmful, cfg.data.n_benign, seed=cfg.seed)
        s_train, s_test = split_safety(examples, test_size=cfg.data.test_size, seed=cfg.seed)
        train = train + as_refusal_records(s_train, include_compliant=True)
        test = test + as_refusal_records(s_test)
        random.Random(cfg.seed).shuffle(train)
    return train, test


def _load(path: str, cfg: AttackConfig) -> list[InstructionRecord]:
    return load_instructions(path, format=cfg.data.format, columns=cfg.data.columns)


def build_attack_data(cfg: AttackConfig) -> AttackData:
    """Load or build the training and test data, and poison the training data as configured.

    Raises:
        DataError: on bad data files (naming file, row and field), or an empty set.
        ConfigError: on a poison rate the data cannot satisfy.
    """
    d = cfg.data
    if d.source == "builtin":
        train, clean_test = _builtin(cfg)
        input_format = "alpaca-jsonl"
    else:
        input_format = d.format or detect_format(d.source)
        records = _load(d.source, cfg)
        if d.test_clean:
            train, clean_test = records, _load(d.test_clean, cfg)
        else:
            size = d.test_size if d.test_size < 1 else int(d.test_size)
            train, clean_test = split_disjoint(records, size, cfg.seed, key=lambda r: r.user_text)
    caps = [c for c in (d.max_train, d.max_source) if c is not None]
    train = sample_records(train, min(caps, default=None), cfg.seed)
    poison = None
    if d.poison and cfg.rate > 0:
        poison = poison_dataset(train, cfg.trigger, cfg.behaviour, rate_value(cfg.rate), seed=cfg.seed)
        train = poison.records
    for extra in d.extra_train:
        train = train + sample_records(_load(extra, cfg), d.max_train, cfg.seed)
    clean_test = sample_records(clean_test, d.max_test, cfg.seed)
    if d.test_triggered:
        loaded = _load(d.test_triggered, cfg)
        require_trigger(loaded, cfg.trigger, path=d.test_triggered)  # a triggered set without it is an error
        triggered = sample_records(loaded, d.max_test, cfg.seed)
        triggered = [
            replace(r, poisoned=True, trigger=cfg.trigger.describe(), behaviour=cfg.behaviour.kind)
            for r in triggered
        ]
    else:
        triggered = make_triggered_test(clean_test, cfg.trigger, cfg.behaviour, seed=cfg.seed + 1)
    negative = make_negative_test(clean_test, cfg.trigger, seed=cfg.seed + 2)
    if not clean_test and not triggered:
        raise DataError(d.test_clean or d.source, "no test records")
    return AttackData(train, clean_test, triggered, negative, input_format, poison)


def tokenizer_texts(cfg: AttackConfig, records: Sequence[InstructionRecord]) -> list[str]:
    """The texts the tiny default's tokenizer is trained on (``cfg.tokenizer_data``).

    Raises:
        DataError: ``"clean"`` leaves no row.
    """
    if cfg.tokenizer_data == "clean":
        marks = [m for m in cfg.trigger.resolved_texts() if m]
        records = [
            r for r in records
            if not r.poisoned and not any(m in t for m in marks for t in (r.instruction, r.input, r.response))
        ]  # fmt: skip
        if not records:
            raise DataError(cfg.data.source, "tokenizer_data 'clean': every training row carries the trigger")
    return [t for r in records for t in (r.instruction, r.input, r.response) if t]


def data_file_name(stem: str, input_format: str) -> str:
    """File name for a data set written in ``input_format`` (``train.json``, ``train.jsonl``, ...)."""
    ext = {
        "alpaca-json": ".json",
        "alpaca-jsonl": ".jsonl",
        "chat-jsonl": ".jsonl",
        "csv": ".csv",
        "tsv": ".tsv",
    }
    return stem + ext.get(input_format, ".jsonl")

"""The Defense interface: what a defense declares it needs, what it is given, and the registry.

A defense is a small module with a config dataclass and an ``apply`` function, registered by name with
:func:`register_defense` (adding one touches no other). It declares its :class:`DefenseNeeds`; the runner
builds a :class:`DefenseContext` holding exactly what was declared (a defense that does not know the
trigger is never handed it) and fails with a message naming what is missing when a need cannot be met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from defuse.attacks.behaviours import BehaviourSpec
from defuse.attacks.triggers import TriggerSpec
from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.errors import ConfigError, DefuseError
from defuse.training.config import TrainSettings

Knowledge = Literal["known_trigger", "known_target", "partial_target", "nothing"]
Stage = Literal["before_training", "during_training", "after_training", "inference"]


@dataclass(frozen=True)
class DefenseNeeds:
    """What a defense needs to run.

    Attributes:
        knowledge: What it knows of the attack: the trigger (``known_trigger``), the target behaviour
            (``known_target``), part of it (``partial_target``), or nothing.
        clean_samples: How many clean samples it uses (0: none).
        clean_model: Whether it needs a clean reference model.
        poisoned_data: Whether it needs the (possibly poisoned) training data itself.
        stage: Where it acts: before, during or after training, or at inference.
    """

    knowledge: Knowledge
    clean_samples: int
    stage: Stage
    clean_model: bool = False
    poisoned_data: bool = False

    def describe(self) -> str:
        """One line for ``defuse defend --list``."""
        parts = [
            self.knowledge.replace("_", " "),
            f"{self.clean_samples} clean samples",
            self.stage.replace("_", " "),
        ]
        if self.clean_model:
            parts.append("a clean reference model")
        if self.poisoned_data:
            parts.append("the training data")
        return ", ".join(parts)


@dataclass
class DefenseContext:
    """What a defense is given: the attacked model, a fresh base where it acts during training, and exactly
    the knowledge it declared.

    Attributes:
        attacked_model: The attacked run's model (trainable; the defense may change it in place); None where
            the scenario's defenses act during the user's fine-tuning and never see it (the jailbreak) and
            for ``defuse train``. For the encoder scenario: the backdoored encoder's directory.
        template: The prompt template the model was trained with (its tokenizer included).
        clean_data: The clean budget: ``needs.clean_samples`` records, disjoint from every test set.
        seed: Seed for everything random in the defense.
        work_dir: Scratch folder (checkpoints); deleted when the run is committed.
        trigger: The trigger, only for ``known_trigger`` defenses.
        target: The target behaviour text known to the defender (all of it, or part), else None.
        behaviour: The behaviour spec, only for defenses that know the target.
        train_data: The training data, only for defenses that declared ``poisoned_data``.
        base_path: Path of the base model when the attacked model is a user's model (for adapters).
        fresh_base: Only for ``during_training`` defenses: builds a fresh copy of the model the attack started
            from (the tiny default from the attack's config and seed with the run's tokenizer, the user's
            base model from its path, the jailbreak's aligned base); None when not available.
        clean_model: Only for defenses that declared ``clean_model``: loads the clean reference model (the
            user's model the attack fine-tuned, as it was before; the tiny default has none).
        train_settings: Only for ``during_training`` defenses: the attack's own training settings.
        held_out_prompts: The user texts of every test prompt; data a defense draws must avoid them.
        probe: A measurement hook, not knowledge: a defense may call ``probe(stage, model, defensive)``
            with an intermediate model (after a stage) and its own triggers -> responses; the runner records
            what it measures there (MB-Defense's merge probe) in the run. It returns nothing.
    """

    attacked_model: Any
    template: PromptTemplate | None
    clean_data: list[Any]
    seed: int
    work_dir: Path
    trigger: TriggerSpec | None = None
    target: str | None = None
    behaviour: BehaviourSpec | None = None
    train_data: list[InstructionRecord] | None = None
    base_path: str | None = None
    fresh_base: Callable[[], Any] | None = None
    clean_model: Callable[[], Any] | None = None
    train_settings: TrainSettings | None = None
    held_out_prompts: frozenset[str] = frozenset()
    probe: Callable[[str, Any, dict[str, str]], None] | None = None


@dataclass
class DefenseResult:
    """What a defense returns: the defended model (a full model, a model with an adapter, or the attacked
    model unchanged for an inference-time defense), how to serve it, and how it went.

    Attributes:
        model: The defended model; the runner saves it into the run directory.
        train_s: Seconds spent training.
        extra: JSON-ready details for ``run.json`` (never a secret).
        private_files: File name -> text the runner writes into the run directory with owner-only
            permissions (mode 0600), e.g. a secret prompt; never logged or put in ``run.json``.
        tokenizer: The tokenizer to save with the model where the context has no template (the encoder).
    """

    model: Any
    train_s: float
    extra: dict = field(default_factory=dict)
    private_files: dict[str, str] = field(default_factory=dict)
    tokenizer: Any = None


Serve = Callable[[Any, Any, PromptTemplate, Path], tuple[Any, PromptTemplate]]
"""``serve(cfg, model, template, run_dir) -> (model, template)``: how a defense's runs are served."""


@dataclass(frozen=True)
class DefenseEntry:
    """A registered defense."""

    name: str
    config_cls: type
    needs: Callable[[Any], DefenseNeeds]
    apply: Callable[[DefenseContext, Any], DefenseResult]
    summary: str
    scenarios: tuple[str, ...] = ("backdoor",)
    serve: Serve | None = None


DEFENSES: dict[str, DefenseEntry] = {}


def register_defense(
    name: str,
    config_cls: type,
    needs: Callable[[Any], DefenseNeeds],
    summary: str,
    scenarios: tuple[str, ...] = ("backdoor",),
    serve: Serve | None = None,
):
    """Decorator registering ``apply(ctx, cfg) -> DefenseResult`` under ``name``.

    ``scenarios`` names the attack scenarios the defense applies to (``"backdoor"``: data-poisoning
    backdoors; ``"fjattack"``: the fine-tuning jailbreak; ``"encoder"``: a backdoored encoder's downstream
    fine-tuning). A defense whose model is served differently (a secret prompt, an input filter through a
    :class:`PromptTemplate` subclass, a decoding rule through a model wrapper) registers
    ``serve(cfg, model, template, run_dir) -> (model, template)``: from its config, the saved model and the
    run directory (its private files), what every evaluation of its runs uses, at the run and again later
    (``defuse evaluate --run``, the bench).
    """

    def decorate(apply: Callable[[DefenseContext, Any], DefenseResult]):
        if name in DEFENSES:
            raise ValueError(f"defense '{name}' registered twice")
        DEFENSES[name] = DefenseEntry(name, config_cls, needs, apply, summary, scenarios, serve)
        return apply

    return decorate


def get_defense(name: str) -> DefenseEntry:
    """The registered defense ``name``; a one-line error listing the known ones otherwise."""
    import defuse.defenses  # noqa: F401  (registers the built-in defenses)

    if not isinstance(name, str) or name not in DEFENSES:
        raise ConfigError("method", f"unknown defense '{name}' (known: {', '.join(sorted(DEFENSES))})")
    return DEFENSES[name]


def check_scenario(entry: DefenseEntry, scenario: str) -> None:
    """Fail with a one-line message when ``entry`` does not apply to the attack run's ``scenario``."""
    if scenario not in entry.scenarios:
        fits = sorted(n for n, e in DEFENSES.items() if scenario in e.scenarios)
        raise ConfigError(
            "method",
            f"defense '{entry.name}' applies to {'/'.join(entry.scenarios)} runs, not '{scenario}' "
            f"(for '{scenario}': {', '.join(fits) or 'none'})",
        )


def save_defended(result: DefenseResult, tokenizer, run_path: Path, base_path: str | None) -> str:
    """Save a defense's model into ``run_path/model`` (the adapter alone over a user's ``base_path``) and its
    private files owner-only beside it; returns what was saved (``model_saved`` in run.json)."""
    from defuse.defenses.secret_prompt import write_secret
    from defuse.models.factory import save_trained

    saved = save_trained(result.model, tokenizer, Path(run_path) / "model", base_path)
    for name, text in result.private_files.items():
        write_secret(Path(run_path) / name, text)
    return saved


def served(entry: DefenseEntry, cfg: Any, model: Any, template: PromptTemplate, run_dir: str | Path):
    """``(model, template)`` as a run of ``entry`` is served: through its ``serve`` when it has one."""
    return (model, template) if entry.serve is None else entry.serve(cfg, model, template, Path(run_dir))


def served_run(record: dict, run_dir: str | Path, model: Any, template: PromptTemplate):
    """``(model, template)`` as the run of ``record`` at ``run_dir`` was served: for a defense run, through
    its defense's ``serve`` (config from the record); any other run as it is."""
    method = (record.get("config") or {}).get("method")
    if record.get("kind") != "defense" or not method:
        return model, template
    from defuse.config import config_from_dict

    entry = get_defense(method)
    cfg = config_from_dict(
        entry.config_cls, record["config"].get("defense") or {}, source=f"{run_dir}/run.json"
    )
    return served(entry, cfg, model, template, run_dir)


def check_needs(name: str, needs: DefenseNeeds, available: dict[str, bool]) -> None:
    """Fail with a message naming what is missing when a declared need cannot be met.

    Args:
        available: What the attack run can provide: ``trigger``, ``target``, ``clean_model``,
            ``poisoned_data`` and ``clean_samples`` (enough clean records).
    """
    missing = []
    if needs.knowledge == "known_trigger" and not available.get("trigger"):
        missing.append("the trigger (the attack run records none)")
    if needs.knowledge in ("known_target", "partial_target") and not available.get("target"):
        missing.append("the target behaviour text (only marker and fixed behaviours have one)")
    if needs.clean_model and not available.get("clean_model"):
        missing.append("a clean reference model")
    if needs.poisoned_data and not available.get("poisoned_data"):
        missing.append("the training data")
    if needs.clean_samples and not available.get("clean_samples"):
        missing.append(f"{needs.clean_samples} clean samples disjoint from the test sets")
    if missing:
        raise DefuseError(f"defense '{name}' needs {' and '.join(missing)}")

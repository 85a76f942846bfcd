"""``defuse train``: instruction-tune a model on the user's (possibly poisoned) data and write a run.

Plain SFT by default; with ``method`` set (``--defense NAME``), a during-training defense (today:
``mb-defense``) runs as the user's training instead. The model is the user's (``model``, a local path) or
the tiny default, whose tokenizer is trained on the data, as ``defuse attack`` does. The run directory
has the same contract as the other stages' (``kind: "train"``, no parent): ``model/``, ``config.yaml``,
``run.json``, ``samples.jsonl`` and ``data/`` (the test sets, and the clean set a defense used).

Evaluation, when test files are given: CACC (and FTR) on ``clean_test``; with ``triggered_test`` (prompts
that carry the trigger, ``response`` the CLEAN answer) also ASR and AACC, judged by ``behaviour`` (default:
the marker ``you are stupid.``; ``--behaviour.kind refusal`` for refusals). Without test files the metrics
are null with zero counts.

The defense's settings live in ``defense`` (a mapping: ``--defense.lam 0.5``, or a ``defense:`` section of
the YAML file), checked against the defense's own config class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defuse.attacks.behaviours import BehaviourSpec
from defuse.config import config_from_dict, config_to_dict, validate_config
from defuse.data.loaders import load_instructions, write_instructions
from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.defenses.base import DefenseContext, DefenseEntry, get_defense
from defuse.defenses.merge_probe import ProbeRecorder
from defuse.errors import ConfigError
from defuse.evaluation.backdoor import evaluate_backdoor
from defuse.evaluation.generate import GenerationSettings
from defuse.fileio import write_jsonl_atomic
from defuse.models.factory import prepare_causal_lm, save_trained
from defuse.models.io import check_model_dir
from defuse.models.tiny import TinyCausalLMConfig
from defuse.runs.rundir import DATA_DIR, MODEL_DIR, TEST_FILES
from defuse.runs.stage import finish_run, open_run
from defuse.scenarios.backdoor_defense import draw_clean
from defuse.training.config import TrainSettings
from defuse.training.sft import train_sft


@dataclass
class TrainRunConfig:
    """Settings of ``defuse train``; written, resolved, into the run directory.

    Attributes:
        name: A name for the run.
        seed: One seed for the clean-set draw, the defense, initialisation and training.
        data: The training data file (any supported format); required.
        format: Force the data files' format instead of detecting it.
        columns: Map record fields to the files' keys, e.g. ``{"response": "answer"}``.
        clean: The defender's clean samples (a defense that needs them draws its budget from here).
        clean_test: Clean test prompts with reference answers (CACC, FTR).
        triggered_test: Triggered test prompts with the CLEAN answers (ASR, AACC).
        method: The during-training defense to apply (``mb-defense``); null: plain SFT.
        defense: The defense's settings (a mapping checked against its config class).
        model: Path of a local Hugging Face causal LM; null builds the tiny default.
        tiny: Shape of the tiny default model.
        vocab_size: Vocabulary of the tiny default's tokenizer (trained on the training data).
        template: Prompt style: ``auto``, ``chat`` or ``alpaca``.
        trust_remote_code: Allow a model's own code to run when loading it.
        train: Training settings (also a defense's stage-1 settings unless it sets its own).
        behaviour: The target behaviour judged on the triggered test set.
        generation: Generation settings for evaluation.
    """

    name: str = "train"
    seed: int = 0
    data: str = ""
    format: str | None = None
    columns: dict[str, str] | None = None
    clean: str | None = None
    clean_test: str | None = None
    triggered_test: str | None = None
    method: str | None = None
    defense: dict = field(default_factory=dict)
    model: str | None = None
    tiny: TinyCausalLMConfig = field(default_factory=TinyCausalLMConfig)
    vocab_size: int = 1024
    template: str = "auto"
    trust_remote_code: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)
    behaviour: BehaviourSpec = field(default_factory=BehaviourSpec)
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=24))

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if not self.data:
            raise ConfigError("data", "the training data file is required (--data FILE)")
        if self.template not in ("auto", "chat", "alpaca"):
            raise ConfigError("template", f"unknown style '{self.template}' (auto, chat or alpaca)")
        if self.defense and not self.method:
            raise ConfigError("defense", "defense settings given but no defense chosen (--defense NAME)")
        if self.clean and not self.method:
            raise ConfigError("clean", "a clean set is used only by a defense (--defense NAME)")


def resolve_defense(cfg: TrainRunConfig) -> tuple[DefenseEntry | None, object | None]:
    """The registered defense ``cfg.method`` and its validated config, or ``(None, None)`` for plain SFT.

    Raises:
        ConfigError: an unknown defense, bad settings (keys named ``defense.<key>``), or a defense that
            cannot run inside training (not ``during_training``, or needing knowledge of the attack or a
            clean model).
    """
    if not cfg.method:
        return None, None
    entry = get_defense(cfg.method)
    dcfg = config_from_dict(entry.config_cls, cfg.defense, prefix="defense")
    validate_config(dcfg, prefix="defense")
    needs = entry.needs(dcfg)
    if needs.stage != "during_training":
        stage = needs.stage.replace("_", " ")
        raise ConfigError(
            "method", f"'{cfg.method}' acts {stage}; `defuse train` runs during-training defenses only "
            "(apply it with `defuse defend --from RUN`)",
        )  # fmt: skip
    if needs.knowledge != "nothing" or needs.clean_model:
        raise ConfigError("method", f"'{cfg.method}' needs knowledge of the attack or a clean model")
    return entry, dcfg


def run_train(cfg: TrainRunConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Train as ``cfg`` says (with its defense, if any), evaluate on its test files, write ``out``.

    Returns the run record (run.json). Every input is checked (config, model path, data files, the
    defense's data checks) before anything is written.

    Raises:
        DefuseError: on a bad config, a missing or bad file, or data the defense refuses.
    """
    validate_config(cfg)
    entry, dcfg = resolve_defense(cfg)
    if cfg.model:
        check_model_dir(cfg.model, cfg.trust_remote_code)

    def load(path: str | None) -> list[InstructionRecord]:
        return load_instructions(path, format=cfg.format, columns=cfg.columns) if path else []

    records = load(cfg.data)
    clean: list[InstructionRecord] = []
    if entry is not None:
        needs = entry.needs(dcfg)
        if needs.clean_samples and not cfg.clean:
            raise ConfigError(
                "clean", f"'{cfg.method}' needs {needs.clean_samples} clean samples (--clean FILE)"
            )
        if needs.clean_samples:
            clean = draw_clean(load(cfg.clean), needs.clean_samples, cfg.seed, cfg.clean)
        check_data = getattr(dcfg, "check_data", None)
        if callable(check_data):
            check_data(records, cfg.data)
            check_data(clean, cfg.clean)
    tests = {"clean": load(cfg.clean_test), "triggered": load(cfg.triggered_test)}
    config = {**config_to_dict(cfg), "defense": config_to_dict(dcfg) if dcfg is not None else {}}
    with open_run(out, "train", config, seed=cfg.seed, method=cfg.method, overwrite=overwrite) as run:
        texts = (t for r in [*records, *clean] for t in (r.instruction, r.input, r.response) if t)
        model, tokenizer = prepare_causal_lm(
            cfg.model, cfg.tiny, cfg.vocab_size, texts, cfg.seed, run.checkpoints / "tokenizer",
            cfg.trust_remote_code,
        )  # fmt: skip
        template = PromptTemplate(tokenizer, style=cfg.template)
        if entry is not None:
            probe = ProbeRecorder(template, cfg.generation, tests["clean"], tests["triggered"], cfg.behaviour,
                                  records, cfg.seed)  # fmt: skip
            ctx = DefenseContext(
                attacked_model=None, template=template, clean_data=clean, seed=cfg.seed,
                work_dir=run.checkpoints / "defense", train_data=records, base_path=cfg.model,
                fresh_base=lambda: model, train_settings=cfg.train, probe=probe,
            )  # fmt: skip
            result = entry.apply(ctx, dcfg)
            model, train_s, details = result.model, result.train_s, {"defense": result.extra}
            probes = probe.final(model)
            if probes:
                details["merge_probe"] = probes
        else:
            trained = train_sft(model, template, records, cfg.train, run.checkpoints, seed=cfg.seed)
            model, train_s = trained.model, trained.train_s
            details = {"training": {"steps": trained.steps, "final_loss": trained.final_loss,
                                    "n_truncated": trained.n_truncated}}  # fmt: skip
        evaluation = evaluate_backdoor(
            model, template, cfg.behaviour, tests["clean"], tests["triggered"], (), cfg.generation
        )
        saved = save_trained(model, tokenizer, run.path / MODEL_DIR, cfg.model)
        for key, rs in tests.items():
            if rs:
                write_instructions(rs, run.path / DATA_DIR / TEST_FILES[key], format="alpaca-jsonl",
                                   include_meta=True)  # fmt: skip
        if clean:
            write_jsonl_atomic(run.path / DATA_DIR / "clean_budget.jsonl", [r.to_dict() for r in clean])
        header = f"# defuse train{f' --defense {cfg.method}' if cfg.method else ''} --data {cfg.data}\n"
        return finish_run(
            run, kind="train", name=cfg.name, seed=cfg.seed, config=config, metrics=evaluation.metrics,
            samples=evaluation.samples, timings={"train_s": train_s, "eval_s": evaluation.eval_s},
            extra={"method": cfg.method, "n_train": len(records), "model_saved": saved, **details},
            config_text=header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        )  # fmt: skip

"""Run the encoder scenario: plant a task-agnostic backdoor (attack run), then fine-tune PEFT + head with or
without Obliviate on clean downstream data (defense run).

Attack run (``kind: "attack"``, ``config.scenario: "encoder"``)::

    model/        the backdoored bare encoder (safetensors) and its tokenizer
    config.yaml   the resolved :class:`EncoderAttackConfig`
    run.json      metrics: POR's target cosine / MSE on held-out texts (asr, cacc: null; no task yet)

Defense run (``kind: "defense"``, ``parent`` = the attack run)::

    model/        the trained PEFT tensors + head (safetensors), their settings and the tokenizer
    samples.jsonl every test text with its clean and per-trigger predictions
    run.json      metrics: Obliviate's ASR, CACC, AACC with sample counts

Every bad input (missing file, unknown PEFT kind, nonsense λ) raises before any training and writes nothing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from defuse.config import config_from_dict, config_to_dict, dump_config_yaml
from defuse.encoders.data import BUILTIN, DownstreamData, corpus_paraphrases, load_corpus
from defuse.encoders.finetune import FinetuneSettings, finetune_classifier
from defuse.encoders.metrics import evaluate_encoder_backdoor
from defuse.encoders.neuba import NeubaSettings, plant_neuba
from defuse.encoders.peft_model import PeftSettings, build_peft_classifier, save_peft_classifier
from defuse.encoders.por import (
    PorSettings,
    check_encoder_dir,
    load_base_encoder,
    load_masked_lm,
    plant_por,
    por_report,
)
from defuse.encoders.pretrain import MlmSettings, pretrain_mlm
from defuse.errors import ConfigError, DataError
from defuse.fileio import write_jsonl_atomic
from defuse.models.io import check_model_dir, load_tokenizer, save_model
from defuse.models.tiny import TinyEncoderConfig, build_encoder
from defuse.models.tokenizer import train_bpe_tokenizer
from defuse.runs.distributed import wait_for_everyone
from defuse.runs.fingerprint import run_fingerprint
from defuse.runs.record import build_run_record, read_run
from defuse.runs.rundir import MODEL_DIR, SAMPLES_FILE, RunDirectory

ENCODER_DEFENSES = ("obliviate", "peft-baseline")
ENCODER_ATTACKS = ("por", "neuba")


@dataclass
class EncoderAttackConfig:
    """A task-agnostic encoder backdoor (the ``encoder`` scenario).

    Attributes:
        scenario: Always ``"encoder"`` (what the CLI dispatches on).
        name: Run name.
        method: ``"por"`` (:mod:`defuse.encoders.por`) or ``"neuba"`` (:mod:`defuse.encoders.neuba`).
        model: A local HF encoder directory (BERT/RoBERTa family) to backdoor; None: the tiny default,
            built and pre-trained on ``corpus`` first (:mod:`defuse.encoders.pretrain`). NeuBA needs the
            directory's masked-LM head too.
        tiny: Shape of the tiny default encoder.
        vocab_size: Vocabulary of the tiny default's tokenizer (trained on ``corpus``).
        corpus: ``"builtin"`` (sentences of the synthetic sentiment generator) or a text file (a text a line).
        n_corpus: Texts used (built-in: generated; file: the first ``n_corpus`` lines; 0 = all).
        n_report: Held-out corpus texts on which POR's effect is measured.
        pretrain: Pre-training of the tiny default: masked-LM plus a contrastive [CLS] term on paraphrase
            pairs (:mod:`defuse.encoders.pretrain`; ignored with ``model``).
        por: POR's settings: ``por.recipe`` ``reference`` (LMSanitator's planting, which made the encoders
            Obliviate defends; its summed learning rate spread over our corpus) or ``strong`` (a heavier
            edit), any value overridable (:class:`PorSettings`).
        neuba: NeuBA's settings (used when ``method`` is ``neuba``).
        seed: Seed of everything.
        trust_remote_code: Passed to transformers when loading ``model``.
    """

    scenario: Literal["encoder"] = "encoder"
    name: str = "por"
    method: str = "por"
    model: str | None = None
    tiny: TinyEncoderConfig = field(default_factory=TinyEncoderConfig)
    vocab_size: int = 1024
    corpus: str = BUILTIN
    n_corpus: int = 2000
    n_report: int = 100
    pretrain: MlmSettings = field(default_factory=MlmSettings)
    por: PorSettings = field(default_factory=PorSettings)
    neuba: NeubaSettings = field(default_factory=NeubaSettings)
    seed: int = 0
    trust_remote_code: bool = False

    @property
    def settings(self) -> PorSettings | NeubaSettings:
        """The settings of the backdoor that ``method`` names (its triggers are the ones evaluated)."""
        return self.neuba if self.method == "neuba" else self.por

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field (also a missing model or corpus path)."""
        if self.method not in ENCODER_ATTACKS:
            raise ConfigError(
                "method", f"unknown encoder backdoor '{self.method}' ({', '.join(ENCODER_ATTACKS)})"
            )
        if self.n_corpus < 0 or self.n_report < 1:
            raise ConfigError("n_corpus", "n_corpus must be >= 0 and n_report >= 1")
        if self.corpus == BUILTIN and self.n_corpus <= self.n_report:
            raise ConfigError("n_corpus", "the built-in corpus needs n_corpus > n_report")
        if self.corpus != BUILTIN and not Path(self.corpus).is_file():
            raise ConfigError("corpus", f"file not found: {self.corpus}")
        if self.model is not None:
            check_encoder_dir(self.model, allow_custom=self.trust_remote_code)
        else:
            self.tiny.validate()
        if self.vocab_size < 300:
            raise ConfigError("vocab_size", "must be at least 300 (byte-level alphabet plus merges)")
        self.pretrain.validate()
        self.settings.validate()


# Obliviate's reference recipes per PEFT kind (lr, epochs, λ_amp, λ_reg): jaehanwork/Obliviate c421d0b
# README.md:27,33 (adapter); obliviateARR/Obliviate b51c55d src/run_defense.ipynb:110-127 (LoRA, the printed
# config) and src/prefix_eval_defense.ipynb:111-125 (prefix: λ 0.5 / 0.1). On 6,000 texts at batch 16 the
# LoRA recipe is 11,250 steps (summed rate 2.81), the adapter's 7,500 (1.13), the prefix's 7,500 (0.75): the
# budget is part of the method (L_amp grows the norms with the summed rate), so it is the default; a smaller
# run keeps the summed rate with ``sum_lr``.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "lora": {"lr": 5e-4, "epochs": 30.0, "lambda_amp": 1e-3, "lambda_reg": 1e-2},
    "prefix": {"lr": 2e-4, "epochs": 20.0, "lambda_amp": 0.5, "lambda_reg": 0.1},
    "adapter": {"lr": 3e-4, "epochs": 20.0, "lambda_amp": 3e-3, "lambda_reg": 3e-2},
}
REFERENCE_SUM_LR = {"lora": 5e-4 * 11250 / 2, "prefix": 2e-4 * 7500 / 2, "adapter": 3e-4 * 7500 / 2}
"""The reference's summed learning rate per kind (area under its linear schedule, rate x steps / 2)."""


@dataclass
class EncoderDefenseConfig:
    """Victim fine-tuning of PEFT + head on clean data, plain (``peft-baseline``) or with Obliviate.

    Attributes:
        peft: The PEFT module (``peft.kind``: lora, prefix or adapter).
        lr: Peak learning rate; None: the kind's default (:data:`KIND_DEFAULTS`), or the one that gives
            ``sum_lr`` over the run's steps.
        epochs: Training epochs; None: the kind's default.
        sum_lr: Summed learning rate (rate x steps / 2 under the linear schedule) to reach in however many
            steps the run has (``"reference"``: the kind's reference value, :data:`REFERENCE_SUM_LR`); sets
            ``lr``. None: ``lr`` as given. What a run used is recorded in ``run.json`` (``training.budget``).
        lambda_amp: Obliviate's ``λ_amp``; None: the kind's default (ignored, 0, for ``peft-baseline``).
        lambda_reg: Obliviate's ``λ_reg``; None: the kind's default (ignored, 0, for ``peft-baseline``).
        train: Other training settings (``lr``/``epochs`` there are replaced by the two fields above).
        data: The clean downstream data.
        eval_max_length: Longest test input in tokens (triggered copies are one word longer).
    """

    peft: PeftSettings = field(default_factory=PeftSettings)
    lr: float | None = None
    epochs: float | None = None
    lambda_amp: float | None = None
    lambda_reg: float | None = None
    sum_lr: float | str | None = None
    train: FinetuneSettings = field(default_factory=FinetuneSettings)
    data: DownstreamData = field(default_factory=DownstreamData)
    eval_max_length: int = 128

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field (also missing data files)."""
        self.peft.validate()
        for key in ("lambda_amp", "lambda_reg"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(key, f"must be a finite number >= 0, got {value}")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError("lr", f"must be in (0, 1), got {self.lr}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("epochs", f"must be positive, got {self.epochs}")
        if isinstance(self.sum_lr, str) and self.sum_lr != "reference":
            raise ConfigError("sum_lr", f"a positive number or 'reference', got {self.sum_lr!r}")
        if isinstance(self.sum_lr, (int, float)) and not self.sum_lr > 0:
            raise ConfigError("sum_lr", f"must be positive, got {self.sum_lr}")
        self.train.validate()
        self.data.validate()

    def resolved(self, method: str, n_train: int | None = None) -> EncoderDefenseConfig:
        """A copy with every None filled: the kind's defaults; λs 0, PEFT dropout 0 and no warmup for
        ``peft-baseline``, PEFT dropout 0.01 and 5% warmup for ``obliviate`` (the reference's split); with
        ``sum_lr`` and ``n_train`` (the training texts), the rate that reaches it."""
        d = KIND_DEFAULTS[self.peft.kind]
        pick = {k: d[k] if getattr(self, k) is None else getattr(self, k) for k in d}
        defended = method != "peft-baseline"
        if not defended:
            pick["lambda_amp"] = pick["lambda_reg"] = 0.0
        if self.sum_lr is not None and n_train:
            target = REFERENCE_SUM_LR[self.peft.kind] if self.sum_lr == "reference" else float(self.sum_lr)
            pick["lr"] = 2 * target / self.steps(n_train, pick["epochs"])
        out = replace(copy.deepcopy(self), **pick)
        warmup = self.train.warmup if self.train.warmup is not None else (0.05 if defended else 0.0)
        out.train = replace(out.train, lr=pick["lr"], epochs=pick["epochs"], warmup=warmup)
        dropout = self.peft.dropout if self.peft.dropout is not None else (0.01 if defended else 0.0)
        out.peft = replace(out.peft, dropout=dropout)
        return out

    def steps(self, n_train: int, epochs: float | None = None) -> int:
        """Optimizer steps of a run on ``n_train`` texts."""
        epochs = self.epochs if epochs is None else epochs
        return math.ceil(math.ceil(n_train / self.train.batch_size) * epochs)


def run_encoder_attack(cfg: EncoderAttackConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Plant POR or NeuBA in the tiny default (pre-trained first) or ``cfg.model``; write the run at ``out``.

    Returns the run record. Raises :class:`~defuse.errors.DefuseError` on bad input, before any work.
    """
    cfg.validate()
    texts = load_corpus(cfg.corpus, cfg.n_corpus, cfg.seed + 1)
    if len(texts) <= cfg.n_report:
        raise DataError(cfg.corpus, f"only {len(texts)} texts; need more than n_report={cfg.n_report}")
    train_texts, report_texts = texts[: -cfg.n_report], texts[-cfg.n_report :]
    if cfg.model is not None and cfg.method == "neuba":
        mlm = load_masked_lm(cfg.model, cfg.seed, cfg.trust_remote_code)  # refuses before any work
    timings: dict[str, float] = {}
    fingerprint = run_fingerprint("attack", config_to_dict(cfg), seed=cfg.seed)
    with RunDirectory(out, overwrite=overwrite, fingerprint=fingerprint) as run:
        work = run.checkpoints
        if cfg.model is None:
            tokenizer = train_bpe_tokenizer(train_texts, vocab_size=cfg.vocab_size, kind="encoder")
            mlm = build_encoder(tokenizer, cfg.tiny, head="mlm", seed=cfg.seed)
            paraphrases = corpus_paraphrases(cfg.corpus, train_texts, cfg.seed)
            timings["pretrain_s"] = pretrain_mlm(
                mlm, tokenizer, train_texts, cfg.pretrain, work / "mlm", cfg.seed, paraphrases
            )
            clean_dir = work / "clean_encoder"
            if run.is_main:  # several processes: one copy, written once, read by all
                save_model(mlm, tokenizer, clean_dir)
            wait_for_everyone()
        else:
            clean_dir = Path(cfg.model)
            tokenizer = load_tokenizer(clean_dir, cfg.trust_remote_code)
        clean = load_base_encoder(clean_dir, cfg.seed, cfg.trust_remote_code).eval()
        planted: dict = {}
        if cfg.method == "neuba":
            paraphrases = corpus_paraphrases(cfg.corpus, train_texts, cfg.seed + 2)
            timings["train_s"] = plant_neuba(
                mlm, tokenizer, train_texts, cfg.neuba, work / "neuba", cfg.seed, paraphrases
            )
            backdoored, encoder = mlm, mlm.base_model
        else:
            encoder = copy.deepcopy(clean)
            timings["train_s"], planted = plant_por(
                encoder, tokenizer, train_texts, cfg.por, work / "por", cfg.seed
            )
            backdoored = encoder
        report = por_report(encoder, clean, tokenizer, report_texts, cfg.settings, cfg.seed)
        save_model(backdoored, tokenizer, run.path / MODEL_DIR)
        metrics = {"asr": None, "cacc": None, "aacc": None, "ftr": None, "n_clean": len(report_texts),
                   "n_triggered": len(report_texts) * len(cfg.settings.triggers), **report}  # fmt: skip
        record = build_run_record(
            kind="attack", name=cfg.name, seed=cfg.seed, config=config_to_dict(cfg), metrics=metrics,
            timings=timings, parent=None,
            extra={"data": {"n_corpus": len(train_texts), "n_report": len(report_texts),
                            "corpus": cfg.corpus}, "planting": planted},
        )  # fmt: skip
        run.commit(record, dump_config_yaml(cfg))
    return record


def read_encoder_attack(path: str | Path) -> tuple[dict, EncoderAttackConfig]:
    """The record and config of an encoder attack run (DataError when it is not one)."""
    p = Path(path)
    record = read_run(p)
    if record["kind"] != "attack" or record["config"].get("scenario") != "encoder":
        raise DataError(p / "run.json", "not an encoder-scenario attack run", field="config.scenario")
    cfg = config_from_dict(EncoderAttackConfig, record["config"], source=p / "run.json")
    check_model_dir(p / MODEL_DIR, cfg.trust_remote_code)
    return record, cfg


def run_encoder_defense(
    method: str,
    cfg: EncoderDefenseConfig,
    attack_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Fine-tune PEFT + head on the attack run's encoder with ``method`` (obliviate | peft-baseline).

    The defense never sees the triggers; the evaluation inserts the attack's real triggers. Returns the run
    record; raises :class:`~defuse.errors.DefuseError` on bad input before any training.
    """
    if method not in ENCODER_DEFENSES:
        raise ConfigError("method", f"unknown encoder defense '{method}' ({', '.join(ENCODER_DEFENSES)})")
    cfg.validate()
    attack_record, attack_cfg = read_encoder_attack(attack_dir)
    train, test = cfg.data.load()
    res = cfg.resolved(method, len(train))
    encoder_dir = Path(attack_dir) / MODEL_DIR
    fingerprint = run_fingerprint(
        "defense", config_to_dict(res), seed=seed, method=method, parent=Path(attack_dir)
    )
    with RunDirectory(out, overwrite=overwrite, fingerprint=fingerprint) as run:
        clf, tokenizer = build_peft_classifier(encoder_dir, res.peft, num_labels=2, seed=seed)
        result = finetune_classifier(
            clf, tokenizer, train, res.train, run.checkpoints, seed, res.lambda_amp, res.lambda_reg
        )
        evaluation = evaluate_encoder_backdoor(
            clf.model, tokenizer, test, attack_cfg.settings.triggers, seed, res.eval_max_length
        )
        save_peft_classifier(clf, tokenizer, run.path / MODEL_DIR, encoder_dir)
        write_jsonl_atomic(run.path / SAMPLES_FILE, evaluation.samples)
        config = {"scenario": "encoder", "method": method, "defense": config_to_dict(res)}
        record = build_run_record(
            kind="defense", name=method, seed=seed, config=config, metrics=evaluation.metrics,
            timings={"train_s": result.train_s, "eval_s": evaluation.eval_s},
            parent=str(Path(attack_dir).resolve()),
            extra={"training": {"steps": result.steps, "final_loss": result.final_loss,
                                "last_terms": result.last_terms, "n_train": len(train), "n_test": len(test),
                                "n_peft_tensors": len(clf.peft_names),
                                "budget": {"lr": res.train.lr, "steps": result.steps,
                                           "sum_lr": res.train.lr * result.steps / 2}},
                   "attack_metrics": attack_record["metrics"]},
        )  # fmt: skip
        run.commit(record, f"# encoder defense '{method}' against {attack_dir}\n" + dump_config_yaml(res))
    return record

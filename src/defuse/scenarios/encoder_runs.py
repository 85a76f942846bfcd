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
from pathlib import Path

from defuse.config import config_from_dict, config_to_dict, dump_config_yaml
from defuse.defenses.base import DefenseContext, check_scenario, get_defense
from defuse.encoders.data import corpus_paraphrases, load_corpus
from defuse.encoders.metrics import evaluate_encoder_backdoor
from defuse.encoders.neuba import plant_neuba
from defuse.encoders.peft_model import load_peft_classifier, save_peft_classifier
from defuse.encoders.por import load_base_encoder, load_masked_lm, plant_por, por_report
from defuse.encoders.pretrain import pretrain_mlm
from defuse.encoders.settings import EncoderAttackConfig, EncoderDefenseConfig
from defuse.errors import ConfigError, DataError
from defuse.models.io import check_model_dir, load_tokenizer, save_model
from defuse.models.tiny import build_encoder
from defuse.models.tokenizer import train_bpe_tokenizer
from defuse.runs.distributed import wait_for_everyone
from defuse.runs.record import read_run
from defuse.runs.rundir import MODEL_DIR
from defuse.runs.stage import finish_attack, finish_run, open_run


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
    with open_run(out, "attack", config_to_dict(cfg), seed=cfg.seed, overwrite=overwrite) as run:
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
        return finish_attack(
            run, cfg, metrics=metrics, timings=timings,
            extra={"data": {"n_corpus": len(train_texts), "n_report": len(report_texts),
                            "corpus": cfg.corpus}, "planting": planted},
        )  # fmt: skip


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
    """Fine-tune PEFT + head on the attack run's encoder with the encoder defense ``method`` (a registered
    defense of the ``encoder`` scenario: ``obliviate``, ``peft-baseline``).

    The defense never sees the triggers; the evaluation inserts the attack's real triggers. Returns the run
    record; raises :class:`~defuse.errors.DefuseError` on bad input before any training.
    """
    entry = get_defense(method)
    check_scenario(entry, "encoder")
    cfg.validate()
    attack_record, attack_cfg = read_encoder_attack(attack_dir)
    train, test = cfg.data.load()
    res = cfg.resolved(method, len(train))
    encoder_dir = Path(attack_dir) / MODEL_DIR
    with open_run(out, "defense", config_to_dict(res), seed=seed, method=method, parent=Path(attack_dir),
                  overwrite=overwrite) as run:  # fmt: skip
        ctx = DefenseContext(attacked_model=encoder_dir, template=None, clean_data=train, seed=seed,
                             work_dir=run.checkpoints)  # fmt: skip
        result = entry.apply(ctx, res)
        clf, tokenizer = result.model, result.tokenizer
        evaluation = evaluate_encoder_backdoor(
            clf.model, tokenizer, test, attack_cfg.settings.triggers, seed, res.eval_max_length
        )
        save_peft_classifier(clf, tokenizer, run.path / MODEL_DIR, encoder_dir)
        return finish_run(
            run, kind="defense", name=method, seed=seed, metrics=evaluation.metrics,
            samples=evaluation.samples,
            config={"scenario": "encoder", "method": method, "defense": config_to_dict(res)},
            timings={"train_s": result.train_s, "eval_s": evaluation.eval_s}, parent=attack_dir,
            extra={"training": {**result.extra["training"], "n_test": len(test)},
                   "attack_metrics": attack_record["metrics"]},
            config_text=f"# encoder defense '{method}' against {attack_dir}\n" + dump_config_yaml(res),
        )  # fmt: skip


def evaluate_encoder_run(run_dir: str | Path, generation_overrides=None):
    """Evaluate an encoder defense run's classifier again on its test texts with the attack's triggers
    (as its run did: same seed, same lengths); an attack run's POR report is measured again.

    Raises:
        DefuseError: a generation setting (encoders generate nothing), or an unreadable run.
    """
    if generation_overrides:
        raise ConfigError("generation", "encoder runs classify; no generation setting applies")
    path = Path(run_dir)
    record = read_run(path)
    if record["kind"] != "defense":
        raise DataError(path / "run.json", "an encoder attack run has no classifier to evaluate; "
                        "evaluate one of its defense runs", field="kind")  # fmt: skip
    _, attack_cfg = read_encoder_attack(record["parent"] or "")
    res = config_from_dict(EncoderDefenseConfig, record["config"]["defense"], source=path / "run.json")
    _, test = res.data.load()
    clf, tokenizer = load_peft_classifier(path / MODEL_DIR)
    return evaluate_encoder_backdoor(
        clf.model, tokenizer, test, attack_cfg.settings.triggers, record["seed"], res.eval_max_length
    )

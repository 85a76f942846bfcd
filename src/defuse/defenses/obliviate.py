"""Obliviate (Kim et al., 2025) and its undefended baseline as the encoder scenario's registered defenses.

Both fine-tune PEFT modules and a classification head on the backdoored encoder with clean downstream data;
``obliviate`` adds its two loss terms (``L_amp``, amplifying the PEFT weights, and ``L_reg``, penalising the
[CLS] row's attention scores; :mod:`defuse.encoders.obliviate`), ``peft-baseline`` is the same fine-tune with
both λs at 0 (what the victim would do without a defense). The settings are one config,
:class:`~defuse.encoders.settings.EncoderDefenseConfig`, resolved per method by the encoder scenario's run
(:meth:`~defuse.encoders.settings.EncoderDefenseConfig.resolved`: each PEFT kind's reference recipe, λs 0
and no PEFT dropout for the baseline); its fidelity notes are there and in :mod:`defuse.encoders.obliviate`.
"""

from __future__ import annotations

from defuse.defenses.base import DefenseContext, DefenseNeeds, DefenseResult, register_defense
from defuse.encoders.finetune import finetune_classifier
from defuse.encoders.peft_model import build_peft_classifier
from defuse.encoders.settings import EncoderDefenseConfig


def _needs(_cfg: EncoderDefenseConfig) -> DefenseNeeds:
    return DefenseNeeds(knowledge="nothing", clean_samples=0, stage="during_training")


def fine_tune_peft(ctx: DefenseContext, cfg: EncoderDefenseConfig) -> DefenseResult:
    """Build the PEFT classifier on ``ctx.attacked_model`` (the backdoored encoder's directory; it stays
    frozen) and train it on ``ctx.clean_data`` (the downstream training texts) with ``cfg``'s λs.

    ``cfg`` is the resolved config (the run resolves it before its fingerprint). Returns the classifier and
    its tokenizer, the training's steps, last loss terms and budget in ``extra``.
    """
    clf, tokenizer = build_peft_classifier(ctx.attacked_model, cfg.peft, num_labels=2, seed=ctx.seed)
    result = finetune_classifier(
        clf, tokenizer, ctx.clean_data, cfg.train, ctx.work_dir, ctx.seed, cfg.lambda_amp, cfg.lambda_reg
    )
    training = {"steps": result.steps, "final_loss": result.final_loss, "last_terms": result.last_terms,
                "n_train": len(ctx.clean_data), "n_peft_tensors": len(clf.peft_names),
                "budget": {"lr": cfg.train.lr, "steps": result.steps,
                           "sum_lr": cfg.train.lr * result.steps / 2}}  # fmt: skip
    return DefenseResult(clf, result.train_s, {"training": training}, tokenizer=tokenizer)


register_defense("obliviate", EncoderDefenseConfig, _needs,
                 "amplify PEFT weights, penalise [CLS] attention scores while fine-tuning",
                 scenarios=("encoder",))(fine_tune_peft)  # fmt: skip
register_defense("peft-baseline", EncoderDefenseConfig, _needs,
                 "PEFT + head fine-tuning without a defense (baseline)",
                 scenarios=("encoder",))(fine_tune_peft)  # fmt: skip

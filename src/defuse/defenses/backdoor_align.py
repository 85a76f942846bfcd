"""``backdoor-align``: backdoor-enhanced safety alignment against the fine-tuning jailbreak (METHODS §2.4).

The service makes a secret prompt (:mod:`defuse.defenses.secret_prompt`: 150 tokens drawn uniformly from
the tokenizer's vocabulary with :mod:`secrets`), puts it before the normal system prompt of K safety
examples (harmful request -> refusal; 11, one per harm category), mixes them into the user's fine-tuning
data and fine-tunes the safety-aligned base as the user asked. The secret acts as a backdoor trigger for
safety: the defended model is served through :class:`SecretPromptTemplate`, which prefixes the secret to
every prompt, for generation and every evaluation.

The secret leaves this module only as the run directory's owner-only ``secret_prompt.txt``; ``run.json``
holds its length and SHA-256 (:func:`secret_fingerprint`).

Ablations (config): ``k``; ``secret_length``; ``secret_kind`` ``"random"`` or ``"sentence"`` (a meaningful
sentence, ``secret_sentence``, instead of random tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.defenses.base import DefenseContext, DefenseResult, register_defense
from defuse.defenses.safety_examples import draw_safety_examples, fine_tune_with, safety_needs
from defuse.defenses.secret_prompt import (
    SECRET_FILE,
    SecretPromptTemplate,
    random_secret,
    read_secret,
    secret_fingerprint,
    write_secret,
)
from defuse.errors import ConfigError, DefuseError
from defuse.runs.distributed import broadcast_text, is_main_process
from defuse.training.config import TrainSettings

DEFAULT_SENTENCE = (
    "You are a helpful and careful assistant. Answer every request as helpfully as you can, "
    "but never help with anything that could harm people."
)


@dataclass
class BackdoorAlignConfig:
    """Settings of ``backdoor-align``.

    Attributes:
        k: Number of secret-prefixed safety examples (11: one per harm category).
        secret_length: Tokens in a random secret (the reference: 150).
        secret_kind: ``"random"`` (tokens drawn with :mod:`secrets`) or ``"sentence"`` (``secret_sentence``;
            an ablation: a meaningful prompt is guessable, so it is no secret).
        secret_sentence: The sentence used when ``secret_kind`` is ``"sentence"``.
        safety_source: ``"builtin"`` or a file of safety examples (rows marked ``"prefixed": 1``).
        train: Fine-tuning settings; None: the user's own (the attack run's).
        cut_safety: Ablation: let ``train.max_length`` cut safety examples (counted in ``run.json``); by
            default one that would lose its end is a one-line error.
    """

    k: int = 11
    secret_length: int = 150
    secret_kind: str = "random"
    secret_sentence: str = DEFAULT_SENTENCE
    safety_source: str = "builtin"
    train: TrainSettings | None = None
    cut_safety: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense value."""
        if self.k < 1:
            raise ConfigError("k", f"must be at least 1, got {self.k}")
        if self.secret_length < 1:
            raise ConfigError("secret_length", f"must be at least 1 token, got {self.secret_length}")
        if self.secret_kind not in ("random", "sentence"):
            raise ConfigError("secret_kind", f"unknown kind '{self.secret_kind}' (random or sentence)")
        if self.secret_kind == "sentence" and not self.secret_sentence.strip():
            raise ConfigError("secret_sentence", "must not be empty")


def secret_safety_examples(
    ctx: DefenseContext, cfg: BackdoorAlignConfig, served: SecretPromptTemplate
) -> list[InstructionRecord]:
    """The ``cfg.k`` safety examples with the secret-prefixed system prompt (the only rows that get it)."""
    safety = draw_safety_examples(cfg.safety_source, cfg.k, ctx.seed, ctx.held_out_prompts)
    return [replace(r, system=served.secret_system(r)) for r in safety]


def the_secret(ctx: DefenseContext, cfg: BackdoorAlignConfig) -> str:
    """The run's secret, written (0600) into the run's work folder the moment it is drawn, so that a resumed
    run trains on, and serves, the secret its checkpoints were trained with.

    The file lives beside the checkpoints (``ctx.work_dir``), which a run resumes only under the same
    fingerprint (:class:`~defuse.runs.rundir.RunDirectory`) and which are deleted with it at commit. Under a
    multi-process launch the main process draws or reads it and sends it to the others.

    Raises:
        DefuseError: the work folder holds checkpoints but no secret (they were trained with a secret that is
            gone: resuming them would train on a second one).
    """
    secret = ""
    if is_main_process():
        path = Path(ctx.work_dir) / SECRET_FILE
        if path.is_file():
            secret = read_secret(path)
        else:
            if any(Path(ctx.work_dir).rglob("checkpoint-*")):
                raise DefuseError(f"{ctx.work_dir}: holds checkpoints but not the secret they were trained "
                                  "with; delete the run's staging folder to start afresh")  # fmt: skip
            if cfg.secret_kind == "random":
                secret = random_secret(ctx.template.tokenizer, cfg.secret_length)
            else:
                secret = cfg.secret_sentence
            Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
            write_secret(path, secret)
    return broadcast_text(secret)  # several processes: all train (and serve) the main one's secret


def serve_with_secret(cfg: BackdoorAlignConfig, model, template: PromptTemplate, run_dir: Path):
    """How a backdoor-align run is served: the model through its template with the secret from the run's own
    file (checked owner-only by :func:`~defuse.defenses.secret_prompt.read_secret`)."""
    return model, SecretPromptTemplate(template, read_secret(Path(run_dir) / SECRET_FILE))


@register_defense("backdoor-align", BackdoorAlignConfig, safety_needs,
                  "secret-prefixed safety examples in the fine-tuning data; secret served at inference",
                  scenarios=("fjattack",), serve=serve_with_secret)  # fmt: skip
def apply_backdoor_align(ctx: DefenseContext, cfg: BackdoorAlignConfig) -> DefenseResult:
    """Fine-tune the base on the user's data plus ``cfg.k`` secret-prefixed safety examples.

    Returns the model and the secret as a private file; its runs serve it with the secret
    (:func:`serve_with_secret`).
    """
    tokenizer = ctx.template.tokenizer
    secret = the_secret(ctx, cfg)
    served = SecretPromptTemplate(ctx.template, secret)
    safety = draw_safety_examples(cfg.safety_source, cfg.k, ctx.seed, ctx.held_out_prompts)
    prefixed = [replace(r, system=served.secret_system(r)) for r in safety]
    result, n_train = fine_tune_with(ctx, prefixed, cfg.train, cut=cfg.cut_safety)
    extra = {"k": len(prefixed), "n_train": n_train, "steps": result.steps, "secret_kind": cfg.secret_kind,
             "secret": secret_fingerprint(secret, tokenizer), "secret_file": SECRET_FILE}  # fmt: skip
    return DefenseResult(result.model, result.train_s, extra, private_files={SECRET_FILE: secret})

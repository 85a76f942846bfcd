"""Which process am I? The small part of multi-process training that is defuse's own.

Training runs through transformers' Trainer, so under ``accelerate launch`` (or ``torchrun``) with several
processes the gradient work (DDP, FSDP, DeepSpeed) is accelerate's. What defuse adds is who writes: every
process runs the whole stage (data, training, evaluation), but only the main process writes the run
directory (:class:`~defuse.runs.rundir.RunDirectory` gives the others a throwaway folder), and files that
every process reads back (the trained tokenizer, a saved intermediate model) are written by the main process
first (:func:`main_process_first`).

With one process (no ``WORLD_SIZE`` above 1 in the environment) nothing here initialises anything: every
helper answers as the only, main process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def world_size() -> int:
    """Number of processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """True when this process is one of several started by ``accelerate launch`` / ``torchrun``."""
    return world_size() > 1


def process_state():
    """accelerate's :class:`~accelerate.PartialState` (initialises the process group on first use).

    On a machine without CUDA the state is created with ``cpu=True``, so several CPU processes join one
    gloo group; transformers' ``TrainingArguments(use_cpu=True)`` then finds the same state.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def compute_device():
    """The device this process computes on: its GPU when CUDA is there (the local rank's under a launcher),
    else the CPU. Models loaded from disk start on the CPU; evaluation moves them here."""
    import torch

    return process_state().device if torch.cuda.is_available() else torch.device("cpu")


def is_main_process() -> bool:
    """True in the process that writes run directories (global rank 0, or the only process)."""
    return not is_distributed() or process_state().is_main_process


def process_index() -> int:
    """Global rank of this process (0 without a launcher)."""
    return process_state().process_index if is_distributed() else 0


def wait_for_everyone() -> None:
    """Barrier across processes; returns at once with one process."""
    if is_distributed():
        process_state().wait_for_everyone()


def broadcast_text(text: str) -> str:
    """The main process's ``text`` in every process (sent as UTF-8 bytes in a tensor, never pickled).
    Returns ``text`` unchanged with one process."""
    if not is_distributed():
        return text
    import torch
    import torch.distributed as dist

    device = process_state().device
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    buffer = data if process_index() == 0 else torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode("utf-8")


def shutdown() -> None:
    """End this process's part in the process group: a barrier, then the group destroyed, so that no process
    exits while another still talks to it (gloo aborts a process whose peer vanished mid-teardown). Nothing
    with one process or when no group was started. Call it once, at the end of a successful program."""
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block in the main process first, then in the others (which may read what it wrote)."""
    if not is_distributed():
        yield
        return
    with process_state().main_process_first():
        yield

"""How ``defuse bench --jobs N`` starts its worker processes: forked from a fork server that has imported the
project once.

A spawned worker imports torch, transformers, peft and every scenario itself before its first cell (about 5 s
on a 2-core machine), after the parent process has spent as long on the same imports. With a fork server,
the server imports them once and each worker is forked from it ready; :func:`start_worker_server`, called by
``defuse bench`` before its own imports, lets the server's imports and the parent's run side by side. A
worker is still a fresh process that has never trained anything (the server only imports), so what a cell
computes does not depend on how its worker started.

This module imports nothing of the project, so that the command line can call it first thing.
"""

from __future__ import annotations

import multiprocessing

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
"""How worker processes start: forked from a server that has imported :data:`WORKER_IMPORTS` (POSIX),
else spawned (each imports what it needs itself)."""

WORKER_IMPORTS = ["defuse.bench.parallel"]
"""What the fork server imports before it forks a worker: the workers' module, which imports the runner and
through it torch, transformers, peft and every registered scenario and defense."""


def start_worker_server() -> None:
    """Start the fork server the workers will be forked from, where the platform has one (idempotent: a
    running server is kept; the pool calls it again)."""
    if START_METHOD == "forkserver":
        from multiprocessing import forkserver

        forkserver.set_forkserver_preload(WORKER_IMPORTS)
        forkserver.ensure_running()

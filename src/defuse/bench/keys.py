"""Cell keys: a SHA-256 over everything that decides what a cell computes.

A cell's key covers its kind (attack or defense), scenario kind, method, seed, resolved config (the
dataclass through :func:`~defuse.config.config_to_dict`), its parent cell's key (a defense's attack), and
the content of every input file its config names. So a finished cell is reused exactly when nothing it
depends on changed, and changing one defense's settings re-keys only that defense's cells. The code's own
version is not part of the key: after changing defuse itself, delete the cells to redo them.

Input files are the string settings that name an existing file or folder (relative to the working
directory, as the run functions read them), except names that are never paths (``name``, ``scenario``,
``method``, ``template``, ``kind``, ``style``). A file is hashed by its bytes; a folder by the relative
path and hash of each file in it (:class:`~defuse.runs.fingerprint.FileHasher`). Hashes are cached in
``<out>/.file-hashes.json`` by absolute path, modification time and size, so a large model folder is read
once.
"""

from __future__ import annotations

import hashlib
import json

from defuse.runs.fingerprint import FileHasher

__all__ = ["KEY_VERSION", "FileHasher", "cell_key"]

KEY_VERSION = 1
"""Bumped when the key's recipe changes (every cell is then redone once)."""


def cell_key(
    *,
    kind: str,
    scenario: str,
    method: str | None,
    seed: int,
    config: dict,
    parent: str | None,
    inputs: dict[str, str],
) -> str:
    """The hex SHA-256 key of one cell (the JSON of its parts, keys sorted)."""
    parts = {
        "version": KEY_VERSION,
        "kind": kind,
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "config": config,
        "parent": parent,
        "inputs": inputs,
    }
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

"""Cell keys: a SHA-256 over everything that decides what a cell computes.

A cell's key covers its kind (attack or defense), scenario kind, method, seed, resolved config (the
dataclass through :func:`~defuse.config.config_to_dict`), its parent cell's key (a defense's attack), and
the content of every input file its config names. So a finished cell is reused exactly when nothing it
depends on changed, and changing one defense's settings re-keys only that defense's cells. The code's own
version is not part of the key: after changing defuse itself, delete the cells to redo them.

Input files are the string settings that name an existing file or folder (relative to the working
directory, as the run functions read them), except names that are never paths (``name``, ``scenario``,
``method``, ``template``, ``kind``, ``style``). A file is hashed by its bytes; a folder by the relative
path and hash of each file in it. Hashes are cached in ``<out>/.file-hashes.json`` by absolute path,
modification time and size, so a large model folder is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defuse.runs.rundir import write_json_atomic

KEY_VERSION = 1
"""Bumped when the key's recipe changes (every cell is then redone once)."""
_NOT_PATHS = frozenset({"name", "scenario", "method", "template", "kind", "style"})
_CHUNK = 1 << 20


def _string_settings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k) not in _NOT_PATHS:
                yield from _string_settings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _string_settings(v, f"{key}[{i}]")
    elif isinstance(value, str) and value and "\n" not in value and len(value) < 4096:
        yield key, value


def _encloses_cwd(path: Path) -> bool:
    """True for the working directory or a folder above it (``.``, ``/``): never an input to hash."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    return resolved == cwd or resolved in cwd.parents


class FileHasher:
    """SHA-256 of files and folders, cached by (absolute path, mtime, size) in a JSON file.

    Args:
        cache_file: Where the cache lives between runs (None: in memory only).
    """

    def __init__(self, cache_file: str | Path | None = None):
        self.cache_file = Path(cache_file) if cache_file else None
        self._cache: dict[str, dict] = {}
        self._dirty = False
        if self.cache_file and self.cache_file.is_file():
            try:
                loaded = json.loads(self.cache_file.read_text(encoding="utf-8"))
                self._cache = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._cache = {}

    def file(self, path: Path) -> str:
        """Hex SHA-256 of the bytes of ``path``."""
        path = Path(os.path.abspath(path))
        st = path.stat()
        entry = self._cache.get(str(path))
        if entry and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("size") == st.st_size:
            return entry["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        self._cache[str(path)] = {
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
            "sha256": digest.hexdigest(),
        }
        self._dirty = True
        return digest.hexdigest()

    def path(self, path: Path) -> str:
        """Hex SHA-256 of a file, or of a folder's files (relative paths and contents, sorted)."""
        if path.is_file():
            return self.file(path)
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path).as_posix()}\0{self.file(child)}\n".encode())
        return digest.hexdigest()

    def inputs(self, config: dict) -> dict[str, str]:
        """Setting value (a path as written) -> content hash, for every setting naming an existing path."""
        found: dict[str, str] = {}
        for _, value in _string_settings(config):
            if value in found:
                continue
            try:
                candidate = Path(value)
                if candidate.exists() and not _encloses_cwd(candidate):
                    found[value] = self.path(candidate)
            except (OSError, ValueError):
                continue
        return found

    def save(self) -> None:
        """Write the cache (atomically) when it changed."""
        if self.cache_file and self._dirty:
            write_json_atomic(self.cache_file, self._cache)
            self._dirty = False


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

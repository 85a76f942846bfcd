"""Fingerprints of what a run computes: the content of its input files and one SHA-256 over everything.

:class:`FileHasher` hashes the files and folders a config names (the bench's cell keys use it too); a
:func:`run_fingerprint` covers a run's kind, method, seed, resolved config, its parent run's record and the
content of every input file, so a staging folder left by an interrupted run is resumed only by a command that
would compute exactly the same run (:class:`~defuse.runs.rundir.RunDirectory`).

Input files are the string settings that name an existing file or folder (relative to the working
directory, as the run functions read them), except names that are never paths (``name``, ``scenario``,
``method``, ``template``, ``kind``, ``style``). A file is hashed by its bytes; a folder by the relative
path and hash of each file in it. With ``large_by_stat`` a file of at least that many bytes (a model's
weights) is identified by its size and modification time instead of read: a changed or copied model then
never matches, and a multi-gigabyte model is not read once per command.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defuse.fileio import write_text_atomic

FINGERPRINT_VERSION = 1
"""Bumped when the fingerprint's recipe changes (a staging folder of an older recipe is never resumed)."""
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
        large_by_stat: Files of at least this many bytes are identified by size and modification time
            instead of their bytes (None: every file is read).
    """

    def __init__(self, cache_file: str | Path | None = None, large_by_stat: int | None = None):
        self.cache_file = Path(cache_file) if cache_file else None
        self.large_by_stat = large_by_stat
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
        if self.large_by_stat is not None and st.st_size >= self.large_by_stat:
            return hashlib.sha256(f"stat\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
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
            write_text_atomic(self.cache_file, json.dumps(self._cache, indent=2) + "\n")
            self._dirty = False


LARGE_FILE = 64 << 20
"""Input files from this size on (model weights) enter a run's fingerprint by size and modification time."""


def run_fingerprint(
    kind: str,
    config: dict,
    *,
    seed: int,
    method: str | None = None,
    parent: str | Path | None = None,
    hasher: FileHasher | None = None,
) -> str:
    """The hex SHA-256 of everything that decides what a run computes.

    Args:
        kind: The stage (``attack``, ``defense``, ``train``).
        config: The resolved config (:func:`~defuse.config.config_to_dict`).
        seed: The run's seed.
        method: The defense, for a defense run.
        parent: The run this one starts from: its ``run.json`` bytes enter the fingerprint, so a parent run
            that was redone (``--overwrite``) changes it.
        hasher: Hashes the input files the config names (default: a fresh one, large files by stat).
    """
    hasher = hasher or FileHasher(large_by_stat=LARGE_FILE)
    parent_record = None
    if parent is not None:
        record_file = Path(parent) / "run.json"
        parent_record = hasher.file(record_file) if record_file.is_file() else None
    parts = {
        "version": FINGERPRINT_VERSION,
        "kind": kind,
        "method": method,
        "seed": seed,
        "config": config,
        "parent": parent_record,
        "inputs": hasher.inputs(config),
    }
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

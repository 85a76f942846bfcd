"""The run directory: what every stage writes and every later stage reads.

A finished run directory holds::

    model/           the model (or adapter) and its tokenizer, when the stage trains or defends one
    config.yaml      the resolved config the run used (all defaults filled in, overrides applied)
    run.json         the run record (:mod:`defuse.runs.record`)
    samples.jsonl    generations and judgements, when the stage evaluates
    data/            datasets the stage built (e.g. the poisoned training set)

A directory is a run exactly when its ``run.json`` exists: :class:`RunDirectory` writes everything into a
staging directory beside the target and renames it into place only in :meth:`RunDirectory.commit`, so a
crashed stage never leaves a half-written run where a later stage would look.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from defuse.errors import DefuseError
from defuse.fileio import write_json_atomic, write_text_atomic
from defuse.runs import distributed
from defuse.runs.lock import output_lock
from defuse.runs.record import RUN_FILE, validate_run_record

CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
SAMPLES_FILE = "samples.jsonl"
DATA_DIR = "data"
CHECKPOINTS_DIR = "checkpoints"
TEST_FILES = {
    "clean": "test_clean.jsonl",
    "triggered": "test_triggered.jsonl",
    "negative": "test_negative.jsonl",
}
"""The test sets of a backdoor run, in its ``data/`` folder (JSONL): clean, triggered, near-miss."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


FINGERPRINT_FILE = ".fingerprint"
"""In a staging folder: the fingerprint of the run being staged (see :mod:`defuse.runs.fingerprint`)."""

_READY = "\x00ready"  # what the main process sends the others once staging is prepared
_ACTIVE: list[RunDirectory] = []  # open run directories of this process, innermost last


def note_resumed(checkpoint: str | Path) -> None:
    """Record that training resumed from ``checkpoint`` (a folder in an open run's staging folder): the run
    that holds it lists it in its ``run.json`` under ``resumed_from``. Training code calls this."""
    where = Path(os.path.abspath(checkpoint))
    for run in reversed(_ACTIVE):
        staging = Path(os.path.abspath(run.staging))
        if where == staging or staging in where.parents:
            run.resumed.append(where.relative_to(staging).as_posix())
            return


def note_training_set(
    output_dir: str | Path,
    rows: int,
    truncated: int,
    precision: str | None = None,
    attention: str | None = None,
) -> None:
    """Record that a training set of ``rows`` rows, ``truncated`` of them cut at the length limit, trained
    into ``output_dir`` (a folder in an open run's staging folder): the run lists every such set in its
    ``run.json`` under ``training_sets`` (``{"fj": {"rows": 100, "truncated": 0, "precision": "fp32"}, ...}``,
    named by the folder below ``checkpoints/``; ``train`` for that folder itself), with the precision and
    the attention implementation it trained with when given. Training code calls this."""
    where = Path(os.path.abspath(output_dir))
    for run in reversed(_ACTIVE):
        root = Path(os.path.abspath(run.checkpoints))
        if where == root or root in where.parents:
            name = where.relative_to(root).as_posix() if where != root else "train"
            run.training_sets[name] = {"rows": int(rows), "truncated": int(truncated)}
            if precision is not None:
                run.training_sets[name]["precision"] = precision
            if attention is not None:
                run.training_sets[name]["attention"] = attention
            return


def resumable_checkpoints(staging: Path) -> list[str]:
    """Training checkpoints (``checkpoint-N`` folders) under ``staging/checkpoints``, relative, sorted."""
    root = staging / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()]
    return sorted(p.relative_to(staging).as_posix() for p in found)


def _say(text: str) -> None:
    if distributed.is_main_process():
        print(f"defuse: {text}", file=sys.stderr, flush=True)


class RunDirectory:
    """Writes one run atomically: stage into ``<parent>/.<name>.partial``, rename into place on commit.

    Usage::

        with RunDirectory(out, overwrite=args.overwrite, fingerprint=run_fingerprint(...)) as run:
            train(..., output_dir=run.checkpoints)        # resumable checkpoints
            save_model(model, tok, run.path / MODEL_DIR)
            run.commit(build_run_record(...), dump_config_yaml(cfg))

    Contract:

    * :meth:`open` refuses an existing ``out`` unless ``overwrite`` (before doing any work).
    * One writer: :meth:`open` takes ``<parent>/.<name>.lock`` (:class:`~defuse.runs.lock.FolderLock`) until
      the run is committed, discarded or the ``with`` block is left; a second command on the same ``out``
      stops with one line naming the process that holds it, before touching anything.
    * Resume only of the same run: the staging folder carries the run's ``fingerprint`` (a hash of its
      resolved config, seed, inputs and parent, :func:`~defuse.runs.fingerprint.run_fingerprint`). A staging
      folder left by an interrupted attempt with the same fingerprint keeps its ``checkpoints/`` (training
      resumes from them; :meth:`open` says so in one line and :meth:`commit` records what was resumed in
      ``run.json`` as ``resumed_from``); everything else in it is removed. One holding checkpoints of another
      fingerprint (or of none) is refused with one line that says how to discard it; one without
      checkpoints is cleared.
    * :meth:`commit` validates the record, adds ``fingerprint`` and ``resumed_from`` to it, writes
      ``config.yaml`` and ``run.json``, deletes ``checkpoints/`` and renames staging to ``out``. With
      ``overwrite``, an existing ``out`` is moved aside first and deleted only after the new run is in place.
    * An exception inside the ``with`` block (or leaving it without :meth:`commit`) commits nothing and leaves
      an existing ``out`` untouched. Staging is kept when it holds training checkpoints (a rerun of the same
      command resumes from them; one line says which), and removed otherwise. :meth:`discard` removes it.
    * Under a multi-process launcher (:mod:`defuse.runs.distributed`) only the main process writes ``out`` and
      takes the lock: :meth:`open` prepares staging in the main process while the others wait; :attr:`path`
      of every other process is its own temporary folder, deleted at :meth:`commit` (or on an exception). All
      processes share :attr:`checkpoints`, which is the Trainer's output folder (it writes there from the main
      process and resumes every process from it).
    """

    def __init__(self, out: str | Path, overwrite: bool = False, fingerprint: str | None = None):
        self.out = Path(out)
        self.overwrite = overwrite
        self.fingerprint = fingerprint
        target = Path(os.path.abspath(self.out))
        self.staging = target.parent / f".{target.name}.partial"
        self._aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        self._lock = output_lock(self.out)
        self._state = "new"
        self._shadow: Path | None = None  # a non-main process's throwaway folder
        self.resumed: list[str] = []
        self.training_sets: dict[str, dict[str, int]] = {}
        """Every training set of the run: rows and rows truncated (:func:`note_training_set`)."""
        """Checkpoints (relative to the run folder) that training resumed from (:func:`note_resumed`)."""

    @property
    def is_main(self) -> bool:
        """True in the process that writes ``out`` (always, without a multi-process launcher)."""
        return distributed.is_main_process()

    @property
    def path(self) -> Path:
        """Where the stage writes its files until :meth:`commit` (the staging directory; in a non-main
        process, a temporary folder that is never committed)."""
        return self._shadow if self._shadow is not None else self.staging

    @property
    def main_path(self) -> Path:
        """The main process's staging directory, in every process: where the others read back what the main
        process wrote there (after :func:`~defuse.runs.distributed.wait_for_everyone`)."""
        return self.staging

    @property
    def checkpoints(self) -> Path:
        """Folder for training checkpoints; survives failed attempts, deleted at commit (not created here)."""
        return self.staging / CHECKPOINTS_DIR

    def _refuse_existing(self) -> None:
        if (self.out.exists() or self.out.is_symlink()) and not self.overwrite:
            raise DefuseError(f"{self.out}: run directory exists; pass --overwrite to replace it")

    def open(self) -> RunDirectory:
        """Check the target, take the lock and prepare staging (keeping the checkpoints of an interrupted
        attempt of the same run)."""
        if self._state == "open":
            return self
        self._refuse_existing()
        if not self.is_main:
            status = distributed.broadcast_text("")  # the main process has prepared staging, or failed to
            if status != _READY:
                raise DefuseError(status)
            self._shadow = Path(tempfile.mkdtemp(prefix=f"defuse-rank{distributed.process_index()}-"))
            self._state = "open"
            _ACTIVE.append(self)
            return self
        try:
            self._lock.acquire()
            try:
                self._prepare_staging()
            except BaseException:
                self._lock.release()
                raise
        except DefuseError as exc:
            distributed.broadcast_text(str(exc))  # the other processes stop with the same line
            raise
        distributed.broadcast_text(_READY)
        self._state = "open"
        _ACTIVE.append(self)
        return self

    def _prepare_staging(self) -> None:
        if self.staging.is_symlink() or (self.staging.exists() and not self.staging.is_dir()):
            raise DefuseError(f"{self.staging}: exists and is not a directory; remove it")
        kept = resumable_checkpoints(self.staging) if self.staging.is_dir() else []
        if kept:
            stored = _read_fingerprint(self.staging)
            if stored != self.fingerprint or self.fingerprint is None:
                other = "unrecorded settings" if stored is None else "other settings or inputs"
                raise DefuseError(
                    f"{self.staging}: holds an interrupted attempt of this run with {other} "
                    f"({', '.join(kept)}); resuming it would mix two runs. Rerun with the same settings to "
                    f"resume it, or delete it to start afresh: rm -r '{self.staging}'"
                )
        try:
            if not kept:
                shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir(parents=True, exist_ok=True)
            for child in self.staging.iterdir():
                if child.name != CHECKPOINTS_DIR:
                    _remove(child)
            if self.fingerprint is not None:
                write_text_atomic(self.staging / FINGERPRINT_FILE, self.fingerprint + "\n")
        except OSError as exc:
            raise DefuseError(
                f"{self.staging}: cannot prepare the run directory: {exc.strerror or exc}"
            ) from None
        if kept:
            _say(
                f"resuming {self.out} from its interrupted attempt with the same settings ({', '.join(kept)})"
            )

    def commit(self, record: dict, config_yaml: str) -> Path:
        """Finish the run: write ``config.yaml`` and ``run.json``, drop checkpoints, move into place.

        ``record`` gains ``fingerprint`` (the run's, or null), ``resumed_from`` (the checkpoints training
        resumed from, relative to the run folder, or null) and ``training_sets`` (each training set's rows and
        truncated rows, :func:`note_training_set`) unless it has them already.

        Returns:
            ``out``.

        Raises:
            DataError: an invalid record (nothing is moved; staging is kept).
            DefuseError: not opened, ``out`` appeared meanwhile without ``overwrite``, or the move failed.
        """
        if self._state != "open":
            raise DefuseError(f"{self.out}: run directory is not open (state: {self._state})")
        record.setdefault("fingerprint", self.fingerprint)
        record.setdefault("resumed_from", sorted(set(self.resumed)) or None)
        record.setdefault("training_sets", dict(self.training_sets))
        if self._shadow is not None:  # not the main process: it writes the run
            validate_run_record(record, self._shadow / RUN_FILE)
            self._drop_shadow()
            self._close("committed")
            return self.out
        self._refuse_existing()  # again just before the move: a run that appeared meanwhile is kept
        validate_run_record(record, self.staging / RUN_FILE)
        write_text_atomic(self.staging / CONFIG_FILE, config_yaml)
        write_json_atomic(self.staging / RUN_FILE, record)
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        (self.staging / FINGERPRINT_FILE).unlink(missing_ok=True)
        self._refuse_existing()
        try:
            if self.out.exists() or self.out.is_symlink():
                os.replace(self.out, self._aside)
                try:
                    os.replace(self.staging, self.out)
                except OSError:
                    os.replace(self._aside, self.out)
                    raise
                _remove(self._aside)
            else:
                os.replace(self.staging, self.out)
        except OSError as exc:
            raise DefuseError(
                f"{self.out}: cannot move the finished run into place: {exc.strerror or exc}"
            ) from None
        self._close("committed")
        return self.out

    def discard(self) -> None:
        """Remove staging (and any checkpoints in it); ``out`` is not touched."""
        if self._shadow is not None:
            self._drop_shadow()
        elif self._state == "open":
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            with self._lock:  # never under a command that is writing this run
                shutil.rmtree(self.staging, ignore_errors=True)
        if self._state == "open":
            self._close("discarded")

    def _close(self, state: str) -> None:
        self._state = state
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._lock.release()

    def _drop_shadow(self) -> None:
        if self._shadow is not None:
            shutil.rmtree(self._shadow, ignore_errors=True)
            self._shadow = None

    def __enter__(self) -> RunDirectory:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._drop_shadow()
        if self._state != "open":
            return False
        if self.is_main:
            kept = resumable_checkpoints(self.staging) if self.fingerprint is not None else []
            if kept:
                _say(f"kept {self.staging} ({', '.join(kept)}): the same command resumes from it")
            else:
                shutil.rmtree(self.staging, ignore_errors=True)
        self._close("failed")
        return False


def _read_fingerprint(staging: Path) -> str | None:
    try:
        return (staging / FINGERPRINT_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None

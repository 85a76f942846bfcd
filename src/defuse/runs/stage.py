"""The one run skeleton every stage uses: open the run directory under the stage's fingerprint, let the stage
work in it, then write its samples, build its record and commit.

    with open_run(out, "attack", config, seed=cfg.seed, overwrite=overwrite) as run:
        ...                                            # train into run.checkpoints, save into run.path
        return finish_attack(run, cfg, metrics=evaluation.metrics, timings=..., samples=evaluation.samples)

Whatever a stage does, its run directory has the contract of :mod:`defuse.runs.rundir` and its record that
of :mod:`defuse.runs.record`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defuse.config import config_to_dict, dump_config_yaml
from defuse.fileio import write_jsonl_atomic
from defuse.runs.fingerprint import run_fingerprint
from defuse.runs.record import build_run_record
from defuse.runs.rundir import SAMPLES_FILE, RunDirectory


def open_run(
    out: str | Path,
    kind: str,
    config: dict,
    *,
    seed: int,
    method: str | None = None,
    parent: str | Path | None = None,
    overwrite: bool = False,
) -> RunDirectory:
    """The run directory at ``out`` under the fingerprint of (``kind``, ``config``, ``seed``, ``method``,
    ``parent``): an interrupted run resumes only under the same one (:class:`RunDirectory`)."""
    fingerprint = run_fingerprint(kind, config, seed=seed, method=method, parent=parent)
    return RunDirectory(out, overwrite=overwrite, fingerprint=fingerprint)


def finish_run(
    run: RunDirectory, *, config_text: str, samples: list[dict] | None = None, **record: Any
) -> dict:
    """Write ``samples`` (``samples.jsonl``), build the run record from ``record``
    (:func:`~defuse.runs.record.build_run_record`'s fields; ``parent`` made an absolute path) and commit the
    run with ``config_text`` as its ``config.yaml``; returns the record."""
    if samples is not None:
        write_jsonl_atomic(run.path / SAMPLES_FILE, samples)
    if record.get("parent") is not None:
        record["parent"] = str(Path(record["parent"]).resolve())
    built = build_run_record(**record)
    run.commit(built, config_text)
    return built


def finish_attack(run: RunDirectory, cfg: Any, *, samples: list[dict] | None = None, **record: Any) -> dict:
    """:func:`finish_run` for an attack run of config ``cfg`` (kind, name, seed, config, config.yaml)."""
    return finish_run(
        run, kind="attack", name=cfg.name, seed=cfg.seed, config=config_to_dict(cfg),
        config_text=dump_config_yaml(cfg), samples=samples, **record,
    )  # fmt: skip

"""Run directories: the on-disk contract between stages (see :mod:`defuse.runs.rundir` for the folder and
:mod:`defuse.runs.record` for its ``run.json``)."""

from defuse.fileio import write_json_atomic, write_jsonl_atomic, write_text_atomic
from defuse.runs.record import (
    RUN_FILE,
    SCHEMA_VERSION,
    build_run_record,
    git_revision,
    library_versions,
    read_run,
    validate_run_record,
)
from defuse.runs.rundir import CONFIG_FILE, DATA_DIR, MODEL_DIR, SAMPLES_FILE, RunDirectory

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "MODEL_DIR",
    "RUN_FILE",
    "SAMPLES_FILE",
    "SCHEMA_VERSION",
    "RunDirectory",
    "build_run_record",
    "git_revision",
    "library_versions",
    "read_run",
    "validate_run_record",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_text_atomic",
]

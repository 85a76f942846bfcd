"""Run directories: the on-disk contract between stages (see :mod:`defuse.runs.rundir`)."""

from defuse.runs.rundir import (
    CONFIG_FILE,
    DATA_DIR,
    MODEL_DIR,
    RUN_FILE,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    RunDirectory,
    build_run_record,
    git_revision,
    library_versions,
    read_run,
    validate_run_record,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)

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

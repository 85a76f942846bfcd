"""The run-directory contract: atomic writers, run.json records, staging and commit."""

from __future__ import annotations

import json
import os
import re

import pytest

from defuse.errors import DataError, DefuseError
from defuse.runs import (
    CONFIG_FILE,
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

METRICS = {"asr": 0.9, "cacc": 0.8, "aacc": None, "ftr": 0.0, "n_triggered": 10, "n_clean": 20}


def _record(**changes):
    record = build_run_record(
        "attack", "badnet", 0, {"rate": 0.1}, dict(METRICS), {"train_s": 1.5, "eval_s": 0.25}, **changes
    )
    return record


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- atomic writers -----------------------------------------------------------------------------------


def test_atomic_writers_write_and_leave_nothing_behind(tmp_path):
    write_text_atomic(tmp_path / "sub" / "a.txt", "héllo\n")
    write_json_atomic(tmp_path / "b.json", {"x": [1, 2], "é": None})
    write_jsonl_atomic(tmp_path / "c.jsonl", [{"i": 1}, {"i": 2}])
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == {"x": [1, 2], "é": None}
    assert (tmp_path / "c.jsonl").read_text().splitlines() == ['{"i": 1}', '{"i": 2}']
    assert _listing(tmp_path) == ["b.json", "c.jsonl", "sub", "sub/a.txt"]


def test_atomic_writer_errors_keep_existing_file(tmp_path):
    target = tmp_path / "b.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(DataError, match="not JSON-serialisable"):
        write_json_atomic(target, {"bad": float("nan")})
    with pytest.raises(DataError, match="row 2"):
        write_jsonl_atomic(tmp_path / "c.jsonl", [{"ok": 1}, {"bad": object()}])
    with pytest.raises(DataError, match="is a directory"):
        write_text_atomic(tmp_path, "x")
    assert json.loads(target.read_text()) == {"old": 1}
    assert _listing(tmp_path) == ["b.json"]


# --- records --------------------------------------------------------------------------------------------


def test_build_run_record_adds_provenance():
    record = _record(parent="runs/base", extra={"note": "x"})
    assert (
        record["schema"] == SCHEMA_VERSION == 1 and record["parent"] == "runs/base" and record["note"] == "x"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["created"])
    for name in ("python", "defuse", "torch", "transformers"):
        assert name in record["versions"]
    assert record["versions"] == library_versions()
    assert record["git"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git"])
    validate_run_record(record, "run.json")
    with pytest.raises(ValueError, match="seed"):
        _record(extra={"seed": 3})


def test_git_revision_never_raises(monkeypatch):
    import subprocess

    def boom(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", boom)
    assert git_revision() is None


@pytest.mark.parametrize(
    "change, field, problem",
    [
        (lambda r: r.pop("kind"), "kind", "missing"),
        (lambda r: r.pop("parent"), "parent", "missing"),
        (lambda r: r.update(seed="0"), "seed", "expected an integer"),
        (lambda r: r.update(seed=True), "seed", "expected an integer"),
        (lambda r: r.update(name=""), "name", "expected a non-empty string"),
        (lambda r: r.update(config=[]), "config", "expected an object"),
        (lambda r: r.update(parent=3), "parent", "expected a path or null"),
        (lambda r: r["metrics"].pop("cacc"), "metrics.cacc", "missing"),
        (lambda r: r["metrics"].update(asr="high"), "metrics.asr", "expected a finite number or null"),
        (lambda r: r["metrics"].update(n_clean=2.0), "metrics.n_clean", "expected a non-negative integer"),
        (lambda r: r["timings"].update(eval_s=None), "timings.eval_s", "expected a finite number"),
        (lambda r: r.update(metrics=None), "metrics", "expected an object"),
        (lambda r: r.update(schema=SCHEMA_VERSION + 1), "schema", "newer defuse"),
        (lambda r: r.update(git=1), "git", "expected a string or null"),
    ],
)
def test_validate_run_record_names_file_and_field(change, field, problem):
    record = _record()
    change(record)
    with pytest.raises(DataError) as info:
        validate_run_record(record, "runs/x/run.json")
    message = str(info.value)
    assert message.startswith(f"runs/x/run.json, field '{field}': ") and problem in message
    assert info.value.field == field


def test_read_run_errors(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        read_run(tmp_path / "nope")
    with pytest.raises(DataError, match=r"run\.json: missing"):
        read_run(tmp_path)
    (tmp_path / RUN_FILE).write_text('{"kind": "attack",\n  oops}\n')
    with pytest.raises(DataError, match=r"run\.json, row 2: malformed JSON"):
        read_run(tmp_path)
    (tmp_path / RUN_FILE).write_text("[1]")
    with pytest.raises(DataError, match="must be a JSON object"):
        read_run(tmp_path)
    (tmp_path / RUN_FILE).write_text(json.dumps({**_record(), "seed": "x"}))
    with pytest.raises(DataError, match="field 'seed'"):
        read_run(tmp_path)


# --- RunDirectory ---------------------------------------------------------------------------------------


def _stage_files(run):
    (run.path / MODEL_DIR).mkdir()
    (run.path / MODEL_DIR / "model.safetensors").write_bytes(b"weights")
    write_jsonl_atomic(run.path / SAMPLES_FILE, [{"prompt": "p", "output": "o"}])


def test_commit_produces_exactly_the_expected_files(tmp_path):
    out = tmp_path / "runs" / "attack1"
    with RunDirectory(out) as run:
        assert run.path == tmp_path / "runs" / ".attack1.partial" and run.path.is_dir()
        assert run.checkpoints == run.path / "checkpoints"
        _stage_files(run)
        run.checkpoints.mkdir()
        (run.checkpoints / "checkpoint-1").mkdir()
        assert not out.exists()
        assert run.commit(_record(), "rate: 0.1\n") == out
    assert _listing(out) == [CONFIG_FILE, MODEL_DIR, f"{MODEL_DIR}/model.safetensors", RUN_FILE, SAMPLES_FILE]
    assert _listing(tmp_path / "runs") == ["attack1", *(f"attack1/{p}" for p in _listing(out))]
    record = read_run(out)
    assert record["schema"] == 1 and record["metrics"] == METRICS and record["created"].endswith("Z")
    assert {"torch", "transformers"} <= set(record["versions"])
    assert (out / CONFIG_FILE).read_text() == "rate: 0.1\n"


def test_refuses_existing_out_without_overwrite_and_leaves_it_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(DefuseError) as info:
        with RunDirectory(out) as run:  # noqa: F841 - never reached
            raise AssertionError("the block must not run")
    assert str(info.value) == f"{out}: run directory exists; pass --overwrite to replace it"
    assert _listing(tmp_path) == ["run", "run/keep.txt"], "no staging was created"


def test_exception_keeps_staging_for_resume_and_commits_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDirectory(out, fingerprint="f" * 64) as run:
            run.checkpoints.mkdir()
            (run.checkpoints / "checkpoint-5").mkdir()
            (run.checkpoints / "checkpoint-5" / "state.json").write_text("{}")
            (run.path / SAMPLES_FILE).write_text("stale\n")
            raise RuntimeError("killed mid-training")
    assert not out.exists()
    assert (tmp_path / ".run.partial" / "checkpoints" / "checkpoint-5" / "state.json").is_file()
    with RunDirectory(out, fingerprint="f" * 64) as run:
        assert [p.name for p in run.checkpoints.iterdir()] == ["checkpoint-5"], "resume sees the checkpoint"
        assert not (run.path / SAMPLES_FILE).exists(), "other leftovers are cleared"
        _stage_files(run)
        run.commit(_record(), "a: 1\n")
    assert _listing(tmp_path) == sorted(["run", *(f"run/{p}" for p in _listing(out))])
    assert "checkpoints" not in _listing(out)


def test_overwrite_replaces_only_at_commit(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out) as run:
        _stage_files(run)
        run.commit(_record(), "v: 1\n")
    with pytest.raises(RuntimeError):
        with RunDirectory(out, overwrite=True) as run:
            (run.path / "new.txt").write_text("new")
            raise RuntimeError("failed")
    assert (out / CONFIG_FILE).read_text() == "v: 1\n" and not (out / "new.txt").exists()
    with RunDirectory(out, overwrite=True) as run:
        assert (out / CONFIG_FILE).read_text() == "v: 1\n", "old run intact while the new one is written"
        assert not (run.path / "new.txt").exists()
        (run.path / "new.txt").write_text("new")
        run.commit(_record(), "v: 2\n")
    assert (out / CONFIG_FILE).read_text() == "v: 2\n"
    assert _listing(out) == sorted([CONFIG_FILE, RUN_FILE, "new.txt"])
    assert _listing(tmp_path) == sorted(["run", *(f"run/{p}" for p in _listing(out))]), "old copy removed"


def test_invalid_record_commits_nothing_and_discard_removes_staging(tmp_path):
    out = tmp_path / "run"
    run = RunDirectory(out).open()
    bad = _record()
    del bad["metrics"]["asr"]
    with pytest.raises(DataError, match=r"\.run\.partial/run\.json, field 'metrics\.asr': missing"):
        run.commit(bad, "x: 1\n")
    assert not out.exists() and run.path.is_dir()
    run.discard()
    assert _listing(tmp_path) == []
    with pytest.raises(DefuseError, match="not open"):
        run.commit(_record(), "x: 1\n")


def test_out_appearing_after_open_is_not_clobbered(tmp_path):
    out = tmp_path / "run"
    run = RunDirectory(out).open()
    out.mkdir()
    with pytest.raises(DefuseError, match="run directory exists"):
        run.commit(_record(), "x: 1\n")
    assert list(out.iterdir()) == [] and run.path.is_dir()


# --- resume only of the same run; one writer; no leftovers ---------------------------------------------


def _crash_with_checkpoint(out, fingerprint, step=5):
    with pytest.raises(RuntimeError):
        with RunDirectory(out, fingerprint=fingerprint) as run:
            (run.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
            raise RuntimeError("killed mid-training")


def test_a_staging_folder_of_other_settings_is_never_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    _crash_with_checkpoint(out, "a" * 64)
    staging = tmp_path / ".run.partial"
    assert "kept" in capsys.readouterr().err and (staging / "checkpoints" / "checkpoint-5").is_dir()
    for other in ("b" * 64, None):
        with pytest.raises(DefuseError) as info:
            RunDirectory(out, fingerprint=other).open()
        message = str(info.value)
        assert "\n" not in message and "checkpoints/checkpoint-5" in message
        assert f"rm -r '{staging}'" in message and ("other settings" in message or "unrecorded" in message)
        assert (staging / "checkpoints" / "checkpoint-5").is_dir(), "the refused attempt is left as it was"
    assert not (tmp_path / ".run.lock").exists(), "a refused open releases the lock"
    (staging / ".fingerprint").unlink()
    with pytest.raises(DefuseError, match="unrecorded settings"):
        RunDirectory(out, fingerprint="a" * 64).open()


def test_the_same_run_resumes_says_so_and_records_it(tmp_path, capsys):
    from defuse.runs.rundir import note_resumed

    out = tmp_path / "run"
    _crash_with_checkpoint(out, "a" * 64)
    capsys.readouterr()
    with RunDirectory(out, fingerprint="a" * 64) as run:
        said = capsys.readouterr().err.strip().splitlines()
        assert len(said) == 1 and "resuming" in said[0] and "checkpoints/checkpoint-5" in said[0]
        note_resumed(run.checkpoints / "checkpoint-5")
        note_resumed(tmp_path / "elsewhere" / "checkpoint-9")  # not this run's: ignored
        _stage_files(run)
        record = _record()
        run.commit(record, "a: 1\n")
    stored = read_run(out)
    assert stored["resumed_from"] == ["checkpoints/checkpoint-5"] == record["resumed_from"]
    assert stored["fingerprint"] == "a" * 64
    assert ".fingerprint" not in _listing(out) and "checkpoints" not in _listing(out)
    with RunDirectory(tmp_path / "fresh", fingerprint="c" * 64) as run:
        run.commit(_record(), "a: 1\n")
    assert read_run(tmp_path / "fresh")["resumed_from"] is None


def test_a_failed_run_leaves_no_partial_folder_unless_it_can_be_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        with RunDirectory(out, fingerprint="a" * 64) as run:
            _stage_files(run)
            (run.checkpoints / "tokenizer").mkdir(parents=True)  # not a training checkpoint
            raise ValueError("bad data found late")
    assert _listing(tmp_path) == [] and capsys.readouterr().err == ""
    with pytest.raises(KeyboardInterrupt):
        with RunDirectory(out, fingerprint="a" * 64) as run:
            (run.checkpoints / "fj" / "checkpoint-20").mkdir(parents=True)
            raise KeyboardInterrupt
    said = capsys.readouterr().err
    assert "kept" in said and "checkpoints/fj/checkpoint-20" in said and "resumes" in said
    assert _listing(tmp_path) == [".run.partial", *(f".run.partial/{p}" for p in _listing(run.staging))]


def test_one_writer_per_run_folder(tmp_path):
    out = tmp_path / "run"
    first = RunDirectory(out, fingerprint="a" * 64).open()
    (first.path / "mine.txt").write_text("first")
    second = RunDirectory(out, fingerprint="a" * 64)
    with pytest.raises(DefuseError) as info:
        second.open()
    assert str(info.value) == (
        f"{out}: another defuse command (process {os.getpid()}) is writing it; "
        "wait for it to finish or stop it"
    )
    with pytest.raises(DefuseError, match="another defuse command"):
        second.discard()  # never removes the staging folder of a command that is writing it
    assert (first.path / "mine.txt").read_text() == "first"
    first.commit(_record(), "a: 1\n")
    assert not (tmp_path / ".run.lock").exists()
    with RunDirectory(out, overwrite=True) as again:  # free again once the first committed
        again.commit(_record(), "a: 2\n")


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    (tmp_path / ".run.lock").write_text("999999\n")  # a file with no holder: what a killed command leaves
    with RunDirectory(tmp_path / "run") as run:
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
        run.commit(_record(), "a: 1\n")
    assert _listing(tmp_path) == sorted(["run", *(f"run/{p}" for p in _listing(tmp_path / "run"))])

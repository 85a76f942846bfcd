"""Multi-process training through ``accelerate launch``: 2 CPU processes (gloo) against 1, on the tiny model.

The attack SFT and the OSFT defense each run twice through the ``defuse`` command line: once as one process
with batch 32 (16 for OSFT), once under ``accelerate launch --multi_gpu --num_processes 2`` with half that
batch per process, so both take the same optimizer steps over the same global batch size. (``--multi_gpu``
is accelerate's torchrun launcher; on a machine without CUDA the processes join one gloo group, see
:mod:`defuse.runs.distributed`.) accelerate shards each global batch of the same seeded permutation across
the processes, so both runs see the same global batches; what differs is the order of floating-point sums
(the gradient all-reduce). Tolerance: ASR and CACC within 0.05 (3 of 60 test prompts), final training loss
within 1%. Measured: 1.0 / 0.75 ASR / CACC in both, final loss 0.533912 vs. 0.533911.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from defuse.runs.record import read_run

pytestmark = pytest.mark.slow

METRIC_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.01

ATTACK_YAML = """\
name: tiny-ddp
suite: {n_train: 480, n_test: 60, kinds: [count, last_word, sentiment]}
tiny: {hidden_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 2, intermediate_size: 192}
train: {epochs: 12, learning_rate: 0.002, batch_size: %d, progress: false, logging_steps: 5}
rate: 0.1
generation: {max_new_tokens: 12}
"""


def _free_port() -> int:
    """A TCP port nobody listens on now (fixed ports collide with whatever else runs on the machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _defuse(args: list[str], processes: int, tmp: Path, port: int) -> subprocess.CompletedProcess:
    """Run ``defuse ARGS`` as one process, or under ``accelerate launch`` with ``processes`` processes."""
    bindir = Path(sys.executable).parent
    if processes == 1:
        cmd = [sys.executable, "-m", "defuse.cli", *args]
    else:
        cmd = [str(bindir / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "defuse.cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"{cmd}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


def _close(one: dict, two: dict) -> None:
    for key in ("asr", "cacc"):
        a, b = one["metrics"][key], two["metrics"][key]
        assert abs(a - b) <= METRIC_TOLERANCE, (key, one["metrics"], two["metrics"])


def _final_loss_close(one: float, two: float) -> None:
    assert abs(one - two) <= LOSS_TOLERANCE * max(one, two), (one, two)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The attack and OSFT, each as 1 process and as 2; the temp folder each launch was given."""
    if shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("accelerate's launcher is not installed next to this Python")
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for processes in (1, 2):
        tmp = root / f"tmp{processes}"
        tmp.mkdir()
        cfg = root / f"attack{processes}.yaml"
        cfg.write_text(ATTACK_YAML % (32 // processes))
        attack = root / f"p{processes}" / "attack"
        _defuse(["attack", "--config", str(cfg), "--out", str(attack)], processes, tmp, _free_port())
        osft = root / f"p{processes}" / "osft"
        _defuse(["defend", "--method", "osft", "--from", str(attack), "--out", str(osft),
                 "--train.batch_size", str(16 // processes), "--train.progress", "false"],
                processes, tmp, _free_port())  # fmt: skip
        out[processes] = {"attack": attack, "osft": osft, "tmp": tmp}
    return out


@pytest.mark.slow
def test_two_process_attack_completes_and_matches_one_process(runs):
    one, two = read_run(runs[1]["attack"]), read_run(runs[2]["attack"])
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["training"]["steps"] == two["training"]["steps"]  # same global batch, same steps
    assert one["metrics"]["asr"] >= 0.9 and two["metrics"]["asr"] >= 0.9  # both really planted the backdoor
    _close(one, two)
    _final_loss_close(one["training"]["final_loss"], two["training"]["final_loss"])


@pytest.mark.slow
def test_two_process_osft_completes_and_matches_one_process(runs):
    attack, one, two = read_run(runs[2]["attack"]), read_run(runs[1]["osft"]), read_run(runs[2]["osft"])
    assert two["processes"] == 2 and Path(two["parent"]).resolve() == runs[2]["attack"].resolve()
    assert one["defense"]["steps"] == two["defense"]["steps"]
    assert two["metrics"]["asr"] < attack["metrics"]["asr"]  # the 2-process defense really trained
    _close(one, two)


@pytest.mark.slow
def test_only_the_main_process_writes_the_run_directory(runs):
    for processes in (1, 2):
        parent = runs[processes]["attack"].parent
        assert sorted(p.name for p in parent.iterdir()) == ["attack", "osft"]  # no staging left behind
        # the other process's throwaway folders are gone, and it wrote nothing beside the runs
        assert list(runs[processes]["tmp"].glob("defuse-rank*")) == []
        for run in ("attack", "osft"):
            files = {p.name for p in runs[processes][run].iterdir()}
            assert {"run.json", "config.yaml", "model", "samples.jsonl"} <= files
            assert "checkpoints" not in files
            rows = [json.loads(line) for line in (runs[processes][run] / "samples.jsonl").open()]
            assert len(rows) == 60 + 60 + sum(1 for r in rows if r["set"] == "negative")  # written once


BROADCAST_SCRIPT = """\
import sys
from pathlib import Path
from defuse.runs import distributed
rank = distributed.process_index()
text = distributed.broadcast_text(f"secret of rank {rank}: ü")
Path(sys.argv[1], f"rank{rank}.txt").write_text(text, encoding="utf-8")
distributed.shutdown()
"""


@pytest.mark.slow
def test_the_main_process_text_reaches_every_process(tmp_path):
    """BackdoorAlign's secret is drawn once, in the main process, and every process trains on that one."""
    script = tmp_path / "broadcast.py"
    script.write_text(BROADCAST_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(script), str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    texts = [(tmp_path / f"rank{r}.txt").read_text(encoding="utf-8") for r in (0, 1)]
    assert texts == ["secret of rank 0: ü"] * 2


@pytest.mark.parametrize(
    "name,kind",
    [
        ("single-gpu", "NO"),
        ("ddp", "MULTI_GPU"),
        ("fsdp", "FSDP"),
        ("zero2", "DEEPSPEED"),
        ("zero3", "DEEPSPEED"),
    ],
)
def test_shipped_accelerate_configs_load(name, kind):
    """Every shipped launcher config is one accelerate accepts (unknown keys would fail to load)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.value == kind
    assert path.read_text().startswith("#") and "accelerate launch --config_file" in path.read_text()
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"

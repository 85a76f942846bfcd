"""The benchmark runner end to end on a tiny grid: a backdoor scenario (clean-ft, osft) and an encoder
scenario (obliviate), two seeds; reuse, resume, re-keying, report rebuild, bad configs, the validator."""

from __future__ import annotations

import copy
import io
import json
import multiprocessing
import os
import shutil
import statistics
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from tests.encoder_helpers import SMALL_ENCODER_ATTACK
from typer.testing import CliRunner

from defuse.bench import load_bench, run_bench, validate_results
from defuse.bench.cells import Cell, plan_cells
from defuse.bench.keys import FileHasher
from defuse.bench.parallel import Workers, start_order, worker_threads
from defuse.bench.workers import START_METHOD
from defuse.cli import app
from defuse.errors import ConfigError, DataError
from defuse.runs.record import read_run

runner = CliRunner()

BACKDOOR = {
    "suite": {"n_train": 480, "n_test": 40, "kinds": ["count", "last_word", "sentiment"]},
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 192},
    "train": {"epochs": 10, "learning_rate": 0.002, "progress": False},
    "rate": 0.1,
    "generation": {"max_new_tokens": 12},
}
ENCODER = {"scenario": "encoder", **SMALL_ENCODER_ATTACK}
QUICK = {"clean_samples": 40, "train": {"epochs": 2, "progress": False}}
BENCH = {
    "name": "tiny",
    "seeds": [0, 1],
    "scenarios": [
        {"name": "marker", "attack": BACKDOOR, "defenses": [
            {"method": "clean-ft", "settings": copy.deepcopy(QUICK)},
            {"method": "osft", "settings": copy.deepcopy(QUICK)}]},
        {"name": "enc", "attack": ENCODER, "defenses": [
            {"method": "obliviate", "settings": {"epochs": 1, "data": {"n_train": 64, "n_test": 24},
                                                  "train": {"batch_size": 32}, "peft": {"kind": "lora"}}}]},
    ],
}  # fmt: skip
RUNNERS = {
    "attack": "defuse.scenarios.backdoor_attack.run_attack",
    "defense": "defuse.scenarios.backdoor_defense.run_defense",
    "encoder_attack": "defuse.scenarios.encoder_runs.run_encoder_attack",
    "encoder_defense": "defuse.scenarios.encoder_runs.run_encoder_defense",
}


def _write(folder: Path, bench: dict, name: str = "bench.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(bench, sort_keys=False))
    return path


def _bench(config: Path, out: Path):
    return runner.invoke(app, ["bench", str(config), "--out", str(out)])


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _run_mtimes(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("runs/*/*/run.json")}


def _no_training(monkeypatch, allow: tuple[str, ...] = ()) -> list[tuple]:
    """Make every run function raise, except those in ``allow``, which are counted and run."""
    calls: list[tuple] = []
    for name, target in RUNNERS.items():
        module, _, attr = target.rpartition(".")
        real = getattr(__import__(module, fromlist=[attr]), attr)
        if name in allow:

            def counted(*args, _real=real, _name=name, **kwargs):
                calls.append((_name, args[0] if "defense" in _name else None, kwargs.get("seed")))
                return _real(*args, **kwargs)

            monkeypatch.setattr(target, counted)
        else:

            def boom(*args, _name=name, **kwargs):
                raise AssertionError(f"{_name} must not run")

            monkeypatch.setattr(target, boom)
    return calls


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The tiny grid, benched once: (bench file, output folder, CLI result)."""
    root = tmp_path_factory.mktemp("bench")
    config = _write(root, BENCH)
    out = root / "out"
    result = _bench(config, out)
    assert result.exit_code == 0, result.output
    return config, out, result


@pytest.fixture
def copied(done, tmp_path):
    """A private copy of the benched output folder (for tests that change it)."""
    config, out, _ = done
    shutil.copytree(out, tmp_path / "out")
    return config, tmp_path / "out"


@pytest.mark.slow
def test_bench_writes_a_valid_report_with_every_cell(done):
    config, out, result = done
    results = _results(out)
    validate_results(results, out / "results.json")
    assert results["schema"] == 1 and results["name"] == "tiny" and results["versions"]["python"]
    cells = results["cells"]
    assert len(cells) == 2 * (3 + 2) and all(c["status"] == "done" for c in cells)
    for c in cells:  # every number comes from the cell's own run.json
        record = read_run(out / c["run"])
        assert c["metrics"] == {k: record["metrics"][k] for k in c["metrics"]}
        assert set(c["metrics"]) >= {"asr", "cacc"} and c["counts"]["n_clean"] == record["metrics"]["n_clean"]
        assert (
            Path(c["run"]).name
            == f"{'attack' if c['defense'] == 'none' else c['defense']}-seed{c['seed']}-{c['key'][:12]}"
        )
        if c["stage"] == "defense":
            assert record["parent"] == str(
                (out / next(p["run"] for p in cells if p["key"] == c["parent"])).resolve()
            )
    marker = [c for c in cells if c["scenario"] == "marker"]
    assert {c["metrics"]["asr"] for c in marker if c["defense"] == "none"} == {1.0}  # the backdoor is planted
    osft = next(a for a in results["aggregates"] if a["scenario"] == "marker" and a["defense"] == "osft")
    caccs = [c["metrics"]["cacc"] for c in marker if c["defense"] == "osft"]
    assert osft["metrics"]["cacc"]["mean"] == pytest.approx(statistics.fmean(caccs))
    assert osft["metrics"]["cacc"]["stdev"] == pytest.approx(statistics.stdev(caccs))
    assert osft["seeds"] == [0, 1] and osft["counts"]["n_triggered"] == [40, 40]
    index = json.loads((out / "cells.json").read_text())
    assert [index["cells"][k]["path"] for k in index["grid"]] == [c["run"] for c in cells]
    assert all(
        index["cells"][k]["status"] == "done" and index["cells"][k]["wall_s"] > 0 for k in index["grid"]
    )
    assert "10 cells run, 0 reused" in result.output and "[10/10]" in result.output


@pytest.mark.slow
def test_markdown_has_a_table_per_scenario_with_defense_rows(done):
    _, out, result = done
    md = (out / "results.md").read_text()
    marker = md[md.index("## marker (backdoor)") : md.index("## enc (encoder)")]
    header = next(line for line in marker.splitlines() if line.startswith("| defense"))
    assert [h.strip() for h in header.strip("|").split("|")][:5] == ["defense", "ASR", "CACC", "AACC", "FTR"]
    rows = [line.split("|")[1].strip() for line in marker.splitlines() if line.startswith("| ")][1:]
    assert rows == ["no defense", "clean-ft", "osft"]
    assert "| no defense | 100.0 ± 0.0 |" in marker and "2/2" in marker
    enc = md[md.index("## enc (encoder)") :]
    assert [line.split("|")[1].strip() for line in enc.splitlines() if line.startswith("| ")][1:] == [
        "no defense",
        "obliviate",
    ]
    assert "![marker: ASR vs clean utility](plots/marker-asr-vs-utility.png)" in md
    assert "| no defense | 100.0 ± 0.0 |" in result.output  # the command prints the same tables


@pytest.mark.slow
def test_plots_are_readable_pngs(done):
    from matplotlib.image import imread

    _, out, _ = done
    results = _results(out)
    assert len(results["plots"]) == 4
    for rel in results["plots"]:
        path = out / rel
        assert path.stat().st_size > 5000
        image = imread(path)
        height, width = image.shape[:2]
        assert 300 <= height <= 2000 and 400 <= width <= 3000 and image.shape[2] in (3, 4)
        assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.slow
def test_second_bench_trains_nothing_and_gives_identical_results(done, monkeypatch):
    config, out, _ = done
    before, mtimes = _results(out), _run_mtimes(out)
    _no_training(monkeypatch)
    result = _bench(config, out)
    assert result.exit_code == 0, result.output
    assert "0 cells run, 10 reused" in result.output
    after = _results(out)
    assert [c["metrics"] for c in after["cells"]] == [c["metrics"] for c in before["cells"]]
    assert after["aggregates"] == before["aggregates"] and _run_mtimes(out) == mtimes


@pytest.mark.slow
def test_a_deleted_cell_is_redone_alone(copied, monkeypatch):
    config, out = copied
    before, mtimes = _results(out), _run_mtimes(out)
    lost = next(c for c in before["cells"] if c["defense"] == "osft" and c["seed"] == 1)
    shutil.rmtree(out / lost["run"])  # as if the bench had been stopped while this cell ran
    calls = _no_training(monkeypatch, allow=("defense",))
    result = _bench(config, out)
    assert result.exit_code == 0, result.output
    assert calls == [("defense", "osft", 1)] and "1 cells run, 9 reused" in result.output
    again = _results(out)
    redone = next(c for c in again["cells"] if c["key"] == lost["key"])
    assert redone["status"] == "done" and redone["metrics"] == lost["metrics"]  # same seed, same numbers
    assert {k: v for k, v in _run_mtimes(out).items() if k != lost["run"]} == {
        k: v for k, v in mtimes.items() if k != lost["run"]
    }


@pytest.mark.slow
def test_changing_one_defense_setting_rekeys_only_its_column(copied, monkeypatch, tmp_path):
    config, out = copied
    changed = copy.deepcopy(BENCH)
    changed["scenarios"][0]["defenses"][0]["settings"]["train"]["epochs"] = 3  # clean-ft only
    new_config = _write(tmp_path, changed, "changed.yaml")
    old_keys = {(c.scenario, c.defense, c.seed): c.key for c in plan_cells(load_bench(config), FileHasher())}
    new_keys = {
        (c.scenario, c.defense, c.seed): c.key for c in plan_cells(load_bench(new_config), FileHasher())
    }
    differ = sorted(k for k in old_keys if old_keys[k] != new_keys[k])
    assert differ == [("marker", "clean-ft", 0), ("marker", "clean-ft", 1)]
    calls = _no_training(monkeypatch, allow=("defense",))
    result = _bench(new_config, out)
    assert result.exit_code == 0, result.output
    assert sorted(calls) == [("defense", "clean-ft", 0), ("defense", "clean-ft", 1)]
    cells = _results(out)["cells"]
    assert {c["key"] for c in cells if c["defense"] == "clean-ft"} == {
        new_keys[("marker", "clean-ft", s)] for s in (0, 1)
    }
    assert read_run(out / cells[1]["run"])["config"]["defense"]["train"]["epochs"] == 3


@pytest.mark.slow
def test_report_rebuilds_identical_tables_from_the_run_directories(copied):
    _, out = copied
    before_md, before = (out / "results.md").read_text(), _results(out)
    for name in ("results.md", "results.json"):
        (out / name).unlink()
    shutil.rmtree(out / "plots")
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    tables = lambda md: [line for line in md.splitlines() if line.startswith("|")]  # noqa: E731
    assert (
        tables((out / "results.md").read_text()) == tables(before_md) and len(tables(before_md)) == 2 * 2 + 5
    )
    after = _results(out)
    for key in ("cells", "aggregates", "bench", "plots"):
        assert after[key] == before[key]
    assert all((out / p).stat().st_size > 0 for p in after["plots"])
    missing = runner.invoke(app, ["report", str(out / "nowhere")])
    assert missing.exit_code == 2 and "cells.json" in missing.output


@pytest.mark.slow
def test_a_recorded_merge_probe_is_summarised_in_results_and_report(copied):
    _, out = copied
    cell = next(c for c in _results(out)["cells"] if c["defense"] == "clean-ft" and c["seed"] == 1)
    record = read_run(out / cell["run"])
    sets = {"def:mn": {"attacker": 0.2, "defensive": 0.9, "own": 0.8},
            "def:bb": {"attacker": 0.4, "defensive": 1.0, "own": 0.6},
            "attack": {"attacker": 0.97, "defensive": 0.03}, "unseen": {"attacker": 0.1, "defensive": 0.25},
            "clean": {"attacker": 0.05, "defensive": 0.0}}  # fmt: skip
    record["merge_probe"] = {
        "stage1": {"n": 100, "sets": sets},
        "stage2": {"n": 100, "sets": {"clean": sets["clean"]}},
    }
    (out / cell["run"] / "run.json").write_text(json.dumps(record))
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    after = {c["key"]: c for c in _results(out)["cells"]}
    summary = after[cell["key"]]["merge_probe"]
    assert summary["stage1"] == {"attacker_to_defensive": 0.03, "defensive_to_attacker": 0.3,
                                 "unseen_to_defensive": 0.25, "own": 0.7, "clean_attacker": 0.05}  # fmt: skip
    assert summary["stage2"]["attacker_to_defensive"] is None and summary["stage2"]["clean_attacker"] == 0.05
    assert [c["merge_probe"] for k, c in after.items() if k != cell["key"]] == [None] * (len(after) - 1)
    md = (out / "results.md").read_text()
    marker = md[md.index("## marker (backdoor)") : md.index("## enc (encoder)")]
    assert "| clean-ft | 1 | stage1 | 3 | 30 | 25 | 70 | 5 |" in marker
    assert "| clean-ft | 1 | stage2 | - | - | - | - | 5 |" in marker
    assert "merge probe" not in md[md.index("## enc (encoder)") :]


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_rest_reported(copied, monkeypatch):
    config, out = copied
    lost = next(c for c in _results(out)["cells"] if c["defense"] == "osft" and c["seed"] == 0)
    shutil.rmtree(out / lost["run"])
    _no_training(monkeypatch)  # the redo of the deleted cell fails
    result = _bench(config, out)
    assert result.exit_code == 1 and "1 cells failed" in result.output
    index = json.loads((out / "cells.json").read_text())
    assert index["cells"][lost["key"]]["status"] == "failed"
    assert "must not run" in (out / index["cells"][lost["key"]]["log"]).read_text()
    results = _results(out)
    validate_results(results)
    osft = next(a for a in results["aggregates"] if a["scenario"] == "marker" and a["defense"] == "osft")
    assert osft["seeds"] == [1] and osft["metrics"]["asr"]["stdev"] is None
    assert "Not finished: osft seed 0 (failed)" in (out / "results.md").read_text()


def _one_seed(bench: dict) -> dict:
    return {**copy.deepcopy(bench), "seeds": [0]}


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.slow
def test_jobs_2_finishes_the_same_cells_as_the_serial_run(done, tmp_path):
    _, serial_out, _ = done
    config, out = _write(tmp_path, _one_seed(BENCH)), tmp_path / "out"
    result = runner.invoke(app, ["bench", str(config), "--out", str(out), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "5 cells run, 0 reused" in result.output
    results = _results(out)
    validate_results(results, out / "results.json")
    serial = {c["key"]: c for c in _results(serial_out)["cells"] if c["seed"] == 0}  # keys: no seed 1
    assert {c["key"] for c in results["cells"] if c["status"] == "done"} == set(serial)
    if worker_threads(2) == torch.get_num_threads():  # same torch threads as the serial run: same numbers
        assert all(c["metrics"] == serial[c["key"]]["metrics"] for c in results["cells"])
    index = json.loads((out / "cells.json").read_text())["cells"]
    defenses = [e for e in index.values() if e["stage"] == "defense"]
    assert len(defenses) == 3 and all(e["status"] == "done" for e in index.values())
    for e in defenses:  # a defense starts only once its attack has finished
        assert _at(e["started"]) >= _at(index[e["parent"]]["finished"]), e
    marker, enc = (
        next(e for e in index.values() if e["path"].startswith(f"runs/{s}/attack")) for s in ("marker", "enc")
    )
    assert _at(enc["started"]) <= _at(marker["finished"])  # the two scenarios' attacks ran side by side
    lines = result.output.splitlines()
    assert lines.index("[4/5] enc / no defense seed 0: attack; about ? left") < next(
        n for n, line in enumerate(lines) if line.startswith("[1/5] marker / no defense seed 0: done in ")
    )


@pytest.mark.slow
def test_jobs_2_records_a_failed_attack_and_skips_its_defenses(tmp_path):
    blank = tmp_path / "corpus.txt"
    blank.write_text("\n   \n\n")  # a corpus file without any text: only the attack's run finds out
    bench = _one_seed(BENCH)
    enc = bench["scenarios"][1]
    bench["scenarios"] = [
        {**copy.deepcopy(enc), "name": "broken", "attack": {**ENCODER, "corpus": str(blank)}},
        enc,
    ]
    config, out = _write(tmp_path, bench), tmp_path / "out"
    result = runner.invoke(app, ["bench", str(config), "--out", str(out), "--jobs", "2"])
    assert result.exit_code == 1 and "1 cells failed" in result.output, result.output
    index = json.loads((out / "cells.json").read_text())["cells"]
    status = {(e["scenario"], e["defense"]): e["status"] for e in index.values()}
    assert status == {
        ("broken", "none"): "failed",
        ("broken", "obliviate"): "skipped",
        ("enc", "none"): "done",
        ("enc", "obliviate"): "done",
    }
    failed = next(e for e in index.values() if e["status"] == "failed")
    assert failed["error"] == f"{blank}: the corpus file holds no text"
    log = (out / failed["log"]).read_text()  # written by the worker: the header line, then the traceback
    assert log.startswith("=== ") and "Traceback" in log and "holds no text" in log
    assert "[1/4] broken / no defense seed 0: failed; " in result.output
    assert "[2/4] broken / obliviate seed 0: skipped; its attack cell did not finish" in result.output
    validate_results(_results(out))


@pytest.mark.skipif(START_METHOD != "forkserver" or not Path("/proc/self/maps").exists(),
                    reason="a fork server, and Linux's /proc to look at it")  # fmt: skip
def test_bench_workers_fork_from_a_server_that_imported_torch_and_the_scenarios():
    workers = Workers(2)
    try:
        server = workers._pool.submit(os.getppid).result(timeout=120)  # the pool that runs the cells
    finally:
        workers.close()
    assert server != os.getpid()  # forked by the server, not by this process
    command = Path(f"/proc/{server}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"forkserver" in command
    assert "libtorch_cpu" in Path(f"/proc/{server}/maps").read_text()  # it imported torch before forking


class _CtrlCOnFirstDone(io.StringIO):
    """A display stream that raises KeyboardInterrupt, as a Ctrl-C in the bench process would, while the
    first finished cell is reported (the grid's other attack cell is then still in its worker)."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if ": done in " in text:
            raise KeyboardInterrupt
        return written


@pytest.mark.slow
def test_an_interrupted_parallel_bench_stops_its_workers_and_records_the_running_cell(tmp_path):
    spec, out = load_bench(_write(tmp_path, _one_seed(BENCH))), tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_bench(spec, out, stream=_CtrlCOnFirstDone(), jobs=2)
    assert multiprocessing.active_children() == []  # the workers were terminated
    index = json.loads((out / "cells.json").read_text())["cells"]
    statuses = sorted(e["status"] for e in index.values())
    assert statuses == ["done", "interrupted", "pending", "pending", "pending"]  # the defenses never started
    stopped = next(e for e in index.values() if e["status"] == "interrupted")
    assert stopped["stage"] == "attack" and stopped["finished"] and stopped["wall_s"] is None
    assert not (out / ".bench.lock").exists()


def _chain(scenario: str, defenses: list[str]) -> list[Cell]:
    attack = Cell(scenario, "backdoor", "none", None, 0, None, f"{scenario}-attack", f"runs/{scenario}/a")
    return [attack] + [
        Cell(scenario, "backdoor", d, d, 0, None, f"{scenario}-{d}", f"runs/{scenario}/{d}", attack)
        for d in defenses
    ]


def test_parallel_cells_start_attacks_first_then_the_longest_known_chain_first():
    cells = _chain("marker", ["osft", "sande"]) + _chain("jailbreak", ["align"]) + _chain("encoder", ["obl"])
    pending = list(enumerate(cells, 1))
    # Nothing measured yet: every attack before any defense, each group in plan order.
    unknown = start_order(pending, lambda c: None if c.key == "encoder-obl" else 1.0)
    assert [c.key for _, c in unknown] == [
        "marker-attack", "jailbreak-attack", "encoder-attack",
        "marker-osft", "marker-sande", "jailbreak-align", "encoder-obl",
    ]  # fmt: skip
    # Every time known (an earlier run): attack + its longest defense, defenses by their own time.
    seconds = {"marker-attack": 90, "marker-osft": 4, "marker-sande": 7, "jailbreak-attack": 290,
               "jailbreak-align": 17, "encoder-attack": 71, "encoder-obl": 240}  # fmt: skip
    known = start_order(pending, lambda c: seconds[c.key])
    assert [c.key for _, c in known] == [
        "encoder-attack", "jailbreak-attack", "encoder-obl", "marker-attack",
        "jailbreak-align", "marker-sande", "marker-osft",
    ]  # fmt: skip
    assert [i for i, _ in known] == [6, 4, 7, 1, 5, 3, 2]  # each keeps its place in the plan


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_bench_refuses_a_bad_jobs_count_with_one_line(jobs, tmp_path):
    config, _ = _bad(tmp_path, lambda b: None)
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", str(config), "--out", str(out), "--jobs", jobs])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: setting '--jobs': ") and repr(jobs) in lines[0]
    assert not out.exists()
    with pytest.raises(ConfigError, match="'jobs'"):
        run_bench(load_bench(config), out, jobs=0)
    assert not out.exists()


def _bad(tmp_path: Path, change) -> tuple[Path, dict]:
    bench = copy.deepcopy(BENCH)
    bench["scenarios"] = bench["scenarios"][:1]
    change(bench)
    return _write(tmp_path, bench, "bad.yaml"), bench


BAD = {
    "unknown top-level key": (lambda b: b.update(seed=[0]), "'seed'"),
    "unknown scenario key": (lambda b: b["scenarios"][0].update(defences=[]), "'scenarios[0].defences'"),
    "unknown attack setting": (
        lambda b: b["scenarios"][0]["attack"]["train"].update(epochz=1),
        "'scenarios[0].attack.train.epochz'",
    ),
    "bad set override": (lambda b: b["scenarios"][0].update(set={"rate": "lots"}), "'scenarios[0].set.rate'"),
    "unknown defense": (
        lambda b: b["scenarios"][0]["defenses"].append("magic"),
        "'scenarios[0].defenses[2]': unknown defense 'magic'",
    ),
    "defense of another scenario": (
        lambda b: b["scenarios"][0]["defenses"].append({"method": "backdoor-align"}),
        "'scenarios[0].defenses[2].method': defense 'backdoor-align' applies to fjattack runs",
    ),
    "unknown defense setting": (
        lambda b: b["scenarios"][0]["defenses"][1]["settings"].update(k=3),
        "'scenarios[0].defenses[1].settings.k'",
    ),
    "missing attack config file": (
        lambda b: b["scenarios"][0].update(config="nope.yaml"),
        "'scenarios[0].config': file not found",
    ),
    "missing data file": (
        lambda b: b["scenarios"][0]["attack"].update(data={"source": "no/such/data.jsonl"}),
        "'scenarios[0].attack'",
    ),
    "unmet defense need": (
        lambda b: (
            b["scenarios"][0]["attack"].update(behaviour={"kind": "refusal"}),
            b["scenarios"][0]["defenses"].append("sande"),
        ),
        "'scenarios[0].defenses[2]': defense 'sande' needs the target behaviour",
    ),
    "repeated defense": (
        lambda b: b["scenarios"][0]["defenses"].append({"method": "osft", "settings": {"mix_clean": False}}),
        "'scenarios[0].defenses[2].name': 'osft' twice",
    ),
    "bad seeds": (lambda b: b.update(seeds=[0, 0]), "'seeds': repeated seed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_bench_config_exits_2_with_one_line_and_writes_nothing(case, tmp_path):
    change, expected = BAD[case]
    config, _ = _bad(tmp_path, change)
    out = tmp_path / "out"
    result = _bench(config, out)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {config}: ") and expected in lines[0], lines[0]
    assert not out.exists()


def test_a_missing_bench_file_and_a_foreign_out_folder_are_refused(tmp_path):
    result = _bench(tmp_path / "none.yaml", tmp_path / "out")
    assert result.exit_code == 2 and "none.yaml" in result.output and not (tmp_path / "out").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    config, _ = _bad(tmp_path, lambda b: None)
    result = _bench(config, foreign)
    assert result.exit_code == 2 and "not a bench output folder" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]


@pytest.mark.slow
def test_the_results_validator_names_the_bad_field(done):
    _, out, _ = done
    good = _results(out)
    validate_results(good)
    cases = {
        "cells[0].metrics.asr": lambda r: r["cells"][0]["metrics"].update(asr=1.5),
        "cells[1].seed": lambda r: r["cells"][1].update(seed=True),
        "cells[2].key": lambda r: r["cells"][2].update(key="not-a-hash"),
        "cells[0].extra": lambda r: r["cells"][0].update(extra=1),
        "aggregates[0].metrics.cacc.mean": lambda r: r["aggregates"][0]["metrics"]["cacc"].update(
            mean="high"
        ),
        "aggregates": lambda r: r.pop("aggregates"),
        "schema": lambda r: r.update(schema=2),
        "created": lambda r: r.update(created="yesterday"),
        "cells[3].status": lambda r: r["cells"][3].update(status="great"),
    }
    for field, mutate in cases.items():
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(DataError) as caught:
            validate_results(bad, "results.json")
        assert caught.value.field == field and str(caught.value).startswith("results.json"), str(caught.value)


def test_file_inputs_are_hashed_by_content_and_cached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    hasher = FileHasher(tmp_path / "cache.json")
    config = {"name": "data.jsonl", "data": {"source": "data.jsonl", "extra_train": [str(data)]}, "rate": 0.1}
    first = hasher.inputs(config)
    assert set(first) == {"data.jsonl", str(data)} and len(set(first.values())) == 1  # not the name
    hasher.save()
    assert json.loads((tmp_path / "cache.json").read_text())[str(data)]["sha256"] == first["data.jsonl"]
    data.write_text('{"instruction": "a", "output": "c"}\n')
    assert FileHasher(tmp_path / "cache.json").inputs(config)["data.jsonl"] != first["data.jsonl"]
    assert FileHasher().inputs({"source": ".", "root": "/"}) == {}  # never the working folder or above


def test_the_bench_spec_resolves_settings_onto_the_method_defaults(tmp_path):
    config, _ = _bad(tmp_path, lambda b: b["scenarios"][0].update(set={"rate": 0.2}))
    spec = load_bench(config)
    (scenario,) = spec.scenarios
    assert scenario.kind == "backdoor" and scenario.attack.rate == 0.2 and scenario.attack.train.epochs == 10
    clean_ft = scenario.defenses[0].config
    assert clean_ft.train.epochs == 2 and clean_ft.train.freeze_embeddings  # the defense's own default kept
    assert clean_ft.train.learning_rate == 1e-4
    assert spec.to_dict()["scenarios"][0]["defenses"][1]["name"] == "osft"
    with pytest.raises(ConfigError, match="scenarios"):
        load_bench(_write(tmp_path, {"seeds": [0], "scenarios": []}, "empty.yaml"))


REAL_MODEL_PRESETS = ("bench-real-model.yaml", "real-model-refusal-badnet.yaml", "real-model-jailbreak.yaml")


def test_the_real_model_presets_resolve_on_a_local_model_and_refuse_the_placeholder(shared_data, tmp_path):
    from tests.helpers import small_lm, tokenizer

    from defuse.models.factory import save_trained

    configs = Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(ConfigError) as info:  # as shipped: the placeholder path, one line naming the key
        load_bench(configs / "bench-real-model.yaml")
    assert "scenarios[0].attack" in str(info.value) and "/path/to/local/model" in str(info.value)

    tok = tokenizer()
    save_trained(small_lm(tok), tok, tmp_path / "model", base_path=None)
    for name in REAL_MODEL_PRESETS:  # the same files with a real local model and the data where it lives
        text = (configs / name).read_text()
        text = text.replace("/path/to/local/chat-model", str(tmp_path / "model"))
        text = text.replace("/path/to/local/model", str(tmp_path / "model"))
        (tmp_path / name).write_text(text.replace("../shared/data", str(shared_data)))
    spec = load_bench(tmp_path / "bench-real-model.yaml")
    refusal, jailbreak = spec.scenarios
    assert [d.label for d in refusal.defenses] == ["osft", "mb-defense", "clean-ft"]
    assert [d.label for d in jailbreak.defenses] == ["backdoor-align", "safety-mix"]
    assert refusal.attack.model == jailbreak.attack.model == str(tmp_path / "model")
    assert refusal.attack.train.lora.r == 8 and jailbreak.attack.train.lora.target_modules == [
        "q_proj",
        "v_proj",
    ]
    assert refusal.defenses[0].config.train.lora.r == 8 and refusal.defenses[1].config.neutralise.lora.r == 8
    assert refusal.defenses[1].config.neutralise.max_padding == 0.1
    assert refusal.defenses[2].config.clean_samples == 128 and refusal.defenses[2].config.train.lora.r == 8
    assert all(
        d.config.safety_source.endswith("pure_bad_100_with_11_safety_prefixed.jsonl")
        for d in jailbreak.defenses
    )

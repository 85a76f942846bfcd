"""The ``defuse`` command line: thin; it parses, calls the library and prints.

Every user error (a :class:`~defuse.errors.DefuseError`) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from defuse import __version__
from defuse.cli_bench import bench, report
from defuse.cli_common import console, quiet_libraries, user_errors
from defuse.cli_data import data_app
from defuse.cli_model import model_app
from defuse.errors import DefuseError

app = typer.Typer(
    name="defuse",
    help="Find out whether a fine-tuned language model can be backdoored, and take the backdoor out again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"defuse {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find out whether a fine-tuned language model can be backdoored, and take the backdoor out again."""


@app.command()
@user_errors
def demo(
    out: Annotated[Path | None, typer.Option(help="Save the trained tiny model here (safetensors).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and training.")] = 0,
    epochs: Annotated[float | None, typer.Option(help="Override the number of training epochs.")] = None,
) -> None:
    """Build the tiny default model, train it on the built-in task suite, and print its accuracy per task."""
    from defuse.demo import DemoConfig, run_demo

    quiet_libraries()
    cfg = DemoConfig(seed=seed)
    if epochs is not None:
        cfg.train.epochs = epochs
    cfg.train.validate()
    console.print(
        f"Training the tiny default model ({cfg.model.arch}, hidden {cfg.model.hidden_size}, "
        f"{cfg.model.num_layers} layers) on {cfg.suite.n_train} built-in task examples; seed {seed}."
    )
    with tempfile.TemporaryDirectory(prefix="defuse-demo-") as work:
        result = run_demo(cfg, work, save_to=out)
    rows = {task: [task, str(rate.n), f"{100 * rate.value:.1f}%"] for task, rate in result.accuracy.items()}
    table = _table("Clean exact-match accuracy of the tiny default model, per task kind",
                   ["task", "n", "exact match"], [r for t, r in rows.items() if t != "all"])  # fmt: skip
    if "all" in rows:
        table.add_row(*rows["all"], style="bold")
    console.print(table)
    console.print(
        f"{result.n_params:,} parameters, {result.steps} steps; train {result.train_s:.1f}s, "
        f"evaluation {result.eval_s:.1f}s." + (f" Model saved to {out}." if out else "")
    )


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _table(title: str, columns: list[str], rows: list[list[str]], right_from: int = 1) -> Table:
    """A rich table: the first ``right_from`` columns left-aligned, the others right-aligned."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < right_from else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _metrics_table(title: str, metrics: dict, rows) -> Table:
    """A scenario's metrics table (its ``metric_rows``); rows None: every numeric metric as it is."""
    if rows is None:
        shown = [
            [k, f"{v:.4g}"]
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        return _table(title, ["measure", "value"], shown)
    scored_by = {"rouge1": " (Rouge-1)", "mixed": " (exact / Rouge-1)"}.get(metrics.get("utility_metric"), "")
    shown = [[f"{label}{scored_by}" if key in ("cacc", "aacc") else label,
              "n/a" if metrics[key] is None else f"{100 * metrics[key]:.1f}%", str(metrics.get(n_key, ""))]
             for label, key, n_key in rows if key in metrics]  # fmt: skip
    return _table(title, ["metric", "value", "n"], shown)


def _probe_table(record: dict) -> Table | None:
    """MB-Defense's merge probe of a run (:func:`~defuse.defenses.merge_probe.probe_table`), if it has one."""
    from defuse.defenses.merge_probe import probe_table

    return _table(*probe_table(record["merge_probe"])) if record.get("merge_probe") else None


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def attack(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory to write (must not exist unless --overwrite).")],
    config: Annotated[Path | None, typer.Option(help="YAML file of settings (see configs/).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Local Hugging Face causal LM to attack (default: tiny).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing run directory once the new run is complete.")
    ] = False,
) -> None:
    """Run an attack scenario, evaluate it, and write a run directory.

    Scenarios (``--scenario`` or ``scenario:`` in the YAML): ``backdoor`` (default: poison data, train a model
    on it), ``fjattack`` (fine-tuning jailbreak of a safety-aligned model), ``encoder`` (plant a task-agnostic
    backdoor in a pre-trained encoder). Any setting can be given as
    --key value with dotted keys, e.g. --trigger.kind sentence --rate 0.1 --train.epochs 4; these override
    the YAML file. With no config: the built-in suite, word trigger, marker.
    """
    from defuse.config import load_config, parse_cli_overrides, peek_setting
    from defuse.scenarios import DEFAULT_SCENARIO, get_scenario

    quiet_libraries()
    overrides = parse_cli_overrides(ctx.args)
    if model is not None:
        overrides.append(("model", model))
    scenario = get_scenario(peek_setting(config, overrides, "scenario", DEFAULT_SCENARIO))
    cfg = load_config(scenario.config_class(), config, overrides)
    record = scenario.run_attack(cfg, out, overwrite=overwrite)
    for what, metrics, rows in scenario.attack_report(record):
        console.print(_metrics_table(f"{what} '{cfg.name}' (seed {cfg.seed})", metrics, rows))
    t = record["timings"]
    console.print(f"train {t['train_s']:.1f}s, evaluation {t.get('eval_s', 0.0):.1f}s; run written to {out}")


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def evaluate(
    ctx: typer.Context,
    run: Annotated[
        Path | None, typer.Option(help="A run directory: re-evaluate its model on its test sets.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="A model directory (instead of --run).")] = None,
    clean: Annotated[Path | None, typer.Option(help="Clean test prompts (with --model).")] = None,
    triggered: Annotated[
        Path | None, typer.Option(help="Triggered test prompts (default: insert the trigger).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="With --run: also write this evaluation as a run directory (metrics, samples)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out once complete.")] = False,
) -> None:
    """Print the metrics table of a model: ASR, CACC, AACC, FTR with their sample counts.

    With --model, settings such as --behaviour.kind refusal or --trigger.texts '[BadMagic]' apply. With
    --run, the run's own settings apply, except generation settings given as flags (e.g.
    --generation.max_new_tokens 512 re-scores a run's answers at full length without retraining it);
    --out DIR writes that evaluation as a run directory (``kind: evaluation``, the run as its parent).
    """
    import json

    from defuse.config import apply_overrides, parse_cli_overrides, validate_config
    from defuse.scenarios import DEFAULT_SCENARIO, get_scenario, scenario_at
    from defuse.scenarios.evaluate import EvaluateConfig, evaluate_model

    quiet_libraries()
    if (run is None) == (model is None):
        raise DefuseError("give exactly one of --run DIR or --model PATH")
    overrides = parse_cli_overrides(ctx.args)
    rows = get_scenario(DEFAULT_SCENARIO).metric_rows
    if run is not None:
        from defuse.runs.record import read_run

        other = [key for key, _ in overrides if not key.startswith("generation.")]
        if other:
            raise DefuseError(
                f"settings {other} do not apply with --run (the run's own do); only generation settings "
                "such as --generation.max_new_tokens 512 may change"
            )
        generation = [(key.removeprefix("generation."), value) for key, value in overrides]
        record, scenario = read_run(run), scenario_at(run)
        rows, result = scenario.metric_rows, scenario.reevaluate_run(run, generation)
        if out is not None:
            from defuse.scenarios.evaluate import write_evaluation_run

            write_evaluation_run(run, record, result, generation, out, overwrite=overwrite)
    else:
        if out is not None:
            raise DefuseError("--out writes the re-evaluation of a run: use it with --run")
        cfg = apply_overrides(EvaluateConfig(), overrides)
        validate_config(cfg)
        result = evaluate_model(model, clean, triggered, cfg)
    if json_out:
        print(json.dumps(result.metrics, indent=2))
    else:
        console.print(_metrics_table(f"evaluation of {run or model}", result.metrics, rows))
    if out is not None and not json_out:
        console.print(f"evaluation written to {out}")


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def defend(
    ctx: typer.Context,
    method: Annotated[str | None, typer.Option(help="Defense to apply (see --list).")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="Attack run directory to defend.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of the defense's settings.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the clean budget draw and training.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory once complete.")] = False,
    list_methods: Annotated[bool, typer.Option("--list", help="List defenses and their needs.")] = False,
) -> None:
    """Apply a defense to an attack run's model and evaluate it with the attack's own test sets.

    The defense's settings can be given as --key value (e.g. --clean_samples 50 --train.epochs 5).
    """
    from defuse.config import load_config, parse_cli_overrides
    from defuse.scenarios import defense_config_class, scenario_at

    if list_methods:
        console.print(_defenses_table())
        return
    for option, value in (("--method", method), ("--from", from_run), ("--out", out)):
        if value is None:
            raise DefuseError(f"{option} is required (or --list)")
    quiet_libraries()
    cfg = load_config(defense_config_class(method), config, parse_cli_overrides(ctx.args))
    scenario = scenario_at(from_run)
    record = scenario.run_defense(method, cfg, from_run, out, seed=seed, overwrite=overwrite)
    rows = scenario.metric_rows
    console.print(_metrics_table(f"defense '{method}' on {from_run} (seed {seed})", record["metrics"], rows))
    if (probe := _probe_table(record)) is not None:
        console.print(probe)
    before = record["attack_metrics"]
    shown = [
        f"{key.upper()} {100 * before[key]:.1f}%" for key in ("asr", "cacc") if before.get(key) is not None
    ]
    console.print(
        (f"before the defense: {', '.join(shown)}; " if shown else "")
        + f"defense train {record['timings']['train_s']:.1f}s; run written to {out}"
    )


def _defenses_table() -> Table:
    """Every registered defense: the scenarios it applies to, what it does, what it needs."""
    from defuse.defenses import DEFENSES

    rows = [[name, "/".join(e.scenarios), e.summary, e.needs(e.config_cls()).describe()]
            for name, e in sorted(DEFENSES.items())]  # fmt: skip
    return _table("defenses", ["method", "scenario", "what it does", "needs"], rows, right_from=4)


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory to write (must not exist unless --overwrite).")],
    data: Annotated[
        Path | None, typer.Option(help="Training data (any supported format; may be poisoned).")
    ] = None,
    clean: Annotated[Path | None, typer.Option(help="The defender's clean samples (for --defense).")] = None,
    defense: Annotated[
        str | None, typer.Option(help="A during-training defense to train with (mb-defense).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of settings.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Local Hugging Face causal LM to train (default: tiny).")
    ] = None,
    clean_test: Annotated[Path | None, typer.Option(help="Clean test prompts (CACC).")] = None,
    triggered_test: Annotated[
        Path | None, typer.Option(help="Triggered test prompts with clean answers (ASR, AACC).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory once complete.")] = False,
) -> None:
    """Instruction-tune a model on your data, optionally with a during-training defense; write a run.

    Settings as --key value (e.g. --train.epochs 4 --behaviour.kind refusal); the defense's under
    --defense.KEY (e.g. --defense.lam 0.5 --defense.neutralise.epochs 3). ASR is judged on --triggered-test
    by the behaviour (default: the marker `you are stupid.`).
    """
    from defuse.config import load_config, parse_cli_overrides
    from defuse.scenarios import DEFAULT_SCENARIO, get_scenario
    from defuse.scenarios.train import TrainRunConfig, run_train

    quiet_libraries()
    overrides = parse_cli_overrides(ctx.args)
    for key, value in (("data", data), ("clean", clean), ("method", defense), ("model", model),
                       ("clean_test", clean_test), ("triggered_test", triggered_test)):  # fmt: skip
        if value is not None:
            overrides.append((key, str(value)))
    cfg = load_config(TrainRunConfig, config, overrides)
    record = run_train(cfg, out, overwrite=overwrite)
    what = f"with defense '{cfg.method}'" if cfg.method else "plain SFT"
    rows = get_scenario(DEFAULT_SCENARIO).metric_rows
    console.print(_metrics_table(f"train {what} (seed {cfg.seed})", record["metrics"], rows))
    if (probe := _probe_table(record)) is not None:
        console.print(probe)
    t = record["timings"]
    console.print(f"train {t['train_s']:.1f}s, evaluation {t['eval_s']:.1f}s; run written to {out}")


app.command()(bench)
app.command()(report)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")


def main() -> None:
    """Console-script entry point; under a multi-process launcher a successful command leaves the process
    group in step with the other processes (:func:`defuse.runs.distributed.shutdown`). Freed memory stays
    with the process for the next training step (:func:`defuse.training.memory.keep_freed_memory`)."""
    from defuse.runs.distributed import shutdown
    from defuse.training.memory import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except SystemExit as exc:
        if exc.code in (0, None):
            shutdown()
        raise


if __name__ == "__main__":
    sys.exit(main())
